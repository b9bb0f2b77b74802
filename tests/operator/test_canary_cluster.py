"""Canary rollouts against the real control plane (kwok pods turn Ready by themselves): steps move pods
from the stable Deployment to the canary's within the surge budget and promote; an analysis that
cannot reach Prometheus pauses the canary with the URL in the condition and never promotes.
Analysis against a real Prometheus and real Triton is in test_canary_serving.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opharness import (  # noqa: F401  (fixtures)
    Kube,
    free_port,
    kube_fixture,
    md_object,
    operator_fixture,
    serving,
    wait_for,
)

pytestmark = pytest.mark.cluster
TRITON = "serving.conch.dev/modeldeployment={},app.kubernetes.io/component=triton"


def pods_by_version(k: Kube, name: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in k.items("pods", TRITON.format(name)):
        version = p["metadata"]["labels"]["serving.conch.dev/version"]
        out[version] = out.get(version, 0) + 1
    return out


def bring_up(k: Kube, name: str, **spec: Any) -> None:
    k.apply(md_object(name, **spec))
    k.finish_build(name, "v1")
    wait_for("v1 serving", lambda: serving(k, name, "v1"), 90)


def test_op_canary_steps_then_promotes_within_the_budget(kube: Kube) -> None:
    k = kube
    rollout = {
        "strategy": "canary", "maxSurge": 1, "progressDeadlineSeconds": 60,
        "canary": {"steps": [{"weight": 25, "pauseSeconds": 3}, {"weight": 50, "pauseSeconds": 3}]},
    }  # fmt: skip
    bring_up(k, "cn", replicas=4, rollout=rollout)
    wait_for("4 v1 pods", lambda: pods_by_version(k, "cn") == {"v1": 4}, 60)
    k.apply(md_object("cn", version="v2", replicas=4, rollout=rollout))
    k.finish_build("cn", "v2")
    seen: set[tuple[int, int]] = set()
    most = [0]

    def promoted() -> bool:
        st = k.status("cn")
        canary = st.get("canary", {})
        if canary.get("phase") == "Progressing" and canary.get("stepStartedAt"):
            seen.add((canary["step"], canary["weight"]))
            assert st["currentVersion"] == "v1" and st["phase"] == "RollingOut", st
        most[0] = max(most[0], sum(pods_by_version(k, "cn").values()))
        return serving(k, "cn", "v2") and canary.get("phase") == "Promoted"

    started = time.monotonic()
    wait_for("canary promoted", promoted, 180, every=0.5)
    took = time.monotonic() - started
    assert seen == {(0, 25), (1, 50)}, seen
    assert most[0] <= 5, f"{most[0]} pods at once: more than replicas + maxSurge"
    wait_for("only v2 pods, the canary Deployment at zero", lambda: pods_by_version(k, "cn") == {"v2": 4}, 60)
    assert k.get("deployment", "cn-canary")["spec"]["replicas"] == 0  # type: ignore[index]
    reasons = [e["reason"] for e in k.items("events") if e["involvedObject"]["name"] == "cn"]
    assert {"CanaryStarted", "CanaryStep", "CanaryPromoted"} <= set(reasons), reasons
    assert reasons.count("CanaryStep") == 2
    assert took >= 6, "two steps of 3 s pause each"
    assert k.condition("cn", "Degraded")["status"] == "False"


def test_op_canary_without_prometheus_pauses_and_never_promotes(kube: Kube) -> None:
    k = kube
    closed = f"http://127.0.0.1:{free_port()}"
    rollout = {
        "strategy": "canary",
        "canary": {"steps": [{"weight": 50}],
                   "analysis": {"prometheusUrl": closed, "intervalSeconds": 2, "minSuccessRate": 0.99}},
    }  # fmt: skip
    spec = {"replicas": 2, "rollout": rollout, "monitoring": {"serviceMonitor": {"enabled": True}}}
    bring_up(k, "np", **spec)
    k.apply(md_object("np", version="v2", **spec))
    k.finish_build("np", "v2")

    def paused() -> dict[str, Any] | None:
        cond = k.condition("np", "Progressing")
        return cond if cond.get("reason") == "AnalysisUnavailable" else None

    cond = wait_for("paused on analysis", paused, 90)
    assert cond["status"] == "False" and closed in cond["message"], cond
    assert "waiting for a passing analysis" in cond["message"]
    first = k.status("np")["canary"]["analyzedAt"]
    # analyses keep failing to reach Prometheus: a later one is recorded, and v2 is never promoted
    wait_for("another analysis", lambda: k.status("np")["canary"]["analyzedAt"] != first, 30)
    st = k.status("np")
    assert st["currentVersion"] == "v1" and st["canary"]["phase"] == "Paused", st["canary"]
    assert st["canary"]["analysisResult"] == "Unavailable" and st["canary"]["canaryReplicas"] == 1
    assert pods_by_version(k, "np") == {"v1": 1, "v2": 1}
    # spec.version back to v1: the canary is abandoned and scaled away, v1 serves on 2 pods
    k.apply(md_object("np", version="v1", **spec))
    wait_for("canary scaled away", lambda: pods_by_version(k, "np") == {"v1": 2}, 60)
    assert k.get("deployment", "np-canary")["spec"]["replicas"] == 0  # type: ignore[index]
    assert k.status("np")["currentVersion"] == "v1"


def quality_verdict(passed: bool, cosine: float) -> str:
    """`model-repo-builder analyze`'s last line, as its termination message."""
    failing = (
        None if passed else {"metric": "cosine", "value": cosine, "bound": "minCosine", "threshold": 0.99}
    )
    return json.dumps({
        "result": "passed" if passed else "failed", "passed": passed,
        "metrics": {"cosine": cosine, "top1Agreement": 1.0 if passed else 0.6, "maxAbsError": 0.0},
        "bounds": {"minCosine": 0.99, "minTop1Agreement": None, "maxAbsError": None},
        "failing": failing, "skipped": [],
        "reason": f"cosine {cosine:g} {'>=' if passed else '<'} minCosine 0.99",
    })  # fmt: skip


def play_quality_job(
    k: Kube, name: str, version: str, stable_key: str, *, passed: bool, cosine: float
) -> None:
    """Check the step's analysis Job's command, then finish its pod with the analyser's verdict."""

    def job() -> dict[str, Any] | None:
        jobs = k.items(
            "jobs", f"serving.conch.dev/modeldeployment={name},app.kubernetes.io/component=quality-analysis"
        )
        mine = [j for j in jobs if j["metadata"]["labels"]["serving.conch.dev/version"] == version]
        return next((j for j in mine if not j.get("status", {}).get("conditions")), None)  # not finished

    found = wait_for(f"quality job of {version}", job, 60)
    cmd = found["spec"]["template"]["spec"]["containers"][0]["command"]
    canary_ips = {
        p["status"]["podIP"] for p in k.items("pods", TRITON.format(name))
        if p["metadata"]["labels"].get("serving.conch.dev/track") == "canary"
    }  # fmt: skip
    assert cmd[:2] == ["model-repo-builder", "analyze"] and cmd[cmd.index("--probes") + 1].endswith(
        stable_key
    )
    assert {cmd[i + 1] for i, a in enumerate(cmd) if a == "--canary"} == {f"{ip}:8000" for ip in canary_ips}
    assert cmd[cmd.index("--min-cosine") + 1] == "0.99"
    job_name = found["metadata"]["name"]

    def running() -> str | None:
        pods = k.items("pods", f"batch.kubernetes.io/job-name={job_name}")
        return next((p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"), None)

    k.cluster.complete_pod(k.ns, wait_for("analysis pod running", running, 60), 0 if passed else 4,
                           quality_verdict(passed, cosine))  # fmt: skip


def test_op_canary_quality_analysis_aborts_then_a_fresh_version_promotes(kube: Kube) -> None:
    k = kube
    rollout = {
        "strategy": "canary",
        "canary": {"steps": [{"weight": 50}], "analysis": {"quality": {"minCosine": 0.99}}},
    }
    bring_up(k, "qa", replicas=2, rollout=rollout)
    k.apply(md_object("qa", version="v2", replicas=2, rollout=rollout))
    k.finish_build("qa", "v2")
    play_quality_job(k, "qa", "v2", "bk-qa-v1", passed=False, cosine=0.42)
    wait_for("aborted", lambda: k.condition("qa", "Degraded").get("reason") == "AnalysisFailed", 60)
    degraded = k.condition("qa", "Degraded")["message"]
    assert "canary v2 aborted at step 1/1" in degraded and "cosine 0.42 < minCosine 0.99" in degraded, (
        degraded
    )
    assert degraded.endswith("serving v1")
    st = k.status("qa")
    assert st["currentVersion"] == "v1" and st["failedVersion"] == "v2" and st["canary"]["phase"] == "Aborted"
    cosine = next(v for v in st["canary"]["analysis"] if v["name"] == "cosine")
    assert cosine == {"name": "cosine", "value": 0.42, "bound": ">= 0.99", "passed": False}
    wait_for("v1 on both pods again", lambda: pods_by_version(k, "qa") == {"v1": 2}, 60)
    k.apply(md_object("qa", version="v3", replicas=2, rollout=rollout))
    k.finish_build("qa", "v3")
    play_quality_job(k, "qa", "v3", "bk-qa-v1", passed=True, cosine=0.9999)
    wait_for("v3 promoted", lambda: serving(k, "qa", "v3"), 90)
    assert k.condition("qa", "Degraded")["status"] == "False" and "failedVersion" not in k.status("qa")
    # back to v2 (aborted before): a fresh canary with a new analysis Job, not the old verdict
    k.apply(md_object("qa", version="v2", replicas=2, rollout=rollout))
    play_quality_job(k, "qa", "v2", "bk-qa-v3", passed=True, cosine=0.9999)
    wait_for("v2 promoted this time", lambda: serving(k, "qa", "v2"), 90)


def test_op_autoscaled_canary_leaves_the_stable_count_to_the_hpa(kube: Kube) -> None:
    k = kube
    spec = {
        "replicas": None,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
        "rollout": {"strategy": "canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 2}]}},
    }
    bring_up(k, "hc", **spec)
    k.apply(md_object("hc", version="v2", **spec))
    k.finish_build("hc", "v2")
    canary = wait_for(
        "the canary's pod", lambda: pods_by_version(k, "hc").get("v2") == 1 and k.status("hc"), 60
    )
    assert canary["canary"]["canaryReplicas"] == 1 and canary["currentVersion"] == "v1"
    wait_for(
        "v2 promoted", lambda: serving(k, "hc", "v2") and k.status("hc")["canary"]["phase"] == "Promoted", 90
    )
    stable = k.get("deployment", "hc")
    assert stable is not None
    ours = [m for m in stable["metadata"]["managedFields"] if m["manager"] == "conch-operator"]
    assert ours and "f:replicas" not in json.dumps(ours), "the HPA keeps owning the stable's count"
    wait_for("only v2 pods", lambda: pods_by_version(k, "hc") == {"v2": 1}, 60)
