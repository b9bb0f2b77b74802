"""A canary's pass in the controller layer: observe both Deployments and their pods, run the analyses
that are due (Prometheus queries; the quality Job), let `canary` decide, apply both Deployments.

This is the canary's only I/O (controller.py calls it from its serve step); `canary` and `promql`
stay pure. A canary left behind (aborted, promoted, or abandoned for a newer spec.version or another
strategy) is scaled away here too, with the stable growing back only into the GPUs it frees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from conch import apply, canary, kube, metrics, prometheus, promql, rollout, status
from conch.api import types
from conch.render import analysis, common, deployment

Obj = dict[str, Any]
QUALITY_RETRY_S = 30.0
NO_PROMETHEUS = (
    "no Prometheus configured: set spec.rollout.canary.analysis.prometheusUrl or the operator's "
    f"{prometheus.ENV_URL}"
)


@dataclass
class Flow:
    """What a canary pass decided, for status, events and the next requeue."""

    plan: canary.Plan
    running: bool  # a canary of the wanted version is in progress (not a leftover being scaled away)
    writes: int = 0
    events: list[status.Event] = field(default_factory=list)


def step(
    client: kube.Kube,
    owner: common.Owner,
    *,
    old: types.ModelDeploymentStatus,
    history: list[types.HistoryEntry],
    decision: rollout.Decision,
    now: float,
) -> Flow | None:
    """Run the canary of spec.version when one is due, or scale away what is left of one; None when
    there is nothing of a canary to do (the plain rolling path serves)."""
    spec, wanted = owner.spec, owner.spec.version
    ready = rollout.built(history)
    current = old.current_version if old.current_version in ready else None  # the stable version
    steps = spec.rollout.canary if spec.rollout.strategy == "canary" else None
    running = steps is not None and current is not None and wanted in ready and wanted != current
    running = running and decision.failed is None
    if not running and old.canary is None:
        return None
    live_canary = client.get(_url(owner, deployment.canary_name(owner)))
    live_stable = client.get(_url(owner, owner.name))
    pods = client.list(kube.path("v1", "Pod", owner.namespace), _selector(owner))
    world = observe(owner, live_stable, live_canary, pods, now)
    if not running:
        if world.canary.spec == 0 and world.canary.existing == 0:
            return None
        if decision.serve is None:
            return None
        left = old.canary or canary.start(types.Canary(steps=[types.CanaryStep(weight=100)]), wanted, now)
        if left.phase not in ("Promoted", "Aborted"):
            why = decision.reason or "spec.version or the strategy changed"
            left = left.model_copy(update={"phase": "Aborted", "message": f"abandoned: {why}"})
        flow = Flow(canary.settle(left, decision.serve.version, world), running=False)
    else:
        assert steps is not None and current is not None
        before = old.canary if old.canary is not None and old.canary.version == wanted else None
        if before is not None and before.phase in ("Promoted", "Aborted"):
            before = None  # that canary ended (spec.version went elsewhere and came back): a fresh one
        measured = _analyse(owner, steps, before, current, now)
        quality = _quality(client, owner, steps, before, stable=current, ready=ready, pods=pods, now=now)
        plan = canary.advance(
            steps, before, version=wanted, stable=current, world=world, measured=measured, quality=quality
        )
        flow = Flow(plan, running=True, events=_events(before, plan, measured))
    flow.writes += _apply(
        client, owner, ready, flow.plan, live_stable=live_stable, live_canary=live_canary, world=world
    )
    return flow


def decision(
    flow: Flow, before: rollout.Decision, history: list[types.HistoryEntry], stable: str | None
) -> rollout.Decision:
    """What the canary's pass means for status: the stable stays current until the canary is promoted."""
    if not flow.running:
        return before
    plan = flow.plan
    current = plan.status.version if plan.promoted else stable
    failed = plan.status.version if plan.aborted else before.failed
    served = rollout.built(history)[plan.stable_version]
    return dataclasses.replace(before, serve=served, current=current, failed=failed)


def _url(owner: common.Owner, name: str) -> str:
    return kube.path("apps/v1", "Deployment", owner.namespace, name)


def _selector(owner: common.Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in common.selector(owner).items())


def _pods(live: Obj | None, pods: list[Obj]) -> canary.Pods:
    def ready(pod: Obj) -> bool:
        conds = pod.get("status", {}).get("conditions", [])
        ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
        return ok and not pod["metadata"].get("deletionTimestamp")

    spec = int((live or {}).get("spec", {}).get("replicas", 0)) if live is not None else 0
    return canary.Pods(spec=spec, existing=len(pods), ready=sum(ready(p) for p in pods))


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


def _analyse(
    owner: common.Owner, steps: types.Canary, before: types.CanaryStatus | None, stable: str, now: float
) -> canary.Measurement | None:
    """Query Prometheus when an analysis is due (the only network call besides the apiserver)."""
    analysis = steps.analysis
    if analysis is None or not canary.analysis_due(steps, before, now):
        return None
    url = analysis.prometheus_url or prometheus.default_url()
    if url is None:
        measured = canary.Measurement("Unavailable", (), NO_PROMETHEUS)
    else:
        window = promql.window_seconds(owner.spec, analysis)
        try:
            values = prometheus.measure(
                url, promql.queries(owner, analysis, owner.spec.version, stable, window)
            )
            measured = promql.judge(analysis, values, window)
        except prometheus.Unavailable as exc:
            measured = canary.Measurement("Unavailable", (), f"Prometheus at {exc}")
    metrics.CANARY_ANALYSES.labels(measured.result.lower(), "metrics").inc()
    return measured


def _quality(
    client: kube.Kube, owner: common.Owner, steps: types.Canary, before: types.CanaryStatus | None,
    *, stable: str, ready: dict[str, deployment.Served], pods: list[Obj], now: float,
) -> canary.Measurement | None:  # fmt: skip
    """The step's quality analysis (conch.render.analysis): apply its Job, read its verdict. None while
    it runs. A Job that could not analyse pauses the step and is retried after QUALITY_RETRY_S."""
    quality = steps.analysis.quality if steps.analysis is not None else None
    if quality is None or before is None or not canary.quality_due(steps, before):
        return None
    ips = {track: sorted(_ready_ips(pods, track)) for track in ("canary", "stable")}
    if not ips["canary"] or not ips["stable"]:
        return None
    wanted = owner.spec.version
    thresholds = analysis.QualityThresholds(
        quality.min_cosine, quality.min_top1_agreement, quality.max_abs_error
    )
    req = analysis.AnalysisRequest(
        canary_version=wanted, step=before.step, canary_addresses=tuple(ips["canary"]),
        stable_addresses=tuple(ips["stable"][:1]), stable_build_key=ready[stable].build_key,
        model_name=ready[stable].model_name, canary_model_name=ready[wanted].model_name,
        thresholds=thresholds, probe_path=quality.probe_path,
        attempt=int(canary.parse_time(before.started_at) or 0),  # a later canary of this version: a new Job
    )  # fmt: skip
    desired = analysis.render_analysis_job(owner, req)
    live = client.get(kube.path_of(desired))
    if live is None:
        apply.apply(client, desired, None, fetch=False)
        return None
    job_pods = client.list(
        kube.path("v1", "Pod", owner.namespace),
        f"batch.kubernetes.io/job-name={analysis.job_name(owner, req)}",
    )
    result = analysis.observe(live, job_pods)
    if result.state == "Pending":
        return None
    metrics.CANARY_ANALYSES.labels(result.state.lower(), "quality").inc()
    if result.state == "Error":
        finished = max(
            (canary.parse_time(c.get("lastTransitionTime")) or 0.0)
            for c in live.get("status", {}).get("conditions", []) or [{}]
        )
        if now - finished >= QUALITY_RETRY_S:
            apply.absent(client, kube.path_of(desired), owner.uid)
        return canary.Measurement("Unavailable", (), f"quality analysis: {result.reason}")
    verdict: canary.Result = "Passed" if result.state == "Passed" else "Failed"
    return canary.Measurement(verdict, result.values(), result.reason)  # "quality analysis failed: ..."


def _ready_ips(pods: list[Obj], track: str) -> list[str]:
    out = []
    for pod in pods:
        is_canary = pod["metadata"].get("labels", {}).get(deployment.LABEL_TRACK) == "canary"
        conds = pod.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
        if is_canary == (track == "canary") and ready and not pod["metadata"].get("deletionTimestamp"):
            ip = pod.get("status", {}).get("podIP")
            if ip:
                out.append(str(ip))
    return out


def _apply(
    client: kube.Kube, owner: common.Owner, ready: dict[str, deployment.Served], plan: canary.Plan,
    *, live_stable: Obj | None, live_canary: Obj | None, world: canary.World,
) -> int:  # fmt: skip
    """Apply the stable Deployment (template and count) and the canary's (or remove it)."""
    writes = 0
    desired = deployment.render_deployment(owner, ready[plan.stable_version])
    if live_stable is not None and world.stable_version == plan.stable_version != owner.spec.version:
        desired["spec"]["template"] = live_stable["spec"][
            "template"
        ]  # spec edits arrive with the new version
    if plan.stable_replicas is not None:
        desired["spec"]["replicas"] = plan.stable_replicas
    writes += apply.apply(client, desired, live_stable, fetch=False)[0]
    if plan.canary_replicas > 0 and owner.spec.version in ready:
        served = ready[owner.spec.version]
        want = deployment.render_canary_deployment(owner, served, plan.canary_replicas)
        writes += apply.apply(client, want, live_canary, fetch=False)[0]
    elif live_canary is not None:  # scaled to zero and kept, as Flagger keeps its canary
        idle = deployment.render_canary_deployment(owner, ready[plan.stable_version], 0)
        idle["spec"]["template"] = live_canary["spec"]["template"]
        writes += apply.apply(client, idle, live_canary, fetch=False)[0]
    return writes


def _events(
    before: types.CanaryStatus | None, plan: canary.Plan, measured: canary.Measurement | None
) -> list[status.Event]:
    st, out = plan.status, []
    if before is None:
        metrics.ROLLOUTS.labels("started").inc()
        out.append(
            status.Event("Normal", "CanaryStarted", f"canary of version {st.version}: {st.steps} steps")
        )
    if st.phase in ("Progressing", "Paused") and (before is None or before.step != st.step):
        metrics.CANARY_STEPS.inc()
        out.append(
            status.Event(
                "Normal", "CanaryStep",
                f"canary {st.version}: step {st.step + 1}/{st.steps}, weight {st.weight}% "
                f"({st.canary_replicas} canary, {st.stable_replicas} stable pods)",
            )
        )  # fmt: skip
    if measured is not None and measured.result == "Failed" and not plan.aborted:
        out.append(status.Event("Warning", "AnalysisFailed", f"canary {st.version}: {measured.message}"))
    if plan.aborted:
        metrics.ROLLOUTS.labels("aborted").inc()
        metrics.ROLLBACKS.inc()
        out.append(status.Event("Warning", "CanaryAborted", f"canary {st.version} aborted: {plan.reason}"))
    if plan.promoted:
        metrics.ROLLOUTS.labels("promoted").inc()
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
