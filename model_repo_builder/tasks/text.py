"""The build of a text model: checkpoint -> ONNX encoder -> fusions -> int8 -> gate on text -> ensemble.

Steps, each timed: load (offline, checked) -> data (validation and calibration text, and the
distillation text, never overlapping validation) -> reference (the original `transformers` model with
its own tokenizer, pooled in torch) -> [prune + distill: a shallower/pruned student learns from the
original, see `textdistill`] -> export (ONNX, dynamic batch and sequence axes) -> prune ->
optimize (transformer fusions, kept when faster) -> the precision ladder: quantize (int8 with
SmoothQuant by default, then each fallback mode) -> gate (through the served path: the ensemble's
tokenizer code, the compressed model in onnxruntime and the ensemble's post-processing), first pass
published. Which passes ran and what each changed goes into build.json under ``passes``.
"""

from __future__ import annotations

import shutil
from abc import ABC
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from .. import textkind
from ..compression import distill, ladder, textdistill
from ..compression.prune import magnitude_prune_onnx, onnx_sparsity
from ..compression.tensor import quantize, rung
from ..data import distillsets as distdata
from ..data import texts as textdata
from ..data.arrays import batches
from ..errors import BadInput, GateFailed
from ..export import optimize
from ..export.exporters import module_to_onnx, save_onnx
from ..gate import probes
from ..gate.verify import compare
from ..model import Arrays
from ..recipe import QuantizeMode, Recipe, Text
from ..request import BuildRequest, BuildResult, Steps
from ..sources import hf
from ..sources.fetch import FetchedSource
from ..sources.formats import onnx_runner
from ..store import record as build_record
from ..store.repository import publish, read_build_json, staging, write_build_json
from ..triton import ensemble, layout
from ..triton.python_backend import textproc

REFERENCE_BATCH = 8


def fresh(
    task: textkind.TextTask,
    req: BuildRequest,
    src: FetchedSource,
    key: str,
    final: Path,
    *,
    work: Path,
    steps: Steps,
) -> BuildResult:
    """Build and publish a text model's repository for `task` (the gate must pass first)."""
    recipe = req.recipe
    assert recipe.text is not None
    if not src.path.is_dir():
        raise BadInput(f"{src.uri}: a text model's source is a model directory or a .tar.gz of one")
    with steps.step("load"):
        model = hf.load(src.path, recipe.text, task)
        tokenizer_json = work / "tokenizer.json"
        hf.save_tokenizer(model, tokenizer_json)
        served_tokenizer = textproc.TextTokenizer(str(tokenizer_json), model.settings)
    with steps.step("data"):
        validation, calibration, train = _texts(recipe, model)
    with steps.step("reference"):
        reference = _reference(model, recipe.text, validation.texts, task)
    ids, mask = served_tokenizer(calibration.texts)
    calib: Arrays = {"input_ids": ids, "attention_mask": mask}
    graph = _compress(model, recipe, task, served_tokenizer, calib, train, work, steps)

    def make(mode: QuantizeMode) -> Path:
        if mode == recipe.quantize.mode and graph.first is not None:
            return graph.first  # quantized already, to choose between the plain and fused graphs
        dst = work / f"model.{mode}.onnx"
        if mode == "none":
            shutil.copyfile(graph.fp32, dst)
        else:
            quantize(graph.fp32, dst, rung(recipe.quantize, mode), calib)
        return dst

    def judge(path: Path) -> dict[str, float]:
        assert recipe.text is not None
        served = _served(
            path, served_tokenizer, recipe.text, validation.texts, recipe.validation.batch_size, task
        )
        return task.gate_metrics(compare([reference], [served], validation.labels))

    published = ladder.climb(recipe.ladder(), make, judge, recipe.gate, steps)
    artifact, metrics, passes, size_before = (
        published.artifact,
        published.metrics,
        graph.passes,
        graph.size_before,
    )
    passes.append(_quantize_entry(recipe, published.mode, graph.fp32, artifact))
    with steps.step("publish"), staging(req.store, key) as tmp:
        warm_ids, warm_mask = served_tokenizer(validation.texts[:1])
        layout.layout(
            tmp,
            ensemble.tensor_model_name(req.model_name),
            recipe,
            hf.TEXT_INPUTS,
            [model.output],
            artifact=artifact,
            feed={"input_ids": warm_ids, "attention_mask": warm_mask},
        )
        ensemble.write_steps(
            tmp, req.model_name, recipe, tokenizer_json, model.settings, model.output, model.labels, task
        )
        probe_set = probes.text_probes(
            req.model_name,
            validation.texts,
            task.probe_answers(reference, model.labels),
            validation.origin,
            recipe.triton.max_batch_size,
        )
        probe_record = probes.write(tmp, probe_set)
        record = build_record.make_record(
            req, src, key, artifact, metrics, steps.timings, size_before=size_before
        )
        record |= _text_record(model, recipe.text, validation, calibration, passes, task)
        record["quantize"] = published.record(recipe.ladder())
        record["probes"] = probe_record
        if train is not None:
            record["distill"] = passes[0]["report"]
        record = write_build_json(tmp, record)
        won = publish(tmp, final)
    return BuildResult(key, final, record if won else read_build_json(final), cached=not won)


def _texts(
    recipe: Recipe, model: hf.TextModel
) -> tuple[textdata.TextSet, textdata.TextSet, textdata.TextSet | None]:
    """(validation, calibration, distillation texts); distillation texts never overlap validation."""
    v, q, d = recipe.validation, recipe.quantize, recipe.distill
    train = distdata.text_data(d, model.label2id(), v.samples) if d is not None else None
    if train is not None and train.held_out is not None:
        validation = train.held_out
    elif v.data_path:
        validation = textdata.load_texts(v.data_path, v.samples, model.label2id())
    else:
        validation = textdata.builtin("validation", v.samples)
    if train is not None:
        distdata.check_disjoint_texts(train.train, validation)
    if q.calibration_data_path:
        calibration = textdata.load_texts(q.calibration_data_path, q.calibration_samples, None)
    elif train is not None:
        texts = train.train.texts[: q.calibration_samples]
        calibration = textdata.TextSet(texts, None, f"{train.train.origin} (first {len(texts)})")
    else:
        calibration = textdata.builtin("calibration", q.calibration_samples)
    return validation, calibration, (train.train if train is not None else None)


def _reference(model: hf.TextModel, text: Text, texts: list[str], task: textkind.TextTask) -> NDArray[Any]:
    """The original model's answers: HF tokenizer + torch, pooled/softmaxed in torch."""
    parts = []
    for start in range(0, len(texts), REFERENCE_BATCH):
        chunk = texts[start : start + REFERENCE_BATCH]
        enc = model.tokenizer(
            chunk, padding=True, truncation=True, max_length=model.settings.max_length, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.module(enc["input_ids"], enc["attention_mask"])
            parts.append(task.reference_answers(out, enc["attention_mask"], text).numpy())
    result: NDArray[Any] = np.concatenate(parts)
    if not np.isfinite(result).all():
        raise GateFailed("the original model produced non-finite (NaN/Inf) values")
    return result


def _served(  # noqa: PLR0917
    artifact: Path,
    tokenizer: textproc.TextTokenizer,
    text: Text,
    texts: list[str],
    batch_size: int,
    task: textkind.TextTask,
) -> NDArray[Any]:
    """What the ensemble answers: the serving tokenizer -> compressed model -> post-processing."""
    run = onnx_runner(artifact)
    parts = []
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer(texts[start : start + batch_size])
        (out,) = run({"input_ids": ids, "attention_mask": mask})
        parts.append(task.served_answers(out, mask, text))
    return np.concatenate(parts)


@dataclass
class _Graph:
    """The fp32 graph every ladder rung quantizes, and its first rung when the fusion choice made it."""

    fp32: Path
    first: Path | None
    size_before: int
    passes: list[dict[str, Any]]


def _compress(  # noqa: PLR0917
    model: hf.TextModel,
    recipe: Recipe,
    task: textkind.TextTask,
    tokenizer: textproc.TextTokenizer,
    calib: Arrays,
    train: textdata.TextSet | None,
    work: Path,
    steps: Steps,
) -> _Graph:
    """Distil (if asked), export, prune, fuse when the quantized fused graph is faster."""
    example = (torch.from_numpy(calib["input_ids"][:2]), torch.from_numpy(calib["attention_mask"][:2]))
    passes: list[dict[str, Any]] = []
    module = model.module
    if train is not None:
        module, entry = _distilled(model, recipe, task, train, steps)
        passes.append(entry)
    with steps.step("export"):
        plain = work / "model.fp32.onnx"
        save_onnx(module_to_onnx(module, example, hf.TEXT_INPUTS, [model.output], recipe.export.opset), plain)
        size_before = plain.stat().st_size if train is None else _teacher_bytes(model, recipe, example, work)
    passes.append({"name": "export", "format": "onnx", "opset": recipe.export.opset})
    if train is None:
        with steps.step("prune"):
            passes += _prune(plain, recipe)
    timing_batch = next(iter(batches(calib, 8)))
    fused = work / "model.fused.onnx"
    with steps.step("optimize"):
        fusion = optimize.try_fuse(plain, fused, timing_batch, model.num_heads, model.hidden_size)
        passes.append(fusion)
    if not fused.exists():
        return _Graph(plain, None, size_before, passes)
    with steps.step("choose"):  # decided at the precision tried first: the one meant to be published
        finals = [_quantized(c, recipe, calib) for c in (plain, fused)]
        keep_fused = optimize.choose(fusion, finals[0], finals[1], timing_batch, recipe.quantize.mode)
    chosen = 1 if keep_fused else 0
    return _Graph((plain, fused)[chosen], finals[chosen], size_before, passes)


def _quantized(src: Path, recipe: Recipe, calib: Arrays) -> Path:
    """The model as it would be published: `src` quantized per the recipe (or `src` itself)."""
    if recipe.quantize.mode == "none":
        return src
    dst = src.with_name(src.stem + ".quantized.onnx")
    quantize(src, dst, recipe.quantize, calib)
    return dst


def _distilled(
    model: hf.TextModel, recipe: Recipe, task: textkind.TextTask, train: textdata.TextSet, steps: Steps
) -> tuple[torch.nn.Module, dict[str, Any]]:
    with steps.step("prune"):
        module, masks, student = textdistill.student(model, recipe)
    with steps.step("distill"):
        clock = distill.Clock(steps.started, steps.deadline)
        report = textdistill.train(model, module, masks, recipe, train, task, clock=clock, log=steps.stream)
    report["student"] = student
    return module, {"name": "distill", "student": student["kind"], "report": report}


def _teacher_bytes(model: hf.TextModel, recipe: Recipe, example: tuple[torch.Tensor, ...], work: Path) -> int:
    """Size of the original model's fp32 export: the baseline a smaller student is measured against."""
    path = work / "teacher.fp32.onnx"
    save_onnx(
        module_to_onnx(model.module, example, hf.TEXT_INPUTS, [model.output], recipe.export.opset), path
    )
    size = path.stat().st_size
    path.unlink()
    return size


def _prune(path: Path, recipe: Recipe) -> list[dict[str, Any]]:
    p = recipe.prune
    if p.method == "none" or p.amount == 0:
        return []
    if p.method == "channel":
        raise BadInput("prune.method 'channel' is not supported for text models (use 'magnitude')")
    import onnx

    model = onnx.load(str(path))
    magnitude_prune_onnx(model, p.amount)
    save_onnx(model, path)
    return [{"name": "magnitude-prune", "amount": p.amount, "storedDense": True, **onnx_sparsity(model)}]


def _quantize_entry(recipe: Recipe, mode: QuantizeMode, before: Path, after: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "quantize",
        "mode": mode,
        "bytesBefore": before.stat().st_size,
        "bytesAfter": after.stat().st_size,
    }
    if recipe.quantize.smooth_alpha is not None and mode == recipe.quantize.mode:
        entry["smoothAlpha"] = recipe.quantize.smooth_alpha
    return entry


def _text_record(  # noqa: PLR0917
    model: hf.TextModel,
    text: Text,
    validation: textdata.TextSet,
    calibration: textdata.TextSet,
    passes: list[dict[str, Any]],
    task: textkind.TextTask,
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "task": text.task,
        "modelType": model.model_type,
        "maxLength": model.settings.max_length,
        "truncation": text.truncation,
        "validationData": f"{validation.origin} ({len(validation.texts)} texts)",
        "calibrationData": f"{calibration.origin} ({len(calibration.texts)} texts)",
    }
    info |= task.record(text, model.hidden_size, model.labels)
    return {"text": info, "passes": passes}


class TextEntry(textkind.TextTask, ABC):
    """A text task's registry entry: its hooks (`textkind.TextTask`) and this path as its build."""

    def fresh(
        self, req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
    ) -> BuildResult:
        """The text build (`fresh`) with this entry's hooks."""
        return fresh(self, req, src, key, final, work=work, steps=steps)
