"""Validation and calibration text for text models: a file on the model store, or a built-in set.

A ``.txt`` file holds one sentence per line; a ``.jsonl`` file one object per line with ``text`` and,
for classification, an optional ``label`` (a label name from the checkpoint's id2label, or its
index). Without a file, the gate uses built-in varied English sentences, and calibration a second,
disjoint built-in set, so the model is never calibrated on the sentences it is judged by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import tasknames
from ..errors import BadInput

VALIDATION_SENTENCES = (
    "The quarterly report shows revenue grew by twelve percent.",
    "Can you recommend a good Italian restaurant near the station?",
    "The patient was discharged after three days of observation.",
    "Photosynthesis converts light energy into chemical energy.",
    "I lost my keys somewhere between the office and the car park.",
    "The new firmware update fixes a memory leak in the network driver.",
    "She practised the violin every morning before school.",
    "Heavy rain is expected across the northern region tomorrow.",
    "The court ruled that the contract was void from the start.",
    "Our flight was delayed by four hours because of fog.",
    "Add two cups of flour and stir until the batter is smooth.",
    "The museum's new exhibition features early Renaissance paintings.",
    "Interest rates were left unchanged at the central bank's meeting.",
    "This laptop's battery barely lasts two hours anymore.",
    "The hikers reached the summit just before sunset.",
    "Kubernetes schedules pods onto nodes with enough free resources.",
    "He apologised for missing the meeting and promised to call later.",
    "The vaccine trial enrolled more than thirty thousand volunteers.",
    "A gentle breeze carried the smell of salt from the harbour.",
    "Please reset your password using the link in this email.",
    "The striker scored twice in the second half to win the match.",
    "Quantum computers use qubits that can exist in superposition.",
    "The bakery on the corner sells the best croissants in town.",
    "Customs officers inspected every container arriving at the port.",
    "My grandmother taught me how to knit when I was seven.",
    "The database query timed out after thirty seconds.",
    "Wolves were reintroduced to the park in the nineteen nineties.",
    "The orchestra tuned their instruments as the audience settled.",
    "Shipping is free for orders over fifty euros.",
    "The river flooded the lower town twice this spring.",
    "Researchers found microplastics in deep ocean sediments.",
    "Why does my code compile on Linux but not on Windows?",
)

CALIBRATION_SENTENCES = (
    "The train to the airport leaves every fifteen minutes.",
    "Our team shipped the release candidate on Friday evening.",
    "Volcanic ash grounded flights across much of Europe.",
    "The recipe calls for fresh basil, garlic and pine nuts.",
    "Students must submit their essays before the end of the month.",
    "The stock price fell sharply after the earnings call.",
    "A cat slept in the warm patch of sunlight on the floor.",
    "The hospital opened a new wing for children's care.",
    "Encryption keeps messages private between sender and receiver.",
    "The marathon route passes through the old city centre.",
    "Farmers expect a smaller harvest after the dry summer.",
    "The senator announced she would not seek re-election.",
    "Replace the filter every three months for best results.",
    "The telescope captured images of a distant spiral galaxy.",
    "Traffic was backed up for miles after the accident.",
    "The software license allows commercial use with attribution.",
)


@dataclass
class TextSet:
    """Texts with optional integer labels, and where they came from (for the build report)."""

    texts: list[str]
    labels: NDArray[Any] | None
    origin: str


def builtin(kind: str, limit: int) -> TextSet:
    """The built-in validation or calibration sentences (at most ``limit``)."""
    pool = VALIDATION_SENTENCES if kind == "validation" else CALIBRATION_SENTENCES
    return TextSet(list(pool[:limit]), None, f"built-in {kind} sentences")


def load_texts(path: str, limit: int, label2id: dict[str, int] | None, what: str = "text data") -> TextSet:
    """Read a .txt (one text per line) or .jsonl ({"text", "label"}) file; errors name file and line.

    ``what`` names the file's role in errors ("text data", "distill data (distill.dataPath)").
    """
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"{what} not found: {path}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {what} {file.name}: {exc}") from exc
    if file.suffix == ".jsonl":
        texts, labels = _jsonl(file.name, lines, label2id)
    elif file.suffix == ".txt":
        texts, labels = [line for line in lines if line.strip()], None
    else:
        raise BadInput(f"{what} {file.name}: expected a .txt or .jsonl file")
    if not texts:
        raise BadInput(f"{what} {file.name} holds no text")
    label_array = None if labels is None else np.array(labels[:limit], dtype=np.int64)
    return TextSet(texts[:limit], label_array, file.name)


def _jsonl(
    name: str, lines: list[str], label2id: dict[str, int] | None
) -> tuple[list[str], list[int] | None]:
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{name} line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise BadInput(f"{name} line {number}: expected an object with a string 'text'")
        texts.append(item["text"])
        if "label" in item:
            labels.append(_label_index(name, number, item["label"], label2id))
    if labels and len(labels) != len(texts):
        raise BadInput(f"{name}: {len(texts) - len(labels)} lines have no 'label' while others do")
    return texts, (labels or None)


def _label_index(name: str, number: int, label: Any, label2id: dict[str, int] | None) -> int:
    if label2id is None:
        raise BadInput(f"{name} line {number}: labels are for {tasknames.TEXT_CLASSIFICATION} models only")
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise BadInput(f"{name} line {number}: label must be a label name or an index")
    if isinstance(label, int):
        if not 0 <= label < len(label2id):
            raise BadInput(f"{name} line {number}: label index {label} not in 0..{len(label2id) - 1}")
        return label
    if label not in label2id:
        raise BadInput(f"{name} line {number}: unknown label {label!r} (the model has {sorted(label2id)})")
    return label2id[label]
