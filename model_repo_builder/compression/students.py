"""Students for distillation: the pruned model, or a shallower copy of a Hugging Face encoder.

A tensor model's student is its ONNX export converted to torch (onnx2torch) and pruned: by channels
(torch-pruning shrinks the layers) or by magnitude (zeros, kept zero during training by masks).
A text model's student is a copy of the encoder keeping `keepLayers` of its n layers, evenly
spaced from the first to the last, each initialised from the teacher's layer (as DistilBERT was
built from BERT), optionally magnitude-pruned too. Each builder returns the module, its masks and a
description for build.json.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..errors import BadInput
from ..recipe import Distill, Gate, LossKind, Prune
from .distill import Masks
from .prune import channel_prune, count_parameters, magnitude_prune_tensors, onnx_to_torch


def pruned_module(base: Any, prune: Prune, example: tuple[torch.Tensor, ...]) -> tuple[nn.Module, Masks]:
    """The ONNX model as torch, pruned per the recipe; masks keep magnitude-pruned weights at zero."""
    module = onnx_to_torch(base)
    if prune.method == "channel" and prune.amount > 0:
        return channel_prune(module, example, prune.amount, prune.ignore_layers), {}
    if prune.method == "magnitude" and prune.amount > 0:
        return module, magnitude_masks(_weights(module), prune.amount)
    return module, {}


def _weights(module: nn.Module) -> list[nn.Parameter]:
    return [
        p
        for n, p in module.named_parameters()
        if n.endswith("weight") and p.dim() >= 2 and p.is_floating_point()
    ]


def linear_weights(module: nn.Module) -> list[nn.Parameter]:
    """Weights of the Linear layers (what a transformer's MatMuls use; embeddings are left alone)."""
    linear = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    return [p for p in module.parameters() if id(p) in linear]


def magnitude_masks(params: list[nn.Parameter], amount: float) -> Masks:
    """Global L1 pruning of `params` in place; returns the masks that keep the zeros zero."""
    if not params:
        return {}
    with torch.no_grad():
        for p, pruned in zip(params, magnitude_prune_tensors(list(params), amount), strict=True):
            p.copy_(pruned)
    return {p: (p != 0).to(p.dtype) for p in params}


def sparsity(masks: Masks) -> dict[str, Any]:
    """What magnitude pruning left: zero fraction of the pruned tensors (stored dense: no bytes saved)."""
    total = sum(m.numel() for m in masks.values())
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    return {"tensors": len(masks), "zeroFraction": round(zeros / total, 6) if total else 0.0}


def describe(teacher_params: int, student: nn.Module, kind: str) -> dict[str, Any]:
    """build.json's student entry: how it was made and its parameter count against the teacher's."""
    after = count_parameters(student)
    return {"kind": kind, "parametersBefore": teacher_params, "parametersAfter": after}


def tensor_loss(spec: Distill, gate: Gate, has_labels: bool, first_output: torch.Tensor) -> LossKind:
    """auto: KL for classifiers ([N, C] logits with labels in the distill or validation data, or a gate
    on top-1/accuracy), else MSE."""
    if spec.loss != "auto":
        return spec.loss
    logits = first_output.dim() == 2 and first_output.shape[-1] > 1
    judged = gate.max_accuracy_drop is not None or gate.min_top1_agreement is not None
    return "kl" if logits and (has_labels or judged) else "mse"


def text_loss(spec: Distill, auto: LossKind) -> LossKind:
    """The recipe's loss, or `auto` (the task's: KL on logits for classifiers, cosine on embeddings)."""
    if spec.loss != "auto":
        return spec.loss
    return auto


def layer_choice(total: int, keep: int) -> list[int]:
    """Indices of the layers kept: evenly spaced from the first to the last."""
    if keep == 1:
        return [total - 1]
    return sorted({math.floor(i * (total - 1) / (keep - 1) + 0.5) for i in range(keep)})


def shallow_copy(encoder: nn.Module, config: Any, keep: int) -> tuple[nn.Module, list[int]]:
    """A deep copy of `encoder` whose layer stack keeps `keep` of the config's layers."""
    total = int(config.num_hidden_layers)
    if keep >= total:
        raise BadInput(
            f"distill.keepLayers {keep} must be below the model's {total} layers "
            "(config.json num_hidden_layers): the student must be smaller"
        )
    student = copy.deepcopy(encoder)
    holder, name = _layer_stack(student, total, str(config.model_type))
    kept = layer_choice(total, keep)
    layers = getattr(holder, name)
    setattr(holder, name, nn.ModuleList([layers[i] for i in kept]))
    for module in student.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "num_hidden_layers"):
            cfg.num_hidden_layers = keep
    return student, kept


def _layer_stack(model: nn.Module, total: int, model_type: str) -> tuple[nn.Module, str]:
    """The module holding the encoder's ModuleList of `total` layers, and that attribute's name."""
    for path, module in model.named_modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == total and name == "layer":
                del path
                return module, name
    raise BadInput(
        f"distill.keepLayers: no stack of {total} encoder layers found in model_type {model_type!r}"
    )


def pool(out: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Mean or [CLS] pooling of token states, optionally L2-normalised (what the ensemble serves)."""
    if pooling == "cls":
        vectors = out[:, 0]
    else:
        weights = mask.unsqueeze(-1).to(out.dtype)
        vectors = (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(vectors, dim=-1) if normalize else vectors
