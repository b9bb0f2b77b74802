"""The whole path with no mock in it: helm install -> kubectl apply a ModelDeployment -> the real
builder builds and gates a real model -> a real tritonserver loads it -> Ready -> tritonclient answers
like the original model -> version edit rolls out -> edit back rolls back without a rebuild ->
delete removes everything.

Pods run on the node agent's node (testenv/nodeagent) as local processes; the operator runs locally
with the release's ServiceAccount token. Traffic goes only to the pods' 127.65.x.y addresses.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http
from chart import helmrun
from conftest import Cluster, NodeAgent, wait_for

from tests.support import digits_model, readywatch

pytestmark = pytest.mark.e2e

MD = "digits"
LABEL = f"serving.conch.dev/modeldeployment={MD}"
SAMPLES = 64  # = maxBatchSize
EXPORT = {"format": "onnx", "backend": "python"}
V1 = {"prune": {"method": "magnitude", "amount": 0.2}, "quantize": {"mode": "fp16"}, "export": EXPORT,
      "gate": {"minTop1Agreement": 0.9, "minCosine": 0.99}}  # fmt: skip
V2 = {"quantize": {"mode": "none"}, "export": EXPORT, "gate": {"minTop1Agreement": 0.99, "minCosine": 0.9999}}


class Ns:
    """kubectl in the test's namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.ns = cluster, namespace

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.cluster.kubectl("-n", self.ns, "get", kind, name, "-o", "json").stdout))

    def items(self, kind: str, selector: str = LABEL) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("-n", self.ns, "get", kind, "-l", selector, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def apply(self, obj: dict[str, Any]) -> None:
        self.cluster.kubectl("-n", self.ns, "apply", "--server-side", "-f", "-", input=json.dumps(obj))


def modeldeployment(version: str, compression: dict[str, Any], agent: NodeAgent) -> dict[str, Any]:
    on_agent = agent.scheduling()
    return {
        "apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {
            "version": version,
            "model": {"name": MD, "source": {"path": "models/digits.pt2"},
                      "inputs": [{"name": digits_model.INPUT, "dtype": "float32", "shape": [64]}]},
            "compression": compression,
            "build": on_agent,
            "serving": {"gpus": 0, "maxBatchSize": 64, "startupTimeoutSeconds": 120,
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}, **on_agent},
            "replicas": 1,
            "rollout": {"progressDeadlineSeconds": 180},
            "storage": {"claimName": "model-store"},
        },
    }  # fmt: skip


def serving(k: Ns, version: str, md: str = MD) -> dict[str, Any] | None:
    """The status once `md` serves `version` and is Ready; a failed build or spec fails the test."""
    status: dict[str, Any] = k.get("md", md).get("status", {})
    conds = {c["type"]: c for c in status.get("conditions", [])}
    if conds.get("Built", {}).get("reason") in ("BuildFailed", "InvalidSpec"):
        raise AssertionError(f"build failed: {conds['Built'].get('message')}")
    ok = status.get("phase") == "Serving" and status.get("currentVersion") == version
    return status if ok and conds.get("Ready", {}).get("status") == "True" else None


def wait_serving(
    k: Ns, md: str, version: str, timeout: float, logs: Callable[[], list[Path]]
) -> dict[str, Any]:
    """serving(), waited for; on a timeout the logs (the operator's, the pods') are in the failure."""
    try:
        return wait_for(f"{version} Serving", lambda: serving(k, version, md), timeout, every=1)
    except AssertionError as exc:
        text = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in logs())
        raise AssertionError(f"{exc}\n{text}") from None


def ready_pod_ips(k: Ns, version: str, md: str = MD) -> list[str]:
    ips = []
    label = f"serving.conch.dev/modeldeployment={md}"
    for pod in k.items(
        "pods", f"{label},serving.conch.dev/version={version},app.kubernetes.io/component=triton"
    ):
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            ips.append(pod["status"]["podIP"])
    return ips


def infer(ip: str, x: np.ndarray, token: str | None = None) -> np.ndarray:
    """One HTTP inference against the pod's Triton (the model's first output); `token`: for a pod
    whose ModelDeployment requires one (spec.auth)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = triton_http.InferenceServerClient(f"{ip}:8000", connection_timeout=10, network_timeout=30)
    output = client.get_model_metadata(MD, headers=headers)["outputs"][0]["name"]
    request = triton_http.InferInput(digits_model.INPUT, list(x.shape), "FP32")
    request.set_data_from_numpy(x)
    result = client.infer(MD, [request], outputs=[triton_http.InferRequestedOutput(output)], headers=headers)
    logits: np.ndarray = result.as_numpy(output).astype(np.float32)
    client.close()
    return logits


def agreement(served: np.ndarray, original: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean cosine) of served vs original logits."""
    top1 = float((served.argmax(1) == original.argmax(1)).mean())
    cos = (served * original).sum(1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(original, axis=1))
    return top1, float(cos.mean())


def closed(ip: str) -> bool:
    try:
        socket.create_connection((ip, 8000), timeout=1).close()
    except OSError:
        return True
    return False


@dataclass
class Run:
    """One end-to-end run: the namespace, the agent, the original model's logits, and where to look."""

    k: Ns
    agent: NodeAgent
    store: Path
    x: np.ndarray
    original: np.ndarray
    logs: list[Path]

    def wait_serving(self, version: str, check: Callable[[], object] | None = None) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            if check is not None:
                check()
            return serving(self.k, version)

        try:
            return wait_for(f"{version} Serving and Ready", done, 300, every=1)
        except AssertionError as exc:
            pods = sorted(self.agent.state.glob("pods/*/*.log"))
            text = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in [*self.logs, *pods])
            raise AssertionError(f"{exc}\n{text}") from None

    def ready_ip(self, version: str) -> str:
        return wait_for(f"a Ready {version} pod", lambda: ready_pod_ips(self.k, version), 60)[0]


def serve_v1(run: Run) -> tuple[dict[str, Any], str]:
    """apply -> real build (fp16 + prune) and gate -> Triton loads it -> Ready -> inference."""
    run.k.apply(modeldeployment("v1", V1, run.agent))
    status = run.wait_serving("v1")
    v1: dict[str, Any] = status["history"][0]
    assert v1["result"] == "Succeeded" and v1["summary"]["gate"]["passed"] is True, v1
    assert (run.store / "repositories" / v1["buildKey"] / MD / "config.pbtxt").exists()
    builders = run.k.items("pods", f"{LABEL},app.kubernetes.io/component=builder")
    assert [p["spec"]["nodeName"] for p in builders] == [run.agent.name]
    assert builders[0]["status"]["phase"] == "Succeeded"
    ip = run.ready_ip("v1")
    top1, cosine = agreement(infer(ip, run.x), run.original)
    assert top1 >= 0.9 and cosine >= 0.99, (top1, cosine)
    return v1, ip


def ready_watch(run: Run, version: str | None = None) -> readywatch.ReadyPods:
    """A watch of the Ready serving pods (of one version, or all), every change from now on."""
    selector = f"{LABEL},app.kubernetes.io/component=triton"
    if version is not None:
        selector += f",serving.conch.dev/version={version}"
    return readywatch.ReadyPods(run.k.cluster.kubeconfig, run.k.ns, selector)


def roll_out_v2(run: Run, ip_v1: str) -> str:
    """v2 (fp32, no pruning): a new build, then a rolling update that never leaves zero Ready pods (a
    watch of the pods: every transition the apiserver recorded, not samples)."""
    with ready_watch(run) as watch:
        run.k.apply(modeldeployment("v2", V2, run.agent))
        run.wait_serving("v2")
        wait_for("the v1 pod gone", lambda: not ready_pod_ips(run.k, "v1"), 90)
    counts = watch.counts()
    assert len(counts) > 3, f"the watch saw no rollout: {counts}"  # v2 pod added, Ready; v1 deleted
    assert min(counts) >= 1, f"the rollout left no Ready pod: {counts}"
    ip = run.ready_ip("v2")
    assert np.abs(infer(ip, run.x) - run.original).max() < 1e-3
    wait_for("the v1 pod gone and its Triton stopped", lambda: closed(ip_v1), 90)
    assert len(run.k.items("jobs")) == 2
    return ip


def roll_back_to_v1(run: Run, v1: dict[str, Any]) -> str:
    """Back to v1: the same repository serves again, nothing is rebuilt."""
    run.k.apply(modeldeployment("v1", V1, run.agent))
    status = run.wait_serving("v1")
    assert len(run.k.items("jobs")) == 2, "rolling back rebuilt v1"
    assert status["history"][0] == v1
    ip = run.ready_ip("v1")
    pods = run.k.items("pods", f"{LABEL},serving.conch.dev/version=v1,app.kubernetes.io/component=triton")
    assert {p["metadata"]["annotations"]["serving.conch.dev/build-key"] for p in pods} == {v1["buildKey"]}
    top1, cosine = agreement(infer(ip, run.x), run.original)
    assert top1 >= 0.9 and cosine >= 0.99, (top1, cosine)
    return ip


def tampered_version_rolls_back(run: Run) -> None:
    """v2 is built and not serving; a file of its repository changes on the store. Rolling out v2 again,
    its pod's init container (conch-verify) refuses the repository before Triton loads it: the operator
    rolls back at once with Degraded RepositoryTampered naming the file, v1 answers throughout, and
    editing spec.version back to v1 clears it."""
    status: dict[str, Any] = run.k.get("md", MD)["status"]
    v2 = next(h for h in status["history"] if h["version"] == "v2")
    repo = run.store / "repositories" / v2["buildKey"]
    victim = sorted(p for p in (repo / MD).rglob("*") if p.is_file() and p.name != "config.pbtxt")[0]
    with victim.open("ab") as f:
        f.write(b"\0")
    name = victim.relative_to(repo).as_posix()
    run.k.apply(modeldeployment("v2", V2, run.agent))
    started, v1_ready = time.monotonic(), []

    def rolled_back() -> dict[str, Any] | None:
        v1_ready.append(len(ready_pod_ips(run.k, "v1")))
        status: dict[str, Any] = run.k.get("md", MD).get("status", {})
        degraded = next((c for c in status.get("conditions", []) if c["type"] == "Degraded"), {})
        ok = status.get("failedVersion") == "v2" and status.get("currentVersion") == "v1"
        return status if ok and degraded.get("reason") == "RepositoryTampered" else None

    status = wait_for("tampered v2 rolled back", rolled_back, 120, every=0.5)
    elapsed = time.monotonic() - started
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert f"modified: {name}" in degraded["message"] and "serving v1" in degraded["message"], degraded
    assert min(v1_ready) >= 1, f"v1 stopped serving during the refused rollout: {v1_ready}"
    inits = [
        p["status"].get("initContainerStatuses", [])
        for p in run.k.items(
            "pods", f"{LABEL},serving.conch.dev/version=v1,app.kubernetes.io/component=triton"
        )
    ]
    assert inits and all(s[0]["state"]["terminated"]["exitCode"] == 0 for s in inits), inits
    events = json.loads(run.k.cluster.kubectl("-n", run.k.ns, "get", "events", "-o", "json").stdout)["items"]
    assert any(e["reason"] == "RepositoryTampered" and name in e["message"] for e in events)
    top1, _ = agreement(infer(run.ready_ip("v1"), run.x), run.original)
    assert top1 >= 0.9

    t0 = time.monotonic()
    run.k.apply(modeldeployment("v1", V1, run.agent))  # edit back: the intact version, nothing rebuilt

    def healed() -> dict[str, Any] | None:
        status = serving(run.k, "v1")
        degraded = next((c for c in (status or {}).get("conditions", []) if c["type"] == "Degraded"), {})
        return status if degraded.get("status") == "False" else None

    status = wait_for("v1 serving with Degraded cleared", healed, 60, every=0.5)
    assert status.get("failedVersion") is None and len(run.k.items("jobs")) == 2
    back = time.monotonic() - t0
    print(f"e2e seconds: tampered v2 refused and rolled back in {elapsed:.1f}, edited back in {back:.1f}")


def failed_gpu_version_rolls_back(run: Run) -> None:
    """v3 asks for a GPU: the agent's node advertises one but Triton finds none, so the v3 pod
    crash-loops; the operator rolls back to v1 well before the progress deadline, with Triton's own
    last words in Degraded, and v1 keeps answering throughout."""
    v3 = modeldeployment("v3", V1, run.agent)
    v3["spec"]["serving"]["gpus"] = 1

    def rolled_back() -> dict[str, Any] | None:
        status: dict[str, Any] = run.k.get("md", MD).get("status", {})
        degraded = next((c for c in status.get("conditions", []) if c["type"] == "Degraded"), {})
        ok = status.get("failedVersion") == "v3" and status.get("currentVersion") == "v1"
        return status if ok and degraded.get("reason") == "RolloutFailed" else None

    with ready_watch(run, "v1") as v1_watch:
        run.k.apply(v3)
        started = time.monotonic()
        # waits past the 180 s progress deadline, so the deadline's own rollback would be seen too and
        # the time below tells the two apart
        status = wait_for("v3 rolled back", rolled_back, 240, every=1)
        elapsed = time.monotonic() - started
    assert elapsed < 170, (
        f"rolled back after {elapsed:.0f} s: crash-loop detection must beat the 180 s deadline"
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "restarted 2 times" in degraded["message"] and "failed to load all models" in degraded["message"]
    v1_ready = v1_watch.counts()
    assert min(v1_ready) >= 1, f"v1 stopped serving during the failed rollout: {v1_ready}"
    assert [h["result"] for h in status["history"] if h["version"] == "v3"] == ["Succeeded"]
    top1, _ = agreement(infer(run.ready_ip("v1"), run.x), run.original)
    assert top1 >= 0.9
    print(f"e2e seconds: v3 crash loop rolled back in {elapsed:.1f}")


def bad_archive_keeps_serving(run: Run) -> None:
    """v4's source is a .tar.gz on the store whose member climbs out with '../..': the real builder,
    in a real pod, refuses it as bad input naming the archive and the member; the Job fails once (no
    retry); nothing lands outside the build's work directory; v1 keeps answering throughout."""
    archive = run.store / "models" / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("../../escape.txt")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"pwned"))
    v4 = modeldeployment("v4", {"export": EXPORT}, run.agent)
    v4["spec"]["model"] = {
        "name": MD,
        "source": {"path": "models/evil.tar.gz"},
        "task": "text-classification",
    }
    run.k.apply(v4)
    started, v1_ready = time.monotonic(), []
    refused = "bad-input: evil.tar.gz: member '../../escape.txt' points outside"

    def built_false() -> dict[str, Any] | None:
        v1_ready.append(len(ready_pod_ips(run.k, "v1")))
        conds = {c["type"]: c for c in run.k.get("md", MD).get("status", {}).get("conditions", [])}
        built = conds.get("Built", {})
        return built if built.get("reason") == "BuildFailed" and refused in built.get("message", "") else None

    wait_for("v4 refused as bad input", built_false, 120, every=1)
    elapsed = time.monotonic() - started
    status = run.k.get("md", MD)["status"]
    assert status["currentVersion"] == "v1" and min(v1_ready) >= 1, v1_ready
    job = next(j for j in run.k.items("jobs") if j["spec"]["template"]["metadata"]["labels"].get(
        "serving.conch.dev/version") == "v4")  # fmt: skip
    assert job["status"].get("failed") == 1, "bad input is retried"
    assert [p for root in (run.store, run.agent.state) for p in root.rglob("escape.txt")] == []
    top1, _ = agreement(infer(run.ready_ip("v1"), run.x), run.original)
    assert top1 >= 0.9
    print(f"e2e seconds: v4's malicious archive refused in {elapsed:.1f}")


def test_helm_apply_build_serve_infer_rollout_rollback_delete(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    model, _ = digits_model.train()
    digits_model.save(model, store / "models" / "digits.pt2")
    x = digits_model.dataset()[0][:SAMPLES].numpy()
    with torch.no_grad():
        original = model(torch.from_numpy(x)).numpy()
    with helmrun.operator_as_release(cluster, namespace, tmp_path, chart_crds=True) as operator_log:
        helmrun.model_store(cluster, namespace, store)
        run = Run(Ns(cluster, namespace), node_agent, store, x, original, [operator_log, node_agent.log])
        t0 = time.monotonic()
        v1, ip_v1 = serve_v1(run)
        t1 = time.monotonic()
        ip_v2 = roll_out_v2(run, ip_v1)
        t2 = time.monotonic()
        ip_back = roll_back_to_v1(run, v1)
        t3 = time.monotonic()
        print(f"e2e seconds: v1 served {t1 - t0:.1f}, v2 rollout {t2 - t1:.1f}, rollback {t3 - t2:.1f}")
        tampered_version_rolls_back(run)
        failed_gpu_version_rolls_back(run)
        bad_archive_keeps_serving(run)

        # delete: every child object and every process goes; the built repositories stay on the store
        cluster.kubectl("-n", namespace, "delete", "md", MD, "--wait=true", "--timeout=60s")
        for kind in ("deployments", "replicasets", "services", "jobs", "pods", "poddisruptionbudgets"):
            wait_for(f"no {kind} left", lambda kind=kind: not run.k.items(kind), 120)
        for ip in (ip_v2, ip_back):  # (the v3 pod never answered)
            assert wait_for(f"Triton at {ip} stopped", lambda ip=ip: closed(ip), 60)
        assert (store / "repositories" / v1["buildKey"]).is_dir()
    # helm uninstall keeps the CRD (helm.sh/resource-policy: keep): other namespaces' ModelDeployments live on
    crd = json.loads(cluster.kubectl("get", "crd", "modeldeployments.serving.conch.dev", "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
