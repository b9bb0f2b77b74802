"""What a text task entry must say: the hooks the shared text build path calls for its task.

A text task (`embedding`, `classification`) is a checkpoint served behind the same three-step Triton
ensemble (tokenizer -> tensor model -> post-processing) and built by the same path (`tasks.text`).
What differs per task is answered by its entry: which `transformers` class loads it and what the
tensor model returns, how the original and the served outputs are finished (pooled or softmaxed),
which gate metrics apply, what the ensemble outputs and its post step needs, what the probe set holds,
what distillation trains on, and what build.json records. The entry is passed to hf, ensemble,
probes and textdistill instead of the task's name, so none of them branches on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from numpy.typing import NDArray

from .model import Arrays, TensorInfo
from .recipe import LossKind, Text


class TextTask(ABC):
    """One text task's behaviour; the registry's text entries subclass it through `text.TextEntry`,
    which adds the build itself (kept apart so that the modules the path uses can name this type)."""

    name: str
    auto_model: str
    """The `transformers` auto class that loads the checkpoint (AutoModel, AutoModelFor...)."""
    token_states: bool
    """The tensor model returns token states [L, D] (pooled by the post step), else logits [C]."""
    distill_loss: LossKind
    """The distillation loss `distill.loss: auto` means for this task (kl, cosine)."""

    @abstractmethod
    def labels(self, config: Any) -> list[str] | None:
        """Class names by index from the checkpoint's config, or None when the task has none."""

    @abstractmethod
    def reference_answers(self, out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
        """The original model's answer from its output (torch, what the gate compares against)."""

    @abstractmethod
    def served_answers(self, out: NDArray[Any], mask: NDArray[Any], text: Text) -> NDArray[Any]:
        """What the ensemble's post step answers for the tensor model's output (the serving code)."""

    @abstractmethod
    def gate_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The gate metrics that apply to this task's answers."""

    @abstractmethod
    def outputs(self, model_output: TensorInfo) -> list[TensorInfo]:
        """What the ensemble returns per text."""

    @abstractmethod
    def post_step(self, text: Text, attention_mask: TensorInfo) -> tuple[list[TensorInfo], dict[str, str]]:
        """The post step's inputs besides the model output, and its config parameters besides task."""

    @abstractmethod
    def probe_answers(self, reference: NDArray[Any], labels: list[str] | None) -> Arrays:
        """The original model's answers [N, ...] in the form the ensemble answers them."""

    @abstractmethod
    def distill_target(self, out: torch.Tensor, mask: torch.Tensor, text: Text) -> torch.Tensor:
        """What distillation compares, student against teacher: logits or the served embedding."""

    @abstractmethod
    def record(self, text: Text, hidden_size: int, labels: list[str] | None) -> dict[str, Any]:
        """build.json's task-specific ``text`` entries."""
