"""`make demo`: Conch's main job on an embedded default, on the local control plane, end to end.

It trains a small digits classifier (scikit-learn's digits, seconds) into a local model store, starts
the node agent (one extra node whose pods run as local processes: the real builder, the real
tritonserver), starts the operator, and applies examples/cpu-digits.yaml, steered onto the agent's
node. It shows the ModelDeployment's progress as it happens, sends a sample inference to the Triton
pod with tritonclient, and prints the status and the build report. The operator and the agent stop
when the demo ends; the cluster keeps running (make cluster-down stops it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import digits_model
import numpy as np
import torch
import tritonclient.http as triton_http
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = str(Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache/conch")) / "bin" / "kubectl")
STATE = Path(os.environ.get("CONCH_DEMO_DIR", Path.home() / ".local/state/conch/demo"))
NAMESPACE = "conch-demo"
NODE = "conch-demo-agent"
EXAMPLE = ROOT / "examples" / "cpu-digits.yaml"
AGENT_LABEL = "node.conch.dev/agent"
os.environ.setdefault("KUBECONFIG", str(Path.home() / ".local/state/conch/cluster/kubeconfig"))


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def get(*args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("-n", NAMESPACE, "get", "-o", "json", *args)))


def wait(what: str, check: Callable[[], Any], timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise SystemExit(
        f"timed out after {timeout:.0f}s waiting for {what}; logs: {STATE}/*.log, {STATE}/agent/pods"
    )


def bind_store(store: Path) -> None:
    """A PersistentVolume for the example's claim (the local cluster has no provisioner)."""
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{NAMESPACE}-model-store"},
        "spec": {
            "capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(store)},
            "claimRef": {"namespace": NAMESPACE, "name": "model-store"}, "storageClassName": "",
        },
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(pv))


def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (STATE / f"{name}.log").open("wb")
    say(f"starting the {name} (log: {STATE / f'{name}.log'})")
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def node_ready() -> bool:
    out = kubectl("get", "node", NODE, "-o", "json", check=False)
    conds = json.loads(out)["status"].get("conditions", []) if out else []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def on_agent_node(example: dict[str, Any]) -> dict[str, Any]:
    """The example, with its build and serving pods steered onto the agent's node (and only there)."""
    steer = {
        "nodeSelector": {AGENT_LABEL: "true"},
        "tolerations": [{"key": AGENT_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
    }
    for section in ("build", "serving"):
        example["spec"].setdefault(section, {}).update(steer)
    return example


class Progress:
    """Prints the ModelDeployment's phase and conditions whenever they change."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self) -> dict[str, Any] | None:
        md = get("modeldeployment", "digits")
        status = md.get("status", {})
        conds = {c["type"]: c for c in status.get("conditions", [])}
        line = f"phase={status.get('phase')} " + " ".join(
            f"{t}={c['status']}({c.get('reason', '')})" for t, c in sorted(conds.items())
        )
        if line != self.last:
            say(line)
            self.last = line
        if conds.get("Built", {}).get("reason") in ("BuildFailed", "InvalidSpec"):
            raise SystemExit(f"build failed: {conds['Built'].get('message')}")
        return md if conds.get("Ready", {}).get("status") == "True" else None


def ready_pod_ip() -> str | None:
    pods = get("pods", "-l", "app.kubernetes.io/component=triton")["items"]
    for pod in pods:
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            return str(pod["status"]["podIP"])
    return None


def sample_inference(model: torch.nn.Module) -> None:
    """Five digits through Triton (HTTP, the pod's own 127.65.x.y address) next to the original model."""
    ip = wait("a Ready Triton pod", ready_pod_ip, 60)
    x, y = digits_model.dataset()
    picks = [0, 1, 2, 3, 4]
    batch = x[picks].numpy()
    client = triton_http.InferenceServerClient(f"{ip}:8000")
    output = client.get_model_metadata("digits")["outputs"][0]["name"]
    request = triton_http.InferInput(digits_model.INPUT, list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    served = client.infer("digits", [request]).as_numpy(output)
    with torch.no_grad():
        original = model(torch.from_numpy(batch)).numpy()
    say(f"sample inference at http://{ip}:8000/v2/models/digits/infer (5 digits):")
    print(f"  true labels        {y[picks].tolist()}")
    print(f"  Triton (compressed) {np.asarray(served).argmax(1).tolist()}")
    print(f"  original model      {original.argmax(1).tolist()}")
    print(f"  max |logit diff|    {float(np.abs(np.asarray(served, dtype=np.float32) - original).max()):.4f}")


def print_report(md: dict[str, Any], store: Path) -> None:
    print("\n" + kubectl("-n", NAMESPACE, "get", "md", "-o", "wide"))
    status = md["status"]
    print(json.dumps({k: status.get(k) for k in ("phase", "currentVersion", "endpoints")}, indent=2))
    for cond in status.get("conditions", []):
        print(f"  {cond['type']:<12} {cond['status']:<6} {cond.get('reason', '')}: {cond.get('message', '')}")
    entry = status["history"][-1]
    build = json.loads((store / "repositories" / entry["buildKey"] / "build.json").read_text())
    print(f"\nbuild {entry['buildKey'][:16]}… for version {entry['version']}: {entry['result']}")
    for key in ("sourceDigest", "builderVersion", "sizeBefore", "sizeAfter", "compressionRatio", "gate"):
        if key in build:
            print(f"  {key:<18} {json.dumps(build[key])}")
    print("\nchildren:\n" + kubectl("-n", NAMESPACE, "get", "deploy,svc,job,pods", "-o", "wide"))


def reset_namespace(store: Path) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False)
    kubectl("delete", "pv", f"{NAMESPACE}-model-store", "--wait=true", "--timeout=60s", check=False)
    kubectl("create", "namespace", NAMESPACE)
    kubectl("-n", NAMESPACE, "apply", "-f", str(ROOT / "examples" / "model-store-pvc.yaml"))
    bind_store(store)


def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    store = STATE / "store"
    model, accuracy = digits_model.train()
    digits_model.save(model, store / "models" / "digits.pt2")
    say(f"trained a digits MLP (train accuracy {accuracy:.3f}) -> {store}/models/digits.pt2")
    reset_namespace(store)
    hack = {"PYTHONPATH": str(ROOT / "hack")}
    agent = start("node-agent", [sys.executable, "-m", "nodeagent", "--node-name", NODE,
                                 "--state-dir", str(STATE / "agent")], hack)  # fmt: skip
    operator = start(
        "operator", [sys.executable, "-m", "conch", "--namespace", NAMESPACE, "--metrics-port", "0"]
    )
    try:
        wait(f"node {NODE} Ready", node_ready, 60)
        example = on_agent_node(yaml.safe_load(EXAMPLE.read_text()))
        kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(example))
        say(f"applied {EXAMPLE.relative_to(ROOT)} (build and serving pods steered onto node {NODE})")
        md = wait("the ModelDeployment to become Ready", Progress(), 600)
        sample_inference(model)
        print_report(md, store)
        say("done; stopping the operator and the node agent (the cluster keeps running)")
    finally:
        for proc in (operator, agent):
            proc.terminate()
        for proc in (operator, agent):
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
