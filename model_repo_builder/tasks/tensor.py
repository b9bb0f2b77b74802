"""The build of a tensor model (PyTorch or ONNX file): load, data, reference, compress, ladder, publish.

Steps, each timed: load (.pt/.pt2/.onnx, `sources.formats`) -> data (validation inputs, distillation
data, calibration inputs) -> reference (the original model's outputs) -> export, prune, distill
(`compression.tensor`) -> the precision ladder (quantize and gate each rung) -> publish (the tensor
model's folder, the probe set and build.json, staged and renamed into the store).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from .. import recipe as recipe_mod
from .. import tasknames
from ..compression import ladder
from ..compression import tensor as compress
from ..data import distillsets as distdata
from ..data.arrays import generate_inputs, load_npz
from ..errors import BadInput, GateFailed
from ..gate import probes
from ..gate.verify import compare
from ..model import Arrays, LoadedModel, Runner
from ..recipe import Recipe
from ..request import BuildRequest, BuildResult, Steps
from ..sources.fetch import FetchedSource
from ..sources.formats import load_model, onnx_runner, run_all, torch_runner
from ..store import record as build_record
from ..store import repository
from ..triton import layout


def fresh(
    req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
) -> BuildResult:
    """Build and publish a tensor model's repository (the gate must pass first)."""
    recipe = req.recipe
    problem = recipe_mod.tensor_modes_problem(recipe)
    if problem is not None:
        raise BadInput(problem)
    if src.path.is_dir() or src.suffix == ".tar.gz":
        raise BadInput(
            f"{src.uri} is a Hugging Face model directory or archive: set a text task (text.task, "
            "spec.model.task) to build it"
        )
    with steps.step("load"):
        loaded = load_model(src.path, src.suffix, recipe)
    with steps.step("data"):
        train, feed, labels, origin = _data(loaded, recipe)
        calibration = _calibration(loaded, recipe, feed, train)
    teacher = _reference_runner(loaded)
    with steps.step("reference"):
        reference = run_all(teacher, feed, recipe.validation.batch_size)
        _check_finite(reference)
    example = tuple(torch.from_numpy(np.ascontiguousarray(feed[i.name][:2])) for i in loaded.inputs)
    ctx = compress.Context(loaded, example, teacher, train, calibration, work, steps, labels is not None)
    prepared = compress.prepare(recipe, ctx)

    def judge(path: Path) -> dict[str, float]:
        return compare(reference, run_all(prepared.runner(path), feed, recipe.validation.batch_size), labels)

    published = ladder.climb(recipe.ladder(), prepared.make, judge, recipe.gate, steps)
    with steps.step("publish"), repository.staging(req.store, key) as tmp:
        compressed = prepared.runner(published.artifact)({k: v[:1] for k, v in feed.items()})
        outputs = [replace(o, dtype=c.dtype.name) for o, c in zip(loaded.outputs, compressed, strict=True)]
        artifact = published.artifact
        layout.layout(tmp, req.model_name, recipe, loaded.inputs, outputs, artifact=artifact, feed=feed)
        probe_set = _probes(req.model_name, recipe, loaded, feed, reference, origin)
        record = build_record.make_record(
            req, src, key, artifact, published.metrics, steps.timings, size_before=prepared.size_before
        )
        record |= prepared.report | {"quantize": published.record(recipe.ladder()), "validationData": origin}
        record["probes"] = probes.write(tmp, probe_set)
        record = repository.write_build_json(tmp, record)
        won = repository.publish(tmp, final)
    return BuildResult(key, final, record if won else repository.read_build_json(final), cached=not won)


class TensorTask:
    """Registry entry of `tasknames.TENSOR`: loads with `sources.formats`, exports, prunes and distils with
    `compression.tensor`, gates with `gate.verify` and keeps the served tensors as probes."""

    name = tasknames.TENSOR

    def fresh(
        self, req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
    ) -> BuildResult:
        """The tensor build (`fresh`)."""
        return fresh(req, src, key, final, work=work, steps=steps)


TASK = TensorTask()


def _probes(  # noqa: PLR0917
    name: str, recipe: Recipe, loaded: LoadedModel, feed: Arrays, reference: list[NDArray[Any]], origin: str
) -> probes.ProbeSet:
    """The canary analysis's probe set: the first validation inputs and the original model's answers,
    under the names Triton serves them by."""
    ins = layout.serving_names(loaded.inputs, recipe, "INPUT")
    outs = layout.serving_names(loaded.outputs, recipe, "OUTPUT")
    inputs = {s.name: feed[i.name] for s, i in zip(ins, loaded.inputs, strict=True)}
    answers = {s.name: r for s, r in zip(outs, reference, strict=True)}
    return probes.tensor_probes(name, inputs, answers, origin, recipe.triton.max_batch_size)


def _data(
    loaded: LoadedModel, recipe: Recipe
) -> tuple[distdata.TensorData | None, Arrays, NDArray[Any] | None, str]:
    """(distillation data, validation inputs, labels, where the validation data came from)."""
    d, v = recipe.distill, recipe.validation
    train = distdata.tensor_data(d, loaded.inputs, v.samples) if d is not None else None
    if train is not None and train.held_out is not None:
        feed, labels = train.held_out
        origin = distdata.held_out_origin(train, d.data_path if d else "")
    else:
        feed, labels = _validation(loaded, recipe)
        origin = Path(v.data_path).name if v.data_path else f"generated (seed {v.seed})"
    if train is not None:
        distdata.check_disjoint_arrays(train.feed, feed, origin)
    return train, feed, labels, origin


def _validation(loaded: LoadedModel, recipe: Recipe) -> tuple[Arrays, NDArray[Any] | None]:
    v = recipe.validation
    if v.data_path:
        return load_npz(v.data_path, loaded.inputs, v.samples)
    return generate_inputs(loaded.inputs, v.samples, v), None


def _calibration(
    loaded: LoadedModel, recipe: Recipe, feed: Arrays, train: distdata.TensorData | None
) -> Arrays | None:
    """Calibration inputs: the given file, else the distillation data, validation data or generated."""
    q = recipe.quantize
    if "int8-static" not in recipe.ladder() and q.smooth_alpha is None:
        return None
    if q.calibration_data_path:
        return load_npz(q.calibration_data_path, loaded.inputs, q.calibration_samples)[0]
    if train is not None:
        return {k: v[: q.calibration_samples] for k, v in train.feed.items()}
    if recipe.validation.data_path:
        return {k: v[: q.calibration_samples] for k, v in feed.items()}
    seeded = recipe.validation.model_copy(update={"seed": recipe.validation.seed + 1})
    return generate_inputs(loaded.inputs, q.calibration_samples, seeded)


def _reference_runner(loaded: LoadedModel) -> Runner:
    if loaded.kind == "onnx":
        return compress.guarded(onnx_runner(loaded.path))
    return torch_runner(loaded.module, loaded.inputs)


def _check_finite(outputs: list[NDArray[Any]]) -> None:
    for i, out in enumerate(outputs):
        if not np.isfinite(out.astype(np.float64)).all():
            raise GateFailed(f"the original model produced non-finite (NaN/Inf) values in output {i}")
