"""The canary state machine: from (steps, last canary status, live pods, analysis results) to a plan.

Pure: the controller reads the world and runs the queries (I/O), this module decides. A canary runs
the new version in a second Deployment beside the stable one; both are behind the one Service, so
traffic splits by ready pods (Argo Rollouts' canary without a mesh). Each step moves `weight` percent
of the pods to the canary, waits until they are ready, holds `pauseSeconds`, and completes only when
the latest analysis taken during the step passed (never blind: no result, no progress). A failed
analysis beyond failureLimit, or canary pods that crash, abort: the canary is scaled away and the
stable version keeps serving. After the last step the stable Deployment rolls to the new version (as
Flagger promotes its primary) while the canary pods serve their share, then the canary scales away.

GPU budget: at no time more than total + maxSurge pods exist (terminating pods count, they still
hold their GPUs). The canary grows only into free budget, the stable shrinks only as canary pods
become ready, and either grows back only as the other's pods are gone.

Autoscaling: the HPA keeps owning the stable Deployment's replicas throughout (its target never
moves, so an abort never finds the stable scaled down, and the HPA never fights the operator). The
canary then rides on top: its pods are the weight's share of the stable's count, at most maxSurge
(the budget), and it is scaled away before the stable rolls to the new version on promotion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from conch import clock
from conch.api import types

Result = Literal["Passed", "Failed", "Inconclusive", "Unavailable"]
BUSY = 3.0  # seconds between passes while pods move


@dataclass(frozen=True)
class Pods:
    """One track's Deployment and pods."""

    spec: int = 0  # spec.replicas of its Deployment (0 when there is none)
    existing: int = 0  # pods that exist, terminating ones included
    ready: int = 0  # ready pods, not terminating


@dataclass(frozen=True)
class World:
    """What the controller observed, for one pass."""

    now: float
    total: int  # pods the spec wants serving (spec.replicas, or the HPA's count on the stable)
    autoscaled: bool
    max_surge: int
    stable: Pods
    canary: Pods
    stable_version: str | None  # what the stable Deployment's pod template runs
    stable_rolled_out: bool  # the stable Deployment fully runs its template at its replica count
    canary_failure: str = ""  # why the canary's pods cannot run (crash loop, deadline), else ""


@dataclass(frozen=True)
class Measurement:
    """One analysis: Prometheus checks, or the quality check of a step."""

    result: Result
    values: tuple[types.AnalysisValue, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Plan:
    """What to apply and record."""

    status: types.CanaryStatus
    stable_version: str  # the version the stable Deployment serves
    stable_replicas: int | None  # None: the HPA owns the count
    canary_replicas: int  # 0: scale the canary away (its Deployment stays, at zero)
    promoted: bool = False
    aborted: bool = False  # this pass aborted the canary
    reason: str = ""
    wait: float = BUSY  # seconds until the next pass is due


def split(total: int, weight: int, world_stable: int, autoscaled: bool, max_surge: int) -> tuple[int, int]:
    """(stable, canary) pods for `weight` percent. Below 100% one stable pod always stays (a canary
    of one pod beside one stable rides on the surge budget). With an HPA the canary is extra pods on
    top of the stable's count, within maxSurge."""
    if autoscaled:
        share = math.ceil(world_stable * weight / max(1, 100 - weight)) if weight < 100 else max_surge
        return world_stable, max(1, min(max_surge, share))
    if weight >= 100:
        return 0, total
    canary = min(total, max(1, round(total * weight / 100)))
    return max(1, total - canary), canary


def _footprint(pods: Pods) -> int:
    """Pods a track holds or is about to: its count, or more while extra ones terminate."""
    return max(pods.spec, pods.existing)


def _grow_stable(want: int, world: World) -> int:
    """The stable's count toward `want`: shrinking is free; growing only into the budget the canary's
    pods and the stable's own terminating ones leave."""
    if want <= world.stable.spec:
        return want
    terminating = max(0, world.stable.existing - world.stable.spec)
    cap = world.total + world.max_surge - _footprint(world.canary) - terminating
    return max(world.stable.spec, min(want, cap, world.total))


def scale(want_stable: int, want_canary: int, world: World) -> tuple[int, int]:
    """Replica counts for this pass that move toward (want_stable, want_canary) within the budget."""
    budget = world.total + world.max_surge
    if want_canary <= world.canary.spec:
        canary = want_canary
    else:
        room = max(0, budget - _footprint(world.stable) - _footprint(world.canary))
        canary = min(want_canary, world.canary.spec + room)
    if world.autoscaled:
        return want_stable, canary
    # shrink only as canary pods are ready to take over; grow only into what the canary frees
    return _grow_stable(max(want_stable, world.total - world.canary.ready), world), canary


def analysis_due(canary: types.Canary, status: types.CanaryStatus | None, now: float) -> bool:
    """Whether the Prometheus checks should run this pass (a step reached and an interval since the
    step began or the last analysis)."""
    analysis = canary.analysis
    if analysis is None or not analysis.prometheus_checks() or status is None:
        return False
    started = clock.parse_time(status.step_started_at)
    if status.phase not in ("Progressing", "Paused") or started is None:
        return False
    last = max(started, clock.parse_time(status.analyzed_at) or 0.0)
    return now >= last + analysis.interval_seconds


def quality_due(canary: types.Canary, status: types.CanaryStatus | None) -> bool:
    """Whether this step still needs its quality analysis (once per step, once its pods are ready)."""
    analysis = canary.analysis
    return (
        analysis is not None
        and analysis.quality is not None
        and status is not None
        and status.phase in ("Progressing", "Paused")
        and status.step_started_at is not None
        and status.quality_step != status.step
    )


def start(canary: types.Canary, version: str, now: float) -> types.CanaryStatus:
    """The status of a fresh canary of `version`."""
    return types.CanaryStatus(
        version=version,
        steps=len(canary.steps),
        weight=canary.steps[0].weight,
        started_at=clock.format_time(now),
    )


def advance(
    canary: types.Canary,
    old: types.CanaryStatus | None,
    *,
    version: str,
    stable: str,
    world: World,
    measured: Measurement | None = None,
    quality: Measurement | None = None,
) -> Plan:
    """One pass of the canary of `version` beside `stable`."""
    if old is None or old.version != version or old.phase == "Promoted":
        st = start(canary, version, world.now)
    else:
        st = old
    if st.phase == "Aborted":
        return settle(st, stable, world)
    if st.phase == "Promoting":
        return _promote(st, version, stable, world)
    if world.canary_failure:
        return _abort(st, stable, world, f"canary pods failed: {world.canary_failure}")
    return _step(canary, st, version=version, stable=stable, world=world, measured=measured, quality=quality)


def _step(
    canary: types.Canary,
    st: types.CanaryStatus,
    *,
    version: str,
    stable: str,
    world: World,
    measured: Measurement | None,
    quality: Measurement | None,
) -> Plan:
    step = canary.steps[st.step]
    want_s, want_c = split(world.total, step.weight, world.stable.spec, world.autoscaled, world.max_surge)
    s, c = scale(want_s, want_c, world)
    reached = world.canary.spec == want_c and world.canary.ready >= want_c
    stable_there = world.stable.spec == want_s and world.stable.existing <= want_s
    reached = reached and (world.autoscaled or stable_there)
    st = _up(st, weight=step.weight, stable_replicas=s, canary_replicas=c, steps=len(canary.steps))
    if reached and st.step_started_at is None:
        st = _up(st, step_started_at=clock.format_time(world.now))
    for m in (measured, quality):
        if m is None:
            continue
        st = _record(st, m, world.now, is_quality=m is quality)
        limit = canary.analysis.failure_limit if canary.analysis is not None else 0
        if m.result == "Failed" and (m is quality or st.failures > limit):
            return _abort(st, stable, world, m.message)  # the condition names the step
    plan = Plan(st, stable, None if world.autoscaled else s, c)
    if st.step_started_at is None:
        message = f"step {st.step + 1}/{len(canary.steps)}: waiting for {want_c} canary pods to be ready"
        return replace(plan, status=_up(st, phase="Progressing", message=message))
    waits = _waits(canary, st, world.now)
    if not waits:
        return _next_step(canary, st, version, stable, world)
    paused = st.analysis_result == "Unavailable" or (quality is not None and quality.result == "Unavailable")
    st = _up(st, phase="Paused" if paused else "Progressing", message=_waiting(canary, st, waits))
    return replace(plan, status=st, wait=_next_due(canary, st, world.now))


def _up(st: types.CanaryStatus, **changes: object) -> types.CanaryStatus:
    return st.model_copy(update=changes)


def _record(st: types.CanaryStatus, m: Measurement, now: float, is_quality: bool) -> types.CanaryStatus:
    values = {v.name: v for v in st.analysis}
    values.update({v.name: v for v in m.values})
    failures = st.failures + (1 if m.result == "Failed" else 0)
    if is_quality:
        return _up(
            st,
            analysis=list(values.values()),
            failures=failures,
            quality_step=st.step if m.result == "Passed" else st.quality_step,
            analysis_message=st.analysis_message if m.result == "Passed" else m.message,
        )
    return _up(
        st,
        analysis=list(values.values()),
        analyzed_at=clock.format_time(now),
        analysis_result=m.result,
        failures=failures,
        analysis_message=m.message,
    )


def _waits(canary: types.Canary, st: types.CanaryStatus, now: float) -> list[str]:
    """What the step still waits for (empty: it is complete)."""
    started = clock.parse_time(st.step_started_at) or now
    out = []
    pause = canary.steps[st.step].pause_seconds
    if now < started + pause:
        until = clock.format_time(started + pause)
        out.append(f"the pause (until {until})")  # no countdown: status stays put
    analysis = canary.analysis
    if analysis is not None and analysis.prometheus_checks():
        fresh = (clock.parse_time(st.analyzed_at) or 0.0) >= started
        if not fresh or st.analysis_result != "Passed":
            out.append("a passing analysis")
    if analysis is not None and analysis.quality is not None and st.quality_step != st.step:
        out.append("the quality analysis")
    return out


def _waiting(canary: types.Canary, st: types.CanaryStatus, waits: list[str]) -> str:
    head = f"step {st.step + 1}/{len(canary.steps)} at weight {st.weight}%: waiting for {', '.join(waits)}"
    if st.analysis_message.startswith("quality analysis:"):  # the step's quality Job could not analyse
        return f"{head}; {st.analysis_message}"
    if st.analysis_result in ("Unavailable", "Inconclusive", "Failed") and st.analysis_message:
        return f"{head}; last analysis {st.analysis_result.lower()}: {st.analysis_message}"
    return head


def _next_due(canary: types.Canary, st: types.CanaryStatus, now: float) -> float:
    """Seconds until a timer of this step runs out (pause end, next analysis)."""
    started = clock.parse_time(st.step_started_at) or now
    due = [started + canary.steps[st.step].pause_seconds]
    if canary.analysis is not None and canary.analysis.prometheus_checks():
        due.append(max(started, clock.parse_time(st.analyzed_at) or 0.0) + canary.analysis.interval_seconds)
    future = [d - now for d in due if d > now]
    return max(1.0, min(future)) if future else BUSY


def _next_step(canary: types.Canary, st: types.CanaryStatus, version: str, stable: str, world: World) -> Plan:
    nxt = st.step + 1
    if nxt >= len(canary.steps):
        promoting = _up(st, step=nxt, phase="Promoting", step_started_at=None, message="promoting")
        return _promote(promoting, version, stable, world)
    moved = _up(st, step=nxt, weight=canary.steps[nxt].weight, step_started_at=None)
    return _step(canary, moved, version=version, stable=stable, world=world, measured=None, quality=None)


def _promote(st: types.CanaryStatus, version: str, stable: str, world: World) -> Plan:
    """The stable Deployment takes the new version; the canary serves its share until it has."""
    total = world.total
    if world.autoscaled:  # the HPA sized the stable alone: the canary goes first, then the stable rolls
        serve = version if world.canary.existing == 0 else stable
        done = world.stable_version == version and world.stable_rolled_out and world.canary.existing == 0
        plan = Plan(_up(st, canary_replicas=0, stable_replicas=world.stable.spec), serve, None, 0)
        return _promoted(plan, version) if done else plan
    switched = st.step > st.steps  # sticky: the stable once rolled out the new version
    if not switched and not (world.stable_version == version and world.stable_rolled_out):
        stable_n = max(0, total - world.canary.existing)
        message = f"promoting: the stable Deployment rolls {stable_n} pods to {version}"
        st = _up(st, stable_replicas=stable_n, canary_replicas=world.canary.spec, message=message)
        return Plan(st, version, stable_n, world.canary.spec)
    stable_n = _grow_stable(total, world)
    canary_n = min(world.canary.spec, max(0, total - world.stable.ready))
    st = _up(st, step=st.steps + 1, stable_replicas=stable_n, canary_replicas=canary_n)
    plan = Plan(st, version, stable_n, canary_n)
    if world.canary.existing == 0 and world.stable.spec == total and world.stable.ready >= total:
        return _promoted(plan, version)
    return replace(plan, status=_up(st, message=f"promoting: scaling the canary away ({canary_n} left)"))


def _promoted(plan: Plan, version: str) -> Plan:
    st = _up(plan.status, phase="Promoted", weight=100, canary_replicas=0, message=f"promoted {version}")
    return replace(plan, status=st, promoted=True, wait=BUSY)


def _abort(st: types.CanaryStatus, stable: str, world: World, reason: str) -> Plan:
    aborted = _up(st, phase="Aborted", message=reason, step_started_at=None)
    return replace(settle(aborted, stable, world), aborted=True, reason=reason)


def settle(st: types.CanaryStatus, stable: str, world: World) -> Plan:
    """After an abort: the canary scales away, the stable grows back as its pods go."""
    if world.autoscaled:
        return Plan(_up(st, canary_replicas=0), stable, None, 0, reason=st.message)
    stable_n = _grow_stable(world.total, world)
    st = _up(st, canary_replicas=0, stable_replicas=stable_n, weight=0)
    return Plan(st, stable, stable_n, 0, reason=st.message)


def settled(st: types.CanaryStatus | None, world: World) -> bool:
    """Whether nothing of a finished canary is left to move (its pods gone, the stable at full count)."""
    return st is None or (
        st.phase in ("Promoted", "Aborted")
        and world.canary.existing == 0
        and world.canary.spec == 0
        and (world.autoscaled or world.stable.spec == world.total)
    )
