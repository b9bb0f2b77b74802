"""The task names: the one place where each task's string is spelled.

A recipe without a ``text`` section builds a tensor model; ``text.task`` names a text task. The
operator's API (no torch in its image) and `recipe` import this module, so it imports nothing but
typing. The python-backend steps copied into repositories cannot import it: the text ensemble's post
step reads its task from the ``task`` parameter of its config.pbtxt (`triton.ensemble`).
"""

from __future__ import annotations

from typing import Final, Literal

TENSOR: Final = "tensor"
"""A PyTorch or ONNX model file served as tensors in, tensors out."""
FEATURE_EXTRACTION: Final = "feature-extraction"
"""A Hugging Face encoder served as text in, sentence embedding out."""
TEXT_CLASSIFICATION: Final = "text-classification"
"""A Hugging Face sequence classifier served as text in, label and score out."""

TEXT_GENERATION: Final = "text-generation"
"""A Hugging Face causal language model (or a GGUF file of one) served as prompt or chat in, tokens out."""

TextTaskName = Literal["feature-extraction", "text-classification", "text-generation"]
"""The text task names above: what the operator's spec.model.task and a recipe's text.task take."""
RecipeTextTaskName = TextTaskName
TEXT_TASKS: Final = (FEATURE_EXTRACTION, TEXT_CLASSIFICATION)
GENERATION_TASKS: Final = (TEXT_GENERATION,)
ALL: Final = (TENSOR, *TEXT_TASKS, *GENERATION_TASKS)
