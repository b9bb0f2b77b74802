"""The canary strategy (`strategy.Strategy`): a canary's pass, decided, from the pass' context (both
Deployments, their pods, the step's quality Job, the due Prometheus answer) to the Deployments to
apply, the quality Job to start or retire, what status records, the Events and the metrics.

Pure, like `canary` (the step state machine) and `promql` (the queries and their verdict): the reads
are `snapshot.observe`'s (and `snapshot.measure`'s for Prometheus, asked only when `analysis_query`
says an analysis is due), the writes the controller's act step. Whether a canary runs is settled once
per pass (`strategy.choose`, with `can_run`); what it runs beside, its last status and whether its
analysis is due are worked out once, in `Canary`. A canary left behind (aborted, promoted, or
abandoned for a newer spec.version or another strategy) is scaled away by this strategy too, with
the stable growing back only into the GPUs it frees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from conch import apply, canary, clock, kube, passctx, plan, promql, rolling, rollout, snapshot, status
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


def can_run(ctx: passctx.Context) -> bool:
    """Whether a canary of spec.version can run, when the strategy asks for one: its steps are set, a
    stable version serves, and the wanted one is built, new, and has not failed."""
    return (
        ctx.spec.rollout.canary is not None
        and ctx.current is not None
        and ctx.wanted in ctx.ready
        and ctx.wanted != ctx.current
        and ctx.decision.failed is None
    )


@dataclass(frozen=True)
class Canary:
    """The canary strategy (`strategy.Strategy`) of one pass: the canary of spec.version in progress
    (`runs`), or what is left of one, scaled away while the rolling decision serves."""

    runs: bool
    steps: types.Canary | None  # spec.rollout.canary, while a canary runs
    stable: str | None  # the serving version the canary runs beside
    before: types.CanaryStatus | None  # the running canary's last status (None: a fresh one)
    pods: list[Obj]  # the ModelDeployment's serving pods, both tracks
    world: canary.World
    due: bool = False  # the Prometheus checks are due this pass

    @classmethod
    def running(cls, ctx: passctx.Context) -> Canary:
        """The canary of spec.version (`can_run` said it can)."""
        steps, old = ctx.spec.rollout.canary, ctx.old
        assert steps is not None and ctx.current is not None
        before = old.canary if old.canary is not None and old.canary.version == ctx.wanted else None
        if before is not None and before.phase in ("Promoted", "Aborted"):
            before = None  # that canary ended (spec.version went elsewhere and came back): a fresh one
        due = steps.analysis is not None and canary.analysis_due(steps, before, ctx.snap.now)
        pods = ctx.snap.pods_with(common.selector(ctx.owner))
        return cls(True, steps, ctx.current, before, pods, observe(ctx, pods), due)

    @classmethod
    def left_behind(cls, ctx: passctx.Context) -> Canary | None:
        """What is left of an earlier canary (aborted, promoted, or abandoned for a newer spec.version
        or another strategy) while its Deployment still asks for or has pods: None when nothing is left."""
        if ctx.old.canary is None or ctx.decision.serve is None:
            return None
        pods = ctx.snap.pods_with(common.selector(ctx.owner))
        world = observe(ctx, pods)
        if world.canary.spec == 0 and world.canary.existing == 0:
            return None
        return cls(False, None, ctx.current, None, pods, world)

    def analysis_query(self, ctx: passctx.Context) -> snapshot.Query | None:
        """The Prometheus checks of the running canary, when they are due this pass (else None)."""
        if not self.due:
            return None
        assert self.steps is not None and self.steps.analysis is not None and self.stable is not None
        checks = self.steps.analysis
        window = promql.window_seconds(ctx.spec, checks)
        queries = promql.queries(ctx.owner, checks, ctx.wanted, self.stable, window)
        return snapshot.Query(checks.prometheus_url, queries, checks, window)

    def serve(self, ctx: passctx.Context, *, new_key: str) -> passctx.Outcome:
        """The canary's pass: its step (or the scaling away of a leftover), both Deployments, and
        what status records (the stable stays current until the canary is promoted)."""
        flow = self._advance(ctx) if self.runs else self._settle(ctx)
        flow.children += [rolling.admin_secret(ctx, new_key), *_deployments(ctx, flow.plan)]
        decision = self._decision(ctx, flow)
        return passctx.Outcome(
            decision, flow.children, flow.absent, flow.metrics, flow.events,
            conditions=conditions(flow, decision.current, ctx.wanted),
            moving=flow.running and decision.current != ctx.wanted,
            requeue=flow.plan.wait, record=flow.plan.status,
        )  # fmt: skip

    def _advance(self, ctx: passctx.Context) -> Flow:
        assert self.steps is not None and self.stable is not None
        measured = ctx.snap.measured if self.due else None
        quality, qa_children, qa_absent, qa_metrics = _quality(ctx, self)
        advanced = canary.advance(
            self.steps, self.before, version=ctx.wanted, stable=self.stable, world=self.world,
            measured=measured, quality=quality,
        )  # fmt: skip
        flow = Flow(advanced, running=True, children=qa_children, absent=qa_absent, metrics=qa_metrics)
        if measured is not None:
            flow.metrics.insert(0, plan.Metric("CANARY_ANALYSES", (measured.result.lower(), "metrics")))
        flow.events = _events(self.before, advanced, measured, flow.metrics)
        return flow

    def _settle(self, ctx: passctx.Context) -> Flow:
        decision, left = ctx.decision, ctx.old.canary
        assert decision.serve is not None and left is not None
        if left.phase not in ("Promoted", "Aborted"):
            why = decision.reason or "spec.version or the strategy changed"
            left = left.model_copy(update={"phase": "Aborted", "message": f"abandoned: {why}"})
        return Flow(canary.settle(left, decision.serve.version, self.world), running=False)

    def _decision(self, ctx: passctx.Context, flow: Flow) -> rollout.Decision:
        """A running canary keeps the stable current until it is promoted."""
        if not flow.running:
            return ctx.decision
        p = flow.plan
        current = p.status.version if p.promoted else self.stable
        failed = p.status.version if p.aborted else ctx.decision.failed
        served = ctx.ready[p.stable_version]
        return dataclasses.replace(ctx.decision, serve=served, current=current, failed=failed)


def _ready(pod: Obj) -> bool:
    """Ready and not terminating."""
    conds = pod.get("status", {}).get("conditions", [])
    ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return ok and not pod["metadata"].get("deletionTimestamp")


def _pods(live: Obj | None, pods: list[Obj]) -> canary.Pods:
    spec = int((live or {}).get("spec", {}).get("replicas", 0)) if live is not None else 0
    return canary.Pods(spec=spec, existing=len(pods), ready=sum(_ready(p) for p in pods))


def observe(ctx: passctx.Context, pods: list[Obj]) -> canary.World:
    """The canary's view of the two Deployments and their pods (`pods`: both tracks')."""
    spec, live_stable, live_canary = ctx.spec, ctx.snap.stable_deployment, ctx.snap.canary_deployment
    is_canary = [p["metadata"].get("labels", {}).get(deployment.LABEL_TRACK) == "canary" for p in pods]
    canary_pods = [p for p, c in zip(pods, is_canary, strict=True) if c]
    stable_pods = [p for p, c in zip(pods, is_canary, strict=True) if not c]
    stable_state, canary_state = ctx.state, rollout.observe(live_canary)
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
        now=ctx.snap.now, total=total, autoscaled=autoscaled, max_surge=spec.rollout.max_surge,
        stable=_pods(live_stable, stable_pods), canary=_pods(live_canary, canary_pods),
        stable_version=stable_state.version,
        stable_rolled_out=rollout.rolled_out(stable_state, stable_state.version or ""),
        canary_failure=failure,
    )  # fmt: skip


def _quality(
    ctx: passctx.Context, s: Canary
) -> tuple[canary.Measurement | None, list[plan.Child], list[str], list[plan.Metric]]:
    """The step's quality analysis (conch.render.analysis): start its Job, read its verdict. None while
    it runs. A Job that could not analyse pauses the step and is retired after QUALITY_RETRY_S, so the
    next pass starts it again. Returns (verdict, Job to apply, Jobs to delete, metrics)."""
    assert s.steps is not None and s.stable is not None
    before, stable, ready, owner, snap = s.before, s.stable, ctx.ready, ctx.owner, ctx.snap
    quality = s.steps.analysis.quality if s.steps.analysis is not None else None
    if quality is None or before is None or not canary.quality_due(s.steps, before):
        return None, [], [], []
    ips = {track: sorted(_ready_ips(s.pods, track)) for track in ("canary", "stable")}
    if not ips["canary"] or not ips["stable"]:
        return None, [], [], []
    wanted = ctx.wanted
    thresholds = analysis.QualityThresholds(
        quality.min_cosine, quality.min_top1_agreement, quality.max_abs_error, quality.min_greedy_agreement
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


def _deployments(ctx: passctx.Context, p: canary.Plan) -> list[plan.Child]:
    """The stable Deployment (template and count) and the canary's (scaled to zero and kept when it
    has no pods to run, as Flagger keeps its canary)."""
    owner, ready = ctx.owner, ctx.ready
    live_stable, live_canary = ctx.snap.stable_deployment, ctx.snap.canary_deployment
    desired = rolling.stable_deployment(ctx, ready[p.stable_version], failed=None)
    if p.stable_replicas is not None:
        desired["spec"]["replicas"] = p.stable_replicas
    out = [plan.Child(desired, live_stable)]
    if p.canary_replicas > 0 and ctx.wanted in ready:
        served = ready[ctx.wanted]
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
