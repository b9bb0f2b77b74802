"""The feature-extraction task: a Hugging Face encoder served as text in, sentence embedding out.

The tensor model returns token states; the ensemble's post step pools them (mean over the attention
mask, or the [CLS] token) and L2-normalises them unless text.normalize is false. The gate compares
embeddings (cosine, absolute errors: there is no top-1 to agree on) and distillation trains the
student's served embedding towards the teacher's (cosine unless distill.loss says otherwise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from .. import tasknames
from ..compression import students
from ..model import Arrays, TensorInfo
from ..recipe import LossKind, Text
from ..triton.python_backend import textproc
from .text import TextEntry


class FeatureExtraction(TextEntry):
    """Registry entry of `tasknames.FEATURE_EXTRACTION`."""

    name = tasknames.FEATURE_EXTRACTION
    auto_model = "AutoModel"
    token_states = True
    distill_loss: LossKind = "cosine"

    def labels(self, config: Any) -> list[str] | None:
        return None

    def reference_answers(self, out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
        if text.effective_pooling() == "cls":
            vectors = out[:, 0]
        else:
            weights = mask.unsqueeze(-1).float()
            vectors = (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(vectors, dim=-1) if text.effective_normalize() else vectors

    def served_answers(self, out: NDArray[Any], mask: NDArray[Any], text: Text) -> NDArray[Any]:
        return textproc.pool(out, mask, text.effective_pooling(), text.effective_normalize())

    def gate_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        metrics.pop("top1Agreement", None)
        return metrics

    def outputs(self, model_output: TensorInfo) -> list[TensorInfo]:
        return [TensorInfo("embedding", "float32", [model_output.shape[-1]])]

    def post_step(self, text: Text, attention_mask: TensorInfo) -> tuple[list[TensorInfo], dict[str, str]]:
        params = {"pooling": text.effective_pooling(), "normalize": str(text.effective_normalize()).lower()}
        return [attention_mask], params

    def probe_answers(self, reference: NDArray[Any], labels: list[str] | None) -> Arrays:
        return {"embedding": reference.astype(np.float32)}

    def distill_target(self, out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
        return students.pool(out, mask, text.effective_pooling(), text.effective_normalize())

    def record(self, text: Text, hidden_size: int, labels: list[str] | None) -> dict[str, Any]:
        return {
            "pooling": text.effective_pooling(),
            "normalize": text.effective_normalize(),
            "dimension": hidden_size,
        }


TASK = FeatureExtraction()
