"""relist.sweeping on a scripted kopf stream: a relisting after 410 Gone drops the cache's ghosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kopf._cogs.clients import watching
from kopf._cogs.structs import references

from conch import cache, relist

pytestmark = pytest.mark.unit
PODS = references.Resource(group="", version="v1", plural="pods")


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}}


def test_a_relisting_sweeps_what_vanished_in_the_gap_and_passes_every_item_on() -> None:
    store = cache.Store()
    for name in ("a", "deleted-in-the-gap"):
        store.observe(pod(name))  # what the first watch delivered

    async def kopf_stream(**_: Any) -> AsyncIterator[Any]:  # a relisting, then the watch
        yield {"type": None, "object": pod("a")}
        yield {"type": None, "object": pod("b")}
        yield watching.Bookmark.LISTED
        yield {"type": "ADDED", "object": pod("c")}

    async def consume() -> list[Any]:
        stream = relist.sweeping(kopf_stream, store)
        return [item async for item in stream(resource=PODS, namespace="ns")]

    before = relist.EVICTED.labels("pods")._value.get()
    items = asyncio.run(consume())
    assert len(items) == 4 and items[2] is watching.Bookmark.LISTED  # kopf sees its stream unchanged
    assert store.get("v1", "pods", "ns", "deleted-in-the-gap") is None
    assert store.get("v1", "pods", "ns", "a") is not None
    assert relist.EVICTED.labels("pods")._value.get() == before + 1


def test_install_wraps_kopfs_stream_once() -> None:
    from conch import handlers  # noqa: F401  (installs at import, before kopf starts watching)

    assert watching.continuous_watch is not relist._installed[0]
    assert watching.continuous_watch.__qualname__.startswith("sweeping")
    relist.install(cache.Store())  # a second call changes nothing
    assert len(relist._installed) == 1
