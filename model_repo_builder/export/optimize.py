"""onnxruntime's transformer graph optimizer, kept only when it makes the published model faster.

`onnxruntime.transformers.optimizer.optimize_model` fuses attention, (Skip)LayerNorm, GELU and bias
adds into single kernels for BERT-family encoders. Whether that pays depends on the CPU, the model
and above all the precision: on this machine kind the fused fp32 graph is a few percent faster, but
after int8 quantization the fused graph (QAttention) is slower than the quantized plain one. So the
decision is taken on the models that would be published: both candidates are quantized, timed on
the same batch (interleaved, best of RUNS), and the fused one is kept only when it is at least
MIN_GAIN faster. The report says what was fused and the times measured either way. Like TensorRT's
tactic selection, the choice is a measurement: two fresh builds of one build key on a busy machine
may differ in whether the fusions were kept (build.json says which); both passed the same gate.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Arrays

MIN_GAIN = 1.05
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


def time_models(paths: list[Path], feed: Arrays) -> list[float]:
    """Best-of-RUNS milliseconds per model for one run of `feed`, runs interleaved across models."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
    for session in sessions:
        session.run(None, feed)  # the first run pays for allocations: not timed
    best = [float("inf")] * len(sessions)
    for _ in range(RUNS):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feed)
            best[index] = min(best[index], time.perf_counter() - start)
    return [round(b * 1000.0, 3) for b in best]


def try_fuse(plain: Path, fused: Path, feed: Arrays, num_heads: int, hidden_size: int) -> dict[str, Any]:
    """Write the fused graph when the optimizer succeeds and it computes the same outputs.

    Returns the report entry; `fused` exists afterwards only when it is a candidate.
    """
    import onnxruntime as ort

    try:
        fused_ops = fuse(plain, fused, num_heads, hidden_size)
    except Exception as exc:  # the optimizer raises assorted errors on graphs it does not know
        fused.unlink(missing_ok=True)
        return {"name": "transformer-fusion", "applied": False, "reason": f"optimizer failed: {exc}"}
    providers = ["CPUExecutionProvider"]
    outputs = [ort.InferenceSession(str(p), providers=providers).run(None, feed) for p in (plain, fused)]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(*outputs, strict=True))
    entry: dict[str, Any] = {"name": "transformer-fusion", "fusedOps": fused_ops, "maxAbsDiff": diff}
    if not fused_ops or diff > MAX_DIFF:
        entry |= {"applied": False, "reason": "nothing fused" if not fused_ops else "outputs differ"}
        fused.unlink(missing_ok=True)
    return entry


def choose(entry: dict[str, Any], plain: Path, fused: Path, feed: Arrays, precision: str) -> bool:
    """Time the two publishable models; True (and the entry says so) when the fused one is kept."""
    ms_plain, ms_fused = time_models([plain, fused], feed)
    keep = ms_plain >= ms_fused * MIN_GAIN
    entry |= {"msPlain": ms_plain, "msFused": ms_fused, "timedAt": precision, "applied": keep}
    if not keep:
        entry["reason"] = f"not faster by {MIN_GAIN}x at {precision}"
    return keep
