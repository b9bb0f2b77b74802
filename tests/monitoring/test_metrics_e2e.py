"""Operations on real metrics (issue #11 items 1, 4, 5): a real Prometheus (via the Prometheus Operator)
scrapes a real tritonserver on the node agent and the operator; prometheus-adapter serves Triton's
queue time to a real HPA.

- The HPA scales the served model 1 -> 2 under a bounded load on the first pod's own address (the
  node agent runs the second pod), and back to 1 when the load stops (10 s scale-down window).
- The operator's own metrics arrive through the chart's ServiceMonitor (job <release>-metrics).
- After real traffic, a real failed build, a real rollback and a real reconcile error, every PromQL
  expression of the chart's PrometheusRule and Grafana dashboard returns series, and the build-failed
  and rollback alerts fire in Prometheus' own rule evaluation.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for

from monitoring.scenario import (
    AUTOSCALING,
    EXPORT,
    MD,
    QUEUE_TARGET_US,
    TRITON_PODS,
    Scenario,
    modeldeployment,
    scenario,
)

pytestmark = pytest.mark.e2e
__all__ = ["scenario"]  # the module fixture
CUSTOM_METRIC = "triton_queue_time_us"


def hpa_status(sc: Scenario) -> dict[str, Any]:
    status: dict[str, Any] = sc.get("hpa", MD).get("status", {})
    return status


def custom_metric(sc: Scenario) -> list[dict[str, Any]]:
    """The queue-time values the custom metrics API serves for the namespace's pods."""
    path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{sc.ns}/pods/*/{CUSTOM_METRIC}"
    proc = sc.cluster.kubectl("get", "--raw", path, check=False)
    items: list[dict[str, Any]] = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
    return items


def test_hpa_scales_on_triton_queue_time_and_back(scenario: Scenario, monitoring: Any) -> None:
    sc = scenario
    assert monitoring.custom_metrics, (
        "custom.metrics.k8s.io is not served: the cluster's apiserver runs without the front-proxy flags "
        "of testenv/cluster.sh (restart it: testenv/cluster.sh down && up)"
    )
    ip = wait_for("a Ready v1 pod", sc.ready_ips, 60)[0]
    version = {"serving_conch_dev_version": "v1", "namespace": sc.ns}
    series = monitoring.wait_for_series(
        f'nv_inference_queue_duration_us{{namespace="{sc.ns}",serving_conch_dev_version="v1"}}', 30
    )
    assert series[0]["metric"].items() >= {**version, "pod": series[0]["metric"]["pod"]}.items()
    # (the window may still hold Triton's model warm-up: idle means 0 once it has passed)
    idle = wait_for(
        "an idle queue time (0) on the custom metrics API",
        lambda: (items := custom_metric(sc)) and [i["value"] for i in items] == ["0"] and items,
        90,
    )
    assert idle[0]["describedObject"]["name"] in {s["metric"]["pod"] for s in series}

    t0 = time.monotonic()
    stop, join = sc.load_in_background(ip, seconds=150, concurrency=16)
    try:
        scaled = wait_for(
            "the HPA to want 2 pods", lambda: hpa_status(sc).get("desiredReplicas", 0) >= 2, 120
        )
        decided = time.monotonic() - t0
        observed = hpa_status(sc)["currentMetrics"][0]["pods"]["current"]["averageValue"]
        # the node agent runs the second pod: a second real tritonserver becomes Ready
        wait_for("2 Ready Triton pods", lambda: len(sc.ready_ips(TRITON_PODS)) >= 2, 120, every=1)
        ready = time.monotonic() - t0
    finally:
        stop.set()
        result = join()
    assert scaled and result.requests > 0 and result.errors == 0, result.summary()
    t1 = time.monotonic()
    wait_for(
        "the HPA back to 1 pod",
        lambda: (
            hpa_status(sc).get("desiredReplicas") == 1 and sc.get("deployment", MD)["spec"]["replicas"] == 1
        ),
        180,
        every=1,
    )
    timings = {
        "loadStartToScaleUpDecisionSeconds": round(decided, 1), "loadStartToTwoReadySeconds": round(ready, 1),
        "loadStopToOneReplicaSeconds": round(time.monotonic() - t1, 1), "queueTimeSeenByHpa": observed,
        "queueTimeTargetMicroseconds": QUEUE_TARGET_US, "load": result.summary(),
        "scrapeInterval": "2s", "adapterRateWindow": "10s", "scaleDownStabilizationSeconds": 10,
    }  # fmt: skip
    if os.environ.get("CONCH_HPA_TIMINGS"):  # bench/bench_batching.py reads what this run measured
        Path(os.environ["CONCH_HPA_TIMINGS"]).write_text(json.dumps(timings))
    print(
        f"hpa seconds: load start -> scale-up decision {decided:.1f} (queue time seen {observed}, target "
        f"{QUEUE_TARGET_US}), -> 2 Ready {ready:.1f}; load stop -> back to 1 {time.monotonic() - t1:.1f}; "
        f"load {result.summary()}"
    )


def test_operator_metrics_are_scraped_through_the_charts_servicemonitor(
    scenario: Scenario, monitoring: Any
) -> None:
    sc, job = scenario, scenario.release.job
    monitor = next(d for d in yaml.safe_load_all(sc.release.manifest) if d and d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    up = monitoring.wait_for_series(f'up{{job="{job}",namespace="{sc.ns}"}} == 1', 60)
    assert up[0]["metric"]["service"] == job
    # the same counters the operator serves on its own /metrics (builds started and succeeded for v1)
    for outcome in ("started", "succeeded"):
        own = sc.release.metric(f'conch_builds_total{{outcome="{outcome}"}}')
        scraped = monitoring.wait_for_series(
            f'conch_builds_total{{job="{job}",outcome="{outcome}"}} == {own}', 30
        )
        assert float(scraped[0]["value"][1]) == own >= 1
    assert monitoring.wait_for_series(f'conch_spec_to_serving_seconds_count{{job="{job}"}} >= 1', 30)


def rule_expressions(manifest: str) -> dict[str, str]:
    rules = next(d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "PrometheusRule")
    return {r["alert"]: r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]}


def dashboard_expressions(manifest: str) -> dict[str, str]:
    cm = next(
        d
        for d in yaml.safe_load_all(manifest)
        if d and d["kind"] == "ConfigMap" and "conch.json" in d["data"]
    )
    board = json.loads(cm["data"]["conch.json"])
    exprs = {f"{p['title']} [{t['refId']}]": t["expr"] for p in board["panels"] for t in p["targets"]}
    for var in board["templating"]["list"]:
        if var["type"] == "query":  # label_values(metric, label): the metric's series carry the label
            metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)", var["definition"]).groups()  # type: ignore[union-attr]
            exprs[f"variable {var['name']}"] = f'{metric}{{{label}!=""}}'
    return exprs


def signal(expr: str) -> str:
    """What an alert compares: `X > 0.1` -> X; `absent(X)` -> X (it must exist while all is well)."""
    expr = re.sub(r"\s*(>|<|>=|<=|==)\s*[0-9.e+-]+\s*$", "", expr.strip())
    absent = re.fullmatch(r"absent\((.*)\)", expr, re.S)
    return absent.group(1) if absent else expr


def failures(sc: Scenario) -> None:
    """Real events for every series the rules watch: a rollback (a version whose Triton cannot start:
    it asks for the node's GPU that is not there), a failed build (a gate the pruned model cannot
    pass), and a reconcile error (a ResourceQuota refuses the next build Job)."""
    v2 = modeldeployment(MD, "v2", sc.agent, autoscaling=AUTOSCALING)
    v2["spec"]["serving"]["gpus"] = 1
    sc.apply(v2)

    bad = {"prune": {"method": "magnitude", "amount": 0.9}, "quantize": {"mode": "fp16"}, "export": EXPORT,
           "gate": {"minTop1Agreement": 0.999, "minCosine": 0.9999}}  # fmt: skip
    sc.apply(modeldeployment("digits-bad", "v1", sc.agent, compression=bad, replicas=1))

    def failed_build() -> bool:
        conds = sc.get("md", "digits-bad").get("status", {}).get("conditions", [])
        return any(c["type"] == "Built" and c.get("reason") == "BuildFailed" for c in conds)

    wait_for("digits-bad's build to fail its gate", failed_build, 240, every=1)
    jobs = len(json.loads(sc.kubectl("get", "jobs", "-o", "json").stdout)["items"])
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-more-jobs"},
             "spec": {"hard": {"count/jobs.batch": str(jobs)}}}  # fmt: skip
    sc.apply(quota)
    blocked = modeldeployment("digits-blocked", "v1", sc.agent, replicas=1)
    blocked["spec"]["model"]["source"]["path"] = "models/other.pt2"  # a new build: the quota refuses its Job
    sc.apply(blocked)

    def rolled_back() -> bool:
        status = sc.get("md", MD).get("status", {})
        return bool(status.get("failedVersion") == "v2" and status.get("currentVersion") == "v1")

    try:
        wait_for("v2 rolled back to v1", rolled_back, 240, every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{sc.logs()}") from None
    wait_for("a reconcile error", lambda: (sc.release.metric("conch_reconcile_errors_total") or 0) > 0, 60)


def test_every_rule_and_dashboard_expression_returns_series_and_alerts_fire(
    scenario: Scenario, monitoring: Any
) -> None:
    sc = scenario
    ip = wait_for("a Ready pod", sc.ready_ips, 60)[0]
    burst = sc.traffic(ip)
    assert burst.requests > 0 and burst.errors == 0, burst.summary()
    failures(sc)
    rules, board = rule_expressions(sc.release.manifest), dashboard_expressions(sc.release.manifest)
    assert {"ConchBuildFailed", "ConchRollbackHappened", "ConchOperatorDown"} <= rules.keys()
    queries = {f"alert {name}": signal(expr) for name, expr in rules.items()}
    queries |= {
        name: expr.replace("$__rate_interval", "2m").replace("$namespace", sc.ns)
        for name, expr in board.items()
    }
    # a generative model's series (conch_llm_*) need an LLM served in this scenario, which it does not:
    # their rules run in promtool (test_alert_rules_unit) and the series on a real Triton
    # (tests/serving/test_openai_gateway.py)
    queries = {name: promql for name, promql in queries.items() if "conch_llm_" not in promql}
    empty = {}
    for name, promql in queries.items():
        try:
            monitoring.wait_for_series(promql, 60)
        except AssertionError as exc:
            empty[name] = f"{promql}: {exc}"
    assert not empty, "expressions without series:\n" + "\n".join(empty.values())

    def firing() -> set[str]:  # alerts of this namespace's PrometheusRule (the chart's) in state firing
        groups = [g for g in monitoring.rule_groups() if f"/{sc.ns}-" in g["file"]]
        return {r["name"] for g in groups for r in g["rules"] if r.get("state") == "firing"}

    fired = wait_for(
        "ConchBuildFailed and ConchRollbackHappened firing",
        lambda: firing() if {"ConchBuildFailed", "ConchRollbackHappened"} <= firing() else None,
        90,
    )
    assert "ConchOperatorDown" not in fired
