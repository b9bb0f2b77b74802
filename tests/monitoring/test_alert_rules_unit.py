"""The chart's alerts evaluated by Prometheus' own rule engine (`promtool test rules`, built with
prometheus by hack/build-tools.sh) on recorded series: the build-failed and rollback alerts fire when
the counters move and stop once the 15-minute window has passed; the operator-down alert fires after
10 minutes without a healthy scrape; a generative model's alerts fire on a slow first token (p95), on
refusals of a full queue and on a share of failed generations. The rules are read from the rendered
chart, never copied here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart import helmrun

pytestmark = pytest.mark.unit

PROMTOOL = helmrun.BIN / "promtool"
JOB = "conch-metrics"  # release "conch": the metrics Service's name, the job label of the operator's series
MONITORING = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule")


def chart_rules() -> dict[str, Any]:
    rule = helmrun.one(helmrun.objects(helmrun.template(*MONITORING)), "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def alert(groups: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for g in groups["groups"] for r in g["rules"] if r.get("alert") == name)
    return found


def expected(rule: dict[str, Any], value: str) -> dict[str, Any]:
    """The alert promtool should report: the rule's labels, annotations rendered with `value`."""
    annotations = {k: v.replace("{{ $value | humanize }}", value) for k, v in rule["annotations"].items()}
    return {"exp_labels": rule["labels"], "exp_annotations": annotations}


def promtool_test(tmp_path: Path, groups: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    if not PROMTOOL.exists():
        raise AssertionError(f"promtool is not installed at {PROMTOOL}: run `make tools`")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(
        [str(PROMTOOL), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"promtool test rules failed:\n{proc.stdout}\n{proc.stderr}"


def test_build_failed_and_rollback_alerts_fire_and_clear(tmp_path: Path) -> None:
    groups = chart_rules()
    failed, rollback = alert(groups, "ConchBuildFailed"), alert(groups, "ConchRollbackHappened")
    # one failed build between minute 2 and 3, one rollback between minute 5 and 6; builds keep succeeding
    series = [
        {"series": f'conch_builds_total{{job="{JOB}",outcome="failed"}}', "values": "0 0 0 1x40"},
        {"series": f'conch_builds_total{{job="{JOB}",outcome="succeeded"}}', "values": "0+1x42"},
        {"series": f'conch_rollbacks_total{{job="{JOB}"}}', "values": "0x5 1x37"},
        {"series": f'conch_rollouts_total{{job="{JOB}",outcome="failed"}}', "values": "0x5 1x37"},
        {"series": f'up{{job="{JOB}"}}', "values": "1x42"},
    ]
    # (increase() does not extrapolate below a counter's first sample of 0: one event reads as 1)
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "ConchBuildFailed", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "ConchBuildFailed", "exp_alerts": [expected(failed, "1")]},
                {"eval_time": "25m", "alertname": "ConchBuildFailed", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "ConchRollbackHappened", "exp_alerts": []},
                {
                    "eval_time": "7m",
                    "alertname": "ConchRollbackHappened",
                    "exp_alerts": [expected(rollback, "1")],
                },
                {"eval_time": "30m", "alertname": "ConchRollbackHappened", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "ConchOperatorDown", "exp_alerts": []},
            ],
        }
    ]
    promtool_test(tmp_path, groups, tests)


def test_operator_down_fires_after_ten_minutes_without_a_healthy_scrape(tmp_path: Path) -> None:
    groups = chart_rules()
    down = alert(groups, "ConchOperatorDown")
    series = [{"series": f'up{{job="{JOB}"}}', "values": "1x5 0x20"}]
    # absent() of a comparison carries no labels of the selector
    exp = {"exp_labels": down["labels"], "exp_annotations": down["annotations"]}
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "ConchOperatorDown", "exp_alerts": []},
                {"eval_time": "17m", "alertname": "ConchOperatorDown", "exp_alerts": [exp]},
            ],
        }
    ]
    promtool_test(tmp_path, groups, tests)


def _llm_expected(rule: dict[str, Any], value_template: str, value: str) -> dict[str, Any]:
    """The alert promtool should report for model ns/smol: its labels and annotations filled in."""
    fill = {"{{ $labels.namespace }}": "ns", "{{ $labels.model }}": "smol", value_template: value}
    annotations = {}
    for key, text in rule["annotations"].items():
        filled_text = text
        for template, filled in fill.items():
            filled_text = filled_text.replace(template, filled)
        annotations[key] = filled_text
    labels = {**rule["labels"], "namespace": "ns", "model": "smol"}
    return {"exp_labels": labels, "exp_annotations": annotations}


def test_llm_alerts_fire_on_slow_first_tokens_a_full_queue_and_failing_generations(tmp_path: Path) -> None:
    groups = chart_rules()
    ttft, full, errors = (
        alert(groups, name)
        for name in ("ConchLlmTimeToFirstTokenHigh", "ConchLlmQueueFull", "ConchLlmErrorRatio")
    )
    model = 'namespace="ns",model="smol",version="1"'
    bucket = f"conch_llm_time_to_first_token_seconds_bucket{{{model},le="
    series = [
        # 60 first tokens a minute: under 1 s for 5 minutes, then all over 2.5 s
        {"series": bucket + '"1"}', "values": "0+60x5 300x35"},
        {"series": bucket + '"2.5"}', "values": "0+60x5 300x35"},
        {"series": bucket + '"+Inf"}', "values": "0+60x40"},
        # three refusals in minute 5
        {"series": f"conch_llm_rejected_requests_total{{{model}}}", "values": "0x5 3x35"},
        # one request in ten ends in an error, throughout
        {"series": f'conch_llm_requests_total{{{model},finish_reason="error"}}', "values": "0+6x40"},
        {"series": f'conch_llm_requests_total{{{model},finish_reason="stop"}}', "values": "0+54x40"},
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "ConchLlmTimeToFirstTokenHigh", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "ConchLlmTimeToFirstTokenHigh",
                    "exp_alerts": [_llm_expected(ttft, "{{ $value | humanizeDuration }}", "2.5s")],
                },
                {"eval_time": "4m", "alertname": "ConchLlmQueueFull", "exp_alerts": []},
                {
                    "eval_time": "7m",
                    "alertname": "ConchLlmQueueFull",
                    "exp_alerts": [_llm_expected(full, "{{ $value | humanize }}", "3")],
                },
                {"eval_time": "15m", "alertname": "ConchLlmQueueFull", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "ConchLlmErrorRatio", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "ConchLlmErrorRatio",
                    "exp_alerts": [_llm_expected(errors, "{{ $value | humanizePercentage }}", "10%")],
                },
            ],
        }
    ]
    promtool_test(tmp_path, groups, tests)
