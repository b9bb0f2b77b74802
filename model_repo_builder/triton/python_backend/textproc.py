"""Text pre- and post-processing shared by the served ensemble and the builder's accuracy gate.

The tokenizer and post-processing steps of a text model's Triton ensemble (python backend) and the
builder's gate import this one module, so the gate measures exactly the code that serves: decoding
UTF-8 request bytes, tokenizing with the checkpoint's own tokenizer.json (`tokenizers`), pooling and
normalising embeddings, softmax and label names. Only numpy and tokenizers are imported: the serving
image must carry both (images/triton.Dockerfile).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

PAD_MULTIPLE = 8
"""Sequences are padded to the longest text of a request, rounded up to a multiple of this, so that
requests of similar length have equal shapes and Triton's dynamic batcher can merge them."""


def step_settings(args: dict[str, str]) -> tuple[dict[str, str], Path]:
    """(string parameters of the model config, version folder) from Triton's initialize() args."""
    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    return params, Path(args["model_repository"]) / args["model_version"]


class TextError(ValueError):
    """A request the text steps cannot answer (the message is returned to that request only)."""


def decode_texts(values: NDArray[Any]) -> list[str]:
    """UTF-8 strings from a BYTES tensor of shape [N] or [N, 1]; names the first bad item."""
    texts: list[str] = []
    for index, item in enumerate(np.asarray(values, dtype=object).reshape(-1)):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TextError(f"text item {index} is not valid UTF-8 (byte {exc.start})") from exc
    return texts


@dataclass(frozen=True)
class TokenizerSettings:
    """What the tokenizer step needs besides tokenizer.json (rendered into its config parameters)."""

    max_length: int
    truncation: bool
    pad_id: int
    pad_token: str

    def parameters(self) -> dict[str, str]:
        """As Triton model-config string parameters."""
        return {
            "max_length": str(self.max_length),
            "truncation": "true" if self.truncation else "false",
            "pad_id": str(self.pad_id),
            "pad_token": self.pad_token,
        }

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> TokenizerSettings:
        """Inverse of `parameters`."""
        return cls(
            max_length=int(params["max_length"]),
            truncation=params["truncation"] == "true",
            pad_id=int(params["pad_id"]),
            pad_token=params["pad_token"],
        )


class TextTokenizer:
    """The checkpoint's fast tokenizer with Conch's truncation and padding rules."""

    def __init__(self, tokenizer_file: str, settings: TokenizerSettings) -> None:
        from tokenizers import Tokenizer

        self.settings = settings
        self.tokenizer = Tokenizer.from_file(tokenizer_file)
        if settings.truncation:
            self.tokenizer.enable_truncation(max_length=settings.max_length)
        else:
            self.tokenizer.no_truncation()
        self.tokenizer.enable_padding(
            pad_id=settings.pad_id, pad_token=settings.pad_token, pad_to_multiple_of=PAD_MULTIPLE
        )

    def __call__(self, texts: list[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(input_ids, attention_mask), int64 [N, L]; L is the longest text rounded up to 8."""
        encodings = self.tokenizer.encode_batch(texts)
        if not self.settings.truncation:
            for index, enc in enumerate(encodings):
                length = sum(enc.attention_mask)
                if length > self.settings.max_length:
                    raise TextError(
                        f"text item {index} has {length} tokens, over maxLength "
                        f"{self.settings.max_length} (truncation is off)"
                    )
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), -1)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(len(texts), -1)
        return input_ids, mask


def pool(hidden: NDArray[Any], mask: NDArray[Any], pooling: str, normalize: bool) -> NDArray[np.float32]:
    """Sentence embeddings [N, D] from token states [N, L, D] and the attention mask [N, L]."""
    hidden = hidden.astype(np.float32)
    if pooling == "cls":
        vectors = hidden[:, 0, :]
    else:
        weights = mask.astype(np.float32)[:, :, None]
        vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def softmax(logits: NDArray[Any]) -> NDArray[np.float32]:
    """Row-wise softmax in float64, returned as float32."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: NDArray[np.float32] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


def classify(logits: NDArray[Any], labels: list[str]) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """(label names as bytes [N, 1], top score [N, 1]) from logits [N, C]."""
    probs = softmax(logits)
    top = probs.argmax(axis=-1)
    names = np.array([[labels[i].encode("utf-8")] for i in top], dtype=object).reshape(-1, 1)
    return names, probs[np.arange(len(top)), top].reshape(-1, 1).astype(np.float32)
