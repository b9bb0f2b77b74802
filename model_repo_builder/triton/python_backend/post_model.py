"""Triton python-backend step of a text ensemble: the tensor model's output to embeddings or labels.

Copied into ``<model>_post/1/model.py`` with textproc.py (and labels.json for classification).
feature-extraction: token states + attention mask -> `embedding` (pooled, optionally normalised).
text-classification: logits -> `label` (BYTES, from the checkpoint's id2label) + `score` (softmax).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

sys.path.insert(0, str(Path(__file__).resolve().parent))
import textproc  # type: ignore[import-not-found]  # next to this file in the version folder


class TritonPythonModel:
    """Stateless post-processing; settings come from the model config's parameters."""

    def initialize(self, args: dict[str, str]) -> None:
        params, here = textproc.step_settings(args)
        self.task = params["task"]
        self.pooling = params.get("pooling", "mean")
        self.normalize = params.get("normalize", "true") == "true"
        labels_file = here / "labels.json"
        self.labels = json.loads(labels_file.read_text(encoding="utf-8")) if labels_file.is_file() else []

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(r) for r in requests]

    def _one(self, request: Any) -> Any:
        if self.task == "feature-extraction":
            states = pb_utils.get_input_tensor_by_name(request, "token_states").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            vectors = textproc.pool(states, mask, self.pooling, self.normalize)
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("embedding", vectors)])
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
        names, scores = textproc.classify(logits, self.labels)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("label", names), pb_utils.Tensor("score", scores)]
        )
