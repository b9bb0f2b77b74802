"""Quality analysis of a canary: the same probes through the canary and the stable Triton, compared.

Argo Rollouts, Flagger, KServe and Seldon judge a canary by HTTP errors and latency; Conch also knows
what the model should answer. ``model-repo-builder analyze`` loads a probe set (`probes`: the stable
build's ``probes.npz``, or a probe file), sends it over Triton's HTTP/REST v2 protocol to every
canary pod and to a stable pod, and compares the answers with the build gate's metrics
(`verify.compare`): mean per-sample cosine, top-1 agreement (argmax of the first output, or equal
labels for text classifiers) and max/mean absolute error. With several canary pods the worst value
of each metric counts. When the probe set carries the original model's answers, canary and stable
are each compared with them too (reported, not enforced). A generative model's probes are prompts:
each version answers them greedily and the answers are compared by greedy agreement
(`generationprobes`; bound ``--min-greedy-agreement``).

Bounded (`tritonhttp`): one client per pod with per-request timeouts, at most ``--max-requests``
inference requests, nothing sent after ``--deadline-seconds`` (a run ends within deadline + one
timeout). Requests go only to the addresses given. A canary that answers a probe with an error fails
(failing metric ``answers``); one that cannot be reached is not judged (error).

CLI (the operator's analysis Job runs it; conch.render.analysis documents the other side)::

    model-repo-builder analyze --probes PATH --canary HOST:PORT [--canary ...] --stable HOST:PORT
        [--stable ...] [--model-name M] [--canary-model-name M] [--min-cosine F]
        [--min-top1-agreement F] [--max-abs-error F] [--min-greedy-agreement F] [--batch-size N]
        [--timeout-seconds S]
        [--deadline-seconds S] [--max-requests N] [--summary-file /dev/termination-log]

Exit codes: 0 passed, 4 quality failed (EXIT_QUALITY_FAILED), 5 could not analyse
(EXIT_CANNOT_ANALYSE: a pod unreachable, the stable pod failing, a bad probe file or flag; the
message names the address or file), 1 internal error. The last stdout line, also written to
--summary-file, is one JSON object (<= 4096 bytes)::

    {"result": "passed" | "failed" | "error", "passed": bool,
     "metrics": {"cosine": F, "top1Agreement": F, "maxAbsError": F, "meanAbsError": F}
                | {"greedyAgreement": F, "identicalAnswers": F},    # a generative model's
     "bounds": {"minCosine": F | null, "minTop1Agreement": F | null, "maxAbsError": F | null,
                "minGreedyAgreement": F | null},
     "failing": {"metric": "cosine", "value": F, "bound": "minCosine", "threshold": F} | null,
     "skipped": ["minTop1Agreement"],            # bounds whose metric this model cannot give
     "reason": "one line for people",
     "reference": {"canary": {...}, "stable": {...}},   # vs the original model, when known
     "probes": {"count": N, "file": PATH, "origin": TEXT[, "unit": "tokens" | "words" (a generator's)]},
     "model": M,
     "canary": [ADDRESS...], "stable": ADDRESS, "requests": N, "seconds": F, "analyzerVersion": V}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import BUILDER_VERSION
from ..errors import BuilderError
from . import generationprobes, probes, tritonhttp, verify

EXIT_PASSED = 0
EXIT_QUALITY_FAILED = 4
EXIT_CANNOT_ANALYSE = 5
MAX_LINE = 4096
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MIN_TOP1_AGREEMENT = 0.95
Arrays = dict[str, NDArray[Any]]
Comparer = Callable[[Arrays, Arrays], dict[str, float]]


class CannotAnalyse(Exception):  # noqa: N818 - reads as the outcome it reports
    """The analysis could not be made: nothing is known about the canary's quality."""


class QualityFailed(Exception):  # noqa: N818
    """The canary answered the probes in a way that fails it outright (errors, wrong shapes, NaN)."""


@dataclass(frozen=True)
class Thresholds:
    """Bounds on canary-vs-stable metrics; None is not enforced."""

    min_cosine: float | None = DEFAULT_MIN_COSINE
    min_top1_agreement: float | None = DEFAULT_MIN_TOP1_AGREEMENT
    max_abs_error: float | None = None
    min_greedy_agreement: float | None = None

    def checks(self) -> list[tuple[str, str, float | None, bool]]:
        """(metric, bound name, threshold, metric must stay <= threshold)."""
        return [
            ("cosine", "minCosine", self.min_cosine, False),
            ("top1Agreement", "minTop1Agreement", self.min_top1_agreement, False),
            ("maxAbsError", "maxAbsError", self.max_abs_error, True),
            ("greedyAgreement", "minGreedyAgreement", self.min_greedy_agreement, False),
        ]


def compare_answers(expected: Arrays, got: Arrays) -> dict[str, float]:
    """The gate's metrics of `got` against `expected` (label outputs: top1Agreement = equal labels).

    Raises QualityFailed when the outputs differ in names or shapes or `got` holds NaN/Inf.
    """
    if sorted(expected) != sorted(got):
        raise QualityFailed(f"outputs differ: {sorted(got)} instead of {sorted(expected)}")
    numeric = [n for n in expected if expected[n].dtype.kind in "fiub"]
    labels = [n for n in expected if n not in numeric]
    metrics: dict[str, float] = {}
    if numeric:
        try:
            metrics = verify.compare([expected[n] for n in numeric], [got[n] for n in numeric], None)
        except BuilderError as exc:
            raise QualityFailed(str(exc)) from exc
        except (ValueError, TypeError) as exc:  # e.g. a label where the stable answers numbers
            raise QualityFailed(f"outputs {numeric} are not numbers like the stable's: {exc}") from exc
        if sum(int(np.prod(expected[n].shape[1:])) for n in numeric) <= 1:
            metrics.pop("cosine", None)  # one number per item: its cosine is always 1
    if labels:
        same = np.ones(len(expected[labels[0]]), dtype=bool)
        for n in labels:
            if expected[n].shape != got[n].shape:
                raise QualityFailed(f"shape mismatch: output {n!r} {list(got[n].shape)}")
            same &= (expected[n] == got[n]).reshape(len(same), -1).all(axis=1)
        metrics["top1Agreement"] = round(float(same.mean()), 8)
    return metrics


def worst(per_pod: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's worst value over the canary pods."""
    keys = sorted(set().union(*per_pod))
    return {k: (max if k.endswith("Error") else min)(m[k] for m in per_pod if k in m) for k in keys}


def judge(metrics: dict[str, float], thresholds: Thresholds) -> tuple[dict[str, Any] | None, list[str]]:
    """(the first bound the metrics break or None, bounds whose metric is missing)."""
    skipped = []
    for metric, bound, threshold, upper in thresholds.checks():
        if threshold is None:
            continue
        if metric not in metrics:
            skipped.append(bound)
            continue
        value = metrics[metric]
        if (value > threshold) if upper else (value < threshold):
            return {"metric": metric, "value": value, "bound": bound, "threshold": threshold}, skipped
    return None, skipped


@dataclass
class Request:
    """What one analysis run is asked to do."""

    probes: Path
    canary: list[str]
    stable: list[str]
    thresholds: Thresholds = Thresholds()
    limits: tritonhttp.Limits = field(default_factory=tritonhttp.Limits)
    model: str | None = None
    canary_model: str | None = None
    token: str | None = field(default=None, repr=False)  # for pods that require one (spec.auth)


def analyse(req: Request) -> dict[str, Any]:
    """Run the analysis; returns the result object (result passed/failed/error, never raises
    CannotAnalyse or BadInput: they become result "error")."""
    budget = tritonhttp.Budget(req.limits)
    out: dict[str, Any] = {"canary": req.canary, "stable": req.stable[0] if req.stable else ""}
    out["bounds"] = {bound: threshold for _, bound, threshold, _ in req.thresholds.checks()}
    try:
        probe_set = probes.read(req.probes)
        model = req.model or probe_set.model
        if not model:
            raise CannotAnalyse(f"probe file {req.probes} names no model: give --model-name")
        compare, unit = _comparer(req.probes, probe_set)
        out |= {"model": model, "probes": {**_probe_info(req.probes, probe_set), **unit}}
        batch = req.limits.batch_size
        stable, out["stable"] = _stable_answers(req, model, probe_set, budget, batch)
        per_pod, vs_reference = [], []
        for address in req.canary:
            target = tritonhttp.Target("canary", address, req.canary_model or model, req.token)
            answers = _canary_answers(target, probe_set, budget, batch)
            per_pod.append(compare(stable, answers))
            vs_reference.append(_vs_reference(compare, probe_set.reference, answers))
        out |= _verdict(worst(per_pod), req.thresholds, req, out["stable"])
        if probe_set.reference:
            out["reference"] = {
                "canary": worst([r for r in vs_reference if r]) if any(vs_reference) else {},
                "stable": _vs_reference(compare, probe_set.reference, stable),
            }
    except QualityFailed as exc:
        failing = {"metric": "answers", "value": None, "bound": None, "threshold": None}
        out |= {
            "result": "failed",
            "passed": False,
            "failing": failing,
            "reason": f"quality analysis failed: {exc}",
        }
    except (CannotAnalyse, tritonhttp.AskError, BuilderError) as exc:
        out |= {"result": "error", "passed": False, "failing": None, "reason": f"cannot analyse: {exc}"}
    out |= {"requests": budget.requests, "seconds": round(time.monotonic() - budget.started, 3)}
    return {"analyzerVersion": BUILDER_VERSION, **out}


def _comparer(path: Path, probe_set: probes.ProbeSet) -> tuple[Comparer, dict[str, str]]:
    """How two versions' answers are compared, and the probes' ``unit`` entry (a generator's answers:
    tokens or words; none for tensors)."""
    if probe_set.kind != probes.GENERATION_KIND:
        return compare_answers, {}
    split, unit = generationprobes.splitter(path)
    return (lambda expected, got: generationprobes.compare(expected, got, split)), {"unit": unit}


def _ask(
    target: tritonhttp.Target, probe_set: probes.ProbeSet, budget: tritonhttp.Budget, batch: int | None
) -> Arrays:
    if probe_set.kind == probes.GENERATION_KIND:
        return generationprobes.ask(target, probe_set, budget)
    return tritonhttp.ask(target, probe_set, budget, batch)


def _canary_answers(
    target: tritonhttp.Target, probe_set: probes.ProbeSet, budget: tritonhttp.Budget, batch: int | None
) -> Arrays:
    """A canary that answers probes with errors fails; one that cannot be asked is not judged."""
    try:
        return _ask(target, probe_set, budget, batch)
    except tritonhttp.RefusedError as exc:
        raise QualityFailed(str(exc)) from exc


def _probe_info(path: Path, probe_set: probes.ProbeSet) -> dict[str, Any]:
    file = path / probes.PROBES_FILE if path.is_dir() else path
    return {"count": probe_set.count, "file": str(file), "origin": probe_set.origin}


def _stable_answers(
    req: Request, model: str, probe_set: probes.ProbeSet, budget: tritonhttp.Budget, batch: int | None
) -> tuple[Arrays, str]:
    """The first stable pod that answers (a stable pod that is gone is skipped; one that errs is not)."""
    unreachable = []
    for address in req.stable:
        try:
            target = tritonhttp.Target("stable", address, model, req.token)
            return _ask(target, probe_set, budget, batch), address
        except tritonhttp.UnreachableError as exc:
            unreachable.append(str(exc))
    raise CannotAnalyse("; ".join(unreachable) or "no stable address given")


def _vs_reference(compare: Comparer, reference: Arrays, answers: Arrays) -> dict[str, float]:
    try:
        return compare(reference, answers) if reference else {}
    except QualityFailed:
        return {}


def _verdict(metrics: dict[str, float], thresholds: Thresholds, req: Request, stable: str) -> dict[str, Any]:
    failing, skipped = judge(metrics, thresholds)
    where = f"canary {', '.join(req.canary)} vs stable {stable}"
    if failing is None:
        shown = ", ".join(f"{k} {v:.6g}" for k, v in metrics.items())
        reason = f"canary answers agree with stable ({shown}; {where})"
    else:
        op = ">" if failing["bound"].startswith("max") else "<"
        reason = (
            f"quality analysis failed: {failing['metric']} {failing['value']:.6g} {op} "
            f"{failing['bound']} {failing['threshold']:g} ({where})"
        )
    return {
        "result": "passed" if failing is None else "failed",
        "passed": failing is None,
        "metrics": metrics,
        "failing": failing,
        "skipped": skipped,
        "reason": reason,
    }


def dumps(result: dict[str, Any]) -> str:
    """One JSON line of at most MAX_LINE bytes (drops the reference metrics, then clips the reason)."""
    line = json.dumps(result, separators=(",", ":"))
    if len(line.encode()) > MAX_LINE:
        result = {k: v for k, v in result.items() if k not in ("reference", "canary")}
        line = json.dumps(result, separators=(",", ":"))
    if len(line.encode()) > MAX_LINE:
        over = len(line.encode()) - MAX_LINE + 16
        result = {**result, "reason": str(result.get("reason", ""))[:-over] + "..."}
        line = json.dumps(result, separators=(",", ":"))
    return line


def exit_code(result: dict[str, Any]) -> int:
    """The CLI's exit code for a result."""
    return {"passed": EXIT_PASSED, "failed": EXIT_QUALITY_FAILED}.get(result["result"], EXIT_CANNOT_ANALYSE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `analyze` subcommand's flags."""
    add = parser.add_argument
    add("--probes", required=True, type=Path, help="stable build directory (its probes.npz) or probe file")
    add("--canary", action="append", required=True, metavar="HOST:PORT", help="canary pod (repeatable)")
    add("--stable", action="append", required=True, metavar="HOST:PORT", help="stable pod (repeatable)")
    add("--model-name", help="Triton model (default: the probe set's)")
    add("--canary-model-name", help="the canary's model name if it differs")
    add("--min-cosine", type=_bound, default=DEFAULT_MIN_COSINE, help="'none' disables")
    add("--min-top1-agreement", type=_bound, default=DEFAULT_MIN_TOP1_AGREEMENT, help="'none' disables")
    add("--max-abs-error", type=_bound, default=None, help="default: not enforced")
    add("--min-greedy-agreement", type=_bound, default=None, help="generative models; default: not enforced")
    add("--batch-size", type=int, default=None, help="items per request (default: the model's max batch)")
    limits = tritonhttp.Limits()
    add("--timeout-seconds", type=float, default=limits.timeout, help="per request")
    add("--deadline-seconds", type=float, default=limits.deadline, help="no request starts after it")
    add("--max-requests", type=int, default=limits.max_requests, help="inference requests in all")
    add("--summary-file", help="also write the one-line result here (/dev/termination-log)")
    add("--tokens-dir", type=Path, help="a mounted inference-token Secret, for pods that require a token")


def _bound(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def run(args: argparse.Namespace) -> int:
    """The `analyze` subcommand: print (and write) the result line; returns the exit code."""
    req = Request(
        probes=args.probes,
        canary=list(args.canary),
        stable=list(args.stable),
        thresholds=Thresholds(
            args.min_cosine, args.min_top1_agreement, args.max_abs_error, args.min_greedy_agreement
        ),
        limits=tritonhttp.Limits(
            args.timeout_seconds, args.deadline_seconds, args.max_requests, args.batch_size
        ),
        model=args.model_name,
        canary_model=args.canary_model_name,
        token=tritonhttp.read_token(args.tokens_dir) if args.tokens_dir else None,
    )
    result = analyse(req)
    sys.stderr.write(f"[analyze] {result['result']}: {result.get('reason', '')}\n")
    line = dumps(result)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if args.summary_file:
        Path(args.summary_file).write_text(line, encoding="utf-8")
    return exit_code(result)
