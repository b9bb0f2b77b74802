"""Status as Kubernetes conditions, the phase, and the Events that transitions deserve.

Pure. A condition keeps its lastTransitionTime unless its status flips, and nothing time-dependent
is written otherwise, so reconciling an unchanged world produces an identical status (no write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conch.api import types


@dataclass(frozen=True)
class Cond:
    """A wanted condition, before times are filled in."""

    type: str
    status: bool | None
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the ModelDeployment."""

    type: str  # Normal | Warning
    reason: str
    message: str


def _status_text(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def merge(
    old: list[types.Condition], wanted: list[Cond], generation: int, timestamp: str
) -> list[types.Condition]:
    """Conditions for `wanted`, keeping each one's lastTransitionTime while its status is unchanged."""
    previous = {c.type: c for c in old}
    out: list[types.Condition] = []
    for cond in wanted:
        text = _status_text(cond.status)
        before = previous.get(cond.type)
        since = before.last_transition_time if before is not None and before.status == text else timestamp
        out.append(
            types.Condition(
                type=cond.type,
                status=text,
                reason=cond.reason,
                message=cond.message[:4096],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def phase(
    building: bool, build_failed: bool, serving: str | None, rolling: bool, degraded: bool
) -> types.Phase:
    """One word for `kubectl get md`."""
    if serving is None:
        if building:
            return "Building"
        if build_failed or degraded:
            return "Failed"
        return "RollingOut" if rolling else "Pending"
    if degraded or build_failed:
        return "Degraded"
    if building:
        return "Building"
    return "RollingOut" if rolling else "Serving"


# A version Event says what its condition flips in the same pass would: a build that succeeded is
# rolled out at once (Progressing=True RollingOut), and a version now serving completed its rollout.
IMPLIED = {"BuildSucceeded": "RollingOut", "Serving": "RolloutComplete"}


def transitions(old: types.ModelDeploymentStatus, new: types.ModelDeploymentStatus) -> list[Event]:
    """Events for what changed between two statuses: versions moving, builds starting and ending,
    conditions flipping. One Event per reason: a condition that flips with the reason of a version or
    build Event, or one that Event implies (IMPLIED), is said by that Event (Built=True BuildSucceeded
    is "built version v1: <key>"), and conditions flipping together with one reason are one Event. A
    condition set for the first time only says where it starts (Ready=False "no version is serving
    yet", Built=False "building"): it is an Event only when it starts Degraded=True. Events are
    requests too: a thousand new ModelDeployments made ten each before (11,186 POSTs in bench_scale
    at N=1000), three each now (BuildStarted, BuildSucceeded, Serving). A rollout that no build
    starts (a rollback to a built version) still says RollingOut."""
    events = _version_events(old, new)
    said = {e.reason for e in events}
    said |= {IMPLIED[reason] for reason in said if reason in IMPLIED}
    flips: dict[str, list[types.Condition]] = {}
    before = {c.type: c for c in old.conditions}
    for cond in new.conditions:
        prev = before.get(cond.type)
        if prev is not None and (prev.status, prev.reason) == (cond.status, cond.reason):
            continue
        if (prev is None and not (cond.type == "Degraded" and cond.status == "True")) or cond.reason in said:
            continue
        flips.setdefault(cond.reason, []).append(cond)
    for reason, conds in flips.items():
        message = "; ".join(f"{c.type}={c.status}: {c.message}" for c in conds)
        events.append(Event("Warning" if any(map(_bad, conds)) else "Normal", reason, message))
    return events


def _bad(cond: types.Condition) -> bool:
    return (cond.type == "Degraded") == (cond.status == "True")


def _version_events(old: types.ModelDeploymentStatus, new: types.ModelDeploymentStatus) -> list[Event]:
    events: list[Event] = []
    if new.current_version != old.current_version and new.current_version is not None:
        events.append(Event("Normal", "Serving", f"now serving version {new.current_version}"))
    old_results = {h.version: h.result for h in old.history}
    for entry in new.history:
        if old_results.get(entry.version) == entry.result:
            continue
        if entry.result == "Building":
            events.append(
                Event("Normal", "BuildStarted", f"building version {entry.version} (Job {entry.job_name})")
            )
        elif entry.result == "Succeeded":
            events.append(
                Event("Normal", "BuildSucceeded", f"built version {entry.version}: {entry.build_key}")
            )
        else:
            events.append(Event("Warning", "BuildFailed", f"version {entry.version}: {entry.message}"))
    return events


def outcome_note(summary: types.BuildSummary | None) -> str:
    """What the Built condition adds to 'built <key>': the distillation and the precision ladder's outcome."""
    if summary is None:
        return ""
    parts = []
    d = summary.distill
    if isinstance(d, dict):
        loss = d.get("loss") or [None, None]
        parts.append(
            f"distilled {d.get('steps')} steps in {d.get('wallSeconds')}s, loss {loss[0]} -> {loss[-1]}"
            + (f", student {d['student']}" if d.get("student") else "")
        )
    q = summary.quantize
    if isinstance(q, dict) and q.get("published"):
        failed = [_rung(a) for a in q.get("failed") or [] if isinstance(a, dict)]
        parts.append(f"published {q['published']}" + (f" ({'; '.join(failed)})" if failed else ""))
    return "; ".join(parts)


def _rung(attempt: dict[str, Any]) -> str:
    mode = attempt.get("mode", "?")
    if "error" in attempt:
        return f"{mode} failed: {attempt['error']}"
    op = "<" if str(attempt.get("field", "")).startswith("min") else ">"
    metric, value, field, threshold = (attempt.get(k) for k in ("metric", "value", "field", "threshold"))
    return f"{mode} failed: {metric} {value} {op} {field} {threshold}"
