"""One level-based reconcile pass of a ModelDeployment: read the world, decide, apply, record.

Each pass reads the ModelDeployment and its children, runs the build and rollout state machines,
applies the desired children through `apply` (which writes nothing when nothing changed) and
writes status only when it differs. Everything it needs to resume is in status and in
deterministically named children, so a restarted operator converges from wherever it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pydantic

from conch import apply, build, canaryflow, errors, kube, metrics, rollout, status
from conch.api import keys, types
from conch.render import common, deployment, hpa, job, networkpolicy, pdb, secret, service, servicemonitor

Obj = dict[str, Any]
log = logging.getLogger(__name__)
BUSY_REQUEUE = 3.0
IDLE_REQUEUE = 600.0  # the resync: drift nobody announced; --resync-seconds sets it
RESYNC_JITTER = 0.1  # +-10%, so a thousand objects created together do not resync together
MD_API = f"{types.GROUP}/{types.VERSION}"


@dataclass
class Pass:
    """What one pass learned, accumulated as it goes."""

    owner: common.Owner
    old: types.ModelDeploymentStatus
    history: list[types.HistoryEntry]
    key: str
    timestamp: str
    writes: int = 0
    notes: list[status.Event] = field(default_factory=list)
    built_message: str = ""
    flow: canaryflow.Flow | None = None  # a canary's pass, when one runs or is being scaled away


def md_url(namespace: str, name: str) -> str:
    """REST path of a ModelDeployment."""
    return kube.path(MD_API, types.KIND, namespace, name)


def reconcile(client: kube.Kube, namespace: str, name: str) -> float | None:
    """Run one pass; returns seconds until the next one is due (None: gone)."""
    md = client.get(md_url(namespace, name))
    if md is None or md["metadata"].get("deletionTimestamp"):
        return None
    generation = md["metadata"].get("generation", 0)
    old = types.ModelDeploymentStatus.model_validate(md.get("status") or {})
    try:
        spec = types.ModelDeploymentSpec.model_validate(md.get("spec") or {})
        key = keys.spec_key(spec)
    except (pydantic.ValidationError, errors.InvalidSpecError) as exc:
        _record_invalid(client, md, old, generation, exc)
        return None
    owner = common.Owner(name, namespace, md["metadata"]["uid"], spec)
    run = Pass(owner, old, list(old.history), key, status.now())
    _build_step(client, run)
    decision, dep_state = _serve_step(client, run)
    new = _new_status(run, decision, dep_state, generation)
    _finish(client, md, run, new, decision)
    if run.flow is not None:
        return run.flow.plan.wait
    busy = new.phase in ("Building", "RollingOut")
    return BUSY_REQUEUE if busy else IDLE_REQUEUE * random.uniform(1 - RESYNC_JITTER, 1 + RESYNC_JITTER)


def _record_invalid(
    client: kube.Kube, md: Obj, old: types.ModelDeploymentStatus, generation: int, exc: Exception
) -> None:
    """A spec the schema let through but the operator cannot use: say so, touch nothing serving."""
    message = str(exc) if isinstance(exc, errors.InvalidSpecError) else _first_error(exc)
    conds = [c for c in old.conditions if c.type != "Built"]
    wanted = [status.Cond("Built", False, "InvalidSpec", message)]
    merged = status.merge(old.conditions, wanted, generation, status.now())
    new = old.model_copy(update={"conditions": conds + merged, "observed_generation": generation})
    _write_status(client, md, old, new)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors()[0]
        return f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


# ---- build ----------------------------------------------------------------------------------------


def _build_step(client: kube.Kube, run: Pass) -> None:
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
            run.writes += apply.absent(client, _job_url(run, entry.job_name), run.owner.uid)
        entry = types.HistoryEntry(
            version=wanted,
            spec_key=run.key,
            job_name=keys.job_name(run.owner.name, run.key),
            result="Building",
            model_name=spec.model.name,
            started_at=run.timestamp,
        )
        _replace_entry(run, entry)
        metrics.BUILDS.labels("started").inc()
    if entry.result == "Building":
        _follow_build(client, run, entry)


def _job_url(run: Pass, job_name: str) -> str:
    return kube.path("batch/v1", "Job", run.owner.namespace, job_name)


def _follow_build(client: kube.Kube, run: Pass, entry: types.HistoryEntry) -> None:
    desired = job.render_job(run.owner, entry.version, entry.spec_key)
    live = client.get(kube.path_of(desired))
    if live is None:
        written, live = apply.apply(client, desired, None, fetch=False)
        run.writes += written
    pods = client.list(
        kube.path("v1", "Pod", run.owner.namespace), f"batch.kubernetes.io/job-name={entry.job_name}"
    )
    outcome = build.observe(live, pods)
    if outcome.result == "Building":
        run.built_message = outcome.message or ""  # e.g. the builder's image cannot be pulled
        return
    update: dict[str, Any] = {"result": outcome.result, "finished_at": run.timestamp}
    if outcome.summary is not None:
        update["summary"] = outcome.summary
        if outcome.result == "Succeeded":
            update["build_key"] = outcome.summary.build_key
    if outcome.message is not None:
        update["message"] = outcome.message
    _replace_entry(run, entry.model_copy(update=update))
    metrics.BUILDS.labels(outcome.result.lower()).inc()


def _replace_entry(run: Pass, entry: types.HistoryEntry) -> None:
    run.history = [h for h in run.history if h.version != entry.version] + [entry]


# ---- serve ----------------------------------------------------------------------------------------


def _serve_step(client: kube.Kube, run: Pass) -> tuple[rollout.Decision, rollout.DeploymentState]:
    """Decide what to serve and apply the serving children."""
    owner = run.owner
    dep_url = kube.path("apps/v1", "Deployment", owner.namespace, owner.name)
    live = client.get(dep_url)
    state = _with_crashes(client, owner, rollout.observe(live))
    decision = rollout.decide(
        owner.spec.version, run.history, run.old, state, owner.spec.rollout.auto_rollback
    )
    run.flow = canaryflow.step(
        client, owner, old=run.old, history=run.history, decision=decision, now=time.time()
    )
    if run.flow is not None:
        run.writes += run.flow.writes
        decision = canaryflow.decision(run.flow, decision, run.history, run.old.current_version)
    elif decision.serve is not None:
        _admin_secret(client, run)
        desired = deployment.render_deployment(owner, decision.serve)
        if decision.keep_template and live is not None:
            desired["spec"]["template"] = live["spec"]["template"]
        written, _ = apply.apply(client, desired, live, fetch=False)
        run.writes += written
        if written and state.version != decision.serve.version:
            metrics.ROLLOUTS.labels("started").inc()
    run.writes += apply.apply(client, service.render_service(owner))[0]
    _optional(client, run, hpa.render_hpa(owner), "autoscaling/v2", "HorizontalPodAutoscaler")
    _optional(client, run, pdb.render_pdb(owner), "policy/v1", "PodDisruptionBudget")
    _optional(client, run, networkpolicy.render_networkpolicy(owner), "networking.k8s.io/v1", "NetworkPolicy")
    monitor = servicemonitor.render_servicemonitor(owner)
    if client.served(servicemonitor.API_GROUP_VERSION):
        _optional(client, run, monitor, servicemonitor.API_GROUP_VERSION, "ServiceMonitor")
    elif monitor is not None:
        why = f"{servicemonitor.API_GROUP_VERSION} is not served (install the Prometheus Operator CRDs)"
        run.notes.append(status.Event("Warning", "ServiceMonitorUnavailable", why))
    if decision.rolled_back:
        metrics.ROLLBACKS.inc()
        metrics.ROLLOUTS.labels("failed").inc()
    return decision, state


def _admin_secret(client: kube.Kube, run: Pass) -> None:
    """The Secret of Triton's admin key: generated once, then kept (a pass re-applies the live key)."""
    url = kube.path("v1", "Secret", run.owner.namespace, secret.name(run.owner))
    live = client.get(url)
    key = secret.key_of(live) or secret.new_key()
    run.writes += apply.apply(client, secret.render_secret(run.owner, key), live, fetch=False)[0]


def _with_crashes(
    client: kube.Kube, owner: common.Owner, state: rollout.DeploymentState
) -> rollout.DeploymentState:
    """While a version rolls out, look at its pods: a crash loop fails the rollout before the deadline."""
    if not state.exists or state.version is None or rollout.rolled_out(state, state.version):
        return state
    selector = ",".join(f"{k}={v}" for k, v in common.selector(owner).items())
    pods = client.list(
        kube.path("v1", "Pod", owner.namespace), f"{selector},{common.LABEL_VERSION}={state.version}"
    )
    return dataclasses.replace(state, crash=rollout.crash_reason(pods), waiting=rollout.waiting_reason(pods))


def _optional(client: kube.Kube, run: Pass, desired: Obj | None, api_version: str, kind: str) -> None:
    """Apply a child that may be wanted, or remove it when it is not."""
    if desired is not None:
        run.writes += apply.apply(client, desired)[0]
    else:
        url = kube.path(api_version, kind, run.owner.namespace, run.owner.name)
        run.writes += apply.absent(client, url, run.owner.uid)


# ---- status ---------------------------------------------------------------------------------------


def _conditions(run: Pass, decision: rollout.Decision, state: rollout.DeploymentState) -> list[status.Cond]:
    entry = next(h for h in run.history if h.version == run.owner.spec.version)
    out = [
        _ready(decision, state),
        _built(run, entry),
        _progressing(entry, decision, state),
        _degraded(run, entry, decision),
    ]
    if run.owner.spec.monitoring.service_monitor.enabled:
        out.append(_monitoring(run))
    if run.flow is not None:
        canary = canaryflow.conditions(run.flow, decision.current, run.owner.spec.version)
        out = [canary.get(c.type, c) for c in out]
    return out


def _built(run: Pass, entry: types.HistoryEntry) -> status.Cond:
    if entry.result == "Succeeded":
        note = status.outcome_note(entry.summary)
        message = run.built_message or f"built {entry.build_key}"
        return status.Cond("Built", True, "BuildSucceeded", f"{message}; {note}" if note else message)
    if entry.result == "Building":
        message = f"Job {entry.job_name} is building version {entry.version}"
        return status.Cond(
            "Built", False, "Building", f"{message}; {run.built_message}" if run.built_message else message
        )
    return status.Cond("Built", False, "BuildFailed", entry.message or "build failed")


def _ready(decision: rollout.Decision, state: rollout.DeploymentState) -> status.Cond:
    serving, counts = decision.current, f"{state.ready}/{state.desired} pods ready"
    if serving is None:
        return status.Cond("Ready", False, "NotServing", "no version is serving yet")
    if state.available >= max(1, state.desired):
        return status.Cond("Ready", True, "Serving", f"version {serving}: {counts}")
    return status.Cond("Ready", False, "Unavailable", f"version {serving}: {counts}")


def _progressing(
    entry: types.HistoryEntry, decision: rollout.Decision, state: rollout.DeploymentState
) -> status.Cond:
    target = decision.serve.version if decision.serve else None
    if target is not None and target != decision.current:
        waiting = f"; {state.waiting}" if state.waiting and state.version == target else ""
        return status.Cond("Progressing", True, "RollingOut", f"rolling out version {target}{waiting}")
    if decision.stuck:
        return status.Cond("Progressing", False, "ProgressDeadlineExceeded", decision.reason)
    if entry.result == "Building":
        return status.Cond("Progressing", True, "Building", f"building version {entry.version}")
    return status.Cond("Progressing", False, "RolloutComplete" if decision.current else "Idle", "")


def _degraded(run: Pass, entry: types.HistoryEntry, decision: rollout.Decision) -> status.Cond:
    if decision.failed is not None:
        before = run.old.condition("Degraded")
        if not decision.reason and before is not None and before.reason in ("AnalysisFailed", "CanaryFailed"):
            return status.Cond("Degraded", True, before.reason, before.message)  # an aborted canary's
        keep = before.message if before is not None and before.reason == "RolloutFailed" else ""
        detail = (
            f"version {decision.failed} failed to roll out ({decision.reason}); serving {decision.current}"
        )
        return status.Cond("Degraded", True, "RolloutFailed", detail if decision.reason else keep or detail)
    if decision.stuck:
        return status.Cond("Degraded", True, "ProgressDeadlineExceeded", decision.reason)
    if entry.result == "Failed":
        return status.Cond("Degraded", True, "BuildFailed", f"version {entry.version}: {entry.message}")
    return status.Cond("Degraded", False, "AsExpected", "")


def _monitoring(run: Pass) -> status.Cond:
    if run.notes and any(n.reason == "ServiceMonitorUnavailable" for n in run.notes):
        return status.Cond("Monitoring", False, "ServiceMonitorUnavailable", run.notes[0].message)
    return status.Cond("Monitoring", True, "ServiceMonitorApplied", "")


def _new_status(
    run: Pass, decision: rollout.Decision, state: rollout.DeploymentState, generation: int
) -> types.ModelDeploymentStatus:
    owner, wanted = run.owner, run.owner.spec.version
    entry = next(h for h in run.history if h.version == wanted)
    conds = _conditions(run, decision, state)
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
        history=_prune(run.history, owner.spec.revision_history_limit, {wanted, decision.current}),
        conditions=status.merge(run.old.conditions, conds, generation, run.timestamp),
        observed_generation=generation,
        replicas=state.replicas if state.exists else 0,
        ready_replicas=state.ready if state.exists else 0,
        selector=",".join(f"{k}={v}" for k, v in common.selector(owner).items()),
        endpoints=types.Endpoints.model_validate(service.endpoints(owner)),
        canary=run.flow.plan.status if run.flow is not None else run.old.canary,
    )


def _prune(history: list[types.HistoryEntry], limit: int, keep: set[str | None]) -> list[types.HistoryEntry]:
    """Keep the newest `limit` entries, and always the wanted and the serving version."""
    newest = sorted(history, key=lambda h: h.started_at)[::-1]
    kept = [h for i, h in enumerate(newest) if i < limit or h.version in keep]
    return sorted(kept, key=lambda h: h.started_at)


def _finish(
    client: kube.Kube, md: Obj, run: Pass, new: types.ModelDeploymentStatus, decision: rollout.Decision
) -> None:
    """Delete Jobs of pruned versions, write status, post Events, observe metrics."""
    kept = {h.version for h in new.history}
    for gone in (h for h in run.history if h.version not in kept):
        run.writes += apply.absent(client, _job_url(run, gone.job_name), run.owner.uid)
    events = status.transitions(run.old, new) + (run.flow.events if run.flow is not None else [])
    if decision.rolled_back:
        events.append(
            status.Event("Warning", "RolledBack", f"rolled back to {decision.current}: {decision.reason}")
        )
    _write_status(client, md, run.old, new, events)
    if (
        new.current_version == run.owner.spec.version != run.old.current_version
        and run.old.rollout_started_at
    ):
        metrics.ROLLOUTS.labels("completed").inc()
        metrics.SPEC_TO_SERVING.observe(_seconds_since(run.old.rollout_started_at))


def _seconds_since(timestamp: str) -> float:
    then = time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    return max(0.0, time.time() - then)


def _write_status(
    client: kube.Kube,
    md: Obj,
    old: types.ModelDeploymentStatus,
    new: types.ModelDeploymentStatus,
    events: list[status.Event] | None = None,
) -> None:
    body = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    if apply.apply_status(client, md, body):
        metrics.WRITES.labels("status").inc()
    for event in events if events is not None else status.transitions(old, new):
        post_event(client, md, event)


def post_event(client: kube.Kube, md: Obj, event: status.Event) -> None:
    """Post a core/v1 Event about the ModelDeployment (best effort)."""
    meta = md["metadata"]
    log.info("%s/%s: %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
    stamp = status.now()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": md["apiVersion"], "kind": md["kind"], "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta["uid"],
        },
        "type": event.type, "reason": event.reason, "message": event.message[:1024],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "source": {"component": "conch-operator"}, "reportingComponent": "conch-operator",
    }  # fmt: skip
    try:
        client.create(kube.path("v1", "Event", meta["namespace"]), body)
    except errors.KubeError as exc:
        log.warning("could not post event %s: %s", event.reason, exc)
