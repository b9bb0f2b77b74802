"""The numbers of the LLM serving benchmark (bench/bench_llm_load.py): what one guidellm JSON report says
about a run, the runs of one (server, concurrency) pooled into one line, conch against llama-server with
the issue's targets, and the in-process transformers fp32 reference the servers are put in scale with."""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import numpy as np

MS = 1000.0


def from_guidellm(raw: dict[str, Any]) -> dict[str, Any]:
    """One guidellm run (one benchmark): its counts and measured seconds, and per successful request the
    values the pooled summary needs (kept under "requests", not written out)."""
    (bench,) = raw["benchmarks"]
    groups = bench["requests"]
    done = groups.get("successful") or []
    errored = groups.get("errored") or []
    errors = [str((r.get("info") or {}).get("error") or "") for r in errored]
    cut_off = groups.get("incomplete") or []
    streamed = done + cut_off  # the latencies of a request cut off by the window's end count too
    return {
        "guidellm_version": raw.get("metadata", {}).get("guidellm_version"),
        "seconds": float(bench["duration"]),
        "successful": len(done),
        "errors": len(errored),
        "errors_http_429": sum("429" in e for e in errors),
        "error_examples": sorted(set(e[:200] for e in errors))[:3],
        "incomplete": len(cut_off),
        "incomplete_before_first_token": sum(not r.get("time_to_first_token_ms") for r in cut_off),
        # tokens streamed by requests that the window's end cut off (or that failed part way)
        "partial_output_tokens": sum(int(r.get("output_tokens") or 0) for r in cut_off + errored),
        "guidellm_output_tokens_per_s_mean": round(
            float(bench["metrics"]["output_tokens_per_second"]["total"]["mean"]), 2
        ),
        "requests": {
            "ttft_ms": [_ttft_ms(r) for r in streamed],
            "itl_ms": [
                float(r["inter_token_latency_ms"]) for r in streamed if r.get("inter_token_latency_ms")
            ],
            "output_tokens": [int(r.get("output_tokens") or 0) for r in done],
            "prompts": [_prompt(r) for r in streamed + errored],
        },
    }


def _ttft_ms(request: dict[str, Any]) -> float:
    """The request's time to first token; for one cut off before its first token, the time it waited
    (a lower bound: leaving it out would make a server that starts few requests look fast)."""
    if request.get("time_to_first_token_ms"):
        return float(request["time_to_first_token_ms"])
    return MS * (float(request["request_end_time"]) - float(request["request_start_time"]))


def _prompt(request: dict[str, Any]) -> str:
    args = request.get("request_args") or "{}"
    body = (json.loads(args) if isinstance(args, str) else args).get("body") or {}
    prompt = body.get("prompt", "")
    return prompt[0] if isinstance(prompt, list) else str(prompt)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one (server, concurrency) as one: rates over their summed measured seconds (output
    tokens/s counts every token streamed in the window, the requests cut off at its end included;
    _completed only those of completed requests), latency percentiles over every request that streamed
    tokens, completed or cut off (TTFT: one cut off before its first token counts the time it waited, a
    lower bound, and is counted apart)."""
    seconds = sum(r["seconds"] for r in runs)
    ttft = [v for r in runs for v in r["requests"]["ttft_ms"]]
    itl = [v for r in runs for v in r["requests"]["itl_ms"]]
    tokens = [v for r in runs for v in r["requests"]["output_tokens"]]
    successful = sum(r["successful"] for r in runs)
    streamed = sum(tokens) + sum(r["partial_output_tokens"] for r in runs)
    return {
        "output_tokens_per_s": round(streamed / seconds, 2) if seconds else 0.0,
        "output_tokens_per_s_completed": round(sum(tokens) / seconds, 2) if seconds else 0.0,
        "requests_per_s": round(successful / seconds, 3) if seconds else 0.0,
        "ttft_p50_ms": _percentile(ttft, 50),
        "ttft_p99_ms": _percentile(ttft, 99),
        "itl_p50_ms": _percentile(itl, 50),
        "itl_p99_ms": _percentile(itl, 99),
        "successful": successful,
        "errors": sum(r["errors"] for r in runs),
        "errors_http_429": sum(r["errors_http_429"] for r in runs),
        "incomplete": sum(r["incomplete"] for r in runs),
        "incomplete_before_first_token": sum(r["incomplete_before_first_token"] for r in runs),
        "output_tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else None,
        "seconds": round(seconds, 1),
        "loadavg_1m": [[r["loadavg_1m_start"], r["loadavg_1m_end"]] for r in runs],
    }


def compare(
    runs: list[dict[str, Any]], concurrencies: tuple[int, ...], targets: dict[int, tuple[float, bool]]
) -> dict[str, Any]:
    """summary[server][c{n}], ratios conch / llama-server per concurrency, and the targets met or not
    (None where a side has no successful request)."""
    summary: dict[str, dict[str, Any]] = {}
    for server in sorted({r["server"] for r in runs}):
        summary[server] = {
            f"c{c}": pooled([r for r in runs if r["server"] == server and r["concurrency"] == c])
            for c in concurrencies
        }
    ratios: dict[str, Any] = {}
    met: dict[str, bool | None] = {}
    for c in concurrencies:
        conch, llama = summary["conch"][f"c{c}"], summary["llama-server"][f"c{c}"]
        tok = _ratio(conch["output_tokens_per_s"], llama["output_tokens_per_s"])
        ttft = _ratio(conch["ttft_p50_ms"], llama["ttft_p50_ms"])
        ratios[f"c{c}"] = {
            "output_tokens_per_s": tok,
            "requests_per_s": _ratio(conch["requests_per_s"], llama["requests_per_s"]),
            "ttft_p50": ttft,
            "itl_p50": _ratio(conch["itl_p50_ms"], llama["itl_p50_ms"]),
        }
        if c not in targets:
            continue
        at_least, ttft_no_worse = targets[c]
        name = f"c{c}_output_tokens_per_s_ge_{at_least}x" + (
            "_and_ttft_p50_no_worse" if ttft_no_worse else ""
        )
        if tok is None or (ttft_no_worse and ttft is None):
            met[name] = None
        else:
            met[name] = tok >= at_least and (not ttft_no_worse or (ttft is not None and ttft <= 1.0))
    return {"summary": summary, "ratios_conch_over_llama_server": ratios, "targets": met}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def transformers_reference(model: Any, prompts: list[str], new_tokens: int) -> dict[str, Any]:
    """transformers fp32 `generate` in-process, one prompt at a time, greedy, exactly `new_tokens` new
    tokens each (EOS ignored, as the servers are asked to): tokens/s, TTFT and inter-token latency."""

    load_before = _loadavg()
    stamps_per_prompt = [_timed_generate(model, prompt, new_tokens) for prompt in prompts]
    tokens = sum(len(s) for s in stamps_per_prompt)
    seconds = sum(s[-1] for s in stamps_per_prompt if s)
    gaps = [b - a for s in stamps_per_prompt for a, b in itertools.pairwise(s)]
    ttft = [s[0] for s in stamps_per_prompt if s]
    return {
        "concurrency": 1,
        "prompts": len(prompts),
        "prompt_tokens": [int(model.tokenizer(p, return_tensors="pt").input_ids.shape[1]) for p in prompts],
        "output_tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
        "ttft_p50_ms": _percentile([MS * t for t in ttft], 50),
        "ttft_p99_ms": _percentile([MS * t for t in ttft], 99),
        "itl_p50_ms": _percentile([MS * g for g in gaps], 50),
        "itl_p99_ms": _percentile([MS * g for g in gaps], 99),
        "loadavg_1m": [load_before, _loadavg()],
    }


def _timed_generate(model: Any, prompt: str, new_tokens: int) -> list[float]:
    """Seconds from the call to each new token of one greedy `generate` of exactly `new_tokens` tokens."""
    import torch

    ids = model.tokenizer(prompt, return_tensors="pt").input_ids
    stamps: list[float] = []
    start = time.perf_counter()

    class Stamper:  # a transformers streamer: put() gets the prompt first, then each new token
        first = True

        def put(self, value: Any) -> None:
            if self.first:
                self.first = False
                return
            stamps.append(time.perf_counter() - start)

        def end(self) -> None:
            pass

    with torch.no_grad():
        model.module.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, streamer=Stamper(), pad_token_id=model.tokenizer.eos_token_id,
        )  # fmt: skip
    return stamps


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)
