"""Leader election's pure parts: the candidate's decision table, the Lease it writes, its timing rules,
and the work queue's pause/resume (a standby replica collects keys and runs none)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from conch import leader, workqueue

pytestmark = pytest.mark.unit

T = leader.Timing(lease_duration=15, renew_deadline=10, retry_period=2)


def seen(holder: str, changed_at: float = 100.0) -> leader.Seen:
    return leader.Seen(holder=holder, resource_version="7", transitions=3, changed_at=changed_at)


@pytest.mark.parametrize(
    ("observed", "now", "action"),
    [
        (None, 100.0, "create"),  # no Lease yet
        (seen("me"), 100.0, "renew"),  # ours: keep it
        (seen("me", changed_at=0.0), 1000.0, "renew"),  # ours even if we were slow
        (seen("other"), 100.0, "wait"),  # just renewed by someone else
        (seen("other"), 114.9, "wait"),  # not yet expired on our clock
        (seen("other"), 115.0, "takeover"),  # unchanged for a whole lease duration
        (seen(""), 100.0, "takeover"),  # released
    ],
)
def test_candidate_decision(observed: leader.Seen | None, now: float, action: str) -> None:
    assert leader.decide(observed, "me", now, T) == action


@pytest.mark.parametrize(
    "timing",
    [(15, 15, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2)],
    ids=["renew=lease", "retry=renew", "zero", "inv"],
)
def test_timing_must_let_a_leader_stop_before_a_successor_starts(timing: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        leader.Timing(*timing)


def test_lease_body_carries_the_read_version_for_optimistic_concurrency() -> None:
    body = leader.render_lease(
        "ns", "conch", "me", timing=T, wall=0.0, acquired="2026-01-01T00:00:00.000000Z", transitions=4,
        resource_version="42",
    )  # fmt: skip
    assert body["metadata"] == {"name": "conch", "namespace": "ns", "resourceVersion": "42"}
    assert body["spec"] == {
        "holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-01-01T00:00:00.000000Z",
        "renewTime": "1970-01-01T00:00:00.000000Z", "leaseTransitions": 4,
    }  # fmt: skip


def test_paused_queue_collects_keys_and_resumed_runs_each_once_at_once() -> None:
    ran: list[Hashable] = []

    async def process(key: Hashable) -> float | None:
        ran.append(key)
        return None

    async def scenario() -> None:
        queue = workqueue.WorkQueue(process)
        queue.pause()
        task = asyncio.create_task(queue.run())
        for key in ("a", "b", "a"):
            queue.add(key)
        queue.add("later", delay=3600)  # a resync far away: a new leader runs it now
        await asyncio.sleep(0.05)
        assert ran == [] and queue.pending() == 3
        queue.resume()
        for _ in range(100):
            if len(ran) == 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert sorted(map(str, ran)) == ["a", "b", "later"]
