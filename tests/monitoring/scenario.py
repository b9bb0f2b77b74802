"""One served model under real monitoring, shared by the tests of tests/monitoring (module fixture).

The chart is installed with its ServiceMonitor and PrometheusRule, the operator runs on the host as the
release, and a ModelDeployment of the digits model (a real build by model-repo-builder, a real
tritonserver on the node agent) scales on Triton's queue time: its ServiceMonitor (2 s) feeds the
real Prometheus, prometheus-adapter serves `triton_queue_time_us` to the HPA.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from chart import helmrun
from conftest import Cluster, NodeAgent, running_node_agent, wait_for

from monitoring import release
from tests.support import digits_model, loadgen

MD = "digits"
LABEL = f"serving.conch.dev/modeldeployment={MD}"
TRITON_PODS = f"{LABEL},app.kubernetes.io/component=triton"
EXPORT = {"format": "onnx", "backend": "python"}
# Queue time per request that the HPA aims for. Idle it is 0; one Triton (one CPU instance) under 16
# concurrent single-sample requests queued each for 0.55 ms on an idle machine (2026-11-30; more under
# load). The target sits well below that: the HPA ignores a ratio within 10% of 1, and at 500 us a CI
# run never scaled up.
QUEUE_TARGET_US = 100


def modeldeployment(name: str, version: str, agent: NodeAgent, **spec: Any) -> dict[str, Any]:
    """A digits ModelDeployment on the agent's node, monitored every 2 s; `spec` overrides."""
    on_agent = agent.scheduling()
    body: dict[str, Any] = {
        "version": version,
        "model": {"name": MD, "source": {"path": "models/digits.pt2"},
                  "inputs": [{"name": digits_model.INPUT, "dtype": "float32", "shape": [64]}]},
        "compression": {"quantize": {"mode": "none"}, "export": EXPORT},
        "build": on_agent,
        "serving": {"gpus": 0, "maxBatchSize": 64, "startupTimeoutSeconds": 120,
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}, **on_agent},
        "monitoring": {"serviceMonitor": {"enabled": True, "interval": "2s"}},
        "rollout": {"progressDeadlineSeconds": 180},
        "storage": {"claimName": "model-store"},
        **spec,
    }  # fmt: skip
    return {"apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": body}  # fmt: skip


AUTOSCALING = {
    "minReplicas": 1,
    "maxReplicas": 2,
    "queueTime": {"averageMicroseconds": QUEUE_TARGET_US},
    "scaleUpStabilizationSeconds": 0,
    "scaleDownStabilizationSeconds": 10,  # test-only: Kubernetes' default is 300
}


@dataclass
class Scenario:
    cluster: Cluster
    ns: str
    release: release.Release
    agent: NodeAgent
    batch: np.ndarray  # one digit per request

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", self.ns, *args, input=input, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-o", "json").stdout))

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))

    def ready_ips(self, selector: str = TRITON_PODS) -> list[str]:
        pods = json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)["items"]
        return [
            p["status"]["podIP"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]

    def wait_serving(self, name: str, version: str, timeout: float = 300) -> dict[str, Any]:
        def serving() -> dict[str, Any] | None:
            status: dict[str, Any] = self.get("md", name).get("status", {})
            built = next((c for c in status.get("conditions", []) if c["type"] == "Built"), {})
            if built.get("reason") == "BuildFailed":
                raise AssertionError(f"build failed: {built.get('message')}")
            ok = status.get("phase") == "Serving" and status.get("currentVersion") == version
            return status if ok else None

        try:
            return wait_for(f"{name} {version} Serving", serving, timeout, every=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def logs(self) -> str:
        files = [self.release.log, self.agent.log, *sorted(self.agent.state.glob("pods/*/*.log"))]
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in files if p.exists())

    def traffic(self, ip: str, seconds: float = 8, concurrency: int = 4) -> loadgen.Result:
        """A short bounded burst of inference requests to one pod's own address."""
        return loadgen.run(
            ip,
            MD,
            digits_model.INPUT,
            self.batch,
            concurrency=concurrency,
            duration=seconds,
            max_requests=4000,
        )

    def load_in_background(self, ip: str, seconds: float, concurrency: int) -> tuple[threading.Event, Any]:
        """Start a bounded load; returns (stop event, a function that joins and returns the Result)."""
        stop = threading.Event()
        out: list[loadgen.Result] = []
        thread = threading.Thread(
            target=lambda: out.append(
                loadgen.run(
                    ip,
                    MD,
                    digits_model.INPUT,
                    self.batch,
                    concurrency=concurrency,
                    duration=seconds,
                    stop=stop,
                )
            ),
            daemon=True,
        )
        thread.start()

        def join() -> loadgen.Result:
            thread.join(seconds + 90)
            return out[0]

        return stop, join


@pytest.fixture(scope="module")
def scenario(
    cluster: Cluster, monitoring: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    """The digits model served with autoscaling under the real monitoring stack (see the module doc)."""
    workdir = tmp_path_factory.mktemp("metrics")
    ns = f"t-monitoring-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "conch.dev/test=true")
    store = workdir / "store"
    model, _ = digits_model.train()
    digits_model.save(model, store / "models" / "digits.pt2")
    batch = digits_model.dataset()[0][:1].numpy()
    try:
        with (
            running_node_agent(cluster, workdir) as agent,
            release.operator_release(cluster, ns, workdir) as rel,
        ):
            helmrun.model_store(cluster, ns, store)
            sc = Scenario(cluster, ns, rel, agent, batch)
            sc.apply(modeldeployment(MD, "v1", agent, autoscaling=AUTOSCALING))
            sc.wait_serving(MD, "v1")
            yield sc
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"store-{ns}", "--wait=false", check=False)
