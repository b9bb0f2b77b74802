"""Events leave a reconcile pass without waiting for the apiserver.

An Event is a record for people (`kubectl describe`), not state: nothing in Conch reads one back.
Posting it inside the pass made every transition cost the pass a round trip (a new ModelDeployment's
passes posted five, at 50-100 ms each on a loaded apiserver), and a pass holds one of the few worker
slots. As client-go's EventBroadcaster does, the operator hands Events to a recorder instead: a
bounded queue drained by four sender threads. The Event keeps the time it was recorded, not sent.
When the queue is full (an apiserver that stopped answering), new Events are dropped and counted,
never waited for; a pass never blocks on one. Without a running recorder (tools, tests), `post`
sends at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import prometheus_client

from conch import clock, errors, kinds, kube, status

Obj = dict[str, Any]
log = logging.getLogger(__name__)
DROPPED = prometheus_client.Counter(
    "conch_events_dropped_total", "Events not posted because the recorder's queue was full"
)
CAPACITY = 1000  # client-go's broadcaster queues as many
SENDERS = 4


def body(md: Obj, event: status.Event, stamp: str) -> Obj:
    """A core/v1 Event about the ModelDeployment `md`, as recorded at `stamp`."""
    meta = md["metadata"]
    return {
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


def send(client: kube.Kube, event: Obj) -> None:
    """POST one Event (best effort: a failure, or a replica that no longer leads, is logged, never raised)."""
    try:
        client.create(kinds.EVENT.path(event["metadata"]["namespace"]), event)
    except errors.ConchError as exc:  # KubeError, NotLeaderError
        log.warning("could not post event %s: %s", event["reason"], exc)


class Recorder:
    """A bounded queue of Events and the threads that post them."""

    def __init__(self, capacity: int = CAPACITY, senders: int = SENDERS) -> None:
        self._queue: queue.Queue[tuple[kube.Kube, Obj] | None] = queue.Queue(capacity)
        self._threads = [
            threading.Thread(target=self._drain, name=f"conch-events-{i}", daemon=True)
            for i in range(senders)
        ]
        for thread in self._threads:
            thread.start()

    def record(self, client: kube.Kube, event: Obj) -> bool:
        """Queue `event` for `client` to post; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((client, event))
        except queue.Full:
            DROPPED.inc()
            log.warning("event queue full: dropped %s %s", event["reason"], event["involvedObject"]["name"])
            return False
        return True

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                send(*item)
            except Exception:  # a sender thread must outlive any one Event
                log.exception("posting an event failed")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def close(self, timeout: float) -> None:
        """Post what is queued (for at most `timeout` seconds), then stop the senders."""
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
        for thread in self._threads:
            thread.join(timeout)


_running: list[Recorder] = []


def start() -> Recorder:
    """Post Events from now on through a recorder (the operator's startup)."""
    if not _running:
        _running.append(Recorder())
    return _running[0]


def stop(timeout: float = 5.0) -> None:
    """Flush and stop the recorder (the operator's cleanup)."""
    while _running:
        _running.pop().close(timeout)


def post(client: kube.Kube, md: Obj, event: status.Event) -> None:
    """Record an Event about `md`: queued when a recorder runs, else sent now."""
    meta = md["metadata"]
    log.info("%s/%s: %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
    obj = body(md, event, clock.now())
    if _running:
        _running[0].record(client, obj)
    else:
        send(client, obj)
