"""Orchestrates a build: fetch, load, data, reference, compress, gate, publish, with timings.

Each step is timed and reported on stderr. Nothing is written to the store before the gate
passed; the repository is staged inside the store and renamed into place atomically.
"""

from __future__ import annotations

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
import onnx
import torch
from numpy.typing import NDArray

from . import BUILDER_VERSION
from .data import Arrays, generate_inputs, load_npz
from .errors import BadInput, GateFailed, Internal
from .export import (
    make_batch_dynamic,
    module_to_onnx,
    program_to_onnx,
    save_onnx,
    to_torchscript,
    upgrade_opset,
)
from .formats import LoadedModel, Runner, TensorInfo, load_model, torch_runner
from .prune import channel_prune, magnitude_prune_module, magnitude_prune_onnx, onnx_to_torch
from .quantize import quantize_file
from .recipe import Recipe
from .repository import build_key, publish, read_build_json, staging, verify_repository, write_build_json
from .source import FetchedSource, fetch
from .triton_config import MODEL_FILES, Warmup, build_config, render
from .triton_python import MODEL_PY
from .verify import check_gate, compare, onnx_runner, run_all

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
        if final.exists():
            return _cached(key, final)
        return _fresh(req, src, key, final, work=work, steps=steps)


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
        feed, labels = _validation(loaded, recipe)
        calibration = _calibration(loaded, recipe, feed)
    with steps.step("reference"):
        reference = run_all(_reference_runner(loaded), feed, recipe.validation.batch_size)
        _check_finite(reference)
    example = tuple(torch.from_numpy(np.ascontiguousarray(feed[i.name][:2])) for i in loaded.inputs)
    artifact, runner, size_before = _compress(loaded, recipe, example, calibration, work=work, steps=steps)
    with steps.step("gate"):
        compressed = run_all(runner, feed, recipe.validation.batch_size)
        metrics = compare(reference, compressed, labels)
        try:
            check_gate(metrics, recipe.gate)
        finally:
            steps.info["gate"] = metrics
    with steps.step("publish"), staging(req.store, key) as tmp:
        outputs = [replace(o, dtype=c.dtype.name) for o, c in zip(loaded.outputs, compressed, strict=True)]
        layout(tmp, req.model_name, recipe, loaded.inputs, outputs, artifact=artifact, feed=feed)
        record = make_record(req, src, key, artifact, metrics, steps.timings, size_before=size_before)
        record = write_build_json(tmp, record)
        won = publish(tmp, final)
    return BuildResult(key, final, record if won else read_build_json(final), cached=not won)


def _validation(loaded: LoadedModel, recipe: Recipe) -> tuple[Arrays, NDArray[Any] | None]:
    v = recipe.validation
    if v.data_path:
        return load_npz(v.data_path, loaded.inputs, v.samples)
    return generate_inputs(loaded.inputs, v.samples, v), None


def _calibration(loaded: LoadedModel, recipe: Recipe, feed: Arrays) -> Arrays | None:
    q = recipe.quantize
    if q.mode != "int8-static" and q.smooth_alpha is None:
        return None
    if q.calibration_data_path:
        return load_npz(q.calibration_data_path, loaded.inputs, q.calibration_samples)[0]
    if recipe.validation.data_path:
        return {k: v[: q.calibration_samples] for k, v in feed.items()}
    seeded = recipe.validation.model_copy(update={"seed": recipe.validation.seed + 1})
    return generate_inputs(loaded.inputs, q.calibration_samples, seeded)


def _reference_runner(loaded: LoadedModel) -> Runner:
    if loaded.kind == "onnx":
        return _guarded(onnx_runner(loaded.path))
    return torch_runner(loaded.module, loaded.inputs)


def _guarded(runner: Runner) -> Runner:
    def run(feed: Arrays) -> list[NDArray[Any]]:
        try:
            return runner(feed)
        except Exception as exc:  # onnxruntime raises its own exception types for bad inputs
            raise BadInput(f"model failed on validation inputs: {str(exc).strip().splitlines()[0]}") from exc

    return run


def _check_finite(outputs: list[NDArray[Any]]) -> None:
    for i, out in enumerate(outputs):
        if not np.isfinite(out.astype(np.float64)).all():
            raise GateFailed(f"the original model produced non-finite (NaN/Inf) values in output {i}")


def _compress(
    loaded: LoadedModel,
    recipe: Recipe,
    example: tuple[torch.Tensor, ...],
    calibration: Arrays | None,
    *,
    work: Path,
    steps: Steps,
) -> tuple[Path, Runner, int]:
    """(served model file, runner over it, bytes of the unpruned fp32 export: the like-for-like base)."""
    if recipe.export.format == "torchscript":
        path, size_before = _torchscript_artifact(loaded, recipe, example, work, steps)
        runner = torch_runner(torch.jit.load(str(path)), loaded.inputs)  # type: ignore[no-untyped-call]
        return path, runner, size_before
    with steps.step("export"):
        model = _base_onnx(loaded, recipe, example)
        size_before = model.ByteSize()
    with steps.step("prune"):
        model = _prune_onnx(model, loaded, recipe, example)
    fp32 = work / "model.fp32.onnx"
    save_onnx(model, fp32)
    final = work / "model.onnx"
    with steps.step("quantize"):
        if recipe.quantize.mode == "none":
            shutil.copyfile(fp32, final)
        else:
            quantize(fp32, final, recipe, calibration)
    return final, _guarded(onnx_runner(final)), size_before


def quantize(src: Path, dst: Path, recipe: Recipe, calibration: Arrays | None) -> None:
    """Quantize per the recipe; unsupported graphs become BadInput naming the mode."""
    try:
        quantize_file(src, dst, recipe.quantize, calibration)
    except BadInput:
        raise
    except Exception as exc:  # onnxruntime.quantization raises generic errors for unsupported graphs
        raise BadInput(
            f"quantization {recipe.quantize.mode} failed: {str(exc).strip().splitlines()[0]}"
        ) from exc


def _base_onnx(loaded: LoadedModel, recipe: Recipe, example: tuple[torch.Tensor, ...]) -> onnx.ModelProto:
    opset = recipe.export.opset
    if loaded.onnx_model is not None:
        return make_batch_dynamic(upgrade_opset(loaded.onnx_model, opset))
    if loaded.kind == "exported":
        return program_to_onnx(loaded.program, loaded.inputs, loaded.outputs, opset)
    return module_to_onnx(loaded.module, example, loaded.inputs, loaded.outputs, opset)


def _prune_onnx(
    model: onnx.ModelProto, loaded: LoadedModel, recipe: Recipe, example: tuple[torch.Tensor, ...]
) -> onnx.ModelProto:
    p = recipe.prune
    if p.method == "none" or p.amount == 0:
        return model
    if p.method == "magnitude":
        magnitude_prune_onnx(model, p.amount)
        return model
    module = channel_prune(onnx_to_torch(model), example, p.amount, p.ignore_layers)
    return module_to_onnx(module, example, loaded.inputs, loaded.outputs, recipe.export.opset)


def _torchscript_artifact(
    loaded: LoadedModel, recipe: Recipe, example: tuple[torch.Tensor, ...], work: Path, steps: Steps
) -> tuple[Path, int]:
    p = recipe.prune
    with steps.step("baseline"):
        original = work / "model.original.pt"
        torch.jit.save(to_torchscript(_torch_module(loaded), example, fp16=False), str(original))
    with steps.step("prune"):
        if p.method == "channel" and p.amount > 0:
            base = _base_onnx(loaded, recipe, example)
            module: Any = channel_prune(onnx_to_torch(base), example, p.amount, p.ignore_layers)
        else:
            module = _torch_module(loaded)
        if p.method == "magnitude" and p.amount > 0:
            magnitude_prune_module(module, p.amount)
    with steps.step("export"):
        scripted = to_torchscript(module, example, fp16=recipe.quantize.mode == "fp16")
        path = work / "model.pt"
        torch.jit.save(scripted, str(path))
    return path, original.stat().st_size


def _torch_module(loaded: LoadedModel) -> Any:
    if loaded.kind == "onnx" and loaded.onnx_model is not None:
        return onnx_to_torch(loaded.onnx_model)
    return loaded.module


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
