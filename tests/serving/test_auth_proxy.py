"""The auth proxy in front of a real tritonserver: tokens required for inference, metadata, statistics
and config over HTTP and gRPC (streaming too), health left open for probes, refusals counted, rotation
by editing the token files with both tokens valid meanwhile, and no token in the proxy's log."""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conch.render import secret
from model_repo_builder.gate import probes, tritonhttp
from tests.support.authproxy import DOUBLE_MODEL, Proxy, double_repository, run_auth_proxy
from tests.support.processes import free_port, stop_process
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
ADMIN_KEY = secret.new_key()
FIRST, SECOND = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
X = np.arange(8, dtype=np.float32).reshape(2, 4)
INFER = {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}
ROTATION_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "token").write_text(FIRST + "\n")
    (folder / ".hidden").write_text("not-a-token")  # the kubelet's own entries start with a dot
    return folder


@contextlib.contextmanager
def run_gateway(triton: Triton, work: Path) -> Iterator[str]:
    """The real OpenAI gateway (conch-gateway) on a free loopback port, for `double` (its /v1/models
    reads the model's config over Triton's gRPC; no generation is asked of it)."""
    port = free_port()
    cmd = [sys.executable, "-m", "conch_gateway", f"--triton-grpc={triton.grpc_url}",
           f"--model={DOUBLE_MODEL}", "--host=127.0.0.1", f"--port={port}"]  # fmt: skip
    with (work / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the gateway did not come up"
                time.sleep(0.1)  # polling interval, bounded by the deadline
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, 10)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, tokens_dir: Path) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("authproxy")
    repo = double_repository(work / "repo")
    with (
        run_triton(repo, work, secret.hardening_args(ADMIN_KEY)) as triton,
        run_gateway(triton, work) as gateway,
        run_auth_proxy(triton, tokens_dir, work, openai_upstream=gateway) as front,
    ):
        yield front


def _http(
    proxy: Proxy, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{proxy.http}{path}", data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refusals(proxy: Proxy, api: str, reason: str) -> float:
    label = f'conch_auth_refusals_total{{api="{api}",reason="{reason}"}}'
    values = [float(line.split()[-1]) for line in proxy.metric_lines(label)]
    return values[0] if values else 0.0


PROTECTED = [
    f"/v2/models/{DOUBLE_MODEL}/infer",
    "/v2",
    f"/v2/models/{DOUBLE_MODEL}",
    f"/v2/models/{DOUBLE_MODEL}/config",
    f"/v2/models/{DOUBLE_MODEL}/stats",
]


def test_http_needs_a_token_except_for_health(proxy: Proxy) -> None:
    missing = _refusals(proxy, "http", "missing")
    for path in PROTECTED:
        body = INFER if path.endswith("/infer") else None
        status, answer = _http(proxy, path, body=body)
        assert status == 401, path
        assert answer == {"error": "missing inference token"}  # Triton's error shape
        assert _http(proxy, path, _bearer("wrong"), body)[0] == 401, path
        assert _http(proxy, path, _bearer(FIRST), body)[0] == 200, path
    assert _refusals(proxy, "http", "missing") == missing + len(PROTECTED)
    assert _refusals(proxy, "http", "invalid") >= len(PROTECTED)
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{DOUBLE_MODEL}/ready"):
        assert _http(proxy, path)[0] == 200, path  # kubelet probes carry no token


def test_http_inference_through_the_proxy_is_triton_s_answer(proxy: Proxy) -> None:
    status, answer = _http(proxy, f"/v2/models/{DOUBLE_MODEL}/infer", {"conch-api-key": FIRST}, INFER)
    assert status == 200
    assert answer["outputs"][0]["data"] == (X * 2).ravel().tolist()


def test_admin_apis_need_the_token_and_the_admin_key(proxy: Proxy) -> None:
    index = "/v2/repository/index"
    assert _http(proxy, index, {"conch-admin-key": ADMIN_KEY}, {})[0] == 401  # the admin key is no token
    assert _http(proxy, index, _bearer(FIRST), {})[0] == 403  # Triton's own restriction still holds
    status, answer = _http(proxy, index, {**_bearer(FIRST), "conch-admin-key": ADMIN_KEY}, {})
    assert status == 200 and answer[0]["name"] == DOUBLE_MODEL


def _grpc(proxy: Proxy) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{proxy.grpc}")


def _inputs() -> list[grpcclient.InferInput]:
    x = grpcclient.InferInput("X", [2, 4], "FP32")
    x.set_data_from_numpy(X)
    return [x]


def _unauthenticated(call: Callable[[], object]) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"


def test_grpc_needs_a_token_except_for_health(proxy: Proxy) -> None:
    client = _grpc(proxy)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(DOUBLE_MODEL)
    before = _refusals(proxy, "grpc", "missing")
    _unauthenticated(lambda: client.infer(DOUBLE_MODEL, _inputs()))
    _unauthenticated(lambda: client.get_model_metadata(DOUBLE_MODEL))
    _unauthenticated(lambda: client.get_model_config(DOUBLE_MODEL))
    _unauthenticated(lambda: client.get_inference_statistics(DOUBLE_MODEL))
    _unauthenticated(lambda: client.infer(DOUBLE_MODEL, _inputs(), headers={"authorization": "Bearer x"}))
    assert _refusals(proxy, "grpc", "missing") == before + 4
    result = client.infer(DOUBLE_MODEL, _inputs(), headers={"authorization": f"Bearer {FIRST}"})
    np.testing.assert_array_equal(result.as_numpy("Y"), X * 2)
    meta = client.get_model_metadata(DOUBLE_MODEL, headers={"conch-api-key": FIRST}, as_json=True)
    assert meta["name"] == DOUBLE_MODEL
    stats = client.get_inference_statistics(DOUBLE_MODEL, headers={"conch-api-key": FIRST}, as_json=True)
    assert int(stats["model_stats"][0]["inference_count"]) >= 2


def _stream(proxy: Proxy, headers: dict[str, str], n: int) -> list[Any]:
    """`n` requests on one ModelStreamInfer stream; the answers (or the stream's error) as they came."""
    client = _grpc(proxy)
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(
        lambda result, error: answers.put(error if error is not None else result), headers=headers
    )
    try:
        for i in range(n):
            try:
                client.async_stream_infer(DOUBLE_MODEL, _inputs(), request_id=str(i))
            except InferenceServerException:  # the stream already failed: its error is in the queue
                break
        first = answers.get(timeout=30)
        if isinstance(first, InferenceServerException):
            return [first]
        return [first, *(answers.get(timeout=30) for _ in range(n - 1))]
    finally:
        client.stop_stream()


def test_grpc_streaming_passes_through_with_a_token_only(proxy: Proxy) -> None:
    results = _stream(proxy, {"authorization": f"Bearer {FIRST}"}, 5)
    assert sorted(r.get_response().id for r in results) == [str(i) for i in range(5)]
    for r in results:
        np.testing.assert_array_equal(r.as_numpy("Y"), X * 2)
    [refused] = _stream(proxy, {}, 1)
    assert isinstance(refused, InferenceServerException) and "UNAUTHENTICATED" in str(refused.status())


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + ROTATION_TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # the proxy re-reads its token files every 2 s


def test_rotation_keeps_both_tokens_valid_then_drops_the_old(proxy: Proxy, tokens_dir: Path) -> None:
    path = f"/v2/models/{DOUBLE_MODEL}"
    (tokens_dir / "token-2").write_text(SECOND)
    _until(lambda: _http(proxy, path, _bearer(SECOND))[0] == 200, "the second token is accepted")
    assert _http(proxy, path, _bearer(FIRST))[0] == 200  # both valid during the rollover
    (tokens_dir / "token").unlink()
    _until(lambda: _http(proxy, path, _bearer(FIRST))[0] == 401, "the old token is refused")
    assert _http(proxy, path, _bearer(SECOND))[0] == 200
    assert proxy.metric_lines("conch_auth_tokens ") == ["conch_auth_tokens 1.0"]
    (tokens_dir / "token").write_text(FIRST)  # as the module's other tests expect
    _until(lambda: _http(proxy, path, _bearer(FIRST))[0] == 200, "the first token is back")


def test_the_openai_port_takes_the_openai_client_s_api_key(proxy: Proxy) -> None:
    assert proxy.openai is not None
    base = f"http://127.0.0.1:{proxy.openai}/v1"
    before = _refusals(proxy, "openai", "invalid")
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert _refusals(proxy, "openai", "invalid") == before + 1
    models = openai.OpenAI(base_url=base, api_key=FIRST, max_retries=0).models.list()
    assert [m.id for m in models.data] == [DOUBLE_MODEL]
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.openai}/health/live", timeout=5) as resp:
        assert resp.status == 200  # the gateway's probes carry no token


def test_no_token_in_the_proxy_log(proxy: Proxy) -> None:
    assert _http(proxy, "/v2", _bearer(FIRST + "x"))[0] == 401
    log = proxy.log.read_text()
    assert "refused a http request" in log and "invalid token" in log
    for token in (FIRST, SECOND, ADMIN_KEY):
        assert token not in log


def test_the_quality_analysis_client_asks_with_the_mounted_token(proxy: Proxy, tokens_dir: Path) -> None:
    token = tritonhttp.read_token(tokens_dir)
    assert token == FIRST
    probe_set = probes.ProbeSet(model=DOUBLE_MODEL, kind="tensor", inputs={"X": np.ones((5, 4), np.float32)})
    budget = tritonhttp.Budget(tritonhttp.Limits())
    address = f"127.0.0.1:{proxy.http}"
    answers = tritonhttp.ask(tritonhttp.Target("canary", address, DOUBLE_MODEL, token), probe_set, budget, 2)
    np.testing.assert_array_equal(answers["Y"], np.full((5, 4), 2, np.float32))
    with pytest.raises(tritonhttp.NotServedError, match="missing inference token"):
        tritonhttp.ask(tritonhttp.Target("canary", address, DOUBLE_MODEL), probe_set, budget, 2)
