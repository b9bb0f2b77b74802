"""Decide: one reconcile pass as a pure function of the observed snapshot.

`decide(snapshot, resync=..., new_key=..., new_token=...)` runs the build step and the chosen rollout
strategy on what `snapshot.observe` read, and returns a `plan.Plan`: the children to apply with the
live objects they are compared with, the owned children to delete, the new status (None when
unchanged), the Events, the metric increments and the requeue delay. No client, no clock, no
randomness: the time is the snapshot's, the resync jitter, a fresh admin key and a fresh inference
token come in as arguments. So every decision can be checked in a table test without a cluster, and
the controller's act step is the only place that writes.

A pass' facts are worked out once (`prepare`: `passctx.gather` and `strategy.choose`); the
controller hands the one prepared pass to `analysis_query`, then (with the Prometheus answer,
`with_measurement`) to `decide`. This module knows strategies only through `strategy.Strategy`: it
adds the children every strategy shares and words the status from the strategy's `passctx.Outcome`.

Everything a pass needs to resume is in status and in deterministically named children, so a
restarted operator converges from wherever it stopped. The Ready/Built/Progressing/Degraded/Monitoring
conditions are worded in `conditions.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pydantic

from conch import (
    apply,
    canary,
    clock,
    conditions,
    errors,
    kinds,
    kube,
    passctx,
    plan,
    snapshot,
    status,
    strategy,
)
from conch.api import types
from conch.render import authproxy, common, hpa, networkpolicy, pdb, secret, service, servicemonitor

# Between passes while a build runs or pods move: a safety net only. Progress arrives as events (the
# Job, its pod, the Deployment and its pods are watched; a missed one is relisted), and the deadline
# is the Deployment's own ProgressDeadlineExceeded. At 3 s, a burst of 1000 building models made 333
# idle passes a second.
BUSY_REQUEUE = 30.0
CONFLICT_RETRY = 30.0  # seconds between passes while a child's name is held by another owner's object


@dataclass(frozen=True)
class Prepared:
    """A pass' context and the strategy chosen for it: what `analysis_query` and `decide` read."""

    ctx: passctx.Context
    strategy: strategy.Strategy


Source = snapshot.Snapshot | Prepared | passctx.Invalid  # a snapshot is prepared on the spot


@dataclass
class _Pass:
    """The plan one pass builds, and the notes (Events) it keeps for the conditions."""

    ctx: passctx.Context
    out: plan.Plan = field(default_factory=plan.Plan)
    notes: list[status.Event] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # children left out: their names are taken


def prepare(snap: snapshot.Snapshot) -> Prepared | passctx.Invalid:
    """The pass' facts, worked out once, and its strategy; an Invalid for a spec the operator cannot use."""
    ctx = passctx.gather(snapshot.claimed(snap))
    if isinstance(ctx, passctx.Invalid):
        return ctx
    return Prepared(ctx, strategy.choose(ctx))


def with_measurement(
    prepared: Prepared | passctx.Invalid, measured: canary.Measurement | None
) -> Prepared | passctx.Invalid:
    """The prepared pass with the due analysis' answer (see `analysis_query`); nothing is recomputed."""
    if isinstance(prepared, passctx.Invalid):
        return prepared
    return dataclasses.replace(prepared, ctx=passctx.with_measurement(prepared.ctx, measured))


def analysis_query(source: Source) -> snapshot.Query | None:
    """The Prometheus checks the pass' strategy is due (None: none, or an invalid spec): the controller
    asks them (snapshot.measure) before `decide`, which reads the answer from the snapshot."""
    prepared = _prepared(source)
    if isinstance(prepared, passctx.Invalid):
        return None
    return prepared.strategy.analysis_query(prepared.ctx)


def decide(source: Source, *, resync: float, new_key: str, new_token: str) -> plan.Plan:
    """The plan of one pass. `resync`: the idle requeue (jitter applied); `new_key`: the admin key to
    use when the snapshot holds no admin-key Secret; `new_token`: the inference token to generate when
    spec.auth wants a generated token Secret and the snapshot holds none."""
    prepared = _prepared(source)
    if isinstance(prepared, passctx.Invalid):
        return _invalid(prepared)
    run = _Pass(prepared.ctx)
    built = run.ctx.build
    run.out.children += built.children
    run.out.absent += built.absent
    run.out.metrics += built.metrics
    served = prepared.strategy.serve(run.ctx, new_key=new_key)
    _serve_step(run, served)
    _token_secret(run, new_token)
    _claim(run)
    new = _new_status(run, served)
    _finish(run, new, served)
    if served.requeue is not None:  # a canary's pause or analysis interval, never longer than the resync
        run.out.requeue = min(served.requeue, resync)
    else:
        run.out.requeue = BUSY_REQUEUE if new.phase in ("Building", "RollingOut") else resync
    if run.conflicts:
        run.out.requeue = min(run.out.requeue, CONFLICT_RETRY)
    return run.out


def _prepared(source: Source) -> Prepared | passctx.Invalid:
    return prepare(source) if isinstance(source, snapshot.Snapshot) else source


def _invalid(bad: passctx.Invalid) -> plan.Plan:
    """A spec the schema let through but the operator cannot use: say so, touch nothing serving."""
    exc, old = bad.error, bad.old
    message = str(exc) if isinstance(exc, errors.InvalidSpecError) else _first_error(exc)
    conds = [c for c in old.conditions if c.type != "Built"]
    wanted = [status.Cond("Built", False, "InvalidSpec", message)]
    merged = status.merge(old.conditions, wanted, bad.generation, bad.timestamp)
    new = old.model_copy(update={"conditions": conds + merged, "observed_generation": bad.generation})
    return plan.Plan(new_status=_changed(bad.snap, new), events=status.transitions(old, new), requeue=None)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors()[0]
        return f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


def _changed(snap: snapshot.Snapshot, new: types.ModelDeploymentStatus) -> types.ModelDeploymentStatus | None:
    """`new`, unless the live status already is exactly it (as apply.apply_status compares)."""
    body = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    return None if snap.md.get("status", {}) == body else new


def _absent(run: _Pass, live: common.Obj | None) -> None:
    """Delete a child the snapshot holds, if we own it."""
    if live is not None and apply.owned(live, run.ctx.owner.uid):
        run.out.absent.append(kube.path_of(live))


# ---- serve ----------------------------------------------------------------------------------------


def _serve_step(run: _Pass, served: passctx.Outcome) -> None:
    """The strategy's serving children, then the ones every strategy shares."""
    snap, owner, out = run.ctx.snap, run.ctx.owner, run.out
    out.children += served.children
    out.absent += served.absent
    out.metrics += served.metrics
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
    if served.decision.rolled_back:
        out.metrics += [plan.Metric("ROLLBACKS"), plan.Metric("ROLLOUTS", ("failed",))]


def _token_secret(run: _Pass, new_token: str) -> None:
    """The generated inference-token Secret: applied (its token generated once, then read back) while
    spec.auth wants it. Left as it is when auth is turned off or a named Secret takes over (the RBAC
    never deletes Secrets; garbage collection follows the owner), so turning auth back on brings the
    same token back and the clients that hold it keep working."""
    owner, live = run.ctx.owner, run.ctx.snap.token_secret
    if not authproxy.generated(owner):
        return
    token = authproxy.token_of(live) or new_token
    assert token, "the controller passes a fresh token whenever the snapshot holds none"
    run.out.children.insert(0, plan.Child(authproxy.render_secret(owner, token), live))


def _optional(run: _Pass, desired: common.Obj | None, live: common.Obj | None) -> None:
    """A child that may be wanted: applied when it is, removed when it is not."""
    if desired is not None:
        run.out.children.append(plan.Child(desired, live))
    else:
        _absent(run, live)


def _claim(run: _Pass) -> None:
    """Leave out every child whose name the snapshot found taken (never overwritten, never adopted),
    and every Deployment while the admin-key Secret's name is taken: its pods would read someone
    else's key. What is left out is said in the Degraded condition (OwnershipConflict)."""
    snap, out = run.ctx.snap, run.out
    taken = {kube.path_of(o): o for o in snap.taken}
    owner = run.ctx.owner
    secret_urls = {kinds.SECRET.path(owner.namespace, secret.name(owner))}
    if authproxy.generated(owner):
        secret_urls.add(kinds.SECRET.path(owner.namespace, authproxy.generated_name(owner)))
    held = sorted(secret_urls & set(taken))
    kept: list[plan.Child] = []
    for child in out.children:
        url = kube.path_of(child.desired)
        if url in taken:
            run.conflicts.append(apply.taken(child.desired, taken[url]))
        elif child.desired["kind"] == "Deployment" and held:
            meta = child.desired["metadata"]
            which = "admin-key" if secret.name(owner) in held[0].rsplit("/", 1)[-1] else "inference-token"
            run.conflicts.append(
                f"Deployment {meta['namespace']}/{meta['name']} is not applied while its {which} Secret's "
                "name is taken: its pods would read that Secret"
            )
        else:
            kept.append(child)
            continue
        out.taken.append(url)
    if len(kept) == len(out.children):
        return
    if not any(c.desired["kind"] == "Deployment" for c in kept):  # nothing rolls out this pass
        out.metrics = [m for m in out.metrics if m != plan.Metric("ROLLOUTS", ("started",))]
    out.children = kept
    out.metrics.append(plan.Metric("OWNERSHIP_CONFLICTS", (), float(len(run.conflicts))))


# ---- status ---------------------------------------------------------------------------------------


def _new_status(run: _Pass, served: passctx.Outcome) -> types.ModelDeploymentStatus:
    ctx, decision = run.ctx, served.decision
    owner, wanted, entry, state, old = ctx.owner, ctx.wanted, ctx.entry, ctx.state, ctx.old
    conds = conditions.wanted(
        conditions.Facts(
            entry=entry, decision=decision, state=state, old=old, built_message=ctx.build.message,
            notes=tuple(run.notes), monitoring=ctx.spec.monitoring.service_monitor.enabled,
        )
    )  # fmt: skip
    conds = [served.conditions.get(c.type, c) for c in conds]
    if run.conflicts:
        conds = [conditions.conflicted(run.conflicts) if c.type == "Degraded" else c for c in conds]
    rolling = decision.serve is not None and decision.serve.version != decision.current
    degraded = decision.failed is not None or decision.stuck or bool(run.conflicts)
    phase = status.phase(
        entry.result == "Building", entry.result == "Failed", decision.current, rolling or served.moving,
        degraded,
    )  # fmt: skip
    since = old.rollout_started_at if old.target_version == wanted else ctx.timestamp
    return types.ModelDeploymentStatus(
        phase=phase,
        current_version=decision.current,
        target_version=wanted,
        failed_version=decision.failed,
        rollout_started_at=since if decision.current != wanted else None,
        history=prune(list(ctx.history), ctx.spec.revision_history_limit, {wanted, decision.current}),
        conditions=status.merge(old.conditions, conds, ctx.generation, ctx.timestamp),
        observed_generation=ctx.generation,
        replicas=state.replicas if state.exists else 0,
        ready_replicas=state.ready if state.exists else 0,
        selector=",".join(f"{k}={v}" for k, v in common.selector(owner).items()),
        endpoints=types.Endpoints.model_validate(service.endpoints(owner)),
        auth=_auth_status(owner),
        canary=served.record,
    )


def _auth_status(owner: common.Owner) -> types.AuthStatus:
    """Which Secret holds the tokens (never a token), or the loud word that nothing is checked."""
    if authproxy.enabled(owner):
        return types.AuthStatus(mode="token", secret_name=authproxy.secret_name(owner))
    return types.AuthStatus(mode="none", message=types.AUTH_OFF_WARNING)


def prune(history: list[types.HistoryEntry], limit: int, keep: set[str | None]) -> list[types.HistoryEntry]:
    """Keep the newest `limit` entries, and always the wanted and the serving version. Entries started
    in the same second keep their order (a reversed sort swapped them on every pass: a status write
    each time)."""
    newest = sorted(history, key=lambda h: h.started_at, reverse=True)  # stable: ties keep their order
    kept = {h.version for i, h in enumerate(newest) if i < limit or h.version in keep}
    return sorted((h for h in history if h.version in kept), key=lambda h: h.started_at)


def _finish(run: _Pass, new: types.ModelDeploymentStatus, served: passctx.Outcome) -> None:
    """Jobs of pruned versions go; status when it changed; Events; the completed rollout's metrics."""
    ctx, decision = run.ctx, served.decision
    kept = {h.version for h in new.history}
    for gone in (h for h in ctx.history if h.version not in kept):
        _absent(run, ctx.snap.job(gone.job_name))
    run.out.new_status = _changed(ctx.snap, new)
    events = status.transitions(ctx.old, new) + served.events
    if decision.rolled_back:
        events.append(
            status.Event("Warning", "RolledBack", f"rolled back to {decision.current}: {decision.reason}")
        )
    if (
        new.auth is not None
        and new.auth.mode == "none"
        and (ctx.old.auth is None or ctx.old.auth.mode != "none")
    ):
        events.append(status.Event("Warning", "AuthDisabled", types.AUTH_OFF_WARNING))
    run.out.events = events
    started = clock.parse_time(ctx.old.rollout_started_at)
    if new.current_version == ctx.wanted != ctx.old.current_version and started is not None:
        run.out.metrics.append(plan.Metric("ROLLOUTS", ("completed",)))
        run.out.metrics.append(plan.Metric("SPEC_TO_SERVING", (), max(0.0, ctx.snap.now - started)))
