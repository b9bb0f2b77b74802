"""The text-classification task: a Hugging Face sequence classifier served as text in, label and score out.

The tensor model returns logits; the ensemble's post step answers the top class's name (the
checkpoint's id2label, shipped as labels.json) and its softmax score. The gate compares the softmax
probabilities (cosine, errors and top-1 agreement) and distillation trains on logits (KL).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from .. import tasknames
from ..model import Arrays, TensorInfo
from ..recipe import LossKind, Text
from ..triton.python_backend import textproc
from .text import TextEntry


class TextClassification(TextEntry):
    """Registry entry of `tasknames.TEXT_CLASSIFICATION`."""

    name = tasknames.TEXT_CLASSIFICATION
    auto_model = "AutoModelForSequenceClassification"
    token_states = False
    distill_loss: LossKind = "kl"

    def labels(self, config: Any) -> list[str] | None:
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        return [id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels))]

    def reference_answers(self, out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
        return torch.softmax(out.double(), dim=-1).float()

    def served_answers(self, out: NDArray[Any], mask: NDArray[Any], text: Text) -> NDArray[Any]:
        return textproc.softmax(out)

    def gate_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def outputs(self, model_output: TensorInfo) -> list[TensorInfo]:
        return [TensorInfo("label", "object", [1]), TensorInfo("score", "float32", [1])]

    def post_step(self, text: Text, attention_mask: TensorInfo) -> tuple[list[TensorInfo], dict[str, str]]:
        return [], {}

    def probe_answers(self, reference: NDArray[Any], labels: list[str] | None) -> Arrays:
        top = reference.argmax(axis=-1)
        names_ = [(labels or [])[i] if labels and i < len(labels) else str(i) for i in top]
        return {
            "label": np.array(names_, dtype=np.str_).reshape(-1, 1),
            "score": reference[np.arange(len(top)), top].reshape(-1, 1).astype(np.float32),
        }

    def distill_target(self, out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
        return out

    def record(self, text: Text, hidden_size: int, labels: list[str] | None) -> dict[str, Any]:
        return {"labels": labels}


TASK = TextClassification()
