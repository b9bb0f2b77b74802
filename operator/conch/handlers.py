"""Thin kopf wiring: watch events only enqueue keys; the work queue runs `controller.reconcile`.

kopf supplies the watches (ModelDeployments, and the children that carry our label, selected by the
apiserver: `labelSelector=` on every list and watch of CHILD_RESOURCES), the process
lifecycle and the liveness probe. Event handlers keep no state on the objects (no finalizers, no
progress annotations), so an idle operator writes nothing. Domain errors are translated here:
an invalid spec waits for the next spec change, anything else is retried by the queue with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from conch import controller, errors, kube, metrics, workqueue
from conch.api import types
from conch.render import common

log = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass
class Runtime:
    """The operator's process-wide state: API client, queue and its dispatcher task."""

    client: kube.Kube
    queue: workqueue.WorkQueue
    task: asyncio.Task[None]


_runtime: list[Runtime] = []


async def _process(key: Any) -> float | None:
    namespace, name = key
    client = _runtime[0].client
    with metrics.RECONCILE_SECONDS.time():
        try:
            delay = await asyncio.to_thread(controller.reconcile, client, namespace, name)
        except errors.ConchError as exc:
            metrics.RECONCILES.labels("error").inc()
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            raise kopf.TemporaryError(str(exc), delay=1) from exc
        except Exception as exc:
            metrics.RECONCILES.labels("error").inc()
            metrics.RECONCILE_ERRORS.labels("unexpected").inc()
            raise kopf.TemporaryError(f"unexpected: {exc!r}") from exc
    metrics.RECONCILES.labels("ok").inc()
    return delay


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Configure kopf for a level-based controller and start the work queue."""
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Server-side: the apiserver streams only our children (kopf's `labels=` filter is client-side,
    # so without this every Pod, Job, ... in scope would be listed, watched and discarded here).
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = common.LABEL_MD
    client = kube.Kube.from_environment()
    queue = workqueue.WorkQueue(_process)
    _runtime[:] = [Runtime(client, queue, asyncio.create_task(queue.run()))]


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """Stop the queue dispatcher."""
    for runtime in _runtime:
        runtime.task.cancel()


def _enqueue(namespace: str | None, name: str | None) -> None:
    if _runtime and namespace and name:
        _runtime[0].queue.add((namespace, name))


@kopf.on.event(types.GROUP, types.VERSION, types.PLURAL)
async def modeldeployment_event(event: kopf.RawEvent, name: str, namespace: str | None, **_: Any) -> None:
    """Any change to a ModelDeployment (and the initial listing on start) queues a pass."""
    if event.get("type") == "DELETED":
        if _runtime:
            _runtime[0].queue.forget((namespace or "", name))
        return
    _enqueue(namespace, name)


_CHILD = {common.LABEL_MD: kopf.PRESENT}
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("apps", "v1", "deployments"),
    ("batch", "v1", "jobs"),
    ("", "v1", "pods"),
    ("", "v1", "services"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
)


async def child_event(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A child changed or vanished (rollout progress, a build finishing, drift, a deletion): queue its
    owner. ServiceMonitors (an optional CRD) are corrected by the idle resync instead."""
    _enqueue(namespace, labels.get(common.LABEL_MD))


for _group, _version, _plural in CHILD_RESOURCES:  # one list for the handlers and the selectors
    kopf.on.event(_group, _version, _plural, labels=_CHILD)(child_event)
