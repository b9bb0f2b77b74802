"""Bad canary specs are rejected by the apiserver itself (schema + CEL), naming the field; the operator's
models refuse the same specs (its twin rules), and the valid canary specs pass both.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic
import pytest
import specgen

from conch.api import types

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]

STEPS = [{"weight": 25, "pauseSeconds": 10}, {"weight": 50}]
BASE: dict[str, Any] = {
    "apiVersion": "serving.conch.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "canary"},
    "spec": {
        "version": "v1",
        "model": {"name": "m", "source": {"path": "models/m.pt2"}},
        "serving": {"gpus": 1, "maxBatchSize": 8},
        "replicas": 4,
        "rollout": {
            "strategy": "canary",
            "canary": {"steps": STEPS, "analysis": {"minSuccessRate": 0.99, "intervalSeconds": 10}},
        },
        "monitoring": {"serviceMonitor": {"enabled": True}},
        "storage": {"claimName": "store"},
    },
}
R = "spec.rollout"
C = "spec.rollout.canary"
A = "spec.rollout.canary.analysis"

# (id, {path: value (None deletes)}, text the error must contain)
# ruff: noqa: E501
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("canary-without-steps", {C: None}, "spec.rollout.canary: Invalid value"),
    ("steps-without-canary-strategy", {f"{R}.strategy": "rolling"}, "spec.rollout.strategy: Invalid value"),
    ("steps-default-strategy", {f"{R}.strategy": None}, "spec.rollout.strategy: Invalid value"),
    ("bad-strategy", {f"{R}.strategy": "bluegreen"}, "spec.rollout.strategy"),
    ("no-steps", {f"{C}.steps": []}, "spec.rollout.canary.steps"),
    ("zero-weight", {f"{C}.steps": [{"weight": 0}]}, "spec.rollout.canary.steps[0].weight"),
    ("over-100", {f"{C}.steps": [{"weight": 101}]}, "spec.rollout.canary.steps[0].weight"),
    ("decreasing", {f"{C}.steps": [{"weight": 50}, {"weight": 20}]}, "spec.rollout.canary.steps: Invalid value"),
    ("negative-pause", {f"{C}.steps": [{"weight": 10, "pauseSeconds": -1}]}, "spec.rollout.canary.steps[0].pauseSeconds"),
    ("no-check", {A: {"intervalSeconds": 10}}, "canary.analysis needs a check"),
    ("success-over-one", {f"{A}.minSuccessRate": 1.5}, "spec.rollout.canary.analysis.minSuccessRate"),
    ("zero-latency", {f"{A}.maxLatencyMs": 0}, "spec.rollout.canary.analysis.maxLatencyMs"),
    ("zero-interval", {f"{A}.intervalSeconds": 0}, "spec.rollout.canary.analysis.intervalSeconds"),
    ("ftp-prometheus", {f"{A}.prometheusUrl": "ftp://prom:9090"}, "spec.rollout.canary.analysis.prometheusUrl"),
    ("negative-failure-limit", {f"{A}.failureLimit": -1}, "spec.rollout.canary.analysis.failureLimit"),
    ("query-without-bound", {f"{A}.queries": [{"name": "q", "query": "up"}]}, "a query check needs min and/or max"),
    ("query-min-over-max", {f"{A}.queries": [{"name": "q", "query": "up", "min": 2, "max": 1}]},
     "spec.rollout.canary.analysis.queries[0].min"),
    ("query-bad-name", {f"{A}.queries": [{"name": "9 q", "query": "up", "max": 1}]},
     "spec.rollout.canary.analysis.queries[0].name"),
    ("quality-without-threshold", {f"{A}.quality": {"probePath": "probes/p.npz"}}, "quality needs a threshold"),
    ("quality-dotdot", {f"{A}.quality": {"minCosine": 0.9, "probePath": "../x"}},
     "spec.rollout.canary.analysis.quality.probePath"),
    ("cosine-over-one", {f"{A}.quality": {"minCosine": 1.5}}, "spec.rollout.canary.analysis.quality.minCosine"),
    ("analysis-without-servicemonitor", {"spec.monitoring": None}, "spec.monitoring.serviceMonitor.enabled"),
]  # fmt: skip

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("base", {}),
    ("steps-only", {A: None, "spec.monitoring": None}),
    ("quality-only-without-servicemonitor", {A: {"quality": {"minCosine": 0.99}}, "spec.monitoring": None}),
    ("full", {A: {"prometheusUrl": "http://127.0.0.1:9090", "intervalSeconds": 5, "minSuccessRate": 0.95,
                  "maxLatencyMs": 50, "maxLatencyRatio": 1.5, "minRequests": 10, "failureLimit": 2,
                  "queries": [{"name": "errors", "query": "sum(up{namespace='$namespace'})", "min": 1}],
                  "quality": {"minCosine": 0.99, "minTop1Agreement": 0.98, "maxAbsError": 0.01}},
              f"{C}.steps": [{"weight": 10}, {"weight": 10, "pauseSeconds": 60}, {"weight": 100}]}),
    ("autoscaled", {"spec.replicas": None, "spec.autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 50}}),
]  # fmt: skip


def mutate(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = name
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return obj


def refused_by_operator(obj: dict[str, Any]) -> bool:
    try:
        types.ModelDeploymentSpec.model_validate(obj["spec"])
    except pydantic.ValidationError:
        return True
    return False


@pytest.fixture
def crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.wait_established("modeldeployments.serving.conch.dev")


def test_canary_specs_are_checked_by_the_apiserver_and_the_operator(
    cluster: Any, namespace: str, crd: None
) -> None:
    bad = [mutate(f"bad-{name}", changes) for name, changes, _ in CASES]
    good = [mutate(f"ok-{name}", changes) for name, changes in ACCEPTED]
    errors = specgen.dry_run_all(cluster.kubectl, namespace, bad + good, workers=2)
    for (name, _, text), obj in zip(CASES, bad, strict=True):
        got = errors[obj["metadata"]["name"]]
        assert got, f"{name}: admitted"
        assert text in got, f"{name}: {text!r} not in {got[:600]}"
        assert refused_by_operator(obj), f"{name}: the apiserver refuses it but the operator would not"
    for (name, _), obj in zip(ACCEPTED, good, strict=True):
        assert errors[obj["metadata"]["name"]] == "", f"{name}: {errors[obj['metadata']['name']][:600]}"
        assert not refused_by_operator(obj), name
