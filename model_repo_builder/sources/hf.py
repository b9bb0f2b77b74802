"""Hugging Face checkpoints: check a model directory, load it offline, export the encoder to ONNX.

A text model's source is a directory holding config.json, weights (model.safetensors or
pytorch_model.bin, possibly sharded) and tokenizer files. Each missing piece is refused with one line
naming the file. Loading goes through `transformers` with the hub switched off (never a download):
the task entry (`textkind`) names the auto class and whether the tensor model returns token states
(pooled in serving) or logits, and reads the class names from the config. The
tokenizer is saved as the single tokenizer.json that the serving ensemble loads with `tokenizers`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import textkind
from ..errors import BadInput
from ..model import TensorInfo
from ..recipe import TEXT_MAX_LENGTH, Text
from ..triton.python_backend.textproc import TokenizerSettings
from .checkfiles import check_checkpoint_files

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
ENCODER_TYPES = frozenset(
    {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet", "albert"}
)
"""Encoder families that export with input_ids + attention_mask and that onnxruntime's transformer
optimizer knows (its 'bert' fusions cover them)."""
TEXT_INPUTS = [TensorInfo("input_ids", "int64", [-1]), TensorInfo("attention_mask", "int64", [-1])]


@dataclass
class TextModel:
    """A loaded checkpoint: the torch module, its tokenizer and what serving needs to know."""

    directory: Path
    module: nn.Module
    tokenizer: Any  # transformers PreTrainedTokenizerFast: the reference tokenization
    settings: TokenizerSettings
    model_type: str
    hidden_size: int
    num_heads: int
    labels: list[str] | None  # class names by index, for tasks that have classes

    @property
    def output(self) -> TensorInfo:
        """The tensor model's output: token states [L, D] or logits [C]."""
        if self.labels is None:
            return TensorInfo("last_hidden_state", "float32", [-1, self.hidden_size])
        return TensorInfo("logits", "float32", [len(self.labels)])

    def label2id(self) -> dict[str, int] | None:
        """Label name -> index, for labelled validation data."""
        return None if self.labels is None else {name: i for i, name in enumerate(self.labels)}


def check_directory(directory: Path) -> None:
    """Refuse a directory that is not a complete checkpoint, naming what is missing or malformed."""
    if not (directory / "config.json").is_file():
        raise BadInput(f"{directory}/config.json: missing (not a Hugging Face model directory)")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise BadInput(f"{directory}: no weights (expected model.safetensors or pytorch_model.bin)")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise BadInput(f"{directory}: no tokenizer (expected tokenizer.json or vocab.txt / vocab.json)")
    check_checkpoint_files(directory)


def load(directory: Path, text: Text, task: textkind.TextTask) -> TextModel:
    """Load a checkpoint directory for `task`, offline; raises BadInput naming the file."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    check_directory(directory)
    config = _config(directory)
    tokenizer = _tokenizer(directory, config)
    max_length = _max_length(directory, text, config)
    module = _module(directory, task)
    labels = task.labels(config)
    return TextModel(
        directory=directory,
        module=module,
        tokenizer=tokenizer,
        settings=TokenizerSettings(
            max_length, text.truncation, int(tokenizer.pad_token_id), str(tokenizer.pad_token)
        ),
        model_type=str(config.model_type),
        hidden_size=int(config.hidden_size),
        num_heads=int(config.num_attention_heads),
        labels=labels,
    )


def _max_length(directory: Path, text: Text, config: Any) -> int:
    """text.maxLength, or the model's own limit when the recipe left the default and the model's is lower;
    a maxLength set over the model's limit is refused."""
    own = getattr(config, "max_position_embeddings", None)
    if not isinstance(own, int) or text.max_length <= own:
        return text.max_length
    if text.max_length == TEXT_MAX_LENGTH:
        return own
    raise BadInput(
        f"{directory}/config.json: text.maxLength {text.max_length} is over the model's "
        f"max_position_embeddings {own}"
    )


def _config(directory: Path) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"{directory}/config.json: {_first_line(exc)}") from exc
    if config.model_type not in ENCODER_TYPES or getattr(config, "is_encoder_decoder", False):
        raise BadInput(
            f"{directory}/config.json: model_type {config.model_type!r} cannot be served as a text "
            f"encoder (supported: {', '.join(sorted(ENCODER_TYPES))})"
        )
    return config


def _tokenizer(directory: Path, config: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, use_fast=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{directory}: cannot load the tokenizer: {_first_line(exc)}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(f"{directory}: the tokenizer has no fast (tokenizers) version to serve")
    if tokenizer.pad_token_id is None:
        raise BadInput(f"{directory}/tokenizer_config.json: the tokenizer has no pad token")
    if len(tokenizer) > int(config.vocab_size):
        raise BadInput(
            f"{directory}/tokenizer.json: the tokenizer has {len(tokenizer)} tokens but config.json's "
            f"vocab_size is {config.vocab_size} (tokenizer and weights do not match)"
        )
    return tokenizer


def _module(directory: Path, task: textkind.TextTask) -> nn.Module:
    import transformers

    cls = getattr(transformers, task.auto_model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(
                str(directory), local_files_only=True, attn_implementation="eager", dtype=torch.float32
            )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BadInput(f"{directory}: cannot load the weights: {_first_line(exc)}") from exc
    return _Encoder(model.eval(), task.token_states).eval()


def save_tokenizer(model: TextModel, dest: Path) -> None:
    """Write the fast tokenizer as one tokenizer.json (what the serving step loads)."""
    model.tokenizer.backend_tokenizer.save(str(dest))


class _Encoder(nn.Module):
    """input_ids, attention_mask -> token states (`token_states`, pooled in serving) or logits."""

    def __init__(self, model: nn.Module, token_states: bool) -> None:
        super().__init__()
        self.model = model
        self.token_states = token_states

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state if self.token_states else out.logits  # type: ignore[no-any-return]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
