"""The quality-analysis Job of a canary step, and the pure reading of its outcome.

Argo Rollouts' job metric provider runs a Job and reads its exit; Conch's runs
``model-repo-builder analyze`` in the builder image: it sends the stable build's probe set (the gate's
validation inputs and the original model's answers, ``<store>/<repositoryPath>/<stable build key>/
probes.npz``) or a probe file on the store to the canary's and the stable's Triton pods, compares the
answers with the build gate's metrics and ends with the verdict in its termination message.

Use from the canary step (pure; the caller applies the Job and lists its pods)::

    thresholds = analysis.QualityThresholds(
        q.min_cosine, q.min_top1_agreement, q.max_abs_error, q.min_greedy_agreement)
    req = analysis.AnalysisRequest(
        canary_version=..., step=..., canary_addresses=(pod IPs...), stable_addresses=(pod IPs...),
        stable_build_key=..., model_name=stable model, canary_model_name=canary model,
        thresholds=thresholds, probe_path=q.probe_path)
    job = analysis.render_analysis_job(owner, req)        # apply it (same inputs: same object)
    pods = list pods with label batch.kubernetes.io/job-name=<job name>
    result = analysis.observe(live_job, pods)             # Pending | Passed | Failed | Error

The Job's name hashes every input (``<md>-qa-<10 hex>``): a pass with the same step, pods and
thresholds applies the same object; a new pod IP or a retry (``attempt``) makes a new Job, since a
Job's template cannot change. ``Error`` means nothing is known about the canary's quality (a pod
unreachable, the stable erring, no probe set, the Job's deadline): pause, do not promote.

The contract with the builder is JSON only (this module imports no builder code;
model_repo_builder/gate/analyze.py documents the same): exit 0 passed, 4 quality failed, 5 could not
analyse, 1 internal; the termination message is one JSON line with ``result`` ("passed" | "failed" |
"error"), ``passed``, ``metrics`` (cosine, top1Agreement, maxAbsError, meanAbsError: canary vs
stable, worst over canary pods; a generator's: greedyAgreement, identicalAnswers), ``bounds``
(minCosine, minTop1Agreement, maxAbsError, minGreedyAgreement; null = not enforced), ``failing``
({metric, value, bound, threshold} or null), ``skipped`` and ``reason``.

A generator's canary (minGreedyAgreement set) answers the build's probe prompts greedily, 32 tokens
each, so its requests get GENERATION_REQUEST_TIMEOUT_SECONDS (a busy CPU pod interleaves them with
its traffic).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from conch.api import types
from conch.render import authproxy, common, deployment, oneshot
from conch.render.common import Obj, Owner

CONTAINER = "analysis"
COMPONENT = "quality-analysis"
LABEL_STEP = "serving.conch.dev/canary-step"
ANNOTATION_STABLE_BUILD_KEY = "serving.conch.dev/stable-build-key"
EXIT_QUALITY_FAILED = 4
EXIT_CANNOT_ANALYSE = 5
DEADLINE_SECONDS = 120  # for the requests; the Job gets START_SLACK more to start and import
START_SLACK = 60
REQUEST_TIMEOUT_SECONDS = 10
GENERATION_REQUEST_TIMEOUT_SECONDS = 60
TTL_SECONDS = 3600
NAME_KEY_CHARS = 10
RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
State = Literal["Pending", "Passed", "Failed", "Error"]


@dataclass(frozen=True)
class QualityThresholds:
    """Bounds on the canary-vs-stable metrics (spec.rollout.canary.analysis.quality); None: not enforced."""

    min_cosine: float | None = None
    min_top1_agreement: float | None = None
    max_abs_error: float | None = None
    min_greedy_agreement: float | None = None  # a generator's only bound

    def flags(self) -> list[str]:
        """As `analyze` flags; every bound is passed, so the builder's defaults never apply (the greedy
        bound only when set: a flag more would rename the Jobs of analyses already running)."""

        def text(value: float | None) -> str:
            return "none" if value is None else repr(float(value))

        greedy = self.min_greedy_agreement
        return [
            "--min-cosine", text(self.min_cosine),
            "--min-top1-agreement", text(self.min_top1_agreement),
            "--max-abs-error", text(self.max_abs_error),
            *(["--min-greedy-agreement", text(greedy)] if greedy is not None else []),
        ]  # fmt: skip

    def generative(self) -> bool:
        """Whether these bounds judge a generator (its probes are answered by generation)."""
        return self.min_greedy_agreement is not None


@dataclass(frozen=True)
class AnalysisRequest:
    """One analysis of one canary step."""

    canary_version: str
    step: int
    canary_addresses: tuple[str, ...]  # pod IPs (Triton's HTTP port is added) or host:port
    stable_addresses: tuple[str, ...]
    stable_build_key: str  # whose probes.npz is the probe set (unless probe_path)
    model_name: str  # the stable's Triton model
    thresholds: QualityThresholds
    canary_model_name: str | None = None  # when the canary's model is named otherwise
    probe_path: str | None = None  # a probe file, relative to the store's root
    attempt: int = 0  # a retry of the same step and pods gets a new Job
    deadline_seconds: int = DEADLINE_SECONDS


@dataclass(frozen=True)
class AnalysisResult:
    """Where an analysis stands; metrics are canary vs stable, bounds as the Job was given them."""

    state: State
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, float | None] = field(default_factory=dict)
    failing_metric: str | None = None

    def values(self) -> tuple[types.AnalysisValue, ...]:
        """Each enforced bound with its measured value, for status (name = the bound, e.g. minCosine)."""
        out = []
        for bound, threshold in self.bounds.items():
            if threshold is None:
                continue
            metric = _METRICS.get(bound, bound)
            value = self.metrics.get(metric)
            upper = bound.startswith("max")
            passed = None if value is None else (value <= threshold if upper else value >= threshold)
            text = f"{'<=' if upper else '>='} {threshold:g}"
            out.append(types.AnalysisValue(name=metric, value=value, bound=text, passed=passed))
        return tuple(out)


_METRICS = {
    "minCosine": "cosine",
    "minTop1Agreement": "top1Agreement",
    "maxAbsError": "maxAbsError",
    "minGreedyAgreement": "greedyAgreement",
}


def address(value: str) -> str:
    """host:port of a pod's Triton HTTP endpoint (a bare IP gets the serving port)."""
    if value.startswith("[") or value.count(":") == 1:
        return value
    if ":" in value:  # a bare IPv6 address
        return f"[{value}]:{deployment.HTTP_PORT}"
    return f"{value}:{deployment.HTTP_PORT}"


def probes_argument(owner: Owner, req: AnalysisRequest) -> str:
    """--probes: the user's probe file on the store, else the stable build's directory."""
    if req.probe_path:
        return f"{common.STORE_MOUNT}/{req.probe_path.lstrip('/')}"
    return f"{common.repository_root(owner.spec)}/{req.stable_build_key}"


def command(owner: Owner, req: AnalysisRequest) -> list[str]:
    """The `model-repo-builder analyze` command line (the builder's CLI contract)."""
    cmd = ["model-repo-builder", "analyze", "--probes", probes_argument(owner, req)]
    cmd += [a for pod in req.canary_addresses for a in ("--canary", address(pod))]
    cmd += [a for pod in req.stable_addresses for a in ("--stable", address(pod))]
    cmd += ["--model-name", req.model_name]
    if req.canary_model_name and req.canary_model_name != req.model_name:
        cmd += ["--canary-model-name", req.canary_model_name]
    cmd += req.thresholds.flags()
    cmd += [
        "--timeout-seconds",
        str(GENERATION_REQUEST_TIMEOUT_SECONDS if req.thresholds.generative() else REQUEST_TIMEOUT_SECONDS),
        "--deadline-seconds", str(req.deadline_seconds),
        "--summary-file", oneshot.SUMMARY_FILE,
    ]  # fmt: skip
    if authproxy.enabled(owner):  # the pods require a token: the Job reads one from the mounted Secret
        cmd += ["--tokens-dir", authproxy.TOKENS_MOUNT]
    return cmd


def job_name(owner: Owner, req: AnalysisRequest) -> str:
    """``<md>-qa-<hash>``: a hash of everything the Job runs (<= 45 + 4 + 10 characters).

    The hashed text is sorted JSON with json.dumps' default separators, not keys.canonical: it names
    Jobs that exist, so its bytes stay as they were (a new spelling would restart running analyses)."""
    material = json.dumps(
        {"version": req.canary_version, "step": req.step, "attempt": req.attempt,
         "image": owner.spec.build.image, "command": command(owner, req)},
        sort_keys=True,
    )  # fmt: skip
    return f"{owner.name}-qa-{hashlib.sha256(material.encode()).hexdigest()[:NAME_KEY_CHARS]}"


def render_analysis_job(owner: Owner, req: AnalysisRequest) -> Obj:
    """The Job that analyses step `req.step` of the canary of `req.canary_version`."""
    spec = owner.spec
    labels = {**common.labels(owner, COMPONENT), common.LABEL_VERSION: req.canary_version,
              LABEL_STEP: str(req.step)}  # fmt: skip
    annotations = {ANNOTATION_STABLE_BUILD_KEY: req.stable_build_key}
    tokens = [{"name": authproxy.TOKENS_VOLUME, "mountPath": authproxy.TOKENS_MOUNT, "readOnly": True}]
    container = oneshot.container(
        CONTAINER, spec.build.image, command(owner, req), RESOURCES,
        [{"name": common.STORE_VOLUME, "mountPath": common.STORE_MOUNT, "readOnly": True}, oneshot.TMP_MOUNT,
         *(tokens if authproxy.enabled(owner) else [])],
    )  # fmt: skip
    metadata = common.metadata(owner, job_name(owner, req), COMPONENT, annotations=annotations)
    return oneshot.job(
        {**metadata, "labels": labels},
        {"labels": labels, "annotations": annotations},
        oneshot.pod_spec(
            spec,
            container,
            [common.store_volume(owner, read_only=True), oneshot.TMP_VOLUME, *authproxy.volumes(owner)],
        ),
        backoff_limit=0,
        deadline_seconds=req.deadline_seconds + START_SLACK,
        ttl_seconds=TTL_SECONDS,
    )


def observe(job: Obj | None, pods: list[Obj]) -> AnalysisResult:
    """The analysis's outcome from its Job and pods (pure)."""
    if job is None:
        return AnalysisResult("Pending", "the analysis Job is not created yet")
    done = oneshot.condition(job, *oneshot.COMPLETE)
    failed = oneshot.condition(job, *oneshot.FAILED)
    if done is None and failed is None:
        return AnalysisResult("Pending", "the analysis Job is running")
    text = oneshot.termination_message(pods)
    if text is None:
        if failed is not None:
            why = oneshot.failure(failed).rstrip(": ")
            return AnalysisResult("Error", f"the analysis Job failed without a result: {why}")
        return AnalysisResult("Error", "the analysis Job finished without a result")
    return parse_result(text, succeeded=done is not None)


def parse_result(text: str, succeeded: bool) -> AnalysisResult:
    """An AnalysisResult from `analyze`'s JSON line (the last line of `text`); a Job that succeeded
    must say passed, one that failed must say failed or error."""
    try:
        raw = json.loads(text.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return AnalysisResult("Error", f"the analysis result is not JSON: {_clip(text)}")
    if not isinstance(raw, dict) or raw.get("result") not in ("passed", "failed", "error"):
        return AnalysisResult("Error", f"the analysis result has no result field: {_clip(text)}")
    metrics = {k: float(v) for k, v in (raw.get("metrics") or {}).items() if isinstance(v, int | float)}
    bounds = {
        k: (float(v) if isinstance(v, int | float) else None) for k, v in (raw.get("bounds") or {}).items()
    }
    failing = raw["failing"] if isinstance(raw.get("failing"), dict) else {}
    reason = _clip(str(raw.get("reason", "")))
    state: State = {"passed": "Passed", "failed": "Failed"}.get(raw["result"], "Error")  # type: ignore[assignment]
    if (state == "Passed") != succeeded:
        return AnalysisResult("Error", f"the analysis Job's status disagrees with its result: {reason}")
    metric = failing.get("metric") if state == "Failed" else None
    return AnalysisResult(state, reason, metrics, bounds, str(metric) if metric else None)


def _clip(text: str) -> str:
    return oneshot.clip(text.strip())
