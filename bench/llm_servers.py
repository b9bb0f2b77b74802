"""The processes of the LLM serving benchmark (bench/bench_llm_load.py): Conch's OpenAI gateway in front of a
real tritonserver, llama.cpp's llama-server, and one guidellm run against either. Each server is a context
manager that waits (polling, bounded) until it answers a real completion and stops its process after; the
tools come from hack/ scripts that build or install them once into the cache and print their path."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import free_port, stop_process
from tests.support.triton import run_triton

HACK = Path(__file__).resolve().parent.parent / "hack"
READY_S = 180.0
MODEL = "smol"  # the name both servers answer to (the gateway's --model, llama-server's --alias)


def tool(script: str) -> tuple[Path, float]:
    """Run a hack/ script that builds or installs a tool into the cache; its path and the seconds it took."""
    start = time.monotonic()
    done = subprocess.run([str(HACK / script)], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"hack/{script} failed (rc={done.returncode})")
    return Path(done.stdout.strip().splitlines()[-1]), time.monotonic() - start


def complete(base: str, prompt: str = "Hello, my name is", max_tokens: int = 4, timeout: float = 60) -> str:
    """One non-streamed /v1/completions call; the text (raises on any HTTP error)."""
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    request = urllib.request.Request(
        f"{base}/v1/completions", body.encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return str(answer["choices"][0]["text"])


def _wait_answering(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until the server answers a real completion, bounded by READY_S; the log's tail on failure."""
    deadline = time.monotonic() + READY_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            complete(base, timeout=30)
            return
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            time.sleep(0.5)  # polling interval, bounded by the deadline
    raise SystemExit(f"{base} never answered (rc={proc.poll()}):\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def _serving(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a server's `cmd` (listening on 127.0.0.1:`port`), logging to `log`, until it answers a real
    completion; its base URL while the context lasts, stopped after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_answering(base, proc, log)
            yield base
        finally:
            stop_process(proc, 10)


@contextlib.contextmanager
def conch(repository: Path, work: Path, sequences: int) -> Iterator[str]:
    """tritonserver serving `repository` and the conch_gateway in front of it: the gateway's base URL.
    The model's scheduler runs up to `sequences` at once (llama-server's --parallel slots, the same)."""
    with run_triton(repository, work, env={"CONCH_LLM_MAX_SEQUENCES": str(sequences)}) as triton:
        port = free_port()
        cmd = [sys.executable, "-m", "conch_gateway", "--triton-grpc", triton.grpc_url, "--model", MODEL,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with _serving(cmd, port, work / "gateway.log") as base:
            yield base


@contextlib.contextmanager
def llama_server(binary: Path, gguf: Path, parallel: int, threads: int, work: Path) -> Iterator[str]:
    """llama-server on `gguf` with `parallel` slots sharing an 8192-token context: its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(
            filter(None, [str(binary.parent), os.environ.get("LD_LIBRARY_PATH")])
        ),
    }
    cmd = [str(binary), "-m", str(gguf), "-t", str(threads), "--parallel", str(parallel), "-c", "8192",
           "--host", "127.0.0.1", "--port", str(port), "--alias", MODEL, "--no-webui"]  # fmt: skip
    with _serving(cmd, port, work / f"llama-server-{parallel}.log", env) as base:
        yield base


@dataclass(frozen=True)
class Load:
    """One guidellm run's settings: the same for every server."""

    concurrency: int
    seconds: float
    prompt_tokens: int
    output_tokens: int
    tokenizer: Path  # a local Hugging Face directory of the model (guidellm counts tokens with it)
    seed: int = 42


def guidellm(binary: Path, base: str, load: Load, out: Path) -> dict[str, Any]:
    """One guidellm run: streamed /v1/completions at a fixed concurrency for load.seconds; its JSON report."""
    cmd = [
        str(binary), "run",
        # both servers are known to answer a real completion before a run starts (conch, llama_server),
        # so guidellm's own check of /health is off for both
        "--backend", f"kind=openai_http,target={base},model={MODEL},request_format=/v1/completions,"
                     "validate_backend=false",
        "--tokenizer", f"kind=huggingface_auto,model={load.tokenizer}",
        "--profile", f"kind=concurrent,streams={load.concurrency}",
        "--constraint", f"kind=max_duration,seconds={load.seconds:g}",
        "--data", f"kind=synthetic_text,prompt_tokens={load.prompt_tokens},"
                  f"output_tokens={load.output_tokens}",
        "--seed", f"kind=static,value={load.seed}",
        "--output", f"kind=json,path={out}",
        "--disable-console-interactive",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    log = out.with_suffix(".log")
    with log.open("wb") as sink:
        done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"guidellm failed (rc={done.returncode}):\n{log.read_text()[-3000:]}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report
