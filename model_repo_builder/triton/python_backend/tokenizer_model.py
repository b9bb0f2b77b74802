"""Triton python-backend step of a text ensemble: UTF-8 strings in, input_ids + attention_mask out.

Copied into ``<model>_tokenizer/1/model.py`` with textproc.py and the checkpoint's tokenizer.json.
The texts of all requests in one execution are tokenized together and padded to one width, so the
tensor model's dynamic batcher can merge them; a request with bad text gets its own error and the
others are answered.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

sys.path.insert(0, str(Path(__file__).resolve().parent))
import textproc  # type: ignore[import-not-found]  # next to this file in the version folder


class TritonPythonModel:
    """One tokenizer per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        params, here = textproc.step_settings(args)
        settings = textproc.TokenizerSettings.from_parameters(params)
        self.tokenize = textproc.TextTokenizer(str(here / "tokenizer.json"), settings)

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[list[str] | None] = []
        responses: list[Any] = [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()
                texts.append(textproc.decode_texts(raw))
            except textproc.TextError as exc:
                texts.append(None)
                responses[index] = _error(str(exc))
        good = [i for i, t in enumerate(texts) if t is not None]
        try:
            self._answer_together(good, texts, responses)
        except textproc.TextError:  # one request is over maxLength (truncation off): answer one by one
            for i in good:
                self._answer_together([i], texts, responses)
        return responses

    def _answer_together(self, indices: list[int], texts: list[Any], responses: list[Any]) -> None:
        if not indices:
            return
        try:
            ids, mask = self.tokenize([t for i in indices for t in texts[i]])
        except textproc.TextError as exc:
            if len(indices) > 1:
                raise
            responses[indices[0]] = _error(str(exc))
            return
        start = 0
        for i in indices:
            end = start + len(texts[i])
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("input_ids", ids[start:end]),
                    pb_utils.Tensor("attention_mask", mask[start:end]),
                ]
            )
            start = end


def _error(message: str) -> Any:
    """The request's own fault (bad UTF-8, too long): INVALID_ARG, which Triton answers as HTTP 400 (and
    gRPC INVALID_ARGUMENT) instead of the 500 of an unclassified error."""
    error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
