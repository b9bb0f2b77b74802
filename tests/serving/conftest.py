"""Run the real tritonserver bundled in nvidia-pytriton (python backend only) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

READY_TIMEOUT_S = 120.0


def _bundle() -> Path:
    pytriton = pytest.importorskip("pytriton")
    return Path(pytriton.__file__).parent / "tritonserver"


def backend_directory(cache: Path) -> Path:
    """The bundle's backends dir with the python stub in place; copied when site-packages is read-only."""
    bundle = _bundle()
    stub = (
        bundle
        / "python_backend_stubs"
        / f"{sys.version_info.major}.{sys.version_info.minor}"
        / "triton_python_backend_stub"
    )
    backends = bundle / "backends"
    if not os.access(backends / "python", os.W_OK):
        copy = cache / "backends"
        if not copy.exists():
            shutil.copytree(backends, copy)
        backends = copy
    target = backends / "python" / "triton_python_backend_stub"
    if not target.exists():
        shutil.copy2(stub, target)
    return backends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Triton:
    http: int
    grpc: int
    metrics: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def run_triton(repository: Path, workdir: Path) -> Iterator[Triton]:
    """Start tritonserver on free loopback ports, wait (polling, bounded) until ready, stop it after."""
    bundle = _bundle()
    server = Triton(free_port(), free_port(), free_port(), workdir / "tritonserver.log")
    site = str(Path(pytest.importorskip("onnxruntime").__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        str(bundle / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backend_directory(workdir)}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={server.http}",
        f"--grpc-port={server.grpc}",
        f"--metrics-port={server.metrics}",
        "--allow-metrics=true",
        "--exit-on-error=true",
    ]
    with server.log.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _ready(server.http):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"tritonserver not ready (rc={proc.poll()}):\n{server.log.read_text()[-4000:]}"
                    )
                time.sleep(0.2)  # polling interval for readiness, bounded by the deadline
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")
