"""The three images, built for real by hack/images.sh (offline, --network=none), and checked by running
them: the operator's CLI without torch, the builder building a real repository from a TorchScript model,
and Triton in the serving image loading that repository and answering like the original model. Each
runs as its non-root user with a read-only root filesystem and no network, as the pods do.

Cost: warm (layers cached) about a minute; cold, add the wheel download (~3 GB), debootstrap and the
builds (see README.md: Images).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import Images

pytestmark = [pytest.mark.e2e, pytest.mark.images]

CLIENT = """
import json, sys, time, urllib.request
base = "http://127.0.0.1:8000"
deadline = time.time() + 120
while True:
    try:
        if urllib.request.urlopen(base + "/v2/models/mlp/ready", timeout=2).status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("mlp not ready in 120 s")
    time.sleep(0.5)
x = json.load(open("/work/x.json"))
body = {"inputs": [{"name": "x", "shape": [len(x), 16], "datatype": "FP32", "data": sum(x, [])}]}
req = urllib.request.Request(base + "/v2/models/mlp/infer", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
print("RESULT " + json.dumps(json.load(urllib.request.urlopen(req, timeout=30))))
"""

GATEWAY_CLIENT = """
import json, sys, time, urllib.error, urllib.request
base = "http://127.0.0.1:9000"
def call(path, data=None):
    req = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return [answer.status, json.load(answer)]
    except urllib.error.HTTPError as error:
        return [error.code, json.load(error)]
deadline = time.time() + 60
while True:
    try:
        live = call("/health/live")
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the gateway did not answer in 60 s")
        time.sleep(0.3)
bad = call("/v1/chat/completions", json.dumps({"model": "smol", "messages": []}).encode())
print("RESULT " + json.dumps({"live": live, "ready": call("/health/ready"), "models": call("/v1/models"),
                              "bad": bad}))
"""


def run(images: Images, image: str, *args: str, work: Path | None = None, entrypoint: str = "") -> str:
    """docker run as the image's user, read-only root, /tmp a tmpfs, no network; stdout+stderr."""
    opts = ["run", "--rm", "--network=none", "--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL"]
    opts += ["--security-opt", "no-new-privileges"]
    if work is not None:
        opts += ["-v", f"{work}:/work"]
    if entrypoint:
        opts += ["--entrypoint", entrypoint]
    proc = images.docker(*opts, image, *args, check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{image} {' '.join(args)} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def inspect(images: Images, image: str) -> dict[str, object]:
    config: dict[str, object] = json.loads(images.docker("image", "inspect", image).stdout)[0]
    return config


@pytest.mark.parametrize(
    ("which", "user", "title"),
    [("operator", "65532:65532", "conch-operator"), ("builder", "1000:1000", "conch-builder"),
     ("triton", "1000:1000", "conch-tritonserver")],
)  # fmt: skip
def test_image_runs_as_its_non_root_user_with_oci_labels(
    images: Images, which: str, user: str, title: str
) -> None:
    image = getattr(images, which)
    meta = inspect(images, image)
    config = meta["Config"]
    assert isinstance(config, dict)
    assert config["User"] == user
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == title
    for key in ("description", "licenses", "version", "revision", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.revision"] != "unknown"
    assert run(images, image, "-c", "id -u", entrypoint="sh").strip() == user.partition(":")[0]
    print(f"{image}: {int(str(meta['Size'])) / 1e6:.0f} MB")


def test_operator_image_has_the_cli_and_no_torch(images: Images) -> None:
    assert "--all-namespaces" in run(images, images.operator, "--help")
    out = run(images, images.operator, "-c", "import conch.main, kopf, kubernetes, prometheus_client",
              entrypoint="python")  # fmt: skip
    assert out == ""
    proc = images.docker("run", "--rm", "--network=none", "--entrypoint", "python", images.operator,
                         "-c", "import torch", check=False)  # fmt: skip
    assert proc.returncode == 1 and "No module named 'torch'" in proc.stderr


def test_builder_image_builds_a_repository_that_the_triton_image_serves(
    images: Images, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # the containers run as uid 1000
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    torch.jit.save(torch.jit.script(model), str(work / "mlp.pt"))
    x = torch.randn(5, 16)
    (work / "x.json").write_text(json.dumps(x.tolist()))
    (work / "client.py").write_text(CLIENT)
    for f in work.iterdir():
        f.chmod(0o644)

    assert "build" in run(images, images.builder, "--help")
    run(images, images.builder, "build", "/work/mlp.pt", "--out", "/work/store", "--model-name", "mlp",
        "--input", "x:float32:16", "--backend", "python", "--instance-kind", "KIND_CPU",
        "--recipe-json", '{"quantize": {"mode": "none"}}', "--summary-file", "/work/summary.json",
        work=work)  # fmt: skip
    summary = json.loads((work / "summary.json").read_text())
    assert summary["ok"] and summary["repository"].startswith("/work/store/"), summary
    repo = work / "store" / summary["buildKey"]
    assert (repo / "mlp" / "config.pbtxt").is_file()
    # the serving pods' init container, before Triton (whose python backend writes __pycache__ into a
    # writable repository: pods mount the store read-only): the Triton image's conch-verify passes the
    # builder's repository and, once a file changed, exits 2 naming it (the pod's termination message)
    check = f"conch-verify /work/store/{summary['buildKey']} --message-file /tmp/m; echo EXIT $?; cat /tmp/m"
    assert "EXIT 0\nrepository" in run(images, images.triton, "-c", check, work=work, entrypoint="sh")

    serve = (
        f"tritonserver --model-repository=/work/store/{summary['buildKey']} --http-port=8000"
        " --grpc-port=8001 --metrics-port=8002 >/tmp/triton.log 2>&1 &"
        " python3 /work/client.py || { cat /tmp/triton.log; exit 1; }"
    )
    out = run(images, images.triton, "-c", serve, work=work, entrypoint="sh")
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    served = np.array(result["outputs"][0]["data"], dtype=np.float32).reshape(5, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(served - expected).max() < 1e-4

    weights = next(p for p in (repo / "mlp").rglob("*") if p.is_file() and p.name != "config.pbtxt")
    weights.chmod(0o644)
    with weights.open("ab") as f:
        f.write(b"\0")
    out = run(images, images.triton, "-c", check, work=work, entrypoint="sh")
    assert "EXIT 2" in out and f"modified: {weights.relative_to(repo).as_posix()}" in out, out


def test_triton_image_imports_what_the_python_steps_import(images: Images) -> None:
    out = run(images, images.triton, "-c",
              "import numpy, tokenizers, onnxruntime, onnxruntime_genai; print(numpy.__version__,"
              " tokenizers.__version__, onnxruntime.__version__, onnxruntime_genai.__version__)",
              entrypoint="python3")  # fmt: skip
    assert out.split() == ["1.26.4", "0.23.3", "1.32.0", "0.18.0"]


def test_triton_image_runs_the_gateway_as_its_user(images: Images, tmp_path: Path) -> None:
    """The serving pod's second container: `conch-gateway` from this same image, as uid 1000 with a
    read-only root, on the pinned starlette/uvicorn/pydantic/tritonclient, answering HTTP (no Triton runs
    here: ready is 503 through a real gRPC attempt, a bad request 400, liveness 200)."""
    assert "--triton-grpc" in run(images, images.triton, "--help", entrypoint="conch-gateway")
    dists = ("starlette", "uvicorn", "pydantic", "tritonclient", "grpcio", "protobuf")
    out = run(images, images.triton, "-c",
              f"from importlib.metadata import version; print(*(version(d) for d in {dists!r}))",
              entrypoint="python3")  # fmt: skip
    installed = dict(zip(dists, out.split(), strict=True))
    dockerfile = (Path(__file__).resolve().parents[2] / "images" / "triton.Dockerfile").read_text()
    for dist in dists[:4]:
        pin = re.search(rf'"{dist}(?:\[[a-z,]+\])?==([0-9.]+)"', dockerfile)
        assert pin is not None and installed[dist] == pin.group(1), (dist, installed)
    assert int(installed["protobuf"].split(".")[0]) < 7, "tritonclient[grpc] needs protobuf < 7"

    work = tmp_path / "work"
    work.mkdir()
    (work / "client.py").write_text(GATEWAY_CLIENT)
    for path in (work, work / "client.py"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    serve = (
        "id -u; conch-gateway --triton-grpc 127.0.0.1:8001 --model smol --port 9000 >/tmp/gw.log 2>&1 &"
        " python3 /work/client.py || { cat /tmp/gw.log; exit 1; }"
    )
    out = run(images, images.triton, "-c", serve, work=work, entrypoint="sh")
    assert out.splitlines()[0] == "1000"
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["live"] == [200, {"live": True}]
    assert result["ready"] == [503, {"ready": False}]
    status, models = result["models"]
    assert status == 200 and [m["id"] for m in models["data"]] == ["smol"]
    status, error = result["bad"]
    assert status == 400 and error["error"]["param"] == "messages", error
