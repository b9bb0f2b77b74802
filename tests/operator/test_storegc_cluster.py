"""The model store is collected for real: the operator (store GC grace 0) runs `model-repo-builder gc`
as a Job on the node agent against the store's hostPath, after a version's repository lost its last
reference (history pruned to revisionHistoryLimit 1 and its pods gone).

Builds are real and small (a two-conv CNN, ONNX in, python backend) on the node agent; serving pods
run on a kwok node (the store janitor only needs their arguments). Planted beside the builds: an old
unreferenced build-key folder (collected) and a folder that is not a build key (never touched).
About a minute with a running control plane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SESSION, NodeAgent, wait_for
from opharness import ROOT, Kube, Operator, md_object
from test_distill_cluster import small_cnn

pytestmark = pytest.mark.cluster
MD = "gc"
EXPORT = {"format": "onnx", "backend": "python"}
RECIPES = {
    "v1": {"quantize": {"mode": "none"}, "export": EXPORT, "gate": {"minCosine": 0.99}},
    "v2": {"quantize": {"mode": "fp16"}, "export": EXPORT, "gate": {"minCosine": 0.99}},
}
ORPHAN = "e" * 64


class GcOperator(Operator):
    """The operator watching this module's namespaces, collecting stores with no grace period."""

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        cmd = [sys.executable, "-m", "conch", "--namespace", f"t-test-store-gc-*{SESSION}",
               "--metrics-port", str(self.port), "--store-gc-grace", "0"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        wait_for("operator /metrics", lambda: self.metric("conch_reconciles_total") is not None, 30)


@pytest.fixture
def gc_operator(cluster: Any, tmp_path: Path) -> Iterator[GcOperator]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    op = GcOperator(cluster.kubeconfig, tmp_path)
    op.start()
    yield op
    op.stop()


def spec(version: str, agent: NodeAgent) -> dict[str, Any]:
    return md_object(
        MD, version=version, model={"name": MD, "source": {"path": "models/cnn.onnx"}},
        compression=RECIPES[version], build=agent.scheduling(), revisionHistoryLimit=1,
    )  # fmt: skip


def test_store_gc_removes_what_nothing_references_and_nothing_else(
    cluster: Any, namespace: str, node_agent: NodeAgent, gc_operator: GcOperator
) -> None:
    k = Kube(cluster, namespace)
    k.model_store()
    store = Path(f"/tmp/conch-store/{namespace}")
    (store / "models").mkdir(parents=True, exist_ok=True)
    small_cnn(store / "models" / "cnn.onnx")
    repos = store / "repositories"
    for planted in (ORPHAN, "notes"):
        (repos / planted).mkdir(parents=True)
        (repos / planted / "file").write_text("x")
        os.utime(repos / planted, (time.time() - 7200, time.time() - 7200))
    try:
        k.apply(spec("v1", node_agent))
        first = wait_for("v1 serving", lambda: _serving_key(k, "v1"), 180)
        assert (repos / first).is_dir()
        k.apply(spec("v2", node_agent))
        second = wait_for("v2 serving", lambda: _serving_key(k, "v2"), 180)
        assert second != first
        wait_for("v1's repository collected", lambda: not (repos / first).exists(), 90)
        assert (repos / second).is_dir() and (repos / "notes" / "file").is_file()
        assert not (repos / ORPHAN).exists()  # collected by the first run (old, never referenced)

        def collected_event() -> str | None:
            events = json.loads(k.k("get", "events", "-o", "json").stdout)["items"]
            said = [e["message"] for e in events if e["reason"] == "StoreCollected"]
            return next((m for m in said if first[:12] in m), None)

        message = wait_for("a StoreCollected Event naming v1's repository", collected_event, 30)
        assert "removed 1 unreferenced repositories" in message and "1 referenced kept" in message
        assert [h["version"] for h in k.status(MD)["history"]] == ["v2"]
        assert gc_operator.metric("conch_store_gc_removed_total") >= 2  # type: ignore[operator]
    finally:
        cluster.kubectl("delete", "pv", f"store-{namespace}", "--wait=false", check=False)


def _serving_key(k: Kube, version: str) -> str | None:
    st = k.status(MD)
    built = next((c for c in st.get("conditions", []) if c["type"] == "Built"), {})
    if built.get("reason") == "BuildFailed":
        raise AssertionError(f"build failed: {built.get('message')}")
    if st.get("currentVersion") != version or st.get("phase") != "Serving":
        return None
    return next(h["buildKey"] for h in st["history"] if h["version"] == version)
