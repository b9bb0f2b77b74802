"""Distillation of a Hugging Face text model: a shallower (and/or magnitude-pruned) copy learns the
teacher's served answers (softmax logits, or pooled embeddings) on a file of plain text.

The teacher's answers for every training text are computed once. The student's loss is taken on
what the ensemble serves: logits (KL with temperature, plus cross-entropy when the .jsonl has
labels) for classifiers, the pooled and normalised embedding (cosine by default) for embeddings;
the task entry's `distill_target` and `distill_loss` say which. Texts are tokenized with the
checkpoint's own tokenizer, padded per batch. The vocabulary embedding stays the teacher's (frozen):
it is most of a small encoder's parameters, and a few thousand sentences would only teach it the
words they happen to contain.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TextIO

import torch
from torch import nn

from .. import textkind
from ..data import texts as textdata
from ..errors import BadInput
from ..recipe import Recipe, Text
from ..sources import hf
from . import distill, students

TEACHER_BATCH = 32


def student(model: hf.TextModel, recipe: Recipe) -> tuple[nn.Module, distill.Masks, dict[str, Any]]:
    """The student: keepLayers of the teacher's layers, magnitude-pruned if the recipe says so."""
    spec, prune = recipe.distill, recipe.prune
    assert spec is not None
    if prune.method == "channel" and prune.amount > 0:
        raise BadInput("prune.method 'channel' is not supported for text models (use 'magnitude')")
    inner: Any = model.module.model  # the transformers model inside hf's encoder wrapper
    config = inner.config
    total = int(config.num_hidden_layers)
    if spec.keep_layers is not None:
        module, kept = students.shallow_copy(model.module, config, spec.keep_layers)
        kind = f"keep {len(kept)} of {total} layers {kept}"
    else:
        module, kind = copy.deepcopy(model.module), f"{total} layers"
    for embedding in _word_embeddings(module):
        embedding.weight.requires_grad_(False)
    masks: distill.Masks = {}
    if prune.method == "magnitude" and prune.amount > 0:
        masks = students.magnitude_masks(students.linear_weights(module), prune.amount)
        kind += f", magnitude-pruned {prune.amount:g}"
    info = students.describe(sum(p.numel() for p in model.module.parameters()), module, kind)
    info["frozen"] = "word embeddings"
    return module, masks, info


def _word_embeddings(module: nn.Module) -> list[nn.Embedding]:
    """The vocabulary embedding(s): the largest Embedding layers (position/type tables are small)."""
    tables = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    largest = max((t.num_embeddings for t in tables), default=0)
    return [t for t in tables if t.num_embeddings == largest]


def train(  # noqa: PLR0917
    model: hf.TextModel,
    module: nn.Module,
    masks: distill.Masks,
    recipe: Recipe,
    data: textdata.TextSet,
    task: textkind.TextTask,
    *,
    clock: distill.Clock,
    log: TextIO,
) -> dict[str, Any]:
    """Distil the teacher (model.module) into `module` on `data`; returns the report."""
    spec, text = recipe.distill, recipe.text
    assert spec is not None and text is not None
    ids = model.tokenizer(data.texts, truncation=True, max_length=text.max_length)["input_ids"]
    collate = _collate(ids, int(model.tokenizer.pad_token_id))
    finish = _finisher(task, text)
    with distill.threads(distill.cpu_threads()[0]):
        targets = _teacher(model.module, collate, [len(i) for i in ids], finish)
    labels = torch.from_numpy(data.labels) if data.labels is not None else None

    def forward(idx: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        input_ids, mask = collate(idx)
        return [finish(module(input_ids, mask), mask)], [targets[idx]]

    kind = students.text_loss(spec, task.distill_loss)
    training = distill.Task(len(ids), forward, [targets], labels, kind, spec.rate(True))
    report = distill.train(module, training, spec, masks=masks, clock=clock, log=log)
    report["data"] = {"origin": data.origin, "samples": len(ids), "labels": labels is not None}
    if masks:
        report["sparsity"] = students.sparsity(masks)
    return report


Collate = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _collate(ids: list[list[int]], pad: int) -> Collate:
    """Token ids of the chosen texts, padded to the longest of them, and their attention mask."""

    def collate(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [ids[int(i)] for i in idx]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.int64)
        mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for n, row in enumerate(rows):
            input_ids[n, : len(row)] = torch.tensor(row, dtype=torch.int64)
            mask[n, : len(row)] = 1
        return input_ids, mask

    return collate


def _finisher(task: textkind.TextTask, text: Text) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Tensor model output -> what the loss compares: logits, or the served (pooled) embedding."""

    def finish(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return task.distill_target(out, mask, text)

    return finish


def _teacher(
    teacher: nn.Module,
    collate: Collate,
    lengths: list[int],
    finish: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The teacher's answer for every text, computed in batches of similar length (little padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(order), TEACHER_BATCH):
            idx = torch.tensor(order[start : start + TEACHER_BATCH])
            input_ids, mask = collate(idx)
            parts.append(finish(teacher(input_ids, mask), mask))
    answers = torch.cat(parts)
    result = torch.empty_like(answers)
    result[torch.tensor(order)] = answers
    return result
