"""The canary's quality-analysis Job (conch.render.analysis): golden render, the command line against
the builder's own parser, deterministic names, and the reading of its outcome from Job + pods.

Regenerate the golden file after an intended change with CONCH_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from conch.api import types
from conch.render import analysis, common
from model_repo_builder import cli
from model_repo_builder.gate import analyze

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
THRESHOLDS = analysis.QualityThresholds(min_cosine=0.99, min_top1_agreement=None, max_abs_error=0.5)
REQUEST = analysis.AnalysisRequest(
    canary_version="1.1.0",
    step=2,
    canary_addresses=("127.65.0.7", "127.65.0.8:8000"),
    stable_addresses=("127.65.0.3",),
    stable_build_key="bk-0123456789abcdef",
    model_name="digits",
    thresholds=THRESHOLDS,
)


def owner(example: str) -> common.Owner:
    doc = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    return common.Owner(
        doc["metadata"]["name"], "ns", "uid-1", types.ModelDeploymentSpec.model_validate(doc["spec"])
    )


def test_golden() -> None:
    text = yaml.safe_dump(
        analysis.render_analysis_job(owner("cpu-digits"), REQUEST), sort_keys=True, width=120
    )
    path = GOLDEN / "analysis-job.yaml"
    if os.environ.get("CONCH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text, f"{path.name} differs: rerun with CONCH_UPDATE_GOLDEN=1 and review"


def test_the_command_is_what_the_builder_parses() -> None:
    o = owner("cpu-digits")
    cmd = analysis.command(o, dataclasses.replace(REQUEST, canary_model_name="digits2"))
    assert cmd[:2] == ["model-repo-builder", "analyze"]
    args = cli._parser().parse_args(cmd[1:])
    assert args.probes == Path(f"{common.repository_root(o.spec)}/bk-0123456789abcdef")
    assert args.canary == ["127.65.0.7:8000", "127.65.0.8:8000"] and args.stable == ["127.65.0.3:8000"]
    assert (args.model_name, args.canary_model_name) == ("digits", "digits2")
    assert (args.min_cosine, args.min_top1_agreement, args.max_abs_error) == (0.99, None, 0.5)
    assert args.summary_file == "/dev/termination-log" and args.deadline_seconds == analysis.DEADLINE_SECONDS
    user_file = analysis.command(o, dataclasses.replace(REQUEST, probe_path="probes/digits.npz"))
    assert cli._parser().parse_args(user_file[1:]).probes == Path("/store/probes/digits.npz")


def test_a_generators_analysis_asks_for_greedy_agreement_with_a_longer_timeout() -> None:
    o = owner("cpu-digits")
    tensor = cli._parser().parse_args(analysis.command(o, REQUEST)[1:])
    assert tensor.min_greedy_agreement is None
    assert "--min-greedy-agreement" not in analysis.command(o, REQUEST)
    assert tensor.timeout_seconds == analysis.REQUEST_TIMEOUT_SECONDS
    greedy = analysis.QualityThresholds(min_greedy_agreement=0.85)
    cmd = analysis.command(o, dataclasses.replace(REQUEST, thresholds=greedy))
    args = cli._parser().parse_args(cmd[1:])
    assert (args.min_cosine, args.min_top1_agreement, args.max_abs_error) == (None, None, None)
    assert args.min_greedy_agreement == 0.85
    assert args.timeout_seconds == analysis.GENERATION_REQUEST_TIMEOUT_SECONDS
    line = {"result": "failed", "passed": False,
            "metrics": {"greedyAgreement": 0.12, "identicalAnswers": 0.0},
            "bounds": {"minCosine": None, "minTop1Agreement": None, "maxAbsError": None,
                       "minGreedyAgreement": 0.85},
            "failing": {"metric": "greedyAgreement", "value": 0.12, "bound": "minGreedyAgreement",
                        "threshold": 0.85},
            "reason": "quality analysis failed: greedyAgreement 0.12 < minGreedyAgreement 0.85"}  # fmt: skip
    result = analysis.observe(_job(("Failed", "")), _pods(json.dumps(line)))
    assert result.state == "Failed" and "greedyAgreement 0.12" in result.reason
    assert [(v.name, v.value, v.bound, v.passed) for v in result.values()] == [
        ("greedyAgreement", 0.12, ">= 0.85", False)
    ]


def test_the_job_is_bounded_read_only_and_restricted() -> None:
    job = analysis.render_analysis_job(owner("cpu-digits"), REQUEST)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == analysis.TTL_SECONDS
    assert spec["activeDeadlineSeconds"] == analysis.DEADLINE_SECONDS + analysis.START_SLACK
    (container,) = pod["containers"]
    assert container["image"] == owner("cpu-digits").spec.build.image
    store = next(m for m in container["volumeMounts"] if m["name"] == common.STORE_VOLUME)
    assert store["readOnly"] is True
    assert next(v for v in pod["volumes"] if v["name"] == common.STORE_VOLUME)["persistentVolumeClaim"][
        "readOnly"
    ]
    assert container["securityContext"] == common.restricted_container_security()
    assert pod["securityContext"] == common.restricted_pod_security()
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    for labels in (job["metadata"]["labels"], spec["template"]["metadata"]["labels"]):
        assert labels[common.LABEL_VERSION] == "1.1.0" and labels[analysis.LABEL_STEP] == "2"
        assert labels[common.LABEL_MD] == "digits" and labels[common.LABEL_COMPONENT] == "quality-analysis"


def test_names_are_deterministic_and_follow_every_input() -> None:
    o = owner("cpu-digits")
    name = analysis.job_name(o, REQUEST)
    assert name == analysis.job_name(o, dataclasses.replace(REQUEST)) and name.startswith("digits-qa-")
    changes: list[dict[str, Any]] = [
        {"step": 3},
        {"canary_version": "1.2.0"},
        {"canary_addresses": ("127.65.0.9",)},
        {"stable_addresses": ("127.65.0.4",)},
        {"attempt": 1},
        {"thresholds": dataclasses.replace(THRESHOLDS, min_cosine=0.98)},
        {"probe_path": "p.npz"},
    ]
    names = {analysis.job_name(o, dataclasses.replace(REQUEST, **c)) for c in changes}
    assert len(names) == len(changes) and name not in names
    long = dataclasses.replace(o, name="m" * 45)
    assert len(analysis.job_name(long, REQUEST)) <= 63


def _job(*conditions: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": "True", "reason": r} for t, r in conditions]}}


def _pods(message: str | None) -> list[dict[str, Any]]:
    term = {"exitCode": 0, "finishedAt": "2026-11-30T08:00:00Z", **({"message": message} if message else {})}
    return [{"status": {"containerStatuses": [{"name": "analysis", "state": {"terminated": term}}]}}]


PASSED = json.dumps({
    "result": "passed", "passed": True, "failing": None, "reason": "canary answers agree with stable",
    "metrics": {"cosine": 0.9999, "top1Agreement": 1.0, "maxAbsError": 0.01, "meanAbsError": 0.001},
    "bounds": {"minCosine": 0.99, "minTop1Agreement": None, "maxAbsError": 0.5},
})  # fmt: skip
FAILED = json.dumps({
    "result": "failed", "passed": False, "reason": "quality analysis failed: cosine 0.98 < minCosine 0.99",
    "failing": {"metric": "cosine", "value": 0.98, "bound": "minCosine", "threshold": 0.99},
    "metrics": {"cosine": 0.98, "top1Agreement": 0.94, "maxAbsError": 4.5},
    "bounds": {"minCosine": 0.99, "minTop1Agreement": None, "maxAbsError": 0.5},
})  # fmt: skip
ERROR = json.dumps(
    {"result": "error", "passed": False, "reason": "cannot analyse: cannot reach canary 127.65.0.7:8000"}
)


@pytest.mark.parametrize(
    ("job", "message", "state", "reason"),
    [
        (None, None, "Pending", "not created"),
        (_job(), None, "Pending", "running"),
        (_job(("Complete", "")), PASSED, "Passed", "agree"),
        (_job(("Failed", "BackoffLimitExceeded")), FAILED, "Failed", "cosine 0.98 < minCosine 0.99"),
        (_job(("Failed", "BackoffLimitExceeded")), ERROR, "Error", "cannot reach canary 127.65.0.7:8000"),
        (_job(("Failed", "DeadlineExceeded")), None, "Error", "DeadlineExceeded"),
        (_job(("Complete", "")), None, "Error", "finished without a result"),
        (_job(("Complete", "")), "Traceback (most recent call last): ...", "Error", "not JSON"),
        (_job(("Complete", "")), FAILED, "Error", "disagrees"),
        (_job(("Failed", "")), PASSED, "Error", "disagrees"),
    ],
)
def test_observe(job: dict[str, Any] | None, message: str | None, state: str, reason: str) -> None:
    result = analysis.observe(job, _pods(message))
    assert result.state == state and reason in result.reason, result


def test_values_for_status() -> None:
    passed = analysis.observe(_job(("Complete", "")), _pods(PASSED))
    assert [(v.name, v.value, v.bound, v.passed) for v in passed.values()] == [
        ("cosine", 0.9999, ">= 0.99", True),
        ("maxAbsError", 0.01, "<= 0.5", True),
    ]  # minTop1Agreement was not enforced
    failed = analysis.observe(_job(("Failed", "")), _pods(FAILED))
    assert failed.failing_metric == "cosine" and [v.passed for v in failed.values()] == [False, False]


def test_the_builders_own_error_line_reads_as_error(tmp_path: Path) -> None:
    """The real `analyze` output (no server needed: the probe set is missing) through the parser."""
    request = analyze.Request(probes=tmp_path, canary=["127.65.0.7:8000"], stable=["127.65.0.3:8000"])
    line = analyze.dumps(analyze.analyse(request))
    result = analysis.parse_result(line, succeeded=False)
    assert result.state == "Error" and f"{tmp_path} has no probes.npz" in result.reason
    assert analysis.EXIT_QUALITY_FAILED == analyze.EXIT_QUALITY_FAILED
    assert analysis.EXIT_CANNOT_ANALYSE == analyze.EXIT_CANNOT_ANALYSE
