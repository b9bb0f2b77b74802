"""Thin kopf wiring: watch events only enqueue keys; the work queue runs `controller.reconcile`.

kopf supplies the watches (ModelDeployments, and the children that carry our label, selected by the
apiserver: `labelSelector=` on every list and watch of CHILD_RESOURCES), the process
lifecycle and the liveness probe. Event handlers keep no state on the objects (no finalizers, no
progress annotations), so an idle operator writes nothing. Errors are counted here and retried by
the work queue with its one backoff policy (workqueue.py); kopf never sees them, so no kopf retry
semantics apply. With leader election (`configure`), the queue runs only while this replica holds
the Lease, and the API client refuses writes the moment the Lease is not renewed in time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from conch import (
    cache,
    controller,
    errors,
    events,
    kinds,
    kube,
    leader,
    metrics,
    relist,
    retry,
    storegc,
    workqueue,
)
from conch.render import common

log = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass(frozen=True)
class LeaderElection:
    """Where the Lease lives and who this replica is (main.py fills it from flags)."""

    namespace: str
    name: str
    identity: str
    timing: leader.Timing


@dataclass
class Runtime:
    """The operator's process-wide state: API client, queue and its dispatcher task(s)."""

    client: kube.Kube
    queue: workqueue.WorkQueue
    tasks: list[asyncio.Task[None]]
    janitor: storegc.Janitor | None = None


@dataclass(frozen=True)
class Options:
    """Process-wide settings main.py derives from flags."""

    election: LeaderElection | None = None
    exact_namespaces: bool = False  # every --namespace is a plain name: kopf need not list namespaces
    store_gc_grace_seconds: int | None = 86400  # None: never collect the model stores
    workers: int = 4  # reconcile passes at once
    cached_reads: bool = True  # passes read the watched kinds from the watch-fed cache (cache.py)
    kube_api_qps: float = 100.0  # client-side rate limit of the reconcile and janitor requests
    kube_api_burst: int = 200


_runtime: list[Runtime] = []
_options: list[Options] = [Options()]
_store = cache.Store()
relist.install(_store)  # before kopf starts its watches: each listing sweeps the cache
_MD = kinds.MODEL_DEPLOYMENT


def configure(options: Options) -> None:
    """Set before kopf starts (a namespaced install's RBAC grants no cluster-wide namespace access,
    hence exact_namespaces)."""
    _options[0] = options


async def _process(key: Any) -> float | None:
    namespace, name = key
    client = _runtime[0].client
    with metrics.RECONCILE_SECONDS.time():
        try:
            delay = await asyncio.to_thread(controller.reconcile, client, namespace, name)
        except errors.ConchError as exc:
            metrics.RECONCILES.labels("error").inc()
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            raise
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            metrics.RECONCILE_ERRORS.labels("unexpected").inc()
            raise
    metrics.RECONCILES.labels("ok").inc()
    return delay


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base serves on.create/update/field handlers, which this operator has none of; the
    default one still deep-copies every body of every event to build it (about 7% of the operator's
    CPU in bench_scale at N=1000). Everything here is level-based: an event only queues a key."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()  # a fresh one: kopf may edit what it gets

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Configure kopf for a level-based controller and start the work queue."""
    options = _options[0]
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.persistence.diffbase_storage = NoDiffBase()  # no change-detecting handlers: no diff base
    settings.scanning.disabled = options.exact_namespaces  # no namespace/CRD observation beyond the start
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Server-side: the apiserver streams only our children (kopf's `labels=` filter is client-side,
    # so without this every Pod, Job, ... in scope would be listed, watched and discarded here).
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = common.LABEL_MD
    plain = kube.Kube.from_environment()
    # Unwatched children (the admin-key Secret) are remembered for half a resync, so every resync
    # pass reads them again: a Secret deleted by hand (no event tells) is back by the next resync.
    ttl = controller.IDLE_REQUEUE / 2
    client = cache.CachedKube(plain.api, _store, unwatched_ttl=ttl) if options.cached_reads else plain
    # one bucket for both (the Lease client has none: a renewal never queues behind a burst)
    plain.limiter = client.limiter = kube.TokenBucket(options.kube_api_qps, options.kube_api_burst)
    queue = workqueue.WorkQueue(_process, concurrency=options.workers)
    events.start()  # a pass queues its Events and goes on
    tasks = [asyncio.create_task(queue.run())]
    if options.election is not None:
        tasks.append(asyncio.create_task(_campaign(options.election, [client, plain], queue).run()))
    janitor = None
    if options.store_gc_grace_seconds is not None:
        janitor = storegc.Janitor(plain, options.store_gc_grace_seconds, reader=client)  # its Jobs: plain
        tasks.append(asyncio.create_task(janitor.run()))
    _runtime[:] = [Runtime(client, queue, tasks, janitor)]


def _campaign(
    election: LeaderElection, clients: list[kube.Kube], queue: workqueue.WorkQueue
) -> leader.Elector:
    """Pause the queue until this replica leads; guard every write of `clients` with the Lease."""
    lease_client = kube.Kube.from_environment()  # its own client: the Lease writes are not guarded
    lease_client.timeout = election.timing.retry_period * 2
    lease_client.backoff = retry.NONE  # the campaign's loop is its retry: a round never outlives the deadline
    elector = leader.Elector(
        lease_client, election.namespace, election.name, election.identity, timing=election.timing,
        on_change=lambda leading: queue.resume() if leading else queue.pause(),
    )  # fmt: skip
    queue.pause()
    for client in clients:
        client.may_write = elector.leading
    clients[0].api.user_agent = f"{clients[0].api.user_agent} ({election.identity})"  # shared ApiClient
    return elector


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """Stop the queue dispatcher and the campaign (the Lease then expires; client-go's
    ReleaseOnCancel would hand it over sooner, at the cost of a write racing a successor)."""
    for runtime in _runtime:
        for task in runtime.tasks:
            task.cancel()
    await asyncio.to_thread(events.stop)  # what the passes recorded, for at most 5 s


def _enqueue(namespace: str | None, name: str | None, priority: int = workqueue.NORMAL) -> None:
    if _runtime and namespace and name:
        _runtime[0].queue.add((namespace, name), priority=priority)


def priority(body: Mapping[str, Any]) -> int:
    """EDIT: a spec change to a ModelDeployment the operator has reconciled before (generation ahead
    of a recorded observedGeneration); NEW: one it has never reconciled; NORMAL: nothing unseen."""
    generation = body.get("metadata", {}).get("generation", 0)
    observed = (body.get("status") or {}).get("observedGeneration")
    if not observed:
        return workqueue.NEW
    return workqueue.EDIT if generation > observed else workqueue.NORMAL


@kopf.on.event(_MD.group, _MD.version, _MD.plural)
async def modeldeployment_event(event: kopf.RawEvent, name: str, namespace: str | None, **_: Any) -> None:
    """Any change to a ModelDeployment (and the initial listing on start) queues a pass."""
    deleted = event.get("type") == "DELETED"
    if deleted:
        _store.observe(dict(event.get("object") or {}), deleted=True)
    if _runtime and _runtime[0].janitor is not None:
        _runtime[0].janitor.observe(namespace, name, dict(event.get("object") or {}), deleted)
    if deleted:
        if _runtime:
            _runtime[0].queue.forget((namespace or "", name))
        controller.forget(namespace or "", name)
        return
    _enqueue(namespace, name, priority(event.get("object") or {}))  # edits first, then new objects


_CHILD = {common.LABEL_MD: kopf.PRESENT}
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = tuple(
    (k.group, k.version, k.plural) for k in kinds.WATCHED_CHILDREN
)


async def child_event(
    event: kopf.RawEvent, labels: Mapping[str, str], namespace: str | None, **_: Any
) -> None:
    """A child changed or vanished (rollout progress, a build finishing, drift, a deletion): queue its
    owner. ServiceMonitors (an optional CRD) are corrected by the idle resync instead. A deleted pod
    may have been the last to serve a repository: the store janitor looks again."""
    body = dict(event.get("object") or {})
    if event.get("type") == "DELETED":
        _store.observe(body, deleted=True)
        if body.get("kind") == "Pod" and _runtime and _runtime[0].janitor:
            _runtime[0].janitor.pod_deleted(namespace, body)
    _enqueue(namespace, labels.get(common.LABEL_MD))


def cache_index(body: kopf.Body, **_: Any) -> None:
    """Feeds the cache with every object the watches deliver (deletions come through the event
    handlers). Being a kopf index, it also makes kopf hold every handler back until the initial
    listing of every watched kind is complete: no pass ever reads a half-filled cache."""
    _store.observe(dict(body))


kopf.index(_MD.group, _MD.version, _MD.plural)(cache_index)
for _group, _version, _plural in CHILD_RESOURCES:  # one list for the handlers, the selectors, the cache
    kopf.on.event(_group, _version, _plural, labels=_CHILD)(child_event)
    kopf.index(_group, _version, _plural, labels=_CHILD)(cache_index)
