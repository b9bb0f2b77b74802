"""Validation and calibration inputs: read from a user .npz or generated from the input specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import BadInput
from ..model import Arrays
from ..recipe import Validation

DYNAMIC_DIM_SIZE = 8
"""Size used for a dynamic (-1) non-batch axis when inputs are generated."""


def generate_inputs(inputs: list[Any], count: int, validation: Validation) -> Arrays:
    """Seeded random inputs: normal floats, integers in [0, intHigh), random bools."""
    rng = np.random.default_rng(validation.seed)
    feed: Arrays = {}
    for spec in inputs:
        shape = (count, *[d if d > 0 else DYNAMIC_DIM_SIZE for d in spec.shape])
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feed[spec.name] = rng.integers(0, validation.int_high, shape).astype(dtype)
    return feed


def load_npz(
    path: str, inputs: list[Any], limit: int, what: str = "validation data"
) -> tuple[Arrays, NDArray[Any] | None]:
    """Read inputs (one array per input name, batch first) and optional 'labels' from an .npz.

    ``what`` names the file's role in errors ("validation data", "distill data (distill.dataPath)").
    """
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"{what} not found: {path}")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise BadInput(f"cannot read {what} {file.name}: {exc}") from exc
    feed: Arrays = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise BadInput(f"{what} {file.name} has no array {spec.name!r} (has {sorted(arrays)})")
        feed[spec.name] = _checked(arrays[spec.name], spec, what)
    labels = arrays.get("labels")
    sizes = {len(a) for a in feed.values()} | ({len(labels)} if labels is not None else set())
    if len(sizes) != 1:
        raise BadInput(f"shape mismatch: {what} arrays have different batch sizes {sorted(sizes)}")
    limited = {k: v[:limit] for k, v in feed.items()}
    return limited, (labels[:limit] if labels is not None else None)


def _checked(array: NDArray[Any], spec: Any, what: str) -> NDArray[Any]:
    expected = list(spec.shape)
    got = list(array.shape[1:])
    if len(got) != len(expected) or any(e > 0 and e != g for e, g in zip(expected, got, strict=True)):
        raise BadInput(
            f"shape mismatch: input {spec.name!r} expects [N, {expected}], {what} has {list(array.shape)}"
        )
    return array.astype(spec.dtype, copy=False)


def batches(feed: Arrays, size: int) -> list[Arrays]:
    """Split a feed into batches of at most ``size`` samples."""
    total = len(next(iter(feed.values())))
    return [{k: v[i : i + size] for k, v in feed.items()} for i in range(0, total, size)]
