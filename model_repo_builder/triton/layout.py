"""One tensor model's folder in a repository: the model file, config.pbtxt and warmup samples.

Both build paths write their tensor model with `layout` (a text repository's ``<name>_model`` too);
the pytorch backend serves tensors under ``INPUT__<i>``/``OUTPUT__<i>`` names (`serving_names`).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..model import Arrays, TensorInfo
from ..recipe import Recipe
from .config import MODEL_FILES, Warmup, build_config, render
from .python_backend import MODEL_PY


def serving_names(specs: list[TensorInfo], recipe: Recipe, prefix: str) -> list[TensorInfo]:
    """The pytorch backend wants <name>__<index> tensor names."""
    if recipe.export.backend != "pytorch":
        return specs
    return [replace(s, name=f"{prefix}__{i}") for i, s in enumerate(specs)]


def layout(
    tmp: Path,
    name: str,
    recipe: Recipe,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    *,
    artifact: Path,
    feed: Arrays,
) -> None:
    """Write `tmp`/`name`: version 1 holding the model file, and its config.pbtxt."""
    model_dir = tmp / name
    version = model_dir / "1"
    version.mkdir(parents=True)
    backend = recipe.export.backend
    if backend == "python":
        shutil.copyfile(artifact, version / "model.onnx")
        shutil.copyfile(MODEL_PY, version / "model.py")
    else:
        shutil.copyfile(artifact, version / MODEL_FILES[backend])
    serving_in = serving_names(inputs, recipe, "INPUT")
    serving_out = serving_names(outputs, recipe, "OUTPUT")
    warmup = (
        _warmup(model_dir, inputs, serving_in, feed, recipe.triton.max_batch_size > 0)
        if recipe.triton.warmup
        else None
    )
    config = build_config(name, recipe, serving_in, serving_out, warmup)
    (model_dir / "config.pbtxt").write_text(render(config), encoding="utf-8")


def _warmup(
    model_dir: Path, inputs: list[TensorInfo], serving: list[TensorInfo], feed: Arrays, batched: bool
) -> Warmup:
    folder = model_dir / "warmup"
    folder.mkdir()
    files, dims = {}, {}
    for spec, served in zip(inputs, serving, strict=True):
        sample = np.ascontiguousarray(feed[spec.name][0] if batched else feed[spec.name][:1])
        file_name = f"{served.name}.bin"
        (folder / file_name).write_bytes(sample.tobytes())
        files[served.name] = file_name
        dims[served.name] = [int(d) for d in sample.shape]
    return Warmup(files, dims)
