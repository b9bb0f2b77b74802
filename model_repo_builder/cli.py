"""Command line: ``model-repo-builder build|verify|analyze|gc`` (also ``python -m model_repo_builder``).

Exit codes: 0 ok, 2 bad input, 3 accuracy gate failed / NaN outputs, 1 internal error. The last
stdout line is the JSON summary. ``analyze`` (quality analysis of a canary, see `analyze`) exits 0
passed, 4 quality failed, 5 could not analyse. Heavy modules (torch, onnxruntime) are imported only once a
build actually starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import request
from .errors import BadInput, BuilderError
from .gate import analyze
from .recipe import Recipe, recipe_data
from .sources import limits
from .store import gc as storegc
from .summary import emit, make_summary, table

DEADLINE_ENV = "CONCH_BUILD_DEADLINE_SECONDS"
"""Set by the operator's builder Job to its activeDeadlineSeconds (same as --deadline-seconds)."""

# flag -> dotted recipe path (values are applied over --recipe/--recipe-json)
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--prune-method", "prune.method", str, "none | magnitude | channel"),
    ("--prune-amount", "prune.amount", float, "fraction 0..0.95"),
    ("--task", "text.task", str, "feature-extraction | text-classification | text-generation"),
    ("--context-length", "text.contextLength", int, "text-generation: prompt + completion tokens served"),
    (
        "--quantize",
        "quantize.mode",
        str,
        "none | fp16 | int8-dynamic | int8-static | int4-weight | int8-weight",
    ),
    ("--block-size", "quantize.blockSize", int, "int4-weight/int8-weight: weights per block"),
    ("--calibration-samples", "quantize.calibrationSamples", int, "int8-static calibration samples"),
    ("--calibration-data", "quantize.calibrationDataPath", str, ".npz of calibration inputs"),
    ("--export-format", "export.format", str, "onnx | torchscript"),
    ("--opset", "export.opset", int, "ONNX opset (>= 17)"),
    ("--backend", "export.backend", str, "onnxruntime | tensorrt | pytorch | python"),
    ("--max-batch-size", "triton.maxBatchSize", int, "Triton max_batch_size"),
    ("--max-queue-delay-us", "triton.dynamicBatching.maxQueueDelayMicroseconds", int, "batcher delay"),
    ("--instance-kind", "triton.instanceKind", str, "KIND_GPU | KIND_CPU"),
    ("--instance-count", "triton.instanceCount", int, "instances per device"),
    ("--validation-data", "validation.dataPath", str, ".npz validation inputs (+ labels)"),
    ("--validation-samples", "validation.samples", int, "validation samples"),
    ("--seed", "validation.seed", int, "seed for generated inputs"),
    ("--max-abs-error", "gate.maxAbsError", float, "gate: max |a-b|"),
    ("--mean-abs-error", "gate.meanAbsError", float, "gate: mean |a-b|"),
    ("--min-cosine", "gate.minCosine", float, "gate: mean cosine"),
    ("--min-top1-agreement", "gate.minTop1Agreement", float, "gate: top-1 agreement"),
    ("--max-accuracy-drop", "gate.maxAccuracyDrop", float, "gate: accuracy drop (needs labels)"),
    ("--max-perplexity-ratio", "gate.maxPerplexityRatio", float, "gate, text-generation: perplexity ratio"),
    ("--min-greedy-agreement", "gate.minGreedyAgreement", float, "gate, text-generation: greedy agreement"),
    ("--distill-data", "distill.dataPath", str, "distill on this .npz / .txt / .jsonl (no labels needed)"),
    ("--distill-steps", "distill.steps", int, "distillation optimizer steps"),
    ("--keep-layers", "distill.keepLayers", int, "text models: the student keeps this many layers"),
]
_BOOL_FLAGS = [
    ("--tensorrt-fp16", "triton.tensorrtFp16", True),
    ("--no-warmup", "triton.warmup", False),
    ("--no-dynamic-batching", "triton.dynamicBatching.enabled", False),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-repo-builder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compress a model into a verified Triton repository")
    b.add_argument(
        "source",
        help="model path or http(s) URL (.pt TorchScript, .pt2 torch.export, .onnx; a Hugging Face directory "
        "or .tar.gz with --task; a .gguf file with --task text-generation)",
    )
    b.add_argument("--out", required=True, type=Path, help="store; the repository goes to STORE/<build key>")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--recipe", type=Path, help="recipe file (YAML or JSON)")
    group.add_argument("--recipe-json", help="recipe as inline JSON")
    b.add_argument("--model-name", default="model", help="Triton model name")
    b.add_argument("--sha256", help="expected sha256 of the source (required for URLs)")
    b.add_argument(
        limits.FLAG, type=_positive_int, metavar="BYTES",
        default=os.environ.get(limits.ENV, "").strip() or limits.DEFAULT_MAX_SOURCE_BYTES,
        help="most bytes a download, or an archive's unpacked contents, may have "
        f"(default ${limits.ENV}, else {limits.DEFAULT_MAX_SOURCE_GIB} GiB)",
    )  # fmt: skip
    b.add_argument("--summary-file", help="also write the one-line summary here (/dev/termination-log)")
    b.add_argument("--input", action="append", default=[], metavar="NAME:DTYPE:D1,D2", help="input spec")
    b.add_argument("--output", action="append", default=[], metavar="NAME", help="output name")
    for flag, path, kind, text in _FLAGS:
        b.add_argument(flag, dest=path, type=kind, default=None, help=text)
    for flag, path, value in _BOOL_FLAGS:
        b.add_argument(flag, dest=path, action="store_const", const=value, default=None)
    b.add_argument(
        "--fallback", type=lambda t: [m.strip() for m in t.split(",") if m.strip()], metavar="MODE,MODE",
        help="precision ladder: quantize modes tried after --quantize when the gate fails",
    )  # fmt: skip
    b.add_argument(
        "--deadline-seconds", type=float, default=_env_deadline(), metavar="S",
        help=f"the Job's activeDeadlineSeconds (default ${DEADLINE_ENV}): distillation that would not "
        "finish in time fails early",
    )  # fmt: skip
    v = sub.add_parser("verify", help="re-hash a repository against its build.json")
    v.add_argument("repository", type=Path)
    a = sub.add_parser("analyze", help="compare a canary's answers to the stable version's on a probe set")
    analyze.add_arguments(a)
    g = sub.add_parser("gc", help="remove repositories no ModelDeployment references from the store")
    storegc.add_arguments(g)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number of bytes")
    return value


def _env_deadline() -> float | None:
    text = os.environ.get(DEADLINE_ENV, "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        if data.get(key) is None:  # an optional section (text, distill) dumps as None while unset
            data[key] = {}
        data = data[key]
    data[leaf] = value


def _tensor(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise BadInput(f"--input {text!r}: expected NAME:DTYPE[:D1,D2,...]")
    shape = [int(d) for d in parts[2].split(",") if d.strip()] if len(parts) == 3 else []
    return {"name": parts[0], "dtype": parts[1], "shape": shape}


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe file/JSON with command-line flags applied on top."""
    try:
        text = args.recipe.read_text(encoding="utf-8") if args.recipe else (args.recipe_json or "")
        data = recipe_data(text)  # flags apply before validation: rules may span both
        for dotted, value in vars(args).items():
            if "." in dotted and value is not None:
                _set(data, dotted, value)
        if args.input:
            _set(data, "io.inputs", [_tensor(t) for t in args.input])
        if args.output:
            _set(data, "io.outputs", [{"name": n} for n in args.output])
        if args.fallback is not None:
            data["fallback"] = args.fallback
        return Recipe.model_validate(data)
    except (OSError, ValueError) as exc:  # ValidationError and YAML errors are ValueErrors
        raise BadInput(f"invalid recipe: {_short(exc)}") from exc


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _build(args: argparse.Namespace) -> int:
    info: dict[str, Any] = {"modelName": args.model_name}
    try:
        recipe = recipe_from_args(args)
        from . import pipeline  # torch and onnxruntime: loaded once a build starts

        steps = request.Steps(info=info, deadline=args.deadline_seconds)
        req = request.BuildRequest(
            args.source, args.out, recipe, args.model_name, args.sha256,
            limits.SourceLimits(max_bytes=args.max_source_bytes),
        )  # fmt: skip
        result = pipeline.build(req, steps)
    except BuilderError as exc:
        return _fail(info, exc.kind, _short(exc), exc.exit_code, args.summary_file)
    except Exception as exc:  # anything else is a builder bug: report it as internal
        traceback.print_exc(file=sys.stderr)
        return _fail(info, "internal", f"{type(exc).__name__}: {_short(exc)}", 1, args.summary_file)
    sys.stderr.write(
        ("[builder] cached: " if result.cached else "[builder] built: ") + f"{result.repository}\n"
    )
    sys.stderr.write(table(result.record, result.record.get("timings", {})) + "\n")
    info["repository"] = str(result.repository)
    emit(make_summary(info, result.record, result.cached, None), sys.stdout, args.summary_file)
    return 0


def _fail(info: dict[str, Any], kind: str, message: str, code: int, summary_file: str | None) -> int:
    sys.stderr.write(f"error: {kind}: {message}\n")
    emit(make_summary(info, None, False, (kind, message)), sys.stdout, summary_file)
    return code


def _verify(args: argparse.Namespace) -> int:
    from .store.repository import verify_repository

    problems = verify_repository(args.repository)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    sys.stdout.write(
        json.dumps({"ok": not problems, "repository": str(args.repository), "problems": problems}) + "\n"
    )
    return 0 if not problems else 2


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "gc":
        return storegc.run(args)
    return _build(args) if args.command == "build" else _verify(args)


def _analyze(args: argparse.Namespace) -> int:
    try:
        return analyze.run(args)
    except Exception as exc:  # a bug in the analysis: report it as internal, like build does
        traceback.print_exc(file=sys.stderr)
        line = json.dumps(
            {"result": "error", "passed": False, "reason": f"internal: {type(exc).__name__}: {exc}"}
        )
        sys.stdout.write(line[: analyze.MAX_LINE] + "\n")
        if args.summary_file:
            Path(args.summary_file).write_text(line[: analyze.MAX_LINE], encoding="utf-8")
        return 1
