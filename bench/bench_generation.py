"""Generation benchmark (issue 20): SmolLM2-135M-Instruct as Conch builds and serves it, against fp32.

Why it exists: the text-generation path claims that a weight-only int4 or int8 build served through
Triton (onnxruntime-genai in the python backend, tokens streamed) is much faster and smaller than
running the original checkpoint with `transformers`, at a small and measured loss. This measures it,
side by side in one run, on the same chat prompts, greedy, up to NEW_TOKENS new tokens each:
- transformers fp32 `generate` in-process (what a user would run otherwise), timed per token;
- the int4-weight and int8-weight repositories built by the real builder CLI from the GGUF file, both
  served by one real tritonserver on 127.0.0.1, called over gRPC streaming at concurrency 1.
Per variant: tokens/s (generated tokens over wall time, prefill included), time to first token p50/p99,
inter-token latency p50/p99, weight bytes (and x smaller than the fp32 safetensors), and the build's
gate (perplexity ratio, greedy agreement). Variants run in interleaved rounds in a rotating order.
Targets (issue 20): int4 >= 3x the tokens/s of transformers fp32, >= 3.5x smaller, perplexity ratio
<= 1.10. The int4 build is made with the gate's bounds opened (recorded) so that it can be measured:
with the default bounds this model's int4 does not pass (the int8 build uses the default gate).

Not a test: it reports the numbers it gets, met or not. Writes bench/results/generation.json.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.data import prompts as gate_prompts
from model_repo_builder.gate import generation as gengate
from tests.support import llm
from tests.support.triton import run_triton

ROOT = Path(__file__).resolve().parent
NEW_TOKENS = 128
ROUNDS = 3
PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold, step by step.",
    "Describe a walk through a busy market in the morning.",
    "What are the pros and cons of working from home? Answer in detail.",
)
BUILDS: dict[str, list[str]] = {
    "int4": ["--quantize", "int4-weight", "--max-perplexity-ratio", "10", "--min-greedy-agreement", "0"],
    "int8": ["--quantize", "int8-weight"],
}


def build(name: str, flags: list[str], store: Path) -> dict[str, Any]:
    """Build one variant with the real CLI; returns its build.json."""
    cmd = [
        sys.executable, "-m", "model_repo_builder", "build", str(llm.GGUF), "--out", str(store),
        "--task", "text-generation", "--model-name", f"smol_{name}", *flags,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"build {name} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(json.loads((Path(summary["repository"]) / "build.json").read_text()))


class Reference:
    """transformers fp32 generate (the GGUF file as the builder loads it), greedy, with a streamer that
    stamps every new token."""

    def __init__(self, work: Path) -> None:
        import torch

        self.torch = torch
        loaded = llm.smollm2(work)
        self.tokenizer, self.model = loaded.tokenizer, loaded.module

    def run(self, prompt: str) -> list[float]:
        """Seconds from the call to each generated token."""
        ids = self.torch.tensor([gengate.chat_ids(self.tokenizer, [{"role": "user", "content": prompt}])])
        stamps: list[float] = []
        start = time.perf_counter()

        class Stamper:
            first = True

            def put(self, value: Any) -> None:
                if self.first:  # the prompt
                    self.first = False
                    return
                stamps.append(time.perf_counter() - start)

            def end(self) -> None:
                pass

        with self.torch.no_grad():
            self.model.generate(
                ids, attention_mask=self.torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS,
                streamer=Stamper(), pad_token_id=self.tokenizer.eos_token_id,
            )  # fmt: skip
        return stamps


def served(grpc_url: str, model: str, prompt: str) -> list[float]:
    """Seconds from the request to each streamed response of the decoupled model (gRPC stream)."""
    import tritonclient.grpc as grpcclient

    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    messages = grpcclient.InferInput("messages", [1], "BYTES")
    messages.set_data_from_numpy(np.array([json.dumps([{"role": "user", "content": prompt}])], dtype=object))
    params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
    params.set_data_from_numpy(
        np.array([json.dumps({"max_tokens": NEW_TOKENS, "temperature": 0})], dtype=object)
    )
    stream = grpcclient.InferInput("stream", [1], "BOOL")
    stream.set_data_from_numpy(np.array([True]))
    stamps: list[float] = []
    start = time.perf_counter()
    client.start_stream(callback=lambda result, error: results.put((result, error, time.perf_counter())))
    try:
        client.async_stream_infer(model, [messages, params, stream], enable_empty_final_response=True)
        while True:
            result, error, at = results.get(timeout=300)
            if error is not None:
                raise RuntimeError(str(error))
            response = result.get_response()
            text = result.as_numpy("text_output")
            if text is not None and len(text) and text[0]:
                stamps.append(at - start)
            if response.parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    return stamps


def summarise(runs: list[list[float]]) -> dict[str, Any]:
    """tokens/s over all runs, TTFT and inter-token latency percentiles (ms)."""
    ttft = [r[0] for r in runs if r]
    gaps = [b - a for r in runs for a, b in itertools.pairwise(r)]
    tokens = sum(len(r) for r in runs)
    seconds = sum(r[-1] for r in runs if r)
    return {
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
        "ttft_p50_ms": round(1000 * float(np.percentile(ttft, 50)), 2),
        "ttft_p99_ms": round(1000 * float(np.percentile(ttft, 99)), 2),
        "itl_p50_ms": round(1000 * float(np.percentile(gaps, 50)), 2),
        "itl_p99_ms": round(1000 * float(np.percentile(gaps, 99)), 2),
    }


def main() -> None:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="conch-bench-gen-") as tmp:
        work = Path(tmp)
        store = work / "store"
        records = {name: build(name, flags, store) for name, flags in BUILDS.items()}
        reference = Reference(work / "reference")
        repos = [store / r["buildKey"] for r in records.values()]
        runs: dict[str, list[list[float]]] = {"transformers-fp32": [], "int4": [], "int8": []}
        with run_triton(repos, work) as triton:
            for name in ("int4", "int8"):  # warm each once (first request loads the session caches)
                served(triton.grpc_url, f"smol_{name}", "Hello")
            reference.run("Hello")
            order = list(runs)
            for round_index in range(ROUNDS):
                rotated = order[round_index % len(order) :] + order[: round_index % len(order)]
                for name in rotated:
                    for prompt in PROMPTS:
                        if name == "transformers-fp32":
                            runs[name].append(reference.run(prompt))
                        else:
                            runs[name].append(served(triton.grpc_url, f"smol_{name}", prompt))
    result = _report(records, runs, started)
    out = ROOT / "results" / "generation.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


def _report(
    records: dict[str, dict[str, Any]], runs: dict[str, list[list[float]]], started: float
) -> dict[str, Any]:
    stats = {name: summarise(r) for name, r in runs.items()}
    base = stats["transformers-fp32"]["tokens_per_s"]
    fp32_bytes = records["int8"]["sizeBefore"]
    variants: dict[str, Any] = {"transformers-fp32": {**stats["transformers-fp32"], "bytes": fp32_bytes}}
    for name, record in records.items():
        gate = record["gate"]
        variants[name] = {
            **stats[name],
            "speedup_vs_fp32": round(stats[name]["tokens_per_s"] / base, 2) if base else 0.0,
            "bytes": record["sizeAfter"],
            "x_smaller": round(fp32_bytes / record["sizeAfter"], 2),
            "perplexity_ratio": gate["perplexityRatio"],
            "greedy_agreement": gate["greedyAgreement"],
            "free_run_agreement": gate.get("freeRunAgreement"),
            "gate_bounds": record["gateBounds"],
        }
    int4 = variants["int4"]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {"new_tokens": NEW_TOKENS, "rounds": ROUNDS, "prompts": len(PROMPTS), "concurrency": 1},
        "variants": variants,
        "targets": {
            "int4_speedup_ge_3x": int4["speedup_vs_fp32"] >= 3.0,
            "int4_x_smaller_ge_3.5": int4["x_smaller"] >= 3.5,
            "int4_perplexity_ratio_le_1.10": int4["perplexity_ratio"] <= 1.10,
        },
        "summary": {
            name: {k: v[k] for k in ("tokens_per_s", "ttft_p50_ms", "itl_p50_ms") if k in v}
            for name, v in variants.items()
        },
        "wall_s": round(time.time() - started, 1),
        "gate_prompts": len(gate_prompts.CHAT_PROMPTS),
    }


if __name__ == "__main__":
    main()
