"""The operator itself, run with nothing but the chart's RBAC: it authenticates as the release's
ServiceAccount (a token kubeconfig), builds and serves a ModelDeployment, and never hits a 403.

This is what the can-i lists in test_chart.py cannot show: that the ClusterRole really covers every
request kopf and the controller make (watches, namespace observation, server-side apply, status,
events, optional children). The test's name keeps its namespace out of the operator suite's glob
(t-test-op-*), so that suite's operator never reconciles this ModelDeployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, wait_for

from . import helmrun

pytestmark = pytest.mark.cluster

MD = "rbac"


def _summary(key: str) -> str:
    return json.dumps(
        {
            "ok": True, "buildKey": key, "repository": f"/store/repositories/{key}", "modelName": MD,
            "cached": False, "builderVersion": "test", "sourceDigest": "sha256:00",
            "sizeBefore": 1000, "sizeAfter": 400, "compressionRatio": 2.5,
            "gate": {"passed": True, "cosine": 0.999}, "error": None,
        },
        separators=(",", ":"),
    )  # fmt: skip


@pytest.fixture(params=["cluster-wide", "namespaced-ha"])
def operator_as_sa(
    cluster: Cluster, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """CRD + a release (replicas 0) + the operator run locally as the release's ServiceAccount:
    cluster-wide, or namespaced with leader election (a Role per namespace, a Lease it must renew)."""
    namespaced = request.param == "namespaced-ha"
    with helmrun.operator_as_release(cluster, namespace, tmp_path, namespaced=namespaced) as log_path:
        helmrun.model_store(cluster, namespace, Path(f"/tmp/conch-store/{namespace}"))
        yield log_path


def test_chart_rbac_suffices_for_the_operator_to_build_and_serve(
    cluster: Cluster, namespace: str, operator_as_sa: Path, request: pytest.FixtureRequest
) -> None:
    ns = ("-n", namespace)

    def get(kind: str, name: str) -> dict[str, Any] | None:
        proc = cluster.kubectl(*ns, "get", kind, name, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def items(kind: str, selector: str) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = json.loads(
            cluster.kubectl(*ns, "get", kind, "-l", selector, "-o", "json").stdout
        )["items"]
        return got

    md = {
        "apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {
            "version": "v1", "model": {"name": MD, "source": {"path": f"models/{MD}-v1.pt2"}},
            "serving": {"gpus": 0, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
            "replicas": 2, "rollout": {"progressDeadlineSeconds": 30},
            "storage": {"claimName": "model-store"},
            "monitoring": {"serviceMonitor": {"enabled": True}},
        },
    }  # fmt: skip
    cluster.kubectl(*ns, "apply", "--server-side", "-f", "-", input=json.dumps(md))
    job = wait_for("build Job", lambda: items("jobs", f"serving.conch.dev/modeldeployment={MD}"), 30)[0]
    job_name = job["metadata"]["name"]

    def running_pod() -> str | None:
        pods = items("pods", f"batch.kubernetes.io/job-name={job_name}")
        return next((p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"), None)

    pod = wait_for("running build pod", running_pod, 60)
    cluster.complete_pod(namespace, pod, 0, _summary("bk-rbac-v1"))

    def serving() -> bool:
        status: dict[str, Any] = (get("md", MD) or {}).get("status", {})
        return bool(status.get("phase") == "Serving" and status.get("currentVersion") == "v1")

    wait_for("ModelDeployment serving v1", serving, 90)
    for kind in ("deployment", "service", "poddisruptionbudget", "servicemonitor"):
        assert get(kind, MD) is not None, kind
    admin = get("secret", f"{MD}-triton-admin")
    assert admin is not None and admin["data"]["admin-key"]
    events = json.loads(cluster.kubectl(*ns, "get", "events", "-o", "json").stdout)["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == MD}
    assert {"BuildStarted", "BuildSucceeded"} <= reasons, reasons
    log = operator_as_sa.read_text(errors="replace")
    assert "HTTP 403" not in log and "forbidden" not in log.lower(), log[-4000:]
    assert ("acquired leadership" in log) == request.node.callspec.id.endswith("-ha"), log[-4000:]
    assert "Serving" in json.dumps(get("md", MD))
