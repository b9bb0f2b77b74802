"""Informer semantics kopf lacks: after a relist, objects that vanished meanwhile leave the cache.

A watch that resumes from a resourceVersion the apiserver no longer has (410 Gone: etcd compacted
it, or the apiserver restarted with a newer watch cache) makes kopf list the kind again and carry
on watching from the list. kopf delivers the listed objects, but never says which objects are no
longer there: their DELETED events fell into the gap. client-go's informers replace their store
with each listing; without that, `cache.Store` would keep ghosts for ever (a build Job deleted
during the gap would be waited for for ever; a deleted pod would still count as Ready).

kopf has no hook for this, so `install` wraps its per-kind stream (`continuous_watch`, one call
per listing plus the watch that follows it) and, when a listing ends, sweeps the store of that
kind and scope down to what the listing contained. It relies on kopf's internal module layout
(kopf 1.45: `kopf._cogs.clients.watching.continuous_watch` yielding `Bookmark.LISTED`); `install`
fails loudly at start if that layout changes, and tests/operator/test_op_fault_gone_cluster.py
forces a real 410 to prove the behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import prometheus_client
from kopf._cogs.clients import watching

from conch import cache

log = logging.getLogger(__name__)
LISTINGS = prometheus_client.Counter(
    "conch_watch_listings_total", "Complete listings per watched kind (1 at start; more after 410 Gone)",
    ["resource"],
)  # fmt: skip
EVICTED = prometheus_client.Counter(
    "conch_cache_evicted_total", "Cached objects a relisting showed to be gone (deleted in a watch gap)",
    ["resource"],
)  # fmt: skip
OBJECTS = prometheus_client.Gauge("conch_cache_objects", "Objects held by the watch-fed cache", ["resource"])
BYTES = prometheus_client.Gauge(
    "conch_cache_bytes", "Bytes the watch-fed cache holds (objects as deflated JSON)", ["resource"]
)
_installed: list[Callable[..., AsyncIterator[Any]]] = []


def install(store: cache.Store) -> None:
    """Wrap kopf's stream once per process, so each listing sweeps `store`."""
    if _installed:
        return
    if not hasattr(watching, "Bookmark") or not hasattr(watching.Bookmark, "LISTED"):
        raise RuntimeError("kopf's watching module changed: relist sweeping cannot be installed")
    _installed.append(watching.continuous_watch)
    watching.continuous_watch = sweeping(watching.continuous_watch, store)
    for _, plural in cache.CACHED_KINDS:
        OBJECTS.labels(plural).set_function(_of(store.counts, plural))
        BYTES.labels(plural).set_function(_of(store.sizes, plural))


def sweeping(
    original: Callable[..., AsyncIterator[Any]], store: cache.Store
) -> Callable[..., AsyncIterator[Any]]:
    """`original` (kopf's stream of one kind: a listing, `Bookmark.LISTED`, then watch events),
    sweeping `store` when the listing is complete."""

    async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
        resource, namespace = kwargs["resource"], kwargs["namespace"]
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        listing, listed, mark = True, set[tuple[str, str]](), store.mark()
        async for item in original(**kwargs):
            if item is watching.Bookmark.LISTED and listing:
                listing = False
                gone = store.sweep(api_version, resource.plural, namespace, listed, mark)
                _listed(resource.plural, namespace, gone)
            elif listing and isinstance(item, dict) and item.get("type") is None:
                meta = (item.get("object") or {}).get("metadata") or {}
                listed.add((meta.get("namespace") or "", meta.get("name") or ""))
            yield item

    return continuous_watch


def _listed(plural: str, namespace: str | None, gone: int) -> None:
    LISTINGS.labels(plural).inc()
    if gone:
        EVICTED.labels(plural).inc(gone)
        where = f"in {namespace}" if namespace else "cluster-wide"
        log.info(
            "relisted %s %s: %d cached objects were deleted while unwatched, dropped", plural, where, gone
        )


def _of(per_plural: Callable[[], dict[str, int]], plural: str) -> Callable[[], float]:
    return lambda: float(per_plural().get(plural, 0))
