"""The wording of a ModelDeployment's conditions: Ready, Built, Progressing, Degraded, Monitoring.

Pure, and separate from `decide` so that the state machines there stay short: given what a pass
found (the wanted version's history entry, the rollout decision, the Deployment's state, the
previous status) this says which conditions hold and why. `status.merge` then keeps each one's
lastTransitionTime; a canary's pass overrides Progressing/Degraded (canaryflow.conditions).
"""

from __future__ import annotations

from dataclasses import dataclass

from conch import rollout, status
from conch.api import types
from conch.render import verify


@dataclass(frozen=True)
class Facts:
    """What the conditions are worded from."""

    entry: types.HistoryEntry  # the wanted version's build
    decision: rollout.Decision
    state: rollout.DeploymentState
    old: types.ModelDeploymentStatus
    built_message: str = ""  # a note for Built (a stuck builder pod, an immutable version's other spec)
    notes: tuple[status.Event, ...] = ()  # ServiceMonitorUnavailable, when it is
    monitoring: bool = False  # spec.monitoring.serviceMonitor.enabled


def wanted(facts: Facts) -> list[status.Cond]:
    """The conditions, in the order status lists them."""
    out = [ready(facts), built(facts), progressing(facts), degraded(facts)]
    if facts.monitoring:
        out.append(monitoring(facts))
    return out


def built(facts: Facts) -> status.Cond:
    entry, extra = facts.entry, facts.built_message
    if entry.result == "Succeeded":
        note = status.outcome_note(entry.summary)
        message = extra or f"built {entry.build_key}"
        return status.Cond("Built", True, "BuildSucceeded", f"{message}; {note}" if note else message)
    if entry.result == "Building":
        message = f"Job {entry.job_name} is building version {entry.version}"
        return status.Cond("Built", False, "Building", f"{message}; {extra}" if extra else message)
    return status.Cond("Built", False, "BuildFailed", entry.message or "build failed")


def ready(facts: Facts) -> status.Cond:
    state = facts.state
    serving, counts = facts.decision.current, f"{state.ready}/{state.desired} pods ready"
    if serving is None:
        return status.Cond("Ready", False, "NotServing", "no version is serving yet")
    if state.available >= max(1, state.desired):
        return status.Cond("Ready", True, "Serving", f"version {serving}: {counts}")
    return status.Cond("Ready", False, "Unavailable", f"version {serving}: {counts}")


def progressing(facts: Facts) -> status.Cond:
    decision, state, entry = facts.decision, facts.state, facts.entry
    target = decision.serve.version if decision.serve else None
    if target is not None and target != decision.current:
        waiting = f"; {state.waiting}" if state.waiting and state.version == target else ""
        return status.Cond("Progressing", True, "RollingOut", f"rolling out version {target}{waiting}")
    if decision.stuck:
        return status.Cond("Progressing", False, "ProgressDeadlineExceeded", decision.reason)
    if entry.result == "Building":
        return status.Cond("Progressing", True, "Building", f"building version {entry.version}")
    return status.Cond("Progressing", False, "RolloutComplete" if decision.current else "Idle", "")


def degraded(facts: Facts) -> status.Cond:
    decision, entry = facts.decision, facts.entry
    if decision.failed is not None:
        before = facts.old.condition("Degraded")
        if not decision.reason and before is not None and before.reason in ("AnalysisFailed", "CanaryFailed"):
            return status.Cond("Degraded", True, before.reason, before.message)  # an aborted canary's
        if not decision.reason and before is not None and before.reason in ("RolloutFailed", verify.REASON):
            return status.Cond("Degraded", True, before.reason, before.message)  # said when it rolled back
        detail = (
            f"version {decision.failed} failed to roll out ({decision.reason}); serving {decision.current}"
        )
        return status.Cond("Degraded", True, decision.cause or "RolloutFailed", detail)
    if decision.stuck:
        return status.Cond("Degraded", True, decision.cause or "ProgressDeadlineExceeded", decision.reason)
    if entry.result == "Failed":
        return status.Cond("Degraded", True, "BuildFailed", f"version {entry.version}: {entry.message}")
    return status.Cond("Degraded", False, "AsExpected", "")


def conflicted(messages: list[str]) -> status.Cond:
    """Degraded while a child's name is taken (it wins over every other reason: only a person can free
    the name, and until then that child is not applied)."""
    return status.Cond("Degraded", True, "OwnershipConflict", "; ".join(messages))


def monitoring(facts: Facts) -> status.Cond:
    if facts.notes and any(n.reason == "ServiceMonitorUnavailable" for n in facts.notes):
        return status.Cond("Monitoring", False, "ServiceMonitorUnavailable", facts.notes[0].message)
    return status.Cond("Monitoring", True, "ServiceMonitorApplied", "")
