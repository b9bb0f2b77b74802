"""The gate for generative models: perplexity ratio and greedy agreement against the original.

The original is the fp32 `transformers` model; the candidate is the exported onnxruntime-genai folder
as it will be served. Both see the same token ids (the checkpoint's own tokenizer and chat template):
- perplexity on held-out passages, the candidate's through its ONNX decoder in onnxruntime (all
  positions at once, an empty KV cache), reported as the ratio candidate / original;
- greedy agreement: over each chat prompt's first GREEDY_TOKENS greedy tokens of the original, the
  share where the candidate's greedy choice, given the same prefix, is the same token (teacher-forced:
  one early flip does not turn every later token of a small model into a disagreement);
- free-run agreement, reported beside it: the candidate's own greedy continuation from
  onnxruntime-genai's generator (the serving runtime) compared position by position; a sequence that
  ends early counts its missing positions as disagreements unless both ended there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data.prompts import GateData
from ..errors import GateFailed
from ..recipe import Gate

GREEDY_TOKENS = 32
MAX_PERPLEXITY_RATIO = 1.10
MIN_GREEDY_AGREEMENT = 0.80


@dataclass
class Tokens:
    """The token ids both models see: passages and rendered chat prompts."""

    passages: list[list[int]]
    prompts: list[list[int]]


@dataclass
class Reference:
    """The original model's answers: its perplexity and its greedy continuations."""

    perplexity: float
    greedy: list[list[int]]


def effective_gate(gate: Gate) -> Gate:
    """The recipe's gate as it applies to generation: the two generation bounds, defaults filled in."""
    return Gate(
        max_abs_error=None,
        mean_abs_error=None,
        min_cosine=None,
        min_top1_agreement=None,
        max_accuracy_drop=None,
        max_perplexity_ratio=gate.max_perplexity_ratio or MAX_PERPLEXITY_RATIO,
        min_greedy_agreement=(
            MIN_GREEDY_AGREEMENT if gate.min_greedy_agreement is None else gate.min_greedy_agreement
        ),
    )


def tokenize(tokenizer: Any, data: GateData) -> Tokens:
    """Token ids of the passages and of the chat prompts rendered with the checkpoint's template."""
    passages = [list(tokenizer(p)["input_ids"]) for p in data.passages]
    return Tokens(passages, [chat_ids(tokenizer, m) for m in data.prompts])


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """A chat's token ids, rendered with the checkpoint's template and the assistant's turn opened
    (apply_chat_template answers a list, or in transformers 5 a BatchEncoding holding input_ids)."""
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return [int(t) for t in (rendered if isinstance(rendered, list) else rendered["input_ids"])]


def reference(module: Any, eos: set[int], tokens: Tokens) -> Reference:
    """The original fp32 model's perplexity and greedy continuations (torch, no sampling)."""
    import torch

    nll, count = 0.0, 0
    with torch.no_grad():
        for ids in tokens.passages:
            logits = module(torch.tensor([ids])).logits[0].double().numpy()
            part, n = _nll(logits, ids)
            nll, count = nll + part, count + n
        greedy = []
        for ids in tokens.prompts:
            out = module.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=GREEDY_TOKENS,
                pad_token_id=next(iter(eos)),
            )
            greedy.append(_until_eos([int(t) for t in out[0, len(ids) :]], eos))
    return Reference(_perplexity(nll, count), greedy)


def measure(folder: Path, eos: set[int], tokens: Tokens, ref: Reference) -> dict[str, float]:
    """The candidate's gate metrics against the reference."""
    nll, count = 0.0, 0
    decoder = _Decoder(folder)
    for ids in tokens.passages:
        part, n = _nll(decoder.logits(ids), ids)
        nll, count = nll + part, count + n
    perplexity = _perplexity(nll, count)
    same = total = 0
    for ids, original in zip(tokens.prompts, ref.greedy, strict=True):
        if not original:
            continue
        logits = decoder.logits(ids + original)[len(ids) - 1 : -1]
        same += int((logits.argmax(axis=-1) == np.array(original)).sum())
        total += len(original)
    free_run = _genai_greedy(folder, tokens.prompts, eos)
    return {
        "perplexity": round(perplexity, 6),
        "perplexityOriginal": round(ref.perplexity, 6),
        "perplexityRatio": round(perplexity / ref.perplexity, 6),
        "greedyAgreement": round(same / total if total else 1.0, 6),
        "freeRunAgreement": round(agreement(ref.greedy, free_run), 6),
        "greedyTokens": GREEDY_TOKENS,
        "prompts": len(tokens.prompts),
    }


def agreement(original: list[list[int]], candidate: list[list[int]]) -> float:
    """Share of the compared positions where the two greedy continuations hold the same token."""
    same = total = 0
    for a, b in zip(original, candidate, strict=True):
        length = min(GREEDY_TOKENS, max(len(a), len(b)))
        total += length
        same += sum(1 for i in range(min(len(a), len(b), length)) if a[i] == b[i])
    return same / total if total else 1.0


def _nll(logits: NDArray[Any], ids: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of ids[1:] under logits[:-1] (float64 log-softmax)."""
    if len(ids) < 2:
        return 0.0, 0
    z = logits[:-1].astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = log_probs[np.arange(len(ids) - 1), ids[1:]]
    if not np.isfinite(picked).all():
        raise GateFailed("the model produced non-finite (NaN/Inf) logits")
    return float(-picked.sum()), len(ids) - 1


def _perplexity(nll: float, count: int) -> float:
    return math.exp(nll / count) if count else 1.0


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i]
    return tokens


def _genai_greedy(folder: Path, prompts: list[list[int]], eos: set[int]) -> list[list[int]]:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    out = []
    for ids in prompts:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + GREEDY_TOKENS)
        generator = og.Generator(model, params)
        generator.append_tokens(np.array(ids, dtype=np.int32))
        tokens: list[int] = []
        while not generator.is_done() and len(tokens) < GREEDY_TOKENS:
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        out.append(_until_eos(tokens, eos))
    return out


class _Decoder:
    """The exported decoder in onnxruntime: logits of every position for one sequence, no KV cache."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options)
        decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        self.kv_shape = (int(decoder["num_key_value_heads"]), int(decoder["head_size"]))

    def logits(self, ids: list[int]) -> NDArray[Any]:
        feed: dict[str, NDArray[Any]] = {}
        for arg in self.session.get_inputs():
            feed[arg.name] = self._input(arg, ids)
        (logits,) = self.session.run(["logits"], feed)
        return np.asarray(logits[0], dtype=np.float64)

    def _input(self, arg: Any, ids: list[int]) -> NDArray[Any]:
        length = len(ids)
        if arg.name == "input_ids":
            return np.array([ids], dtype=np.int64)
        if arg.name == "attention_mask":
            return np.ones((1, length), dtype=np.int64)
        if arg.name == "position_ids":
            return np.arange(length, dtype=np.int64)[None]
        if arg.name.startswith("past_key_values"):  # [batch, kv heads, past length 0, head size]
            heads, size = self.kv_shape
            dtype = np.float16 if "float16" in arg.type else np.float32
            return np.zeros((1, heads, 0, size), dtype=dtype)
        raise GateFailed(f"the exported decoder has an input the gate cannot feed: {arg.name}")
