"""A keyed, deduplicating, delayed work queue: the heart of a level-based controller.

Watch events only add keys; one key is never processed by two workers at once; a key added while
it is being processed runs once more afterwards; failures are retried with capped exponential
backoff; a successful pass may ask to run again after a delay (a resync). Nothing is lost when
events arrive in bursts: many adds of one key collapse into one pass. Keys are dispatched only into
free worker slots by priority, then by due time: an edit of an object the operator has already
reconciled (a user waits for it) before a new object, a new object before everything else (child
events, resyncs), so a burst of a thousand new objects cannot queue in front of one edit. A paused
queue (a replica that is not the leader) keeps collecting keys and dispatches none; resumed, it runs
every key it holds.

Retry policy (the one policy for every reconcile error): a pass that raises is retried after
0.5 s x 2^failures, capped at MAX_BACKOFF; the count resets after a successful pass. A pass that
succeeds may return a delay to run again (timed work: deadlines, canary pauses, the idle resync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0

Process = Callable[[Hashable], Awaitable[float | None]]
EDIT, NEW, NORMAL = 0, 1, 2  # priorities: lower runs first


class WorkQueue:
    """Run `process(key)` for added keys, at most `concurrency` at a time."""

    def __init__(self, process: Process, concurrency: int = 4) -> None:
        self._process = process
        self._due: dict[Hashable, float] = {}
        self._running: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._concurrency = concurrency
        self._priority: dict[Hashable, int] = {}  # keys above NORMAL priority until dispatched
        self._active = True

    def pause(self) -> None:
        """Stop dispatching (passes already running finish; their writes are refused if not leading)."""
        self._active = False

    def resume(self) -> None:
        """Dispatch again, at once, every key held (a new leader takes nothing on trust)."""
        self._active = True
        now = asyncio.get_running_loop().time()
        self._due = dict.fromkeys(self._due, now)
        self._wake.set()

    def pending(self) -> int:
        """Keys waiting to run."""
        return len(self._due)

    def add(self, key: Hashable, delay: float = 0.0, priority: int = NORMAL) -> None:
        """Schedule `key` to run after `delay` seconds (an earlier schedule wins); of the keys that
        are due, those of a lower `priority` (EDIT, NEW, NORMAL) go first (the most urgent add wins)."""
        due = asyncio.get_running_loop().time() + delay
        if key not in self._due or due < self._due[key]:
            self._due[key] = due
        if priority < self._priority.get(key, NORMAL):
            self._priority[key] = priority
        self._wake.set()

    def forget(self, key: Hashable) -> None:
        """Drop a pending key (its object is gone)."""
        self._due.pop(key, None)
        self._priority.pop(key, None)
        self._failures.pop(key, None)

    async def run(self) -> None:
        """Dispatch due keys until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            free = self._concurrency - len(self._running) if self._active else 0
            ready = [k for k, due in self._due.items() if due <= now and k not in self._running]
            ready.sort(key=lambda k: (self._priority.get(k, NORMAL), self._due[k]))
            for key in ready[: max(0, free)]:
                del self._due[key]
                self._priority.pop(key, None)
                self._running.add(key)
                task = asyncio.create_task(self._work(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # full slots: the next finishing pass wakes us; else the next due key does
            waiting = [d for k, d in self._due.items() if k not in self._running] if free > len(ready) else []
            timeout = max(0.0, min(waiting) - loop.time()) if waiting else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self, key: Hashable) -> None:
        delay: float | None = None
        try:
            delay = await self._process(key)
            self._failures.pop(key, None)
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(MAX_BACKOFF, 0.5 * 2**failures)
            log.exception("reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
        finally:
            self._running.discard(key)
            if delay is not None:
                self.add(key, delay)
            self._wake.set()
