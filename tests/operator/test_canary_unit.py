"""Unit tests of the canary state machine (conch.canary) and the analysis' PromQL (conch.promql).

Tables for the pure pieces, and a small simulation of two Deployments (pods appear one pass after
they are asked for, become ready the pass after, terminating pods hold their GPU one pass) that drives
whole canaries through advance() and checks the GPU budget and availability at every pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from conch import canary, canaryflow, clock, promql, status
from conch.api import types
from conch.render import common

pytestmark = pytest.mark.unit
T0 = 1_800_000_000.0


def canary_spec(steps: list[tuple[int, int]], **analysis: Any) -> types.Canary:
    body: dict[str, Any] = {"steps": [{"weight": w, "pauseSeconds": p} for w, p in steps]}
    if analysis:
        body["analysis"] = analysis
    return types.Canary.model_validate(body)


@pytest.mark.parametrize(
    ("total", "weight", "autoscaled", "surge", "expected"),
    [
        (4, 25, False, 1, (3, 1)),
        (4, 50, False, 1, (2, 2)),
        (4, 100, False, 1, (0, 4)),
        (1, 20, False, 1, (1, 1)),  # one stable pod stays below 100%: the canary rides on the surge
        (10, 1, False, 1, (9, 1)),  # at least one canary pod
        (3, 50, False, 1, (1, 2)),  # rounds half to even: 1.5 -> 2
        (4, 50, True, 1, (4, 1)),  # the HPA's stable stays; the canary is extra, within maxSurge
        (4, 50, True, 8, (4, 4)),
        (2, 20, True, 2, (2, 1)),
    ],
)
def test_split(total: int, weight: int, autoscaled: bool, surge: int, expected: tuple[int, int]) -> None:
    assert canary.split(total, weight, total, autoscaled, surge) == expected


def world(
    stable: tuple[int, int, int], can: tuple[int, int, int], total: int = 4, surge: int = 1, **kw: Any
) -> canary.World:
    return canary.World(
        now=kw.pop("now", T0), total=total, autoscaled=kw.pop("autoscaled", False), max_surge=surge,
        stable=canary.Pods(*stable), canary=canary.Pods(*can), stable_version=kw.pop("stable_version", "v1"),
        stable_rolled_out=kw.pop("rolled", True), **kw,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("want", "stable", "can", "expected"),
    [
        ((2, 2), (4, 4, 4), (0, 0, 0), (4, 1)),  # one surge pod of canary first; the stable waits
        ((2, 2), (4, 4, 4), (1, 1, 1), (3, 1)),  # its pod is ready: one stable pod goes
        ((2, 2), (3, 4, 3), (1, 1, 1), (3, 1)),  # the stable pod still terminates: no room yet
        ((2, 2), (3, 3, 3), (1, 1, 1), (3, 2)),  # room: the second canary pod
        ((2, 2), (3, 3, 3), (2, 2, 2), (2, 2)),
        ((4, 0), (2, 2, 2), (2, 2, 2), (3, 0)),  # abort: the canary goes, the stable grows into its room
        ((4, 0), (3, 3, 3), (0, 2, 0), (3, 0)),  # its pods still terminate
        ((4, 0), (3, 3, 3), (0, 0, 0), (4, 0)),
        ((4, 0), (2, 3, 2), (2, 2, 2), (2, 0)),  # a stable pod still terminates: it holds its GPU too
        ((4, 0), (2, 2, 2), (0, 2, 0), (3, 0)),
    ],
)
def test_scale_keeps_the_budget(
    want: tuple[int, int], stable: tuple[int, int, int], can: tuple[int, int, int], expected: tuple[int, int]
) -> None:
    assert canary.scale(*want, world(stable, can)) == expected


# ---- a small simulation of the two Deployments ---------------------------------------------------


@dataclass
class Pod:
    version: str
    ready: bool = False
    terminating: bool = False


@dataclass
class Dep:
    version: str
    replicas: int
    surge: int
    pods: list[Pod] = field(default_factory=list)

    def live(self) -> list[Pod]:
        return [p for p in self.pods if not p.terminating]

    def tick(self) -> None:
        """One controller step: terminating pods vanish, new pods get ready, then scale/roll."""
        self.pods = [p for p in self.pods if not p.terminating]
        for p in self.pods:
            p.ready = True
        new = [p for p in self.live() if p.version == self.version]
        old = [p for p in self.live() if p.version != self.version]
        ready_new = sum(p.ready for p in new)
        # maxUnavailable 0: old pods go only as new ones are ready beyond the wanted count
        for p in old[: max(0, len(old) + ready_new - self.replicas)]:
            p.terminating = True
        for p in new[self.replicas :]:
            p.terminating = True
        # a terminating pod still holds its GPU: a new one cannot take it before it is gone
        room = self.replicas + (self.surge if old else 0) - len(self.pods)
        for _ in range(max(0, min(room, self.replicas - len(new)))):
            self.pods.append(Pod(self.version))

    def observed(self) -> canary.Pods:
        ready = sum(p.ready and not p.terminating for p in self.pods)
        return canary.Pods(self.replicas, len(self.pods), ready)


def run_canary(
    spec: types.Canary, total: int, surge: int, verdict: Any, *, passes: int = 200, autoscaled: bool = False
) -> tuple[canary.Plan, list[int], list[int]]:
    """Drive advance() until promoted or aborted-and-settled; returns the last plan, pods and ready counts."""
    stable = Dep("v1", total, surge, [Pod("v1", True) for _ in range(total)])
    can = Dep("v2", 0, surge)
    status: types.CanaryStatus | None = None
    existing: list[int] = []
    ready: list[int] = []
    now = T0
    plan = None
    for _ in range(passes):
        live = stable.live()  # as a Deployment's status counts: terminating pods are not replicas
        rolled = all(p.version == stable.version and p.ready for p in live) and len(live) == stable.replicas
        w = canary.World(
            now=now, total=total, autoscaled=autoscaled, max_surge=surge, stable=stable.observed(),
            canary=can.observed(), stable_version=stable.version, stable_rolled_out=rolled,
        )  # fmt: skip
        measured = verdict(status) if canary.analysis_due(spec, status, now) else None
        plan = canary.advance(spec, status, version="v2", stable="v1", world=w, measured=measured)
        status = plan.status
        stable.version = plan.stable_version
        stable.replicas = plan.stable_replicas if plan.stable_replicas is not None else total
        can.replicas = plan.canary_replicas
        if plan.promoted or (status.phase == "Aborted" and canary.settled(status, w)):
            break
        stable.tick()
        can.tick()
        existing.append(len(stable.pods) + len(can.pods))
        ready.append(sum(p.ready and not p.terminating for p in stable.pods + can.pods))
        now += 5
    assert plan is not None
    return plan, existing, ready


def passing(_: Any) -> canary.Measurement:
    value = types.AnalysisValue(name="successRate", value=1.0, passed=True)
    return canary.Measurement("Passed", (value,), "ok")


@pytest.mark.parametrize(("total", "surge"), [(1, 1), (2, 1), (4, 1), (5, 2), (3, 3)])
def test_good_canary_promotes_within_the_budget(total: int, surge: int) -> None:
    spec = canary_spec([(25, 10), (50, 10), (75, 0)], minSuccessRate=0.99, intervalSeconds=5)
    plan, existing, ready = run_canary(spec, total, surge, passing)
    assert plan.promoted and plan.status.phase == "Promoted" and plan.stable_version == "v2"
    assert plan.stable_replicas == total and plan.canary_replicas == 0
    assert max(existing) <= total + surge, existing  # the GPU budget
    assert min(ready) >= total, ready  # never below the serving capacity


def test_steps_wait_for_pause_and_a_passing_analysis() -> None:
    spec = canary_spec([(50, 60)], minSuccessRate=0.99, intervalSeconds=10)
    ready = world((1, 1, 1), (1, 1, 1), total=2)
    first = canary.advance(spec, None, version="v2", stable="v1", world=ready)
    assert first.status.step_started_at == clock.format_time(T0) and first.status.phase == "Progressing"
    assert (
        f"the pause (until {clock.format_time(T0 + 60)})" in first.status.message
        and "a passing analysis" in first.status.message
    )
    assert first.wait == 10  # the first analysis is due one interval after the step began
    assert not canary.analysis_due(spec, first.status, T0 + 9)
    assert canary.analysis_due(spec, first.status, T0 + 10)
    later = dict(world((1, 1, 1), (1, 1, 1), total=2).__dict__, now=T0 + 30)
    analysed = canary.advance(spec, first.status, version="v2", stable="v1", world=canary.World(**later),
                              measured=passing(None))  # fmt: skip
    assert analysed.status.step == 0 and analysed.status.analysis_result == "Passed"  # pause not over
    done = dict(later, now=T0 + 61)
    nxt = canary.advance(spec, analysed.status, version="v2", stable="v1", world=canary.World(**done))
    assert nxt.status.phase == "Promoting" and nxt.stable_version == "v2"


def test_no_analysis_result_never_promotes_and_unavailable_pauses() -> None:
    spec = canary_spec([(50, 0)], minSuccessRate=0.99, intervalSeconds=5)
    down = canary.Measurement("Unavailable", (), "http://127.0.0.1:9/: connection refused")
    plan, _, _ = run_canary(spec, 2, 1, lambda _: down, passes=40)
    assert not plan.promoted and plan.status.phase == "Paused" and plan.stable_version == "v1"
    cond = plan.status.message
    assert "waiting for a passing analysis" in cond
    assert "unavailable: http://127.0.0.1:9/: connection refused" in cond
    back = canary.advance(
        spec, plan.status, version="v2", stable="v1",
        world=world((1, 1, 1), (1, 1, 1), total=2, now=T0 + 999),
        measured=passing(None),
    )  # fmt: skip
    assert back.status.phase == "Promoting", "Prometheus back: the canary continues"
    inconclusive = canary.Measurement("Inconclusive", (), "0 requests reached the canary")
    plan, _, _ = run_canary(spec, 2, 1, lambda _: inconclusive, passes=40)
    assert not plan.promoted and plan.status.phase == "Progressing" and "0 requests" in plan.status.message


def failing(_: Any) -> canary.Measurement:
    value = types.AnalysisValue(name="successRate", value=0.62, bound=">= 0.99", passed=False)
    return canary.Measurement("Failed", (value,), "successRate 0.62 not >= 0.99")


@pytest.mark.parametrize(("limit", "analyses"), [(0, 1), (2, 3)])
def test_failed_analysis_aborts_after_the_failure_limit(limit: int, analyses: int) -> None:
    spec = canary_spec([(50, 600)], minSuccessRate=0.99, intervalSeconds=5, failureLimit=limit)
    calls = []

    def counting(st: Any) -> canary.Measurement:
        calls.append(st)
        return failing(st)

    plan, existing, ready = run_canary(spec, 4, 1, counting)
    assert len(calls) == analyses and plan.status.phase == "Aborted" and plan.status.failures == analyses
    assert "successRate 0.62 not >= 0.99" in plan.status.message and plan.stable_version == "v1"
    assert plan.stable_replicas == 4 and plan.canary_replicas == 0
    # the bad canary stops taking traffic at once; the stable's 2 pods serve until it grows back to 4
    assert max(existing) <= 5 and min(ready) >= 2


def test_crashing_canary_aborts_and_a_settled_abort_moves_nothing() -> None:
    spec = canary_spec([(50, 0)])
    plan = canary.advance(spec, None, version="v2", stable="v1",
                          world=world((3, 3, 3), (1, 1, 0), canary_failure="pod c: restarted 2"))  # fmt: skip
    assert plan.aborted and plan.canary_replicas == 0 and plan.stable_replicas == 4  # 4 + 1 terminating = 5
    assert "restarted 2" in plan.reason
    again = canary.advance(spec, plan.status, version="v2", stable="v1", world=world((4, 4, 4), (0, 0, 0)))
    assert not again.aborted and again.status == plan.status.model_copy(update={"weight": 0})
    assert canary.settled(again.status, world((4, 4, 4), (0, 0, 0)))


def test_quality_runs_once_per_step_and_a_disagreement_aborts() -> None:
    spec = canary_spec([(25, 0), (50, 0)], quality={"minCosine": 0.99})
    st = canary.advance(spec, None, version="v2", stable="v1", world=world((3, 3, 3), (1, 1, 1))).status
    assert canary.quality_due(spec, st) and "the quality analysis" in st.message
    ok = canary.Measurement("Passed", (types.AnalysisValue(name="cosine", value=0.999, passed=True),), "ok")
    st = canary.advance(
        spec, st, version="v2", stable="v1", world=world((3, 3, 3), (1, 1, 1)), quality=ok
    ).status
    assert st.step == 1 and st.quality_step == 0 and canary.quality_due(spec, st) is False  # not reached yet
    st = canary.advance(spec, st, version="v2", stable="v1", world=world((2, 2, 2), (2, 2, 2))).status
    assert canary.quality_due(spec, st)
    low = types.AnalysisValue(name="cosine", value=0.4, passed=False)
    bad = canary.Measurement("Failed", (low,), "cosine 0.4")
    plan = canary.advance(spec, st, version="v2", stable="v1", world=world((2, 2, 2), (2, 2, 2)), quality=bad)
    assert plan.aborted and "cosine 0.4" in plan.reason


def test_autoscaled_canary_rides_on_the_hpas_stable() -> None:
    spec = canary_spec([(50, 0)])
    plan, existing, ready = run_canary(spec, 3, 1, passing, autoscaled=True)
    assert plan.promoted and plan.stable_replicas is None and plan.stable_version == "v2"
    assert max(existing) <= 3 + 1 and min(ready) >= 3


# ---- PromQL -------------------------------------------------------------------------------------------


def owner() -> common.Owner:
    spec = types.ModelDeploymentSpec.model_validate(
        {"version": "v2", "model": {"name": "digits", "source": {"path": "m.pt2"}},
         "storage": {"claimName": "s"},
         "monitoring": {"serviceMonitor": {"enabled": True, "interval": "2s"}}}
    )  # fmt: skip
    return common.Owner("md", "ns", "uid", spec)


def test_queries_select_the_canarys_own_series() -> None:
    analysis = types.CanaryAnalysis(
        min_success_rate=0.99, max_latency_ratio=2.0, interval_seconds=5,
        queries=[types.MetricQuery(name="up", query='sum(up{namespace="$namespace",x="$version"}[$window])',
                                   min=1)],
    )  # fmt: skip
    o = owner()
    assert promql.window_seconds(o.spec, analysis) == 6  # three 2 s scrapes beat the 5 s interval
    q = promql.queries(o, analysis, "v2", "v1", 6)
    assert q["canary_success"] == (
        'sum(increase(nv_inference_request_success{namespace="ns",service="md",model="digits",'
        'serving_conch_dev_version="v2"}[6s]))'
    )
    assert 'serving_conch_dev_version="v1"' in q["stable_duration_us"]
    assert q["query_up"] == 'sum(up{namespace="ns",x="v2"}[6s])'


@pytest.mark.parametrize(
    ("values", "result", "message"),
    [
        ({"canary_success": 99, "canary_failure": 1, "canary_duration_us": 99_000, "stable_success": 100,
          "stable_duration_us": 100_000}, "Passed", "successRate 0.99 >= 0.99"),
        ({"canary_success": 62, "canary_failure": 38, "canary_duration_us": 62_000, "stable_success": 100,
          "stable_duration_us": 100_000}, "Failed", "successRate 0.62 not >= 0.99"),
        ({"canary_success": 100, "canary_failure": 0, "canary_duration_us": 5_000_000, "stable_success": 100,
          "stable_duration_us": 100_000}, "Failed", "latencyMs 50 not <= 20; latencyRatio 50 not <= 2"),
        ({"canary_success": 3, "canary_failure": 0, "canary_duration_us": 3000}, "Inconclusive",
         "3 requests reached the canary in the last 6s (minRequests 10)"),
        ({"canary_success": None, "canary_failure": None}, "Inconclusive", "0 requests"),
        ({"canary_success": 100, "canary_failure": 0, "canary_duration_us": 100_000, "stable_success": 0},
         "Inconclusive", "no data for latencyRatio"),
    ],
)  # fmt: skip
def test_judge(values: dict[str, Any], result: str, message: str) -> None:
    analysis = types.CanaryAnalysis(
        min_success_rate=0.99, max_latency_ms=20, max_latency_ratio=2.0, min_requests=10
    )
    got = promql.judge(analysis, values, 6)
    assert got.result == result and message in got.message, got
    rate = next(v for v in got.values if v.name == "successRate")
    assert rate.bound == ">= 0.99"


def test_an_unchanged_world_keeps_the_same_status() -> None:
    """Nothing time-dependent is written between timers: a pass in the same world writes no status."""
    spec = canary_spec([(50, 60)], minSuccessRate=0.99, intervalSeconds=10)
    w = world((1, 1, 1), (1, 1, 1), total=2)
    first = canary.advance(spec, None, version="v2", stable="v1", world=w).status
    later = canary.advance(spec, first, version="v2", stable="v1", world=dataclasses.replace(w, now=T0 + 5))
    assert later.status == first and later.wait == 5


def test_a_quality_job_that_cannot_analyse_pauses_the_step() -> None:
    spec = canary_spec([(50, 0)], quality={"minCosine": 0.99})
    w = world((1, 1, 1), (1, 1, 1), total=2)
    st = canary.advance(spec, None, version="v2", stable="v1", world=w).status
    error = canary.Measurement("Unavailable", (), "quality analysis: 127.65.0.9:8000 unreachable")
    plan = canary.advance(spec, st, version="v2", stable="v1", world=w, quality=error)
    assert plan.status.phase == "Paused" and not plan.aborted and plan.status.quality_step is None
    assert plan.status.message.endswith("; quality analysis: 127.65.0.9:8000 unreachable")
    assert canary.quality_due(spec, plan.status), "retried"


def test_conditions_name_the_reason() -> None:
    def flow(running: bool, **status: Any) -> canaryflow.Flow:
        st = types.CanaryStatus(version="v2", steps=2, **status)
        return canaryflow.Flow(canary.Plan(st, "v1", 2, 0), running=running)

    paused = canaryflow.conditions(flow(True, phase="Paused", message="waiting"), "v1", "v2")
    assert paused["Progressing"] == status.Cond("Progressing", False, "AnalysisUnavailable", "waiting")
    failed = canaryflow.conditions(
        flow(False, phase="Aborted", message="latencyMs 203 not <= 100"), "v1", "v2"
    )
    assert failed["Degraded"].reason == "AnalysisFailed"
    assert failed["Degraded"].message == "canary v2 aborted at step 1/2: latencyMs 203 not <= 100; serving v1"
    crashed = canaryflow.conditions(flow(False, phase="Aborted", message="canary pods failed: x"), "v1", "v2")
    assert crashed["Degraded"].reason == "CanaryFailed"
    assert (
        canaryflow.conditions(flow(False, phase="Aborted", message="latency"), "v1", "v3") == {}
    )  # not wanted
    abandoned = canaryflow.conditions(flow(False, phase="Aborted", message="abandoned: x"), "v1", "v2")
    assert "Degraded" not in abandoned
