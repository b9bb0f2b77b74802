"""A keyed, deduplicating, delayed work queue: the heart of a level-based controller.

Watch events only add keys; one key is never processed by two workers at once; a key added while
it is being processed runs once more afterwards; failures are retried with capped exponential
backoff; a successful pass may ask to run again after a delay (a resync). Nothing is lost when
events arrive in bursts: many adds of one key collapse into one pass. Keys are dispatched only into
free worker slots by priority, then by due time: an edit of an object the operator has already
reconciled (a user waits for it) before a new object, a new object before a child event, and a
child event before timed work (a pass's own requeue: the resync, the 30 s safety net while building,
canary pauses, retries). So a burst of a thousand new objects cannot queue in front of one edit, and
timed passes of 5000 objects cannot queue in front of the events that carry progress (at 5000
ModelDeployments, first in first out made a Deployment's "available" wait 11 minutes for its pass
behind 167 safety-net passes a second). Timed work starves only while events alone fill every slot.
A paused
queue (a replica that is not the leader) keeps collecting keys and dispatches none; resumed, it runs
every key it holds.

Retry policy (the one policy for every reconcile error): a pass that raises is retried after
0.5 s x 2^failures, capped at MAX_BACKOFF; the count resets after a successful pass. A pass that
failed on an apiserver that kept answering 429/5xx with a Retry-After (errors.ApiUnavailableError, after the
client's own retries) runs again no earlier than that (capped at MAX_BACKOFF too). A pass that
succeeds may return a delay to run again (timed work: deadlines, canary pauses, the idle resync).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable

from conch import errors

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0

Process = Callable[[Hashable], Awaitable[float | None]]
EDIT, NEW, NORMAL, TIMED = 0, 1, 2, 3  # priorities: lower runs first


def retry_delay(exc: Exception, failures: int) -> float:
    """Seconds before a failed pass runs again: the backoff, or the server's Retry-After if later."""
    delay = 0.5 * 2.0**failures
    if isinstance(exc, errors.ApiUnavailableError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    return min(MAX_BACKOFF, delay)


class WorkQueue:
    """Run `process(key)` for added keys, at most `concurrency` at a time.

    Keys wait in two heaps, so a dispatch costs O(log n) whatever the number of keys (a scan of every
    pending key on each wake-up was a tenth of the operator's CPU at 1000 ModelDeployments): timers
    by due time, and the due ones by (priority, due time). An add that changes a key's due time or
    priority pushes a new entry; older entries of that key are recognised by their sequence number
    and dropped when they surface.
    """

    def __init__(self, process: Process, concurrency: int = 4) -> None:
        self._process = process
        self._due: dict[Hashable, float] = {}  # pending keys -> when they are due (the truth)
        self._priority: dict[Hashable, int] = {}  # pending keys above NORMAL priority
        self._entry: dict[Hashable, int] = {}  # pending keys -> sequence number of their live entry
        self._timers: list[tuple[float, int, Hashable]] = []  # (due, sequence, key)
        self._ready: list[tuple[int, float, int, Hashable]] = []  # (priority, due, sequence, key)
        self._parked: set[Hashable] = set()  # due while a pass of theirs runs: pushed when it ends
        self._sequence = itertools.count()
        self._running: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._concurrency = concurrency
        self._active = True

    def pause(self) -> None:
        """Stop dispatching (passes already running finish; their writes are refused if not leading)."""
        self._active = False

    def resume(self) -> None:
        """Dispatch again, at once, every key held (a new leader takes nothing on trust)."""
        self._active = True
        now = asyncio.get_running_loop().time()
        for key in self._due:
            self._due[key] = now
            self._push(key)
        self._wake.set()

    def pending(self) -> int:
        """Keys waiting to run."""
        return len(self._due)

    def add(self, key: Hashable, delay: float = 0.0, priority: int = NORMAL) -> None:
        """Schedule `key` to run after `delay` seconds (an earlier schedule wins); of the keys that
        are due, those of a lower `priority` (EDIT, NEW, NORMAL, TIMED) go first (the most urgent
        add wins)."""
        due = asyncio.get_running_loop().time() + delay
        changed = False
        if key not in self._due:
            self._due[key], changed = due, True
            if priority != NORMAL:
                self._priority[key] = priority
        elif due < self._due[key]:
            self._due[key], changed = due, True
        if priority < self._priority.get(key, NORMAL):
            self._priority[key], changed = priority, True
        if changed:
            self._push(key)
            self._wake.set()

    def forget(self, key: Hashable) -> None:
        """Drop a pending key (its object is gone)."""
        self._drop(key)
        self._failures.pop(key, None)

    def _push(self, key: Hashable) -> None:
        sequence = next(self._sequence)
        self._entry[key] = sequence
        self._parked.discard(key)
        heapq.heappush(self._timers, (self._due[key], sequence, key))

    def _drop(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._priority.pop(key, None)
        self._entry.pop(key, None)
        self._parked.discard(key)

    def _promote(self, now: float) -> None:
        """Move the timers that are due into the ready heap."""
        while self._timers and self._timers[0][0] <= now:
            due, sequence, key = heapq.heappop(self._timers)
            if self._entry.get(key) == sequence:
                heapq.heappush(self._ready, (self._priority.get(key, NORMAL), due, sequence, key))

    def _next_ready(self) -> Hashable | None:
        """The most urgent due key that is not running (None: none)."""
        while self._ready:
            _, _, sequence, key = heapq.heappop(self._ready)
            if self._entry.get(key) != sequence:
                continue  # superseded by a later add, or dispatched
            if key in self._running:
                self._parked.add(key)  # runs again when its pass ends
                continue
            return key
        return None

    def _next_timer(self) -> float | None:
        while self._timers and self._entry.get(self._timers[0][2]) != self._timers[0][1]:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def run(self) -> None:
        """Dispatch due keys until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._promote(loop.time())
            free = self._concurrency - len(self._running) if self._active else 0
            while free > 0 and (key := self._next_ready()) is not None:
                self._drop(key)
                self._running.add(key)
                task = asyncio.create_task(self._work(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                free -= 1
            # full slots: the next finishing pass wakes us; else the next due key does
            nxt = self._next_timer() if free > 0 else None
            timeout = max(0.0, nxt - loop.time()) if nxt is not None else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self, key: Hashable) -> None:
        delay: float | None = None
        try:
            delay = await self._process(key)
            self._failures.pop(key, None)
        except Exception as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = retry_delay(exc, failures)
            log.exception("reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
        finally:
            self._running.discard(key)
            if key in self._parked:
                self._push(key)  # added while it ran: once more, now
            if delay is not None:
                self.add(key, delay, priority=TIMED)
            self._wake.set()
