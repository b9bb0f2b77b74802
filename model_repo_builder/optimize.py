"""onnxruntime's transformer graph optimizer, kept only when it makes the model faster.

`onnxruntime.transformers.optimizer.optimize_model` fuses attention, (Skip)LayerNorm, GELU and bias
adds into single kernels for BERT-family encoders. Whether that pays depends on the CPU and the
model, so the fused graph is timed against the plain one on the same batch (best of a few runs) and
kept only when it is at least MIN_GAIN faster and computes the same outputs; the report says what
was fused and the times measured either way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import Arrays

MIN_GAIN = 1.02
RUNS = 5
MAX_DIFF = 1e-3


def fuse(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Write the fused graph of `src` to `dst`; returns the fused-operator counts (non-zero only)."""
    from onnxruntime.transformers import optimizer

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    model.save_model_to_file(str(dst))
    stats = model.get_fused_operator_statistics() or {}
    return {str(k): int(v) for k, v in stats.items() if v}


def time_model(path: Path, feed: Arrays) -> tuple[float, list[Any]]:
    """Best-of-RUNS milliseconds for one run of `feed`, and the outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feed)  # first run pays for allocations: not timed
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best * 1000.0, outputs


def fuse_if_faster(
    plain: Path, fused: Path, feed: Arrays, num_heads: int, hidden_size: int
) -> dict[str, Any]:
    """Try the fusions; returns the report entry. `fused` exists afterwards only when it was kept."""
    try:
        fused_ops = fuse(plain, fused, num_heads, hidden_size)
    except Exception as exc:  # the optimizer raises assorted errors on graphs it does not know
        fused.unlink(missing_ok=True)
        return {"name": "transformer-fusion", "applied": False, "reason": f"optimizer failed: {exc}"}
    ms_plain, out_plain = time_model(plain, feed)
    ms_fused, out_fused = time_model(fused, feed)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(out_plain, out_fused, strict=True))
    entry: dict[str, Any] = {
        "name": "transformer-fusion",
        "fusedOps": fused_ops,
        "msPlain": round(ms_plain, 3),
        "msFused": round(ms_fused, 3),
        "maxAbsDiff": diff,
    }
    keep = diff <= MAX_DIFF and ms_plain >= ms_fused * MIN_GAIN
    entry["applied"] = keep
    if not keep:
        entry["reason"] = "outputs differ" if diff > MAX_DIFF else f"not faster by {MIN_GAIN}x"
        fused.unlink(missing_ok=True)
    return entry
