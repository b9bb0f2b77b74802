"""Compression of a tensor model (PyTorch or ONNX source) up to the precision ladder.

Order: export (the unpruned fp32 export is the size baseline) -> prune -> distill (when the recipe
asks: the pruned student learns from the original model's outputs) -> fp32 model file. The ladder
then quantizes that one file per rung (int8-static calibrates on the distilled model) and gates
each candidate. TorchScript exports follow the same order with torch modules instead of ONNX.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..data.distillsets import TensorData
from ..errors import BadInput
from ..export.exporters import (
    make_batch_dynamic,
    module_to_onnx,
    program_to_onnx,
    save_onnx,
    to_torchscript,
    upgrade_opset,
)
from ..model import Arrays, LoadedModel, Runner
from ..recipe import Quantize, QuantizeMode, Recipe
from ..sources.formats import onnx_runner, run_all, torch_runner
from . import distill, students
from .ladder import Make
from .prune import magnitude_prune_module, magnitude_prune_onnx, onnx_sparsity, onnx_to_torch
from .quantize import quantize_file

STORED_DENSE = "magnitude pruning stores zeros densely: the file does not shrink, sizes count bytes only"


@dataclass
class Prepared:
    """The fp32 (pruned, distilled) model, how to make each rung's candidate and how to run one."""

    size_before: int
    make: Make
    runner: Callable[[Path], Runner]
    report: dict[str, Any] = field(default_factory=dict)  # distill / sparsity entries for build.json


@dataclass
class Context:
    """What compression needs besides the recipe."""

    loaded: LoadedModel
    example: tuple[torch.Tensor, ...]
    teacher: Runner  # the original model
    train: TensorData | None  # distillation data
    calibration: Arrays | None
    work: Path
    steps: Any  # request.Steps
    labelled: bool = False  # the validation data has labels: the model is a classifier


def prepare(recipe: Recipe, ctx: Context) -> Prepared:
    """Export, prune and distill; the result makes a candidate per quantize mode."""
    if recipe.export.format == "torchscript":
        return _torchscript(recipe, ctx)
    with ctx.steps.step("export"):
        base = base_onnx(ctx.loaded, recipe, ctx.example)
        size_before = base.ByteSize()
    report: dict[str, Any] = {}
    if recipe.distill is None:
        with ctx.steps.step("prune"):
            model = prune_onnx(base, ctx.loaded, recipe, ctx.example)
        if recipe.prune.method == "magnitude" and recipe.prune.amount > 0:
            report["sparsity"] = {**_sparsity_head(recipe), **onnx_sparsity(model)}
    else:
        module, report = _distilled(base, recipe, ctx)
        with ctx.steps.step("export-student"):
            model = module_to_onnx(
                module, ctx.example, ctx.loaded.inputs, ctx.loaded.outputs, recipe.export.opset
            )
    fp32 = ctx.work / "model.fp32.onnx"
    save_onnx(model, fp32)

    def make(mode: QuantizeMode) -> Path:
        dst = ctx.work / f"model.{mode}.onnx"
        if mode == "none":
            shutil.copyfile(fp32, dst)
        else:
            quantize(fp32, dst, rung(recipe.quantize, mode), ctx.calibration)
        return dst

    return Prepared(size_before, make, lambda path: guarded(onnx_runner(path)), report)


def rung(spec: Quantize, mode: QuantizeMode) -> Quantize:
    """The quantize settings of one ladder rung (SmoothQuant only on the mode it was set for)."""
    if mode == spec.mode:
        return spec
    return spec.model_copy(update={"mode": mode, "smooth_alpha": None})


def quantize(src: Path, dst: Path, spec: Quantize, calibration: Arrays | None) -> None:
    """Quantize per `spec`; unsupported graphs become BadInput naming the mode."""
    try:
        quantize_file(src, dst, spec, calibration)
    except BadInput:
        raise
    except Exception as exc:  # onnxruntime.quantization raises generic errors for unsupported graphs
        raise BadInput(f"quantization {spec.mode} failed: {str(exc).strip().splitlines()[0]}") from exc


def guarded(runner: Runner) -> Runner:
    """A runner whose failures on the given inputs are the user's (BadInput)."""

    def run(feed: Arrays) -> list[Any]:
        try:
            return runner(feed)
        except Exception as exc:  # onnxruntime raises its own exception types for bad inputs
            raise BadInput(f"model failed on validation inputs: {str(exc).strip().splitlines()[0]}") from exc

    return run


def _sparsity_head(recipe: Recipe) -> dict[str, Any]:
    return {"method": "magnitude", "amount": recipe.prune.amount, "storedDense": True, "note": STORED_DENSE}


def _distilled(base: onnx.ModelProto, recipe: Recipe, ctx: Context) -> tuple[Any, dict[str, Any]]:
    """Prune the ONNX model as torch, then train it on the original model's outputs."""
    spec = recipe.distill
    assert spec is not None and ctx.train is not None
    with ctx.steps.step("prune"):
        teacher_params = sum(int(np.prod(i.dims)) for i in base.graph.initializer)
        module, masks = students.pruned_module(base, recipe.prune, ctx.example)
    with ctx.steps.step("distill"):
        targets = [
            torch.from_numpy(np.ascontiguousarray(t)) for t in run_all(ctx.teacher, ctx.train.feed, 64)
        ]
        labels = torch.from_numpy(ctx.train.labels.astype(np.int64)) if ctx.train.labels is not None else None
        kind = students.tensor_loss(spec, recipe.gate, labels is not None or ctx.labelled, targets[0])
        inputs = [torch.from_numpy(np.ascontiguousarray(ctx.train.feed[i.name])) for i in ctx.loaded.inputs]
        forward = _forward(module, inputs, [t.float() for t in targets], ctx, spec.mixup)
        task = distill.Task(
            ctx.train.size,
            forward,
            [t.float() for t in targets],
            None if spec.mixup else labels,
            kind,
            spec.rate(False),
        )
        clock = distill.Clock(ctx.steps.started, ctx.steps.deadline)
        report = distill.train(module, task, spec, masks=masks, clock=clock, log=ctx.steps.stream)
    if spec.mixup:
        report["mixup"] = spec.mixup
    report["data"] = {"origin": ctx.train.origin, "samples": ctx.train.size, "labels": labels is not None}
    report["student"] = students.describe(teacher_params, module, f"{recipe.prune.method}-pruned")
    out: dict[str, Any] = {"distill": report}
    if masks:
        out["sparsity"] = {**_sparsity_head(recipe), **students.sparsity(masks)}
    return module, out


def _forward(
    module: Any, inputs: list[torch.Tensor], targets: list[torch.Tensor], ctx: Context, mixup: float
) -> Callable[[torch.Tensor], tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Student and teacher outputs for a batch; with mixup, on mixtures the teacher answers for anew."""
    names = [i.name for i in ctx.loaded.inputs]
    beta = torch.distributions.Beta(mixup, mixup) if mixup else None

    def run(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = module(*xs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def forward(idx: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        xs = [x[idx] for x in inputs]
        if beta is None or not all(x.is_floating_point() for x in xs):
            return run(xs), [t[idx] for t in targets]
        weight = beta.sample((len(idx),))
        partner = torch.roll(torch.arange(len(idx)), 1)
        mixed = []
        for x in xs:
            w = weight.view(-1, *[1] * (x.dim() - 1))
            mixed.append(w * x + (1 - w) * x[partner])
        answers = ctx.teacher({n: m.numpy() for n, m in zip(names, mixed, strict=True)})
        return run(mixed), [torch.from_numpy(np.ascontiguousarray(a)).float() for a in answers]

    return forward


def base_onnx(loaded: LoadedModel, recipe: Recipe, example: tuple[torch.Tensor, ...]) -> onnx.ModelProto:
    """The unpruned fp32 ONNX model at the recipe's opset, batch-dynamic."""
    opset = recipe.export.opset
    if loaded.onnx_model is not None:
        return make_batch_dynamic(upgrade_opset(loaded.onnx_model, opset))
    if loaded.kind == "exported":
        return program_to_onnx(loaded.program, loaded.inputs, loaded.outputs, opset)
    return module_to_onnx(loaded.module, example, loaded.inputs, loaded.outputs, opset)


def prune_onnx(
    model: onnx.ModelProto, loaded: LoadedModel, recipe: Recipe, example: tuple[torch.Tensor, ...]
) -> onnx.ModelProto:
    """Magnitude pruning on the initializers, or channel pruning through torch and back."""
    p = recipe.prune
    if p.method == "none" or p.amount == 0:
        return model
    if p.method == "magnitude":
        magnitude_prune_onnx(model, p.amount)
        return model
    module = students.pruned_module(model, p, example)[0]
    return module_to_onnx(module, example, loaded.inputs, loaded.outputs, recipe.export.opset)


def _torchscript(recipe: Recipe, ctx: Context) -> Prepared:
    p, loaded, example = recipe.prune, ctx.loaded, ctx.example
    with ctx.steps.step("baseline"):
        original = ctx.work / "model.original.pt"
        torch.jit.save(to_torchscript(_torch_module(loaded), example, fp16=False), str(original))
    report: dict[str, Any] = {}
    if recipe.distill is not None:
        module, report = _distilled(base_onnx(loaded, recipe, example), recipe, ctx)
    else:
        with ctx.steps.step("prune"):
            if p.method == "channel" and p.amount > 0:
                module = students.pruned_module(base_onnx(loaded, recipe, example), p, example)[0]
            else:
                module = _torch_module(loaded)
            if p.method == "magnitude" and p.amount > 0:
                magnitude_prune_module(module, p.amount)

    def make(mode: QuantizeMode) -> Path:
        scripted = to_torchscript(copy.deepcopy(module), example, fp16=mode == "fp16")
        path = ctx.work / f"model.{mode}.pt"
        torch.jit.save(scripted, str(path))
        return path

    def runner(path: Path) -> Runner:
        return torch_runner(torch.jit.load(str(path)), loaded.inputs)  # type: ignore[no-untyped-call]

    return Prepared(original.stat().st_size, make, runner, report)


def _torch_module(loaded: LoadedModel) -> Any:
    if loaded.kind == "onnx" and loaded.onnx_model is not None:
        return onnx_to_torch(loaded.onnx_model)
    return loaded.module
