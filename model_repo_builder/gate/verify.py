"""The accuracy gate: compare original and compressed outputs on validation inputs.

Metrics over all outputs: max and mean absolute error, mean per-sample cosine similarity,
top-1 agreement of the first output and, when labels are given, top-1 accuracy of both models
and the drop. Non-finite outputs fail the gate outright. Thresholds come from the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import GateFailed
from ..recipe import Gate


def _cosine(a: NDArray[Any], b: NDArray[Any]) -> float:
    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num = (a2 * b2).sum(axis=1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    same = (den == 0) & (np.abs(a2 - b2).max(axis=1) == 0)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(same, 1.0, 0.0))
    return float(cos.mean())


def compare(
    original: list[NDArray[Any]], compressed: list[NDArray[Any]], labels: NDArray[Any] | None
) -> dict[str, float]:
    """All gate metrics; raises GateFailed on non-finite or mismatched outputs."""
    if len(original) != len(compressed):
        raise GateFailed(f"output count changed: {len(original)} -> {len(compressed)}")
    for i, (a, b) in enumerate(zip(original, compressed, strict=True)):
        if a.shape != b.shape:
            raise GateFailed(f"shape mismatch: output {i} {list(a.shape)} vs compressed {list(b.shape)}")
        if not np.isfinite(b.astype(np.float64)).all():
            raise GateFailed(f"compressed model produced non-finite (NaN/Inf) values in output {i}")
    diffs = [
        np.abs(a.astype(np.float64) - b.astype(np.float64)) for a, b in zip(original, compressed, strict=True)
    ]
    flat_a = np.concatenate([a.reshape(len(a), -1) for a in original], axis=1)
    flat_b = np.concatenate([b.reshape(len(b), -1) for b in compressed], axis=1)
    metrics = {
        "maxAbsError": float(max(d.max() for d in diffs)),
        "meanAbsError": float(np.concatenate([d.ravel() for d in diffs]).mean()),
        "cosine": _cosine(flat_a, flat_b),
    }
    first_a, first_b = original[0], compressed[0]
    if first_a.ndim >= 2 and first_a.shape[-1] > 1:
        top_a, top_b = first_a.argmax(axis=-1), first_b.argmax(axis=-1)
        metrics["top1Agreement"] = float((top_a == top_b).mean())
        if labels is not None:
            metrics["accuracyOriginal"] = float((top_a.reshape(len(labels), -1)[:, 0] == labels).mean())
            metrics["accuracyCompressed"] = float((top_b.reshape(len(labels), -1)[:, 0] == labels).mean())
            metrics["accuracyDrop"] = metrics["accuracyOriginal"] - metrics["accuracyCompressed"]
    return {k: round(v, 8) for k, v in metrics.items()}


_CHECKS: list[tuple[str, str, str, bool]] = [
    # (metric, gate field, recipe alias, metric must be <= threshold)
    ("maxAbsError", "max_abs_error", "maxAbsError", True),
    ("meanAbsError", "mean_abs_error", "meanAbsError", True),
    ("cosine", "min_cosine", "minCosine", False),
    ("top1Agreement", "min_top1_agreement", "minTop1Agreement", False),
    ("accuracyDrop", "max_accuracy_drop", "maxAccuracyDrop", True),
    ("perplexityRatio", "max_perplexity_ratio", "maxPerplexityRatio", True),
    ("greedyAgreement", "min_greedy_agreement", "minGreedyAgreement", False),
]


@dataclass(frozen=True)
class Failure:
    """The first gate threshold a model missed: metric, its value, the threshold and its recipe field."""

    metric: str
    value: float
    threshold: float
    field: str  # recipe alias, e.g. minCosine
    op: str  # how the value compares with the threshold when it fails: ">" or "<"

    @property
    def message(self) -> str:
        """One line: 'accuracy gate failed: cosine 0.93 < minCosine 0.99'."""
        return (
            f"accuracy gate failed: {self.metric} {self.value:.6g} {self.op} {self.field} {self.threshold:g}"
        )

    def record(self) -> dict[str, Any]:
        """For build.json and the summary."""
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold, "field": self.field}


def gate_failure(metrics: dict[str, float], gate: Gate) -> Failure | None:
    """The first metric outside its threshold, or None when the gate passes.

    Raises GateFailed when a threshold is set whose metric this model/data cannot give.
    """
    for metric, field_name, alias, upper in _CHECKS:
        threshold = getattr(gate, field_name)
        if threshold is None:
            continue
        if metric not in metrics:
            if metric in ("top1Agreement", "accuracyDrop"):
                raise GateFailed(f"gate {alias} is set but {metric} cannot be computed for this model/data")
            continue
        value = metrics[metric]
        if (value > threshold) if upper else (value < threshold):
            return Failure(metric, value, threshold, alias, ">" if upper else "<")
    return None


def check_gate(metrics: dict[str, float], gate: Gate) -> None:
    """Raise GateFailed naming the first metric outside its threshold."""
    failure = gate_failure(metrics, gate)
    if failure is not None:
        raise GateFailed(failure.message)
