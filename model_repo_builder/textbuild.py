"""The build of a text model: checkpoint -> ONNX encoder -> fusions -> int8 -> gate on text -> ensemble.

Steps, each timed: load (offline, checked) -> data (validation and calibration text) -> reference
(the original `transformers` model with its own tokenizer, pooled in torch) -> export (ONNX, dynamic
batch and sequence axes) -> prune -> optimize (transformer fusions, kept when faster) -> quantize
(int8 with SmoothQuant by default) -> gate (through the served path: the ensemble's tokenizer code,
the compressed model in onnxruntime and the ensemble's post-processing) -> publish. Which passes ran
and what each changed goes into build.json under ``passes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from . import ensemble, hf, optimize, pipeline, textdata
from .data import Arrays, batches
from .errors import BadInput, GateFailed
from .export import module_to_onnx, save_onnx
from .prune import magnitude_prune_onnx
from .recipe import Recipe, Text
from .repository import publish, read_build_json, staging, write_build_json
from .source import FetchedSource
from .triton_python import textproc
from .verify import check_gate, compare, onnx_runner

REFERENCE_BATCH = 8


def fresh(
    req: pipeline.BuildRequest,
    src: FetchedSource,
    key: str,
    final: Path,
    *,
    work: Path,
    steps: pipeline.Steps,
) -> pipeline.BuildResult:
    """Build and publish a text model's repository (the gate must pass first)."""
    recipe = req.recipe
    assert recipe.text is not None
    if not src.path.is_dir():
        raise BadInput(f"{src.uri}: a text model's source is a model directory or a .tar.gz of one")
    with steps.step("load"):
        model = hf.load(src.path, recipe.text)
        tokenizer_json = work / "tokenizer.json"
        hf.save_tokenizer(model, tokenizer_json)
        served_tokenizer = textproc.TextTokenizer(str(tokenizer_json), model.settings)
    with steps.step("data"):
        validation, calibration = _texts(recipe, model)
    with steps.step("reference"):
        reference = _reference(model, recipe.text, validation.texts)
    artifact, size_before, passes = _compress(model, recipe, served_tokenizer, calibration, work, steps)
    with steps.step("gate"):
        served = _served(
            artifact, served_tokenizer, recipe.text, validation.texts, recipe.validation.batch_size
        )
        metrics = compare([reference], [served], validation.labels)
        if recipe.text.task == "feature-extraction":
            metrics.pop("top1Agreement", None)
        try:
            check_gate(metrics, recipe.gate)
        finally:
            steps.info["gate"] = metrics
    with steps.step("publish"), staging(req.store, key) as tmp:
        warm_ids, warm_mask = served_tokenizer(validation.texts[:1])
        pipeline.layout(
            tmp,
            ensemble.tensor_model_name(req.model_name),
            recipe,
            hf.TEXT_INPUTS,
            [model.output],
            artifact=artifact,
            feed={"input_ids": warm_ids, "attention_mask": warm_mask},
        )
        ensemble.write_steps(
            tmp, req.model_name, recipe, tokenizer_json, model.settings, model.output, model.labels
        )
        record = pipeline.make_record(
            req, src, key, artifact, metrics, steps.timings, size_before=size_before
        )
        record |= _text_record(model, recipe.text, validation, calibration, passes)
        record = write_build_json(tmp, record)
        won = publish(tmp, final)
    return pipeline.BuildResult(key, final, record if won else read_build_json(final), cached=not won)


def _texts(recipe: Recipe, model: hf.TextModel) -> tuple[textdata.TextSet, textdata.TextSet]:
    v, q = recipe.validation, recipe.quantize
    validation = (
        textdata.load_texts(v.data_path, v.samples, model.label2id())
        if v.data_path
        else textdata.builtin("validation", v.samples)
    )
    calibration = (
        textdata.load_texts(q.calibration_data_path, q.calibration_samples, None)
        if q.calibration_data_path
        else textdata.builtin("calibration", q.calibration_samples)
    )
    return validation, calibration


def _reference(model: hf.TextModel, text: Text, texts: list[str]) -> NDArray[Any]:
    """The original model's answers: HF tokenizer + torch, pooled/softmaxed in torch."""
    parts = []
    for start in range(0, len(texts), REFERENCE_BATCH):
        chunk = texts[start : start + REFERENCE_BATCH]
        enc = model.tokenizer(
            chunk, padding=True, truncation=True, max_length=text.max_length, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.module(enc["input_ids"], enc["attention_mask"])
            parts.append(_finish_torch(out, enc["attention_mask"], text).numpy())
    result: NDArray[Any] = np.concatenate(parts)
    if not np.isfinite(result).all():
        raise GateFailed("the original model produced non-finite (NaN/Inf) values")
    return result


def _finish_torch(out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
    if text.task == "text-classification":
        return torch.softmax(out.double(), dim=-1).float()
    if text.effective_pooling() == "cls":
        vectors = out[:, 0]
    else:
        weights = mask.unsqueeze(-1).float()
        vectors = (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vectors, dim=-1) if text.effective_normalize() else vectors


def _served(
    artifact: Path, tokenizer: textproc.TextTokenizer, text: Text, texts: list[str], batch_size: int
) -> NDArray[Any]:
    """What the ensemble answers: the serving tokenizer -> compressed model -> post-processing."""
    run = onnx_runner(artifact)
    parts = []
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer(texts[start : start + batch_size])
        (out,) = run({"input_ids": ids, "attention_mask": mask})
        if text.task == "text-classification":
            parts.append(textproc.softmax(out))
        else:
            parts.append(textproc.pool(out, mask, text.effective_pooling(), text.effective_normalize()))
    return np.concatenate(parts)


def _compress(  # noqa: PLR0917
    model: hf.TextModel,
    recipe: Recipe,
    tokenizer: textproc.TextTokenizer,
    calibration: textdata.TextSet,
    work: Path,
    steps: pipeline.Steps,
) -> tuple[Path, int, list[dict[str, Any]]]:
    """(final model file, bytes of the fp32 export, the passes that ran)."""
    ids, mask = tokenizer(calibration.texts)
    calib: Arrays = {"input_ids": ids, "attention_mask": mask}
    with steps.step("export"):
        example = (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2]))
        onnx_model = module_to_onnx(
            model.module, example, hf.TEXT_INPUTS, [model.output], recipe.export.opset
        )
        plain = work / "model.fp32.onnx"
        save_onnx(onnx_model, plain)
    size_before = plain.stat().st_size
    passes: list[dict[str, Any]] = [{"name": "export", "format": "onnx", "opset": recipe.export.opset}]
    with steps.step("prune"):
        passes += _prune(plain, recipe)
    timing_batch = next(iter(batches(calib, 8)))
    fused = work / "model.fused.onnx"
    with steps.step("optimize"):
        fusion = optimize.try_fuse(plain, fused, timing_batch, model.num_heads, model.hidden_size)
        passes.append(fusion)
    candidates = [plain, fused] if fused.exists() else [plain]
    with steps.step("quantize"):
        finals = [_quantized(c, recipe, calib) for c in candidates]
    if len(finals) == 2:
        with steps.step("choose"):
            keep_fused = optimize.choose(fusion, finals[0], finals[1], timing_batch, recipe.quantize.mode)
        candidates, finals = ([fused], finals[1:]) if keep_fused else ([plain], finals[:1])
    passes.append(_quantize_entry(recipe, candidates[0], finals[0]))
    return finals[0], size_before, passes


def _quantized(src: Path, recipe: Recipe, calib: Arrays) -> Path:
    """The model as it would be published: `src` quantized per the recipe (or `src` itself)."""
    if recipe.quantize.mode == "none":
        return src
    dst = src.with_name(src.stem + ".quantized.onnx")
    pipeline.quantize(src, dst, recipe, calib)
    return dst


def _prune(path: Path, recipe: Recipe) -> list[dict[str, Any]]:
    p = recipe.prune
    if p.method == "none" or p.amount == 0:
        return []
    if p.method == "channel":
        raise BadInput("prune.method 'channel' is not supported for text models (use 'magnitude')")
    import onnx

    model = onnx.load(str(path))
    count = magnitude_prune_onnx(model, p.amount)
    save_onnx(model, path)
    return [{"name": "magnitude-prune", "amount": p.amount, "tensors": count}]


def _quantize_entry(recipe: Recipe, before: Path, after: Path) -> dict[str, Any]:
    q = recipe.quantize
    entry: dict[str, Any] = {
        "name": "quantize",
        "mode": q.mode,
        "bytesBefore": before.stat().st_size,
        "bytesAfter": after.stat().st_size,
    }
    if q.smooth_alpha is not None:
        entry["smoothAlpha"] = q.smooth_alpha
    return entry


def _text_record(
    model: hf.TextModel,
    text: Text,
    validation: textdata.TextSet,
    calibration: textdata.TextSet,
    passes: list[dict[str, Any]],
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "task": text.task,
        "modelType": model.model_type,
        "maxLength": text.max_length,
        "truncation": text.truncation,
        "validationData": f"{validation.origin} ({len(validation.texts)} texts)",
        "calibrationData": f"{calibration.origin} ({len(calibration.texts)} texts)",
    }
    if text.task == "feature-extraction":
        info |= {
            "pooling": text.effective_pooling(),
            "normalize": text.effective_normalize(),
            "dimension": model.hidden_size,
        }
    else:
        info["labels"] = model.labels
    return {"text": info, "passes": passes}
