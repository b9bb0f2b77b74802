"""A generative model's probes in a canary analysis: greedy answers from one pod, and their agreement.

`analyze` judges an encoder canary by its tensors; a generator answers text. Each probe prompt (the
build's chat prompts rendered with the checkpoint's template, `probes.generation_probes`) goes to the
pod's Triton ``generate`` endpoint (the same HTTP port and token as the other probes) for
GREEDY_TOKENS greedy tokens, one request at a time, each counted against the analysis' Budget and
bounded by its timeout. Canary and stable answers are compared as the build gate's free-run agreement
is (`gate.generation.agreement`): the share of positions where the two greedy continuations hold the
same token, with the stable build's own tokenizer (its ``tokenizer.json``); without one (a probe
file outside a build directory) whitespace-separated words stand in for tokens, and the result says so.

A busy pod (HTTP 429/503: its queue is full), a refused token (401/403) or no answer is a pod that
could not be asked (`tritonhttp.UnreachableError`: nothing is known); an unknown model is
`NotServedError`; any other error answer to a probe is `RefusedError` (a canary that errs fails).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import probes, tritonhttp
from .generation import GREEDY_TOKENS, agreement

Arrays = dict[str, NDArray[Any]]
Splitter = Callable[[str], list[Any]]
NOT_ASKED = (401, 403, 429, 502, 503, 504)
TOKENIZER_GLOB = "*/1/genai/tokenizer.json"


def ask(target: tritonhttp.Target, probe_set: probes.ProbeSet, budget: tritonhttp.Budget) -> Arrays:
    """Every probe prompt through `target`, greedy; ``text_output`` -> answers [N, 1] (str)."""
    prompts = [str(p) for p in probe_set.inputs[probes.PROMPT_INPUT].reshape(-1)]
    answers = [_generate(target, i, prompt, budget) for i, prompt in enumerate(prompts)]
    return {probes.ANSWER_OUTPUT: np.array(answers, dtype=np.str_).reshape(-1, 1)}


def _generate(target: tritonhttp.Target, index: int, prompt: str, budget: tritonhttp.Budget) -> str:
    budget.spend(target.address)
    body = {
        probes.PROMPT_INPUT: prompt,
        "sampling_parameters": json.dumps({"max_tokens": GREEDY_TOKENS, "temperature": 0}),
        "exclude_input_in_output": True,
    }
    url = f"http://{target.address}/v2/models/{urllib.parse.quote(target.model)}/generate"
    headers = {"Content-Type": "application/json", **(target.headers() or {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    where = f"{target.role} {target.address} model {target.model!r}"
    try:
        with urllib.request.urlopen(request, timeout=budget.limits.timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        if exc.code in NOT_ASKED:
            message = f"{where} could not be asked (HTTP {exc.code}): {detail}"
            raise tritonhttp.UnreachableError(message) from exc
        if exc.code == 404:
            raise tritonhttp.NotServedError(f"{where} is not served there: {detail}") from exc
        raise tritonhttp.RefusedError(f"{where} failed probe {index}: HTTP {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise tritonhttp.UnreachableError(f"cannot reach {where}: {exc!r}") from exc
    if not isinstance(answer, dict) or not isinstance(answer.get(probes.ANSWER_OUTPUT), str):
        raise tritonhttp.RefusedError(f"{where} answered probe {index} without {probes.ANSWER_OUTPUT}")
    return str(answer[probes.ANSWER_OUTPUT])


def splitter(probes_path: Path) -> tuple[Splitter, str]:
    """How answers become tokens: the build's tokenizer when the probes come from a build directory."""
    found = sorted(probes_path.glob(TOKENIZER_GLOB)) if probes_path.is_dir() else []
    if not found:
        return str.split, "words"
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(found[0]))
    return (lambda text: list(tokenizer.encode(text, add_special_tokens=False).ids)), "tokens"


def compare(expected: Arrays, got: Arrays, split: Splitter) -> dict[str, float]:
    """greedyAgreement of `got`'s answers with `expected`'s, and the share answered identically."""
    a = [str(t) for t in expected[probes.ANSWER_OUTPUT].reshape(-1)]
    b = [str(t) for t in got[probes.ANSWER_OUTPUT].reshape(-1)]
    return {
        "greedyAgreement": round(agreement([split(t) for t in a], [split(t) for t in b]), 6),
        "identicalAnswers": round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 6) if a else 1.0,
    }
