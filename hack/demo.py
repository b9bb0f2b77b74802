"""`make demo`: Conch's main job on an embedded default, on the local control plane.

It trains a small digits classifier (sklearn's digits, a few seconds), puts it in a local model
store, starts the operator, and applies examples/cpu-digits.yaml. kwok nodes do not run pods, so the
demo plays the kubelet for the one pod that matters: it runs the builder Job pod's own command as a
local process (the store volume mapped to the local store directory), then reports its exit code and
termination message back through the API. The operator reads that summary, rolls out Triton and
marks the ModelDeployment Ready; the demo prints its status and the build report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = str(Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache/conch")) / "bin" / "kubectl")
STATE = Path(os.environ.get("CONCH_DEMO_DIR", Path.home() / ".local/state/conch/demo"))
NAMESPACE = "conch-demo"
EXAMPLE = ROOT / "examples" / "cpu-digits.yaml"
STORE_MOUNT = "/store"
KUBECONFIG = Path.home() / ".local/state/conch/cluster/kubeconfig"
os.environ.setdefault("KUBECONFIG", str(KUBECONFIG))


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def get(*args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("-n", NAMESPACE, "get", "-o", "json", *args)))


def wait(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(
        f"timed out after {timeout:.0f}s waiting for {what}; operator log: {STATE / 'operator.log'}"
    )


def train_digits_model(store: Path) -> Path:
    """A 64-input MLP on sklearn's digits, exported with torch.export to models/digits.pt2."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target.astype(np.int64))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    say(f"trained digits MLP: train accuracy {accuracy:.3f}")
    path = store / "models" / "digits.pt2"
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model.eval(), (x[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def bind_store(store: Path) -> None:
    """A PersistentVolume for the example's claim (the local cluster has no provisioner)."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{NAMESPACE}-model-store"},
        "spec": {
            "capacity": {"storage": "20Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(store)},
            "claimRef": {"namespace": NAMESPACE, "name": "model-store"},
            "storageClassName": "",
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pv))


def start_operator() -> subprocess.Popen[bytes]:
    log = (STATE / "operator.log").open("wb")
    say(f"starting the operator (log: {STATE / 'operator.log'})")
    return subprocess.Popen(
        [sys.executable, "-m", "conch", "--namespace", NAMESPACE, "--metrics-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip


def builder_pod() -> dict[str, Any] | None:
    pods = get("pods", "-l", "app.kubernetes.io/component=builder")["items"]
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    return running[0] if running else None


def run_builder_locally(pod: dict[str, Any], store: Path) -> tuple[int, str]:
    """Run the pod's own command, with the store volume mapped to the local store directory."""
    container = pod["spec"]["containers"][0]
    summary_file = STATE / "termination-log"
    argv = [
        str(summary_file) if a == "/dev/termination-log" else a.replace(STORE_MOUNT, str(store), 1)
        for a in container["command"] + container.get("args", [])
    ]
    argv[0] = str(Path(sys.executable).parent / argv[0])
    say("running the builder Job's command locally: " + " ".join(argv[:4]) + " ...")
    proc = subprocess.run(argv, check=False)
    message = summary_file.read_text() if summary_file.exists() else ""
    return proc.returncode, message.replace(str(store), STORE_MOUNT)


def report_pod_result(pod: dict[str, Any], code: int, message: str) -> None:
    """What a kubelet would do: terminate the pod with this exit code and termination message."""
    name = pod["metadata"]["name"]
    kubectl("-n", NAMESPACE, "annotate", "--overwrite", "pod", name,
            f"kwok.conch.dev/termination-message={message}", f"kwok.conch.dev/exit-code={code}")  # fmt: skip


def ready() -> dict[str, Any] | None:
    md = get("modeldeployment", "digits")
    status = md.get("status", {})
    conds = {c["type"]: c for c in status.get("conditions", [])}
    if conds.get("Built", {}).get("reason") in ("BuildFailed", "InvalidSpec"):
        raise SystemExit(f"build failed: {conds.get('Built', {}).get('message')}")
    return md if conds.get("Ready", {}).get("status") == "True" else None


def print_report(md: dict[str, Any], store: Path) -> None:
    print("\n" + kubectl("-n", NAMESPACE, "get", "md", "-o", "wide"))
    status = md["status"]
    print(
        json.dumps(
            {k: status.get(k) for k in ("phase", "currentVersion", "targetVersion", "endpoints")}, indent=2
        )
    )
    for cond in status.get("conditions", []):
        print(f"  {cond['type']:<12} {cond['status']:<6} {cond.get('reason', '')}: {cond.get('message', '')}")
    entry = status["history"][-1]
    build = json.loads((store / "repositories" / entry["buildKey"] / "build.json").read_text())
    print(f"\nbuild {entry['buildKey'][:16]}… for version {entry['version']}: {entry['result']}")
    for key in ("sourceDigest", "builderVersion", "sizeBefore", "sizeAfter", "compressionRatio", "gate"):
        if key in build:
            print(f"  {key:<18} {json.dumps(build[key])}")
    print("\nchildren:\n" + kubectl("-n", NAMESPACE, "get", "deploy,svc,job,pods", "-o", "wide"))


def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    store = STATE / "store"
    train_digits_model(store)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False)
    kubectl("delete", "pv", f"{NAMESPACE}-model-store", "--wait=true", "--timeout=60s", check=False)
    kubectl("create", "namespace", NAMESPACE)
    operator = start_operator()
    try:
        kubectl("-n", NAMESPACE, "apply", "-f", str(ROOT / "examples" / "model-store-pvc.yaml"))
        bind_store(store)
        kubectl("-n", NAMESPACE, "apply", "-f", str(EXAMPLE))
        say(f"applied {EXAMPLE.relative_to(ROOT)}; waiting for the builder Job's pod")
        pod = wait("the builder pod", builder_pod)
        code, message = run_builder_locally(pod, store)
        say(f"builder exited {code}; reporting its termination message through the API")
        report_pod_result(pod, code, message)
        say("waiting for the ModelDeployment to become Ready")
        md = wait("Ready", ready)
        print_report(md, store)
        say("done; the cluster keeps running (make cluster-down stops it)")
    finally:
        operator.terminate()
        operator.wait(timeout=30)


if __name__ == "__main__":
    main()
