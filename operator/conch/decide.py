"""Decide: one reconcile pass as a pure function of the observed snapshot.

`decide(snapshot, resync=..., new_key=...)` runs the build and rollout state machines (and the
canary's, through canaryflow) on what `snapshot.observe` read, and returns a `plan.Plan`: the
children to apply with the live objects they are compared with, the owned children to delete, the
new status (None when unchanged), the Events, the metric increments and the requeue delay. No
client, no clock, no randomness: the time is the snapshot's, the resync jitter and a fresh admin key
come in as arguments. So every decision can be checked in a table test without a cluster, and the
controller's act step is the only place that writes.

Everything a pass needs to resume is in status and in deterministically named children, so a
restarted operator converges from wherever it stopped. The Ready/Built/Progressing/Degraded/Monitoring
conditions are worded in `conditions.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pydantic

from conch import apply, build, canaryflow, clock, conditions, errors, kube, plan, rollout, snapshot, status
from conch.api import keys, types
from conch.render import common, deployment, hpa, job, networkpolicy, pdb, secret, service, servicemonitor

# Between passes while a build runs or pods move: a safety net only. Progress arrives as events (the
# Job, its pod, the Deployment and its pods are watched; a missed one is relisted), and the deadline
# is the Deployment's own ProgressDeadlineExceeded. At 3 s, a burst of 1000 building models made 333
# idle passes a second.
BUSY_REQUEUE = 30.0


@dataclass
class Pass:
    """What one pass learned so far, and the plan it builds."""

    owner: common.Owner
    old: types.ModelDeploymentStatus
    history: list[types.HistoryEntry]
    key: str
    timestamp: str
    out: plan.Plan = field(default_factory=plan.Plan)
    notes: list[status.Event] = field(default_factory=list)
    built_message: str = ""
    flow: canaryflow.Flow | None = None  # a canary's pass, when one runs or is being scaled away


def decide(snap: snapshot.Snapshot, *, resync: float, new_key: str) -> plan.Plan:
    """The plan of one pass. `resync`: the idle requeue (jitter applied); `new_key`: the admin key to
    use when the snapshot holds no admin-key Secret."""
    generation = snap.md["metadata"].get("generation", 0)
    old = types.ModelDeploymentStatus.model_validate(snap.md.get("status") or {})
    try:
        run, decision, state = _prepare(snap)
    except (pydantic.ValidationError, errors.InvalidSpecError) as exc:
        return _invalid(snap, old, generation, exc)
    decision = _serve_step(snap, run, decision, state, new_key)
    new = _new_status(run, decision, state, generation)
    _finish(snap, run, new, decision)
    if run.flow is not None:
        run.out.requeue = run.flow.plan.wait
    else:
        run.out.requeue = BUSY_REQUEUE if new.phase in ("Building", "RollingOut") else resync
    return run.out


def analysis_query(snap: snapshot.Snapshot) -> snapshot.Query | None:
    """The Prometheus checks a running canary is due this pass (None: none, or an invalid spec): the
    controller asks them (snapshot.measure) before `decide`, which reads the answer from the snapshot."""
    if not (snap.md.get("status") or {}).get("canary"):
        return None  # no canary has reached a step: nothing is due (and no second pass over the spec)
    try:
        run, decision, _ = _prepare(snap)
    except (pydantic.ValidationError, errors.InvalidSpecError):
        return None
    return canaryflow.analysis_query(run.owner, snap, old=run.old, history=run.history, decision=decision)


def _prepare(snap: snapshot.Snapshot) -> tuple[Pass, rollout.Decision, rollout.DeploymentState]:
    """Parse the spec, run the build step and the rolling decision (before any canary)."""
    meta = snap.md["metadata"]
    old = types.ModelDeploymentStatus.model_validate(snap.md.get("status") or {})
    spec = types.ModelDeploymentSpec.model_validate(snap.md.get("spec") or {})
    key = keys.spec_key(spec)
    owner = common.Owner(meta["name"], meta["namespace"], meta["uid"], spec)
    run = Pass(owner, old, list(old.history), key, clock.format_time(snap.now))
    _build_step(snap, run)
    state = _with_crashes(snap, owner, rollout.observe(snap.stable_deployment))
    decision = rollout.decide(spec.version, run.history, old, state, spec.rollout.auto_rollback)
    return run, decision, state


def _invalid(
    snap: snapshot.Snapshot, old: types.ModelDeploymentStatus, generation: int, exc: Exception
) -> plan.Plan:
    """A spec the schema let through but the operator cannot use: say so, touch nothing serving."""
    message = str(exc) if isinstance(exc, errors.InvalidSpecError) else _first_error(exc)
    conds = [c for c in old.conditions if c.type != "Built"]
    wanted = [status.Cond("Built", False, "InvalidSpec", message)]
    merged = status.merge(old.conditions, wanted, generation, clock.format_time(snap.now))
    new = old.model_copy(update={"conditions": conds + merged, "observed_generation": generation})
    return plan.Plan(new_status=_changed(snap, new), events=status.transitions(old, new), requeue=None)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors()[0]
        return f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


def _changed(snap: snapshot.Snapshot, new: types.ModelDeploymentStatus) -> types.ModelDeploymentStatus | None:
    """`new`, unless the live status already is exactly it (as apply.apply_status compares)."""
    body = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    return None if snap.md.get("status", {}) == body else new


# ---- build ----------------------------------------------------------------------------------------


def _build_step(snap: snapshot.Snapshot, run: Pass) -> None:
    """Start, follow or reuse the build of the wanted version."""
    spec, wanted = run.owner.spec, run.owner.spec.version
    entry = next((h for h in run.history if h.version == wanted), None)
    if entry is not None and entry.result == "Succeeded":
        if entry.spec_key != run.key:
            run.built_message = (
                f"version {wanted} was built from a different model/recipe; versions are immutable, "
                "so its recorded build is served: set a new spec.version to build this spec"
            )
        return
    if entry is None or entry.spec_key != run.key:
        if entry is not None and entry.result == "Building":
            _absent(run, snap.job(entry.job_name))  # a superseded build of this version
        entry = types.HistoryEntry(
            version=wanted,
            spec_key=run.key,
            job_name=keys.job_name(run.owner.name, run.key),
            result="Building",
            model_name=spec.model.name,
            started_at=run.timestamp,
        )
        _replace_entry(run, entry)
        run.out.metrics.append(plan.Metric("BUILDS", ("started",)))
    if entry.result == "Building":
        _follow_build(snap, run, entry)


def _follow_build(snap: snapshot.Snapshot, run: Pass, entry: types.HistoryEntry) -> None:
    live = snap.job(entry.job_name)
    if live is None:  # a Job's template is immutable: it is created once, never re-applied
        run.out.children.append(plan.Child(job.render_job(run.owner, entry.version, entry.spec_key), None))
    outcome = build.observe(live, snap.pods_with({snapshot.JOB_NAME_LABEL: entry.job_name}))
    if outcome.result == "Building":
        run.built_message = outcome.message or ""  # e.g. the builder's image cannot be pulled
        return
    update: dict[str, object] = {"result": outcome.result, "finished_at": run.timestamp}
    if outcome.summary is not None:
        update["summary"] = outcome.summary
        if outcome.result == "Succeeded":
            update["build_key"] = outcome.summary.build_key
    if outcome.message is not None:
        update["message"] = outcome.message
    _replace_entry(run, entry.model_copy(update=update))
    run.out.metrics.append(plan.Metric("BUILDS", (outcome.result.lower(),)))


def _replace_entry(run: Pass, entry: types.HistoryEntry) -> None:
    run.history = [h for h in run.history if h.version != entry.version] + [entry]


def _absent(run: Pass, live: common.Obj | None) -> None:
    """Delete a child the snapshot holds, if we own it."""
    if live is not None and apply.owned(live, run.owner.uid):
        run.out.absent.append(kube.path_of(live))


# ---- serve ----------------------------------------------------------------------------------------


def _with_crashes(
    snap: snapshot.Snapshot, owner: common.Owner, state: rollout.DeploymentState
) -> rollout.DeploymentState:
    """While a version rolls out, look at its pods: a crash loop fails the rollout before the deadline."""
    if not state.exists or state.version is None or rollout.rolled_out(state, state.version):
        return state
    pods = snap.pods_with({**common.selector(owner), common.LABEL_VERSION: state.version})
    return dataclasses.replace(state, crash=rollout.crash_reason(pods), waiting=rollout.waiting_reason(pods))


def _serve_step(
    snap: snapshot.Snapshot, run: Pass, decision: rollout.Decision, state: rollout.DeploymentState,
    new_key: str,
) -> rollout.Decision:  # fmt: skip
    """Decide what to serve: the serving children (canary or rolling), then the shared ones."""
    owner, out = run.owner, run.out
    run.flow = canaryflow.step(owner, snap, old=run.old, history=run.history, decision=decision)
    if run.flow is not None:
        out.children += run.flow.children
        out.absent += run.flow.absent
        out.metrics += run.flow.metrics
        decision = canaryflow.decision(run.flow, decision, run.history, run.old.current_version)
    elif decision.serve is not None:
        key = secret.key_of(snap.admin_secret) or new_key  # generated once, then kept
        out.children.append(plan.Child(secret.render_secret(owner, key), snap.admin_secret))
        desired = deployment.render_deployment(owner, decision.serve)
        if decision.keep_template and snap.stable_deployment is not None:
            desired["spec"]["template"] = snap.stable_deployment["spec"]["template"]
        child = plan.Child(desired, snap.stable_deployment)
        out.children.append(child)
        if child.changes and state.version != decision.serve.version:
            out.metrics.append(plan.Metric("ROLLOUTS", ("started",)))
    out.children.append(plan.Child(service.render_service(owner), snap.service))
    _optional(run, hpa.render_hpa(owner), snap.hpa)
    _optional(run, pdb.render_pdb(owner), snap.pdb)
    _optional(run, networkpolicy.render_networkpolicy(owner), snap.network_policy)
    monitor = servicemonitor.render_servicemonitor(owner)
    if snap.monitors_served:
        _optional(run, monitor, snap.service_monitor)
    elif monitor is not None:
        why = f"{servicemonitor.API_GROUP_VERSION} is not served (install the Prometheus Operator CRDs)"
        run.notes.append(status.Event("Warning", "ServiceMonitorUnavailable", why))
    if decision.rolled_back:
        out.metrics += [plan.Metric("ROLLBACKS"), plan.Metric("ROLLOUTS", ("failed",))]
    return decision


def _optional(run: Pass, desired: common.Obj | None, live: common.Obj | None) -> None:
    """A child that may be wanted: applied when it is, removed when it is not."""
    if desired is not None:
        run.out.children.append(plan.Child(desired, live))
    else:
        _absent(run, live)


# ---- status ---------------------------------------------------------------------------------------


def _new_status(
    run: Pass, decision: rollout.Decision, state: rollout.DeploymentState, generation: int
) -> types.ModelDeploymentStatus:
    owner, wanted = run.owner, run.owner.spec.version
    entry = next(h for h in run.history if h.version == wanted)
    conds = conditions.wanted(
        conditions.Facts(
            entry=entry, decision=decision, state=state, old=run.old, built_message=run.built_message,
            notes=tuple(run.notes), monitoring=owner.spec.monitoring.service_monitor.enabled,
        )
    )  # fmt: skip
    if run.flow is not None:
        by_canary = canaryflow.conditions(run.flow, decision.current, wanted)
        conds = [by_canary.get(c.type, c) for c in conds]
    rolling = decision.serve is not None and decision.serve.version != decision.current
    rolling = rolling or (run.flow is not None and run.flow.running and decision.current != wanted)
    degraded = decision.failed is not None or decision.stuck
    phase = status.phase(
        entry.result == "Building", entry.result == "Failed", decision.current, rolling, degraded
    )
    since = run.old.rollout_started_at if run.old.target_version == wanted else run.timestamp
    return types.ModelDeploymentStatus(
        phase=phase,
        current_version=decision.current,
        target_version=wanted,
        failed_version=decision.failed,
        rollout_started_at=since if decision.current != wanted else None,
        history=prune(run.history, owner.spec.revision_history_limit, {wanted, decision.current}),
        conditions=status.merge(run.old.conditions, conds, generation, run.timestamp),
        observed_generation=generation,
        replicas=state.replicas if state.exists else 0,
        ready_replicas=state.ready if state.exists else 0,
        selector=",".join(f"{k}={v}" for k, v in common.selector(owner).items()),
        endpoints=types.Endpoints.model_validate(service.endpoints(owner)),
        canary=run.flow.plan.status if run.flow is not None else run.old.canary,
    )


def prune(history: list[types.HistoryEntry], limit: int, keep: set[str | None]) -> list[types.HistoryEntry]:
    """Keep the newest `limit` entries, and always the wanted and the serving version. Entries started
    in the same second keep their order (a reversed sort swapped them on every pass: a status write
    each time)."""
    newest = sorted(history, key=lambda h: h.started_at, reverse=True)  # stable: ties keep their order
    kept = {h.version for i, h in enumerate(newest) if i < limit or h.version in keep}
    return sorted((h for h in history if h.version in kept), key=lambda h: h.started_at)


def _finish(
    snap: snapshot.Snapshot, run: Pass, new: types.ModelDeploymentStatus, decision: rollout.Decision
) -> None:
    """Jobs of pruned versions go; status when it changed; Events; the completed rollout's metrics."""
    kept = {h.version for h in new.history}
    for gone in (h for h in run.history if h.version not in kept):
        _absent(run, snap.job(gone.job_name))
    run.out.new_status = _changed(snap, new)
    events = status.transitions(run.old, new) + (run.flow.events if run.flow is not None else [])
    if decision.rolled_back:
        events.append(
            status.Event("Warning", "RolledBack", f"rolled back to {decision.current}: {decision.reason}")
        )
    run.out.events = events
    started = clock.parse_time(run.old.rollout_started_at)
    if new.current_version == run.owner.spec.version != run.old.current_version and started is not None:
        run.out.metrics.append(plan.Metric("ROLLOUTS", ("completed",)))
        run.out.metrics.append(plan.Metric("SPEC_TO_SERVING", (), max(0.0, snap.now - started)))
