"""The probe set: a few of the gate's inputs and the original model's answers, kept with the build.

Quality analysis of a canary (``model-repo-builder analyze``, see `analyze`) sends these inputs to
the canary and to the stable version and compares the answers. The build writes the set to
``STORE/<build key>/probes.npz``, next to build.json at the root of the repository. Triton takes only
the *directories* of a model repository for models, so a file there is never loaded (build.json
sits there too); it is hashed into build.json's ``files`` like every other file, so
``model-repo-builder verify`` covers it.

The set is bounded: at most MAX_PROBES items and MAX_BYTES of inputs plus answers (a set of large
images keeps fewer items). The items are the first ones of the gate's validation inputs (tensor
models: the validation .npz, held-out distillation data or generated inputs; text models: the
validation text or the built-in sentences), so the probes are what the gate judged the build by.

File format (numpy .npz without pickles; fixed zip timestamps, so equal probes give equal bytes):

- ``meta``: 0-d unicode array holding JSON ``{"format": 1, "model": NAME, "kind": "tensor"|"text"|
  "generation",
  "count": N, "origin": where the inputs came from, "maxBatchSize": B, "inputs": [names],
  "outputs": [names]}``
- ``input:<name>``: ``[N, ...]``, what Triton's input ``<name>`` receives (text: unicode ``[N, 1]``,
  sent as BYTES). Names are the served ones (``INPUT__0`` for the pytorch backend).
- ``reference:<name>``: ``[N, ...]``, the original model's answer for output ``<name>`` in the form
  Triton answers it (text classification: ``label`` unicode ``[N, 1]`` and ``score`` ``[N, 1]``).

A generative model's set (kind ``generation``) holds the gate's chat prompts rendered with the
checkpoint's chat template (``input:text_input``, unicode ``[N, 1]``, sent as a raw prompt so both
versions see the same tokens) and the original model's greedy continuation of each, decoded
(``reference:text_output``); `analyze` asks each version for GREEDY_TOKENS greedy tokens of them.

A user's probe file (`read`) is either this format, a plain .npz (one array per model input, batch
first; ``labels`` is ignored) or, for text models, a .txt (one text per line) or .jsonl (objects
with ``text``). Such files carry no reference: only canary vs stable is measured.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import tasknames
from ..errors import BadInput

PROBES_FILE = "probes.npz"
MAX_PROBES = 64
MAX_BYTES = 4 * 2**20
FORMAT = 1
TEXT_KIND = "text"  # meta kind of a text model's probes (a tensor model's: tasknames.TENSOR)
TEXT_INPUT = "text"  # the text ensemble's input (ensemble.TEXT_INPUT; not imported: that pulls tritonclient)
GENERATION_KIND = "generation"  # meta kind of a generative model's probes
PROMPT_INPUT = "text_input"  # the generative model's prompt input (triton.generation's name)
ANSWER_OUTPUT = "text_output"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

Arrays = dict[str, NDArray[Any]]


@dataclass
class ProbeSet:
    """Inputs for the served model and, when known, the original model's answers."""

    model: str  # the Triton model the probes are for (the ensemble for text models)
    kind: str  # "tensor" | "text"
    inputs: Arrays
    reference: Arrays = field(default_factory=dict)
    origin: str = ""
    max_batch_size: int = 0

    @property
    def count(self) -> int:
        """Number of probe items."""
        return len(next(iter(self.inputs.values())))

    def meta(self) -> dict[str, Any]:
        """The ``meta`` entry of the file."""
        return {
            "format": FORMAT,
            "model": self.model,
            "kind": self.kind,
            "count": self.count,
            "origin": self.origin,
            "maxBatchSize": self.max_batch_size,
            "inputs": list(self.inputs),
            "outputs": list(self.reference),
        }


def bounded_count(arrays: Arrays, max_items: int = MAX_PROBES, max_bytes: int = MAX_BYTES) -> int:
    """How many leading items of `arrays` (batch first) fit in max_items and max_bytes (at least 1)."""
    total = min(len(a) for a in arrays.values())
    per_item = sum(a[:1].nbytes for a in arrays.values())
    fits = max_bytes // per_item if per_item else total
    return max(1, min(total, max_items, fits))


def _bounded(probes: ProbeSet) -> ProbeSet:
    n = bounded_count({**probes.inputs, **probes.reference})
    probes.inputs = {k: np.ascontiguousarray(v[:n]) for k, v in probes.inputs.items()}
    probes.reference = {k: np.ascontiguousarray(v[:n]) for k, v in probes.reference.items()}
    return probes


def tensor_probes(
    model: str, inputs: Arrays, reference: Arrays, origin: str, max_batch_size: int
) -> ProbeSet:
    """The probe set of a tensor model: served input name -> inputs, served output name -> answers."""
    return _bounded(ProbeSet(model, tasknames.TENSOR, dict(inputs), dict(reference), origin, max_batch_size))


def text_probes(model: str, texts: list[str], answers: Arrays, origin: str, max_batch_size: int) -> ProbeSet:
    """The probe set of a text model; `answers` are the original model's, in the form the ensemble
    answers them (the task entry's `probe_answers`)."""
    inputs = {TEXT_INPUT: np.array(texts, dtype=np.str_).reshape(-1, 1)}
    return _bounded(ProbeSet(model, TEXT_KIND, inputs, dict(answers), origin, max_batch_size))


def generation_probes(model: str, prompts: list[str], answers: list[str], origin: str) -> ProbeSet:
    """The probe set of a generative model: rendered prompts and the original's greedy answers."""
    inputs = {PROMPT_INPUT: np.array(prompts, dtype=np.str_).reshape(-1, 1)}
    reference = {ANSWER_OUTPUT: np.array(answers, dtype=np.str_).reshape(-1, 1)}
    return _bounded(ProbeSet(model, GENERATION_KIND, inputs, reference, origin, 0))


def write(folder: Path, probes: ProbeSet) -> dict[str, Any]:
    """Write `folder`/probes.npz; returns build.json's ``probes`` entry."""
    entries: dict[str, NDArray[Any]] = {"meta": np.array(json.dumps(probes.meta(), sort_keys=True))}
    entries |= {f"input:{k}": v for k, v in probes.inputs.items()}
    entries |= {f"reference:{k}": v for k, v in probes.reference.items()}
    path = folder / PROBES_FILE
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)  # type: ignore[no-untyped-call]
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_TIME), buffer.getvalue())
    return {"file": PROBES_FILE, "count": probes.count, "origin": probes.origin, "bytes": path.stat().st_size}


def read(path: Path) -> ProbeSet:
    """A probe set from a build directory (its probes.npz), a probes.npz, a plain .npz, .txt or .jsonl.

    Raises BadInput naming the file when it is missing, unreadable or holds no probes.
    """
    file = path / PROBES_FILE if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise BadInput(f"{path} has no {PROBES_FILE} (built before probe sets existed?): give a probe file")
    if not file.is_file():
        raise BadInput(f"probe file not found: {file}")
    if file.suffix in (".txt", ".jsonl"):
        return _text_file(file)
    if file.suffix != ".npz":
        raise BadInput(f"probe file {file}: expected .npz, .txt or .jsonl")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"cannot read probe file {file}: {exc}") from exc
    probes = _from_arrays(file, arrays)
    sizes = {len(a) for a in [*probes.inputs.values(), *probes.reference.values()]}
    if len(sizes) != 1 or 0 in sizes:
        raise BadInput(f"probe file {file}: arrays must share one non-empty batch size, got {sorted(sizes)}")
    return probes


def _from_arrays(file: Path, arrays: Arrays) -> ProbeSet:
    if "meta" not in arrays:  # a plain .npz: every array but labels is an input
        inputs = {k: v for k, v in arrays.items() if k != "labels"}
        if not inputs or any(v.ndim == 0 for v in inputs.values()):
            raise BadInput(f"probe file {file}: expected arrays named after the model's inputs, batch first")
        return ProbeSet("", tasknames.TENSOR, inputs, origin=file.name)
    try:
        meta = json.loads(str(arrays["meta"]))
        inputs = {name: arrays[f"input:{name}"] for name in meta["inputs"]}
        reference = {name: arrays[f"reference:{name}"] for name in meta["outputs"]}
        return ProbeSet(
            str(meta["model"]),
            str(meta["kind"]),
            inputs,
            reference,
            str(meta.get("origin", "")),
            int(meta.get("maxBatchSize", 0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"probe file {file}: broken meta or missing array ({exc})") from exc


def _text_file(file: Path) -> ProbeSet:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read probe file {file}: {exc}") from exc
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if file.suffix == ".txt":
            texts.append(line)
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"probe file {file} line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise BadInput(f"probe file {file} line {number}: expected an object with a string 'text'")
        texts.append(item["text"])
    if not texts:
        raise BadInput(f"probe file {file} holds no text")
    inputs = {TEXT_INPUT: np.array(texts[:MAX_PROBES], dtype=np.str_).reshape(-1, 1)}
    return ProbeSet("", TEXT_KIND, inputs, origin=file.name)
