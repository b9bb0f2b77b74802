"""A built repository served by a real tritonserver: HTTP and gRPC results match the original model."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from builder import models  # tests/ is on the path (pyproject: pytest pythonpath)

from conch.render import secret
from model_repo_builder.cli import main
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
MODEL = "cnn"
ADMIN_KEY = secret.new_key()


@pytest.fixture(scope="module")
def built(serving_dir: Path) -> dict[str, Any]:
    src = models.save_onnx(models.cnn(), torch.randn(2, 1, 8, 8), serving_dir / "cnn.onnx")
    recipe = {
        "quantize": {"mode": "int8-dynamic"},
        "export": {"backend": "python"},
        "triton": {"maxBatchSize": 8, "instanceKind": "KIND_CPU", "instanceCount": 1},
        "gate": {"minCosine": 0.99, "maxAbsError": 0.5},
    }
    summary_file = serving_dir / "summary.json"
    args = [
        "build",
        str(src),
        "--out",
        str(serving_dir / "store"),
        "--model-name",
        MODEL,
        "--recipe-json",
        json.dumps(recipe),
        "--summary-file",
        str(summary_file),
    ]
    assert main(args) == 0
    return dict(json.loads(summary_file.read_text()))


@pytest.fixture(scope="module")
def triton(built: dict[str, Any], serving_dir: Path) -> Iterator[Triton]:
    """Triton with the operator's hardening flags (model control off, admin APIs behind a key)."""
    with run_triton(Path(built["repository"]), serving_dir, secret.hardening_args(ADMIN_KEY)) as server:
        yield server


def _reference(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return models.cnn()(torch.from_numpy(x)).numpy()


def _inputs(seed: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def test_model_ready_and_config(triton: Triton) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton.http_url)
    assert client.is_model_ready(MODEL)
    cfg = client.get_model_config(MODEL)
    assert cfg["max_batch_size"] == 8 and cfg["backend"] == "python"


def test_http_matches_original(triton: Triton, built: dict[str, Any]) -> None:
    import tritonclient.http as httpclient

    x = _inputs(1)
    client = httpclient.InferenceServerClient(triton.http_url)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(MODEL, [inp]).as_numpy("y")
    np.testing.assert_allclose(got, _reference(x), atol=0.5)
    assert _cos(got, _reference(x)) >= 0.99


def test_grpc_matches_original(triton: Triton) -> None:
    import tritonclient.grpc as grpcclient

    x = _inputs(2, n=3)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(MODEL, [inp]).as_numpy("y")
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, _reference(x), atol=0.5)
    assert _cos(got, _reference(x)) >= 0.99


def test_metrics_count_requests(triton: Triton) -> None:
    import tritonclient.http as httpclient

    before = _success_count(triton)
    client = httpclient.InferenceServerClient(triton.http_url)
    for seed in range(5):
        inp = httpclient.InferInput("x", [1, 1, 8, 8], "FP32")
        inp.set_data_from_numpy(_inputs(seed, n=1))
        client.infer(MODEL, [inp])
    assert _success_count(triton) == before + 5


def _success_count(triton: Triton) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = r'^nv_inference_request_success\{[^}]*model="' + MODEL + r'"[^}]*\} ([0-9.e+]+)$'
    match = re.search(pattern, text, re.MULTILINE)
    assert match, text[:2000]
    return float(match.group(1))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(((a2 * b2).sum(1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1))).mean())


def _post(url: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_admin_apis_need_the_key(triton: Triton) -> None:
    """The model-repository API answers only with the admin header; unload is refused even with it
    (--model-control-mode=none), and the model keeps serving."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    index = f"http://{triton.http_url}/v2/repository/index"
    code, body = _post(index, {})
    assert code == 403 and "restricted" in body.lower(), (code, body)
    code, body = _post(index, {secret.ADMIN_HEADER: "wrong"})
    assert code == 403, (code, body)
    code, body = _post(index, {secret.ADMIN_HEADER: ADMIN_KEY})
    assert code == 200 and json.loads(body)[0]["name"] == MODEL, (code, body)
    unload = f"http://{triton.http_url}/v2/repository/models/{MODEL}/unload"
    assert _post(unload, {})[0] == 403
    code, body = _post(unload, {secret.ADMIN_HEADER: ADMIN_KEY})
    assert code == 503 and "explicit model load / unload is not allowed" in body.lower(), (code, body)
    code, body = _post(f"http://{triton.http_url}/v2/systemsharedmemory/status", {})
    assert code == 403, (code, body)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    with pytest.raises(InferenceServerException, match=r"This protocol is restricted"):
        client.get_model_repository_index()
    index_ok = client.get_model_repository_index(headers={secret.GRPC_ADMIN_HEADER: ADMIN_KEY})
    assert [m.name for m in index_ok.models] == [MODEL]
    assert client.is_model_ready(MODEL)
