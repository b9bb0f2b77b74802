"""One level-based reconcile pass of a ModelDeployment: observe, decide, act.

`reconcile` reads one snapshot of the ModelDeployment and its children (conch.snapshot; from the
watch-fed cache in the operator, so an unchanged world costs no request), asks Prometheus only when
a canary analysis is due, lets the pure `decide.decide` turn it into a Plan, and acts on the Plan
through the apply layer: deletes, server-side applies (each skipped when the live object already
matches), the status write (only when it differs, with the resourceVersion it was computed from),
Events (queued: conch.events) and metrics. This module holds the only writes of a pass and no decisions.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from conch import apply, decide, errors, events, kinds, kube, metrics, plan, snapshot
from conch.render import authproxy, secret

Obj = dict[str, Any]
log = logging.getLogger(__name__)
IDLE_REQUEUE = 600.0  # the resync: drift nobody announced; --resync-seconds sets it
RECHECK = 0.5  # seconds until the pass after one that met a taken name the snapshot did not show
RESYNC_JITTER = 0.1  # +-10%, so a thousand objects created together do not resync together


def reconcile(client: kube.Kube, namespace: str, name: str) -> float | None:
    """Run one pass; returns seconds until the next one is due (None: gone, or an invalid spec)."""
    key = (namespace, name)
    snap = snapshot.observe(client, namespace, name, time.time(), recheck=_taken.get(key, frozenset()))
    if snap is None:
        _taken.pop(key, None)
        return None
    prepared = decide.prepare(snap)  # the pass' facts, worked out once for both calls below
    query = decide.analysis_query(prepared)
    if query is not None:
        prepared = decide.with_measurement(prepared, snapshot.measure(query))
    resync = IDLE_REQUEUE * random.uniform(1 - RESYNC_JITTER, 1 + RESYNC_JITTER)
    new_key = "" if secret.key_of(snap.admin_secret) else secret.new_key()
    new_token = "" if authproxy.token_of(snap.token_secret) else secret.new_key()
    decided = decide.decide(prepared, resync=resync, new_key=new_key, new_token=new_token)
    met = act(client, snap.md, decided)
    found = frozenset(decided.taken) | {c.url for c in met}
    if found:
        _taken[key] = found
    else:
        _taken.pop(key, None)
    if met:  # names the snapshot could not see (no label: not cached): the next pass reads and says them
        return RECHECK
    return decided.requeue


def act(client: kube.Kube, md: Obj, decided: plan.Plan) -> list[errors.OwnershipConflictError]:
    """Carry out a plan: delete, apply, write status, post Events, move metrics. A child whose name
    another owner's object holds, which the snapshot did not show (apply.apply reads the name before
    creating it), is skipped and returned, and so is every Deployment after a taken admin-key Secret;
    the rest of the plan still runs (a taken Service name does not hold up the rollout)."""
    for url in decided.absent:
        apply.remove(client, url)
    conflicts: list[errors.OwnershipConflictError] = []
    for child in decided.children:
        if child.desired["kind"] == "Deployment" and any(
            f"/{kinds.SECRET.plural}/" in c.url for c in conflicts
        ):
            continue  # its pods would read someone else's Secret
        try:
            apply.apply(client, child.desired, child.live)
        except errors.OwnershipConflictError as exc:
            conflicts.append(exc)
    if decided.new_status is not None:
        body = decided.new_status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if apply.apply_status(client, md, body):
            metrics.WRITES.labels("status").inc()
    for event in decided.events:
        events.post(client, md, event)
    for metric in decided.metrics:
        _move(metric)
    metrics.OWNERSHIP_CONFLICTS.inc(len(conflicts))
    return conflicts


# (namespace, name) of a ModelDeployment -> REST paths of its children's names another owner holds,
# as last found: every pass reads them from the apiserver until they are free (snapshot.observe).
_taken: dict[tuple[str, str], frozenset[str]] = {}


def forget(namespace: str, name: str) -> None:
    """A ModelDeployment is gone: drop what was remembered of it."""
    _taken.pop((namespace, name), None)


def _move(metric: plan.Metric) -> None:
    target = getattr(metrics, metric.name)
    if metric.labels:
        target = target.labels(*metric.labels)
    if hasattr(target, "observe"):
        target.observe(metric.value)
    else:
        target.inc(metric.value)
