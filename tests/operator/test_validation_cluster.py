"""Invalid ModelDeployments are rejected by the apiserver itself (schema + CEL), naming the field.

Cases are generated from one valid spec by one mutation each; a server-side dry run is enough
(no operator needed). The valid base must be accepted, so a rule that rejects everything fails too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

BASE: dict[str, Any] = {
    "apiVersion": "serving.conch.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "valid"},
    "spec": {
        "version": "v1",
        "model": {"name": "m", "source": {"path": "models/m.pt2"}},
        "serving": {"gpus": 1, "maxBatchSize": 8},
        "replicas": 1,
        "storage": {"claimName": "store"},
    },
}

# (id, path to set (None value deletes), value, text the error must contain)
# ruff: noqa: E501
CASES: list[tuple[str, str, Any, str]] = [
    ("replicas-and-autoscaling", "spec.autoscaling", {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
     "spec.replicas"),
    ("min-over-max", "spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2, "queueTime": {"averageMicroseconds": 9}},
     "spec.autoscaling.minReplicas"),
    ("no-target", "spec.autoscaling", {"maxReplicas": 2}, "targetCPUUtilizationPercentage"),
    ("url-without-sha", "spec.model.source", {"url": "https://x.example/m.pt2"}, "spec.model.source.sha256"),
    ("path-and-url", "spec.model.source", {"path": "a", "url": "https://x/m", "sha256": "0" * 64}, "exactly one"),
    ("no-source", "spec.model.source", {}, "exactly one"),
    ("http-url", "spec.model.source", {"url": "http://x/m", "sha256": "0" * 64}, "spec.model.source.url"),
    ("dotdot", "spec.model.source.path", "../etc/passwd", "spec.model.source.path"),
    ("absolute-path", "spec.model.source.path", "/etc/passwd", "spec.model.source.path"),
    ("bad-sha", "spec.model.source", {"url": "https://x/m", "sha256": "xyz"}, "spec.model.source.sha256"),
    ("negative-gpus", "spec.serving.gpus", -1, "spec.serving.gpus"),
    ("too-many-gpus", "spec.serving.gpus", 17, "spec.serving.gpus"),
    ("bad-version", "spec.version", "v1/../x", "spec.version"),
    ("long-version", "spec.version", "v" * 64, "spec.version"),
    ("no-version", "spec.version", None, "spec.version"),
    ("no-storage", "spec.storage", None, "spec.storage"),
    ("zero-surge", "spec.rollout", {"maxSurge": 0}, "spec.rollout.maxSurge"),
    ("short-deadline", "spec.rollout", {"progressDeadlineSeconds": 1}, "spec.rollout.progressDeadlineSeconds"),
    ("bad-interval", "spec.monitoring", {"serviceMonitor": {"interval": "soon"}},
     "spec.monitoring.serviceMonitor.interval"),
    ("batching-without-batch", "spec.serving.maxBatchSize", 0, "spec.serving.maxBatchSize"),
    ("preferred-over-max", "spec.serving.dynamicBatching", {"preferredBatchSizes": [4, 64]},
     "spec.serving.dynamicBatching.preferredBatchSizes"),
    ("pytorch-onnx", "spec.serving.backend", "pytorch", "spec.serving.backend"),
    ("bad-quantize", "spec.compression", {"quantize": {"mode": "int4"}}, "spec.compression.quantize.mode"),
    ("smooth-without-int8-dynamic", "spec.compression", {"quantize": {"mode": "fp16", "smoothAlpha": 0.7}},
     "spec.compression.quantize.smoothAlpha"),
    ("smooth-over-one", "spec.compression", {"quantize": {"mode": "int8-dynamic", "smoothAlpha": 1.5}},
     "spec.compression.quantize.smoothAlpha"),
    ("prune-too-much", "spec.compression", {"prune": {"method": "channel", "amount": 0.99}},
     "spec.compression.prune.amount"),
    ("negative-replicas", "spec.replicas", -1, "spec.replicas"),
    ("history-zero", "spec.revisionHistoryLimit", 0, "spec.revisionHistoryLimit"),
    ("long-name", "metadata.name", "x" * 46, "45 characters"),
    ("bad-claim", "spec.storage", {"claimName": "Bad_Name"}, "spec.storage.claimName"),
]  # fmt: skip


def mutate(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return obj


def dry_run(cluster: Any, namespace: str, obj: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False
    )


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    from pathlib import Path

    crds = Path(__file__).resolve().parents[2] / "crds"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.serving.conch.dev")


def test_valid_base_is_accepted(cluster: Any, namespace: str, crd: None) -> None:
    proc = dry_run(cluster, namespace, BASE)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_spec_rejected(cluster: Any, namespace: str, crd: None, case: tuple[str, Any, str]) -> None:
    path, value, needle = case
    proc = dry_run(cluster, namespace, mutate(path, value))
    assert proc.returncode != 0, f"accepted: {path}={value!r}"
    assert needle in proc.stderr, proc.stderr
