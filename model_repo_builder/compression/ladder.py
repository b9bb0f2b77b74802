"""The precision ladder: try quantize modes in order and publish the first that passes the gate.

`compression.fallback` lists modes tried after `quantize.mode` (e.g. int8-static -> int8-dynamic ->
fp16 -> none). Every rung starts from the same fp32 model (pruned and distilled already), so a rung
that fails costs one quantization and one gate run. The report says which mode was published and
why each earlier one failed (metric, value, threshold). The recipe, not the outcome, is hashed into
the build key, so a rebuild of the same recipe is a cache hit whatever rung won.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput, BuilderError, GateFailed
from ..gate.verify import Failure, gate_failure
from ..recipe import Gate, QuantizeMode

Make = Callable[[QuantizeMode], Path]
"""Writes the model at one precision and returns its file (raises BadInput when it cannot)."""
Judge = Callable[[Path], dict[str, float]]
"""Gate metrics of a candidate file (raises GateFailed on NaN or changed shapes)."""


@dataclass
class Published:
    """The rung that passed: its mode, file, gate metrics, and every attempt up to it."""

    mode: QuantizeMode
    artifact: Path
    metrics: dict[str, float]
    attempts: list[dict[str, Any]]

    def record(self, ladder: list[QuantizeMode]) -> dict[str, Any]:
        """build.json's `quantize` entry."""
        return {"published": self.mode, "ladder": list(ladder), "attempts": self.attempts}


def climb(modes: list[QuantizeMode], make: Make, judge: Judge, gate: Gate, steps: Any) -> Published:
    """Try each mode in order; the first whose candidate passes the gate is returned.

    With a single mode the errors are exactly those of a build without a ladder. With several,
    a rung that cannot be quantized or fails the gate is recorded and the next is tried; when none
    passes, GateFailed lists why each failed (BadInput when every rung failed to quantize).
    """
    attempts: list[dict[str, Any]] = []
    errors: list[BuilderError] = []
    last: Failure | None = None
    for index, mode in enumerate(modes):
        suffix = "" if index == 0 else f":{mode}"
        try:
            with steps.step("quantize" + suffix):
                artifact = make(mode)
            with steps.step("gate" + suffix):
                metrics = judge(artifact)
        except (BadInput, GateFailed) as exc:
            if len(modes) == 1:
                raise
            errors.append(exc)
            attempts.append({"mode": mode, "passed": False, "error": _first_line(exc)})
            continue
        steps.info["gate"] = metrics
        last = gate_failure(metrics, gate)
        if last is None:
            attempts.append({"mode": mode, "passed": True})
            return Published(mode, artifact, metrics, attempts)
        attempts.append({"mode": mode, "passed": False, **last.record()})
    if len(modes) == 1 and last is not None:
        raise GateFailed(last.message)
    text = "; ".join(describe(a) for a in attempts)
    if len(errors) == len(modes) and all(isinstance(e, BadInput) for e in errors):
        raise BadInput(f"no precision could be built: {text}")
    raise GateFailed(f"no precision passed the gate: {text}")


def describe(attempt: dict[str, Any]) -> str:
    """'int8-static: cosine 0.93 < minCosine 0.99' (or the rung's error)."""
    mode = attempt["mode"]
    if attempt.get("passed"):
        return f"{mode}: passed"
    if "error" in attempt:
        return f"{mode}: {attempt['error']}"
    value, threshold = attempt["value"], attempt["threshold"]
    op = "<" if attempt["field"].startswith("min") else ">"
    return f"{mode}: {attempt['metric']} {value:.6g} {op} {attempt['field']} {threshold:g}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
