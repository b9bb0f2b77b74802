"""A canary's pass, decided: from the snapshot (both Deployments, their pods, the step's quality Job,
the due Prometheus answer) to the Deployments to apply, the quality Job to start or retire, the
Events and the metrics.

Pure, like `canary` (the step state machine) and `promql` (the queries and their verdict): the I/O
this module used to do moved out, the reads to `snapshot.observe` (and `snapshot.measure` for
Prometheus, asked only when `analysis_query` says an analysis is due), the writes to the controller's
act step. A canary left behind (aborted, promoted, or abandoned for a newer spec.version or another
strategy) is scaled away here too, with the stable growing back only into the GPUs it frees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from conch import apply, canary, clock, kube, plan, promql, rollout, snapshot, status
from conch.api import types
from conch.render import analysis, common, deployment

Obj = dict[str, Any]
QUALITY_RETRY_S = 30.0
_Children = list[plan.Child]  # (Flow's field `plan` hides the module inside the class)
_Metrics = list[plan.Metric]


@dataclass
class Flow:
    """What a canary pass decided, for the children, status, events and the next requeue."""

    plan: canary.Plan
    running: bool  # a canary of the wanted version is in progress (not a leftover being scaled away)
    events: list[status.Event] = field(default_factory=list)
    children: _Children = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    metrics: _Metrics = field(default_factory=list)


@dataclass(frozen=True)
class _Setting:
    """Whether a canary of spec.version runs, and beside what."""

    running: bool
    steps: types.Canary | None
    stable: str | None  # the serving version the canary runs beside
    before: types.CanaryStatus | None  # the running canary's last status (None: a fresh one)
    ready: dict[str, deployment.Served]


def _setting(
    owner: common.Owner, old: types.ModelDeploymentStatus, history: list[types.HistoryEntry],
    decision: rollout.Decision,
) -> _Setting:  # fmt: skip
    spec, wanted = owner.spec, owner.spec.version
    ready = rollout.built(history)
    current = old.current_version if old.current_version in ready else None  # the stable version
    steps = spec.rollout.canary if spec.rollout.strategy == "canary" else None
    running = steps is not None and current is not None and wanted in ready and wanted != current
    running = running and decision.failed is None
    before = old.canary if old.canary is not None and old.canary.version == wanted else None
    if before is not None and before.phase in ("Promoted", "Aborted"):
        before = None  # that canary ended (spec.version went elsewhere and came back): a fresh one
    return _Setting(running, steps, current, before, ready)


def analysis_query(
    owner: common.Owner, snap: snapshot.Snapshot, *, old: types.ModelDeploymentStatus,
    history: list[types.HistoryEntry], decision: rollout.Decision,
) -> snapshot.Query | None:  # fmt: skip
    """The Prometheus checks of the running canary, when they are due this pass (else None)."""
    s = _setting(owner, old, history, decision)
    if not _analysis_due(s, snap.now):
        return None
    assert s.steps is not None and s.steps.analysis is not None and s.stable is not None
    checks = s.steps.analysis
    window = promql.window_seconds(owner.spec, checks)
    queries = promql.queries(owner, checks, owner.spec.version, s.stable, window)
    return snapshot.Query(checks.prometheus_url, queries, checks, window)


def _analysis_due(s: _Setting, now: float) -> bool:
    """Whether the running canary's Prometheus checks are due this pass."""
    if not s.running or s.steps is None or s.stable is None or s.steps.analysis is None:
        return False
    return canary.analysis_due(s.steps, s.before, now)


def step(
    owner: common.Owner, snap: snapshot.Snapshot, *, old: types.ModelDeploymentStatus,
    history: list[types.HistoryEntry], decision: rollout.Decision,
) -> Flow | None:  # fmt: skip
    """The pass of the canary of spec.version when one is due, or the scaling away of what is left of
    one; None when there is nothing of a canary to do (the plain rolling path serves)."""
    s = _setting(owner, old, history, decision)
    if not s.running and old.canary is None:
        return None
    pods = snap.pods_with(common.selector(owner))
    world = observe(owner, snap.stable_deployment, snap.canary_deployment, pods, snap.now)
    if not s.running:
        if world.canary.spec == 0 and world.canary.existing == 0:
            return None
        if decision.serve is None:
            return None
        wanted = owner.spec.version
        whole = types.Canary(steps=[types.CanaryStep(weight=100)])
        left = old.canary or canary.start(whole, wanted, snap.now)
        if left.phase not in ("Promoted", "Aborted"):
            why = decision.reason or "spec.version or the strategy changed"
            left = left.model_copy(update={"phase": "Aborted", "message": f"abandoned: {why}"})
        flow = Flow(canary.settle(left, decision.serve.version, world), running=False)
    else:
        assert s.steps is not None and s.stable is not None
        measured = snap.measured if _analysis_due(s, snap.now) else None
        quality, qa_children, qa_absent, qa_metrics = _quality(owner, snap, s, pods)
        advanced = canary.advance(
            s.steps, s.before, version=owner.spec.version, stable=s.stable, world=world,
            measured=measured, quality=quality,
        )  # fmt: skip
        flow = Flow(advanced, running=True, children=qa_children, absent=qa_absent, metrics=qa_metrics)
        if measured is not None:
            flow.metrics.insert(0, plan.Metric("CANARY_ANALYSES", (measured.result.lower(), "metrics")))
        flow.events = _events(s.before, advanced, measured, flow.metrics)
    flow.children += _deployments(owner, s.ready, flow.plan, snap, world)
    return flow


def decision(
    flow: Flow, before: rollout.Decision, history: list[types.HistoryEntry], stable: str | None
) -> rollout.Decision:
    """What the canary's pass means for status: the stable stays current until the canary is promoted."""
    if not flow.running:
        return before
    p = flow.plan
    current = p.status.version if p.promoted else stable
    failed = p.status.version if p.aborted else before.failed
    served = rollout.built(history)[p.stable_version]
    return dataclasses.replace(before, serve=served, current=current, failed=failed)


def _ready(pod: Obj) -> bool:
    """Ready and not terminating."""
    conds = pod.get("status", {}).get("conditions", [])
    ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return ok and not pod["metadata"].get("deletionTimestamp")


def _pods(live: Obj | None, pods: list[Obj]) -> canary.Pods:
    spec = int((live or {}).get("spec", {}).get("replicas", 0)) if live is not None else 0
    return canary.Pods(spec=spec, existing=len(pods), ready=sum(_ready(p) for p in pods))


def observe(
    owner: common.Owner, live_stable: Obj | None, live_canary: Obj | None, pods: list[Obj], now: float
) -> canary.World:
    """The canary's view of the two Deployments and their pods."""
    spec = owner.spec
    is_canary = [p["metadata"].get("labels", {}).get(deployment.LABEL_TRACK) == "canary" for p in pods]
    canary_pods = [p for p, c in zip(pods, is_canary, strict=True) if c]
    stable_pods = [p for p, c in zip(pods, is_canary, strict=True) if not c]
    stable_state, canary_state = rollout.observe(live_stable), rollout.observe(live_canary)
    autoscaled = spec.autoscaling is not None
    total = spec.effective_replicas()
    if total is None:  # the HPA's count on the stable
        total = stable_state.desired if live_stable is not None else spec.min_replicas()
    failure = ""
    if canary_state.exists and canary_state.version == spec.version:
        failure = rollout.crash_reason(canary_pods)
        if not failure and canary_state.deadline_exceeded and canary_state.observed:
            failure = canary_state.message or "progress deadline exceeded"
    return canary.World(
        now=now, total=total, autoscaled=autoscaled, max_surge=spec.rollout.max_surge,
        stable=_pods(live_stable, stable_pods), canary=_pods(live_canary, canary_pods),
        stable_version=stable_state.version,
        stable_rolled_out=rollout.rolled_out(stable_state, stable_state.version or ""),
        canary_failure=failure,
    )  # fmt: skip


def _quality(
    owner: common.Owner, snap: snapshot.Snapshot, s: _Setting, pods: list[Obj]
) -> tuple[canary.Measurement | None, list[plan.Child], list[str], list[plan.Metric]]:
    """The step's quality analysis (conch.render.analysis): start its Job, read its verdict. None while
    it runs. A Job that could not analyse pauses the step and is retired after QUALITY_RETRY_S, so the
    next pass starts it again. Returns (verdict, Job to apply, Jobs to delete, metrics)."""
    assert s.steps is not None and s.stable is not None
    before, stable, ready = s.before, s.stable, s.ready
    quality = s.steps.analysis.quality if s.steps.analysis is not None else None
    if quality is None or before is None or not canary.quality_due(s.steps, before):
        return None, [], [], []
    ips = {track: sorted(_ready_ips(pods, track)) for track in ("canary", "stable")}
    if not ips["canary"] or not ips["stable"]:
        return None, [], [], []
    wanted = owner.spec.version
    thresholds = analysis.QualityThresholds(
        quality.min_cosine, quality.min_top1_agreement, quality.max_abs_error
    )
    req = analysis.AnalysisRequest(
        canary_version=wanted, step=before.step, canary_addresses=tuple(ips["canary"]),
        stable_addresses=tuple(ips["stable"][:1]), stable_build_key=ready[stable].build_key,
        model_name=ready[stable].model_name, canary_model_name=ready[wanted].model_name,
        thresholds=thresholds, probe_path=quality.probe_path,
        attempt=int(clock.parse_time(before.started_at) or 0),  # a later canary of this version: a new Job
    )  # fmt: skip
    desired = analysis.render_analysis_job(owner, req)
    name = analysis.job_name(owner, req)
    live = snap.job(name)
    if live is None:
        return None, [plan.Child(desired, None)], [], []
    result = analysis.observe(live, snap.pods_with({snapshot.JOB_NAME_LABEL: name}))
    if result.state == "Pending":
        return None, [], [], []
    counted = [plan.Metric("CANARY_ANALYSES", (result.state.lower(), "quality"))]
    if result.state == "Error":
        finished = max(
            (clock.parse_time(c.get("lastTransitionTime")) or 0.0)
            for c in live.get("status", {}).get("conditions", []) or [{}]
        )
        retire = snap.now - finished >= QUALITY_RETRY_S and apply.owned(live, owner.uid)
        gone = [kube.path_of(desired)] if retire else []
        return canary.Measurement("Unavailable", (), f"quality analysis: {result.reason}"), [], gone, counted
    verdict: canary.Result = "Passed" if result.state == "Passed" else "Failed"
    return canary.Measurement(verdict, result.values(), result.reason), [], [], counted


def _ready_ips(pods: list[Obj], track: str) -> list[str]:
    out = []
    for pod in pods:
        is_canary = pod["metadata"].get("labels", {}).get(deployment.LABEL_TRACK) == "canary"
        if is_canary == (track == "canary") and _ready(pod):
            ip = pod.get("status", {}).get("podIP")
            if ip:
                out.append(str(ip))
    return out


def _deployments(
    owner: common.Owner, ready: dict[str, deployment.Served], p: canary.Plan, snap: snapshot.Snapshot,
    world: canary.World,
) -> list[plan.Child]:  # fmt: skip
    """The stable Deployment (template and count) and the canary's (scaled to zero and kept when it
    has no pods to run, as Flagger keeps its canary)."""
    live_stable, live_canary = snap.stable_deployment, snap.canary_deployment
    desired = deployment.render_deployment(owner, ready[p.stable_version])
    if live_stable is not None and world.stable_version == p.stable_version != owner.spec.version:
        desired["spec"]["template"] = live_stable["spec"]["template"]  # spec edits arrive with the version
    if p.stable_replicas is not None:
        desired["spec"]["replicas"] = p.stable_replicas
    out = [plan.Child(desired, live_stable)]
    if p.canary_replicas > 0 and owner.spec.version in ready:
        served = ready[owner.spec.version]
        want = deployment.render_canary_deployment(owner, served, p.canary_replicas)
        out.append(plan.Child(want, live_canary))
    elif live_canary is not None:
        idle = deployment.render_canary_deployment(owner, ready[p.stable_version], 0)
        idle["spec"]["template"] = live_canary["spec"]["template"]
        out.append(plan.Child(idle, live_canary))
    return out


def _events(
    before: types.CanaryStatus | None, p: canary.Plan, measured: canary.Measurement | None,
    counted: list[plan.Metric],
) -> list[status.Event]:  # fmt: skip
    """The canary's Events; the metrics that go with them are appended to `counted`."""
    st, out = p.status, []
    if before is None:
        counted.append(plan.Metric("ROLLOUTS", ("started",)))
        out.append(
            status.Event("Normal", "CanaryStarted", f"canary of version {st.version}: {st.steps} steps")
        )
    if st.phase in ("Progressing", "Paused") and (before is None or before.step != st.step):
        counted.append(plan.Metric("CANARY_STEPS"))
        out.append(
            status.Event(
                "Normal", "CanaryStep",
                f"canary {st.version}: step {st.step + 1}/{st.steps}, weight {st.weight}% "
                f"({st.canary_replicas} canary, {st.stable_replicas} stable pods)",
            )
        )  # fmt: skip
    if measured is not None and measured.result == "Failed" and not p.aborted:
        out.append(status.Event("Warning", "AnalysisFailed", f"canary {st.version}: {measured.message}"))
    if p.aborted:
        counted += [plan.Metric("ROLLOUTS", ("aborted",)), plan.Metric("ROLLBACKS")]
        out.append(status.Event("Warning", "CanaryAborted", f"canary {st.version} aborted: {p.reason}"))
    if p.promoted:
        counted.append(plan.Metric("ROLLOUTS", ("promoted",)))
        out.append(status.Event("Normal", "CanaryPromoted", f"canary {st.version} promoted"))
    return out


def conditions(flow: Flow, current: str | None, wanted: str) -> dict[str, status.Cond]:
    """Progressing and Degraded while a canary runs or has just aborted."""
    st = flow.plan.status
    out: dict[str, status.Cond] = {}
    if flow.running and st.phase == "Paused":
        out["Progressing"] = status.Cond("Progressing", False, "AnalysisUnavailable", st.message)
    elif flow.running and st.phase == "Promoting":
        out["Progressing"] = status.Cond("Progressing", True, "CanaryPromoting", st.message)
    elif flow.running and st.phase == "Progressing":
        out["Progressing"] = status.Cond("Progressing", True, "CanaryProgressing", st.message)
    if st.phase == "Aborted" and st.version == wanted and not st.message.startswith("abandoned"):
        reason = "CanaryFailed" if st.message.startswith("canary pods failed") else "AnalysisFailed"
        text = (
            f"canary {st.version} aborted at step {min(st.step, st.steps - 1) + 1}/{st.steps}: {st.message}"
        )
        out["Degraded"] = status.Cond("Degraded", True, reason, f"{text}; serving {current}")
    return out
