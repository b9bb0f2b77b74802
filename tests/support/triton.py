"""Run the real tritonserver bundled in nvidia-pytriton (python backend only) on 127.0.0.1, set up
by the same code as the node agent uses (testenv/nodeagent/bundle.py): the serving tests' server and
the benchmarks'."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from testenv.nodeagent import bundle
from tests.support.processes import free_port, stop_process

READY_TIMEOUT_S = 120.0


@dataclass
class Triton:
    http: int
    grpc: int
    metrics: int
    log: Path
    pid: int = 0

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
def run_triton(
    repository: Path | list[Path],
    workdir: Path,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Triton]:
    """Start tritonserver on free loopback ports, wait (polling, bounded) until ready, stop it after;
    `env` adds to its environment (a generative model's scheduler limits, say)."""
    repositories = repository if isinstance(repository, list) else [repository]
    tools = bundle.toolchain(workdir)
    server = Triton(free_port(), free_port(), free_port(), workdir / "tritonserver.log")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tools.python_path, os.environ.get("PYTHONPATH")])),
        "LD_LIBRARY_PATH": tools.library_path,
        "PATH": os.pathsep.join([str(tools.venv_bin), os.environ.get("PATH", "")]),
        **(env or {}),
    }
    cmd = [
        str(tools.triton_bin),
        *[f"--model-repository={r}" for r in repositories],
        f"--backend-directory={tools.backend_dir}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={server.http}",
        f"--grpc-port={server.grpc}",
        f"--metrics-port={server.metrics}",
        "--allow-metrics=true",
        "--exit-on-error=true",
        # tests run several tritonservers at once on one /dev/shm: python backend regions must not collide
        f"--backend-config=python,shm-region-prefix-name=conch_test_{server.http}_",
        *extra_args,
    ]
    with server.log.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        server.pid = proc.pid
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
            stop_process(proc, 30)
