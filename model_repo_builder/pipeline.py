"""Orchestrates a build: fetch, load, data, reference, compress, gate, publish, with timings.

Each step is timed and reported on stderr. Nothing is written to the store before the gate
passed; the repository is staged inside the store and renamed into place atomically.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from numpy.typing import NDArray

from . import BUILDER_VERSION, compress, distdata, ladder, probes
from .compress import guarded
from .data import Arrays, generate_inputs, load_npz
from .errors import BadInput, GateFailed, Internal
from .formats import LoadedModel, Runner, TensorInfo, load_model, torch_runner
from .recipe import Recipe
from .repository import build_key, publish, read_build_json, staging, verify_repository, write_build_json
from .source import FetchedSource, fetch
from .triton_config import MODEL_FILES, Warmup, build_config, render
from .triton_python import MODEL_PY
from .verify import compare, onnx_runner, run_all

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class BuildRequest:
    """What to build and where."""

    source: str
    store: Path
    recipe: Recipe
    model_name: str = "model"
    sha256: str | None = None


@dataclass
class BuildResult:
    """Outcome of a successful build (fresh or cached)."""

    key: str
    repository: Path
    record: dict[str, Any]
    cached: bool


@dataclass
class Steps:
    """Times steps and prints progress lines to a stream."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # buildKey, sourceDigest, ... known so far
    deadline: float | None = None  # seconds from `started` the Job may run (activeDeadlineSeconds)
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.stream.write(f"[builder] {name} ...\n")
        self.stream.flush()
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 4)
        self.stream.write(f"[builder] {name} done in {self.timings[name]:.2f}s\n")
        self.stream.flush()


def build(req: BuildRequest, steps: Steps | None = None) -> BuildResult:
    """Run the whole build; raises BuilderError subclasses on failure."""
    steps = steps or Steps()
    if not _NAME.match(req.model_name):
        raise BadInput(f"invalid model name {req.model_name!r}")
    with tempfile.TemporaryDirectory(prefix="conch-build-") as work_dir:
        work = Path(work_dir)
        with steps.step("fetch"):
            src = fetch(req.source, work, req.sha256)
        key = build_key(src.digest, req.recipe, BUILDER_VERSION, req.model_name)
        final = req.store / key
        steps.info.update(buildKey=key, sourceDigest=src.digest, repository=str(final))
        if final.exists() and _touch(final):
            return _cached(key, final)
        return _fresh(req, src, key, final, work=work, steps=steps)


def _touch(final: Path) -> bool:
    """Mark a reused repository as young for the store's garbage collector (storegc's grace period);
    False when it vanished meanwhile (collected), so the build runs afresh."""
    try:
        os.utime(final)
    except FileNotFoundError:
        return False
    except OSError:  # a read-only store: reuse still works, the grace period just counts from publish
        pass
    return True


def _cached(key: str, final: Path) -> BuildResult:
    problems = verify_repository(final)
    if problems:
        raise Internal(f"repository {final} exists but fails verification: {problems[0]}")
    return BuildResult(key, final, read_build_json(final), cached=True)


def _fresh(
    req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
) -> BuildResult:
    recipe = req.recipe
    if recipe.text is not None:
        from . import textbuild  # imports this module: loaded on demand

        return textbuild.fresh(req, src, key, final, work=work, steps=steps)
    if src.path.is_dir() or src.suffix == ".tar.gz":
        raise BadInput(
            f"{src.uri} is a Hugging Face model directory or archive: set a text task (text.task, "
            "spec.model.task) to build it"
        )
    with steps.step("load"):
        loaded = load_model(src.path, src.suffix, recipe)
    with steps.step("data"):
        train, feed, labels, origin = _data(loaded, recipe)
        calibration = _calibration(loaded, recipe, feed, train)
    teacher = _reference_runner(loaded)
    with steps.step("reference"):
        reference = run_all(teacher, feed, recipe.validation.batch_size)
        _check_finite(reference)
    example = tuple(torch.from_numpy(np.ascontiguousarray(feed[i.name][:2])) for i in loaded.inputs)
    ctx = compress.Context(loaded, example, teacher, train, calibration, work, steps, labels is not None)
    prepared = compress.prepare(recipe, ctx)

    def judge(path: Path) -> dict[str, float]:
        return compare(reference, run_all(prepared.runner(path), feed, recipe.validation.batch_size), labels)

    published = ladder.climb(recipe.ladder(), prepared.make, judge, recipe.gate, steps)
    with steps.step("publish"), staging(req.store, key) as tmp:
        compressed = prepared.runner(published.artifact)({k: v[:1] for k, v in feed.items()})
        outputs = [replace(o, dtype=c.dtype.name) for o, c in zip(loaded.outputs, compressed, strict=True)]
        artifact = published.artifact
        layout(tmp, req.model_name, recipe, loaded.inputs, outputs, artifact=artifact, feed=feed)
        probe_set = _probes(req.model_name, recipe, loaded, feed, reference, origin)
        record = make_record(
            req, src, key, artifact, published.metrics, steps.timings, size_before=prepared.size_before
        )
        record |= prepared.report | {"quantize": published.record(recipe.ladder()), "validationData": origin}
        record["probes"] = probes.write(tmp, probe_set)
        record = write_build_json(tmp, record)
        won = publish(tmp, final)
    return BuildResult(key, final, record if won else read_build_json(final), cached=not won)


def _probes(  # noqa: PLR0917
    name: str, recipe: Recipe, loaded: LoadedModel, feed: Arrays, reference: list[NDArray[Any]], origin: str
) -> probes.ProbeSet:
    """The canary analysis's probe set: the first validation inputs and the original model's answers,
    under the names Triton serves them by."""
    ins = _serving_names(loaded.inputs, recipe, "INPUT")
    outs = _serving_names(loaded.outputs, recipe, "OUTPUT")
    inputs = {s.name: feed[i.name] for s, i in zip(ins, loaded.inputs, strict=True)}
    answers = {s.name: r for s, r in zip(outs, reference, strict=True)}
    return probes.tensor_probes(name, inputs, answers, origin, recipe.triton.max_batch_size)


def _data(
    loaded: LoadedModel, recipe: Recipe
) -> tuple[distdata.TensorData | None, Arrays, NDArray[Any] | None, str]:
    """(distillation data, validation inputs, labels, where the validation data came from)."""
    d, v = recipe.distill, recipe.validation
    train = distdata.tensor_data(d, loaded.inputs, v.samples) if d is not None else None
    if train is not None and train.held_out is not None:
        feed, labels = train.held_out
        origin = distdata.held_out_origin(train, d.data_path if d else "")
    else:
        feed, labels = _validation(loaded, recipe)
        origin = Path(v.data_path).name if v.data_path else f"generated (seed {v.seed})"
    if train is not None:
        distdata.check_disjoint_arrays(train.feed, feed, origin)
    return train, feed, labels, origin


def _validation(loaded: LoadedModel, recipe: Recipe) -> tuple[Arrays, NDArray[Any] | None]:
    v = recipe.validation
    if v.data_path:
        return load_npz(v.data_path, loaded.inputs, v.samples)
    return generate_inputs(loaded.inputs, v.samples, v), None


def _calibration(
    loaded: LoadedModel, recipe: Recipe, feed: Arrays, train: distdata.TensorData | None
) -> Arrays | None:
    """Calibration inputs: the given file, else the distillation data, validation data or generated."""
    q = recipe.quantize
    if "int8-static" not in recipe.ladder() and q.smooth_alpha is None:
        return None
    if q.calibration_data_path:
        return load_npz(q.calibration_data_path, loaded.inputs, q.calibration_samples)[0]
    if train is not None:
        return {k: v[: q.calibration_samples] for k, v in train.feed.items()}
    if recipe.validation.data_path:
        return {k: v[: q.calibration_samples] for k, v in feed.items()}
    seeded = recipe.validation.model_copy(update={"seed": recipe.validation.seed + 1})
    return generate_inputs(loaded.inputs, q.calibration_samples, seeded)


def _reference_runner(loaded: LoadedModel) -> Runner:
    if loaded.kind == "onnx":
        return guarded(onnx_runner(loaded.path))
    return torch_runner(loaded.module, loaded.inputs)


def _check_finite(outputs: list[NDArray[Any]]) -> None:
    for i, out in enumerate(outputs):
        if not np.isfinite(out.astype(np.float64)).all():
            raise GateFailed(f"the original model produced non-finite (NaN/Inf) values in output {i}")


def quantize(src: Path, dst: Path, recipe: Recipe, calibration: Arrays | None) -> None:
    """Quantize per recipe.quantize; unsupported graphs become BadInput naming the mode."""
    compress.quantize(src, dst, recipe.quantize, calibration)


def _serving_names(specs: list[TensorInfo], recipe: Recipe, prefix: str) -> list[TensorInfo]:
    """The pytorch backend wants <name>__<index> tensor names."""
    if recipe.export.backend != "pytorch":
        return specs
    return [replace(s, name=f"{prefix}__{i}") for i, s in enumerate(specs)]


def layout(
    tmp: Path,
    name: str,
    recipe: Recipe,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    *,
    artifact: Path,
    feed: Arrays,
) -> None:
    model_dir = tmp / name
    version = model_dir / "1"
    version.mkdir(parents=True)
    backend = recipe.export.backend
    if backend == "python":
        shutil.copyfile(artifact, version / "model.onnx")
        shutil.copyfile(MODEL_PY, version / "model.py")
    else:
        shutil.copyfile(artifact, version / MODEL_FILES[backend])
    serving_in = _serving_names(inputs, recipe, "INPUT")
    serving_out = _serving_names(outputs, recipe, "OUTPUT")
    warmup = (
        _warmup(model_dir, inputs, serving_in, feed, recipe.triton.max_batch_size > 0)
        if recipe.triton.warmup
        else None
    )
    config = build_config(name, recipe, serving_in, serving_out, warmup)
    (model_dir / "config.pbtxt").write_text(render(config), encoding="utf-8")


def _warmup(
    model_dir: Path, inputs: list[TensorInfo], serving: list[TensorInfo], feed: Arrays, batched: bool
) -> Warmup:
    folder = model_dir / "warmup"
    folder.mkdir()
    files, dims = {}, {}
    for spec, served in zip(inputs, serving, strict=True):
        sample = np.ascontiguousarray(feed[spec.name][0] if batched else feed[spec.name][:1])
        file_name = f"{served.name}.bin"
        (folder / file_name).write_bytes(sample.tobytes())
        files[served.name] = file_name
        dims[served.name] = [int(d) for d in sample.shape]
    return Warmup(files, dims)


def make_record(  # noqa: PLR0917
    req: BuildRequest,
    src: FetchedSource,
    key: str,
    artifact: Path,
    metrics: dict[str, float],
    timings: dict[str, float],
    *,
    size_before: int,
) -> dict[str, Any]:
    """build.json: sizes compare the unpruned fp32 export with the served model file (like for like)."""
    before, after = size_before, artifact.stat().st_size
    return {
        "buildKey": key,
        "builderVersion": BUILDER_VERSION,
        "source": req.source,
        "sourceDigest": src.digest,
        "modelName": req.model_name,
        "recipe": req.recipe.model_dump(mode="json", by_alias=True),
        "sizeBefore": before,
        "sizeAfter": after,
        "sourceBytes": _source_bytes(src.path),
        "compressionRatio": round(before / after, 4) if after else 0.0,
        "gate": {"passed": True, **metrics},
        "timings": dict(timings),
    }


def _source_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
