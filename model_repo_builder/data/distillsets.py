"""Distillation data: read it, hold out a validation split if asked, and refuse overlap with the gate.

Distillation trains on inputs alone (labels are optional), so the gate must judge the student on
other samples: a model gated on its own training data proves nothing. The gate's data is either a
different file (validation.dataPath, or the built-in/generated inputs), or the last rows/lines of
the distillation file held out with distill.holdout, named in the build report. Any sample found in
both (exact same input values or the same text) refuses the build, naming the files and a row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from ..errors import BadInput
from ..model import Arrays
from ..recipe import Distill
from . import texts as textdata
from .arrays import load_npz

WHAT = "distill data (distill.dataPath)"
ALL = 10**9


@dataclass
class TensorData:
    """Training inputs and labels; `held_out` is the validation split when distill.holdout is set."""

    feed: Arrays
    labels: NDArray[Any] | None
    origin: str
    held_out: tuple[Arrays, NDArray[Any] | None] | None = None

    @property
    def size(self) -> int:
        """Number of training samples."""
        return len(next(iter(self.feed.values())))


@dataclass
class TextData:
    """Training texts (and labels); `held_out` is the validation split when distill.holdout is set."""

    train: textdata.TextSet
    held_out: textdata.TextSet | None = None


def _split(total: int, holdout: float, what: str) -> int:
    """Number of training samples when the last `holdout` fraction is held out."""
    held = round(total * holdout)
    if holdout > 0 and held == 0:
        held = 1
    if total - held < 1:
        raise BadInput(f"{what}: {total} samples leave none to train on after holdout {holdout}")
    return total - held


def tensor_data(spec: Distill, inputs: list[Any], validation_samples: int) -> TensorData:
    """Load the .npz; with holdout, its last rows become the validation data (validation.samples of them)."""
    if not spec.data_path.endswith(".npz"):
        raise BadInput(f"{WHAT} {Path(spec.data_path).name}: tensor models distill on an .npz of inputs")
    feed, labels = load_npz(spec.data_path, inputs, ALL, WHAT)
    name = Path(spec.data_path).name
    total = len(next(iter(feed.values())))
    cut = _split(total, spec.holdout, f"{WHAT} {name}")
    train = {k: v[:cut] for k, v in feed.items()}
    origin = f"{name} rows 0..{cut - 1}"
    if spec.holdout == 0:
        return TensorData(train, labels, origin)
    held = {k: v[cut : cut + validation_samples] for k, v in feed.items()}
    held_labels = labels[cut : cut + validation_samples] if labels is not None else None
    return TensorData(
        train, labels[:cut] if labels is not None else None, origin, held_out=(held, held_labels)
    )


def held_out_origin(data: TensorData, path: str) -> str:
    """How the build report names the held-out validation rows."""
    count = len(next(iter(data.held_out[0].values()))) if data.held_out else 0
    return f"{Path(path).name} rows {data.size}..{data.size + count - 1} (held out of distillation)"


def check_disjoint_arrays(train: Arrays, validation: Arrays, validation_origin: str) -> None:
    """Refuse when a validation sample equals a training sample (all inputs compared)."""
    seen = {_row_digest(train, i): i for i in range(len(next(iter(train.values()))))}
    shared = [
        (i, seen[d])
        for i in range(len(next(iter(validation.values()))))
        if (d := _row_digest(validation, i)) in seen
    ]
    if shared:
        val_row, train_row = shared[0]
        raise BadInput(
            f"{WHAT} overlaps the validation data ({validation_origin}): {len(shared)} validation samples "
            f"are also training samples (e.g. validation row {val_row} = distill row {train_row}); the gate "
            "must not judge the model on its own training data: use disjoint files or distill.holdout"
        )


def _row_digest(feed: Arrays, index: int) -> bytes:
    digest = hashlib.sha256()
    for name in sorted(feed):
        digest.update(feed[name][index].tobytes())
    return digest.digest()


def text_data(spec: Distill, label2id: dict[str, int] | None, validation_samples: int) -> TextData:
    """Load the .txt/.jsonl; with holdout, its last lines become the validation texts."""
    texts = textdata.load_texts(spec.data_path, ALL, label2id, WHAT)
    name = Path(spec.data_path).name
    cut = _split(len(texts.texts), spec.holdout, f"{WHAT} {name}")
    labels = texts.labels
    train = textdata.TextSet(
        texts.texts[:cut], labels[:cut] if labels is not None else None, f"{name} texts 1..{cut}"
    )
    if spec.holdout == 0:
        return TextData(train)
    end = min(len(texts.texts), cut + validation_samples)
    held = textdata.TextSet(
        texts.texts[cut:end],
        labels[cut:end] if labels is not None else None,
        f"{name} texts {cut + 1}..{end} (held out of distillation)",
    )
    return TextData(train, held)


def check_disjoint_texts(train: textdata.TextSet, validation: textdata.TextSet) -> None:
    """Refuse when a validation text is also a training text (compared after stripping spaces)."""
    seen = {t.strip(): i for i, t in enumerate(train.texts)}
    shared = [(i, seen[t.strip()]) for i, t in enumerate(validation.texts) if t.strip() in seen]
    if shared:
        val_line, train_line = shared[0]
        raise BadInput(
            f"{WHAT} overlaps the validation data ({validation.origin}): {len(shared)} validation texts are "
            f"also training texts (e.g. {validation.texts[val_line]!r}, distill text {train_line + 1}); the "
            "gate must not judge the model on its own training data: use disjoint texts or distill.holdout"
        )
