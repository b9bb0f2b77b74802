"""The auth proxy (`conch-gateway auth-proxy`) as a local process in front of a local Triton, and a
tiny python-backend model to serve behind it: the serving test's and the auth bench's setup."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port, stop_process
from tests.support.triton import Triton

READY_TIMEOUT_S = 30.0
DOUBLE_MODEL = "double"

_DOUBLE_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * 2).astype(np.float32))]))
        return out
"""
_DOUBLE_CONFIG = f'''
name: "{DOUBLE_MODEL}"
backend: "python"
max_batch_size: 8
input [{{ name: "X", data_type: TYPE_FP32, dims: [ 4 ] }}]
output [{{ name: "Y", data_type: TYPE_FP32, dims: [ 4 ] }}]
instance_group [{{ kind: KIND_CPU, count: 1 }}]
'''


def double_repository(root: Path) -> Path:
    """A repository with one python model, `double`: Y = 2 * X (FP32, [batch, 4])."""
    model = root / DOUBLE_MODEL
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "1" / "model.py").write_text(textwrap.dedent(_DOUBLE_PY))
    (model / "config.pbtxt").write_text(_DOUBLE_CONFIG)
    return root


@dataclass
class Proxy:
    http: int
    grpc: int
    metrics: int
    log: Path
    openai: int | None = None

    def metric_lines(self, name: str) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
        return [line for line in text.splitlines() if line.startswith(name)]


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def run_auth_proxy(
    triton: Triton, tokens_dir: Path, workdir: Path, openai_upstream: str | None = None
) -> Iterator[Proxy]:
    """The proxy on free loopback ports in front of `triton` (and an OpenAI gateway at host:port
    `openai_upstream`), up (its health relayed) before yielding."""
    proxy = Proxy(free_port(), free_port(), free_port(), workdir / "auth-proxy.log")
    cmd = [
        sys.executable, "-m", "conch_gateway", "auth-proxy", f"--tokens={tokens_dir}", "--host=127.0.0.1",
        f"--http={proxy.http}={triton.http_url}", f"--grpc={proxy.grpc}={triton.grpc_url}",
        f"--metrics-port={proxy.metrics}",
    ]  # fmt: skip
    if openai_upstream is not None:
        proxy.openai = free_port()
        cmd.append(f"--openai={proxy.openai}={openai_upstream}")
    with proxy.log.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _up(proxy.http):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"auth proxy not up (rc={proc.poll()}):\n{proxy.log.read_text()[-4000:]}")
                time.sleep(0.1)  # polling interval, bounded by the deadline
            yield proxy
        finally:
            stop_process(proc, 10)
