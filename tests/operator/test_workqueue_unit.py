"""The work queue on a real event loop: slots, urgency, dedup, retry backoff, requeue delays."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable

import pytest

from conch import handlers, workqueue

pytestmark = pytest.mark.unit


def drive(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.005)


def test_an_edit_overtakes_a_burst_of_new_keys_and_new_keys_overtake_resyncs() -> None:
    order: list[Hashable] = []
    gate = asyncio.Event()

    async def process(key: Hashable) -> float | None:
        order.append(key)
        await gate.wait()
        return None

    async def scenario() -> None:
        queue = workqueue.WorkQueue(process, concurrency=2)
        task = asyncio.create_task(queue.run())
        queue.add("resync")  # due first, but only a resync
        for i in range(100):
            queue.add(f"new-{i}", priority=workqueue.NEW)  # never reconciled: as urgent as can be but edits
        await until(lambda: len(order) == 2)  # both slots busy with the burst
        queue.add("edited")  # a child event first, then the edit's own event
        queue.add("edited", priority=workqueue.EDIT)
        queue.add("edited")  # a later ordinary add does not demote it
        await asyncio.sleep(0.02)
        assert len(order) == 2  # no slot free: nothing else started
        gate.set()
        await until(lambda: len(order) == 102)
        task.cancel()

    drive(scenario)
    assert order[:2] == ["new-0", "new-1"]  # new objects before the resync that was due earlier
    assert order[2] == "edited"  # the first free slot went to the edit, not to new-2
    assert order[3:] == [*(f"new-{i}" for i in range(2, 100)), "resync"]  # the burst keeps its order


def test_one_key_never_runs_twice_at_once_and_an_add_meanwhile_runs_once_more() -> None:
    running = 0
    peak = 0
    runs = 0
    release = asyncio.Event()

    async def process(key: Hashable) -> float | None:
        nonlocal running, peak, runs
        running += 1
        peak = max(peak, running)
        runs += 1
        if runs == 1:
            await release.wait()
        running -= 1
        return None

    async def scenario() -> None:
        queue = workqueue.WorkQueue(process, concurrency=4)
        task = asyncio.create_task(queue.run())
        queue.add("k")
        await until(lambda: runs == 1)
        for _ in range(5):
            queue.add("k")  # collapse into one more pass, after the running one
        release.set()
        await until(lambda: runs == 2)
        await asyncio.sleep(0.05)
        task.cancel()

    drive(scenario)
    assert peak == 1 and runs == 2


def test_failures_back_off_and_success_resets_and_delays_requeue() -> None:
    times: list[float] = []

    async def process(key: Hashable) -> float | None:
        times.append(asyncio.get_running_loop().time())
        if len(times) <= 2:
            raise RuntimeError("apiserver said no")
        return 0.05 if len(times) == 3 else None  # the third pass asks for one more, 50 ms later

    async def real() -> None:
        queue = workqueue.WorkQueue(process)
        task = asyncio.create_task(queue.run())
        queue.add("k")
        await until(lambda: len(times) == 4)
        task.cancel()

    drive(real)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0  # 0.5 * 2**failures
    assert 0.04 <= gaps[2] < 1.0  # success: the pass's own delay, no backoff


@pytest.mark.parametrize(
    ("body", "priority"),
    [
        ({"metadata": {"generation": 3}, "status": {"observedGeneration": 2}}, workqueue.EDIT),
        ({"metadata": {"generation": 3}, "status": {"observedGeneration": 3}}, workqueue.NORMAL),
        ({"metadata": {"generation": 1}}, workqueue.NEW),  # never observed
        ({"metadata": {"generation": 1}, "status": None}, workqueue.NEW),
        ({"metadata": {"generation": 2}, "status": {"phase": "Building"}}, workqueue.NEW),
    ],
)
def test_edits_of_reconciled_objects_come_first_then_new_objects(
    body: dict[str, object], priority: int
) -> None:
    assert handlers.priority(body) == priority


def test_an_earlier_add_wins_a_later_one_does_not_postpone_and_forget_drops() -> None:
    ran: dict[Hashable, float] = {}

    async def process(key: Hashable) -> float | None:
        ran[key] = asyncio.get_running_loop().time()
        return None

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        queue = workqueue.WorkQueue(process)
        task = asyncio.create_task(queue.run())
        start = loop.time()
        queue.add("resynced", delay=30.0)  # an idle resync far away...
        queue.add("resynced", delay=0.05)  # ...then a child event: the earlier schedule wins
        queue.add("resynced", delay=60.0)  # a later one does not postpone it
        queue.add("gone", delay=0.05)
        queue.forget("gone")  # its object was deleted: its heap entries are dead
        queue.add("other", delay=0.1)
        await until(lambda: "other" in ran)
        await asyncio.sleep(0.05)
        assert 0.04 <= ran["resynced"] - start < 1.0
        assert "gone" not in ran and queue.pending() == 0
        task.cancel()

    drive(scenario)


def test_a_paused_queue_holds_keys_and_runs_each_once_when_resumed() -> None:
    ran: list[Hashable] = []

    async def process(key: Hashable) -> float | None:
        ran.append(key)
        return None

    async def scenario() -> None:
        queue = workqueue.WorkQueue(process, concurrency=2)
        queue.pause()
        task = asyncio.create_task(queue.run())
        for i in range(50):
            queue.add(f"k{i % 10}", delay=0.001 * i)
        await asyncio.sleep(0.1)
        assert ran == [] and queue.pending() == 10
        queue.resume()
        await until(lambda: len(ran) == 10)
        await asyncio.sleep(0.05)
        assert sorted(ran) == sorted(f"k{i}" for i in range(10))  # once each, no stale duplicates
        task.cancel()

    drive(scenario)


def test_events_go_before_timed_requeues_that_were_due_earlier() -> None:
    """A pass's own requeue (the resync, the safety net while building) is timed work: under load,
    every key an event added runs first, whatever the requeue's due time."""
    order: list[Hashable] = []
    gate = asyncio.Event()

    async def process(key: Hashable) -> float | None:
        order.append(key)
        if key == "blocker":
            await gate.wait()
            return None
        return 0.01 if len([k for k in order if k == key]) == 1 else None  # requeue itself once

    async def scenario() -> None:
        queue = workqueue.WorkQueue(process, concurrency=1)
        task = asyncio.create_task(queue.run())
        for i in range(3):
            queue.add(f"timed-{i}")
        await until(lambda: len(order) == 3)  # each ran once and asked to run again in 10 ms
        queue.add("blocker")
        await until(lambda: order[-1] == "blocker")
        await asyncio.sleep(0.05)  # the three requeues come due while the slot is taken
        for i in range(3):
            queue.add(f"event-{i}")  # due after the requeues, but event-driven
        gate.set()
        await until(lambda: len(order) == 10)
        task.cancel()

    drive(scenario)
    assert order[4:7] == ["event-0", "event-1", "event-2"]
    assert sorted(order[7:]) == ["timed-0", "timed-1", "timed-2"]
