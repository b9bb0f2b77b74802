"""The store janitor: runs `model-repo-builder gc` Jobs so the model store does not grow forever.

History is pruned to revisionHistoryLimit and build Jobs are deleted, but repositories stay on the
store; this collects those no ModelDeployment sharing the store references any more.

When: only after something could have become unreferenced. The watch handlers (handlers.py) hand
every ModelDeployment event and every deleted pod of ours here: a key is "lost" when a
ModelDeployment's history dropped it, when the ModelDeployment was deleted, or when a pod that named
it was deleted. A namespace with lost keys is evaluated (one LIST of ModelDeployments, one of Conch's
pods) and a store gets a Job when a lost key is referenced by nothing there any more, or when keys
its last run found too young have come of age. A store first seen by
this process gets a catch-up run one grace period later (garbage left while no operator ran), not at
start: a restart does not start a Job per store. A store no ModelDeployment uses any more is left as
it is (recreating the ModelDeployment reuses its builds). An idle cluster costs no request. Only the
leader collects.

What is referenced (`referenced`, pure): every build key in the history of every ModelDeployment on
the store, and every key a pod of theirs still serves (its --model-repository argument), so a pod
that still serves a version the history dropped keeps it. Builds in flight publish new repositories
that nobody references yet: the grace period (younger is never removed) covers them, and a cache hit
refreshes the repository's age (model_repo_builder.pipeline).

The report becomes an Event on every ModelDeployment of the store (reason StoreCollected, or
StoreCollectFailed) and the metrics conch_store_gc_runs_total / conch_store_gc_removed_total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
import pydantic

from conch import errors, events, kinds, kube, status
from conch.api import types
from conch.render import common, oneshot
from conch.render import storegc as render

log = logging.getLogger(__name__)
Obj = dict[str, Any]
KEY_IN_ARG = re.compile(r"(?:^|/)([0-9a-f]{64})(?:/|$)")
RUNS = prometheus_client.Counter("conch_store_gc_runs_total", "Store collections by result", ["result"])
REMOVED = prometheus_client.Counter("conch_store_gc_removed_total", "Repositories removed from model stores")


def parse_spec(md: Obj) -> types.ModelDeploymentSpec | None:
    """The spec, or None when it does not parse (such a ModelDeployment runs no Job)."""
    with contextlib.suppress(pydantic.ValidationError):
        return types.ModelDeploymentSpec.model_validate(md.get("spec", {}))
    return None


DEFAULT_FOLDER = str(types.Storage.model_fields["repository_path"].default)


def store_of(namespace: str, md: Obj) -> render.Store | None:
    """The store a ModelDeployment's spec.storage names, read as written (None: no claim there).

    Not from the parsed spec: a ModelDeployment whose spec no longer parses (admitted before a rule,
    `x/../repositories` say) still has a Deployment serving its last version, so its history and
    pods keep their repositories like anyone's. The folder is normalised (render.Store.of)."""
    storage = (md.get("spec") or {}).get("storage") or {}
    claim, folder = storage.get("claimName"), storage.get("repositoryPath", DEFAULT_FOLDER)
    if not isinstance(claim, str) or not claim or not isinstance(folder, str):
        return None
    store = render.Store.of(namespace, claim, folder)
    if store.repository_path == "." or store.repository_path.startswith(".."):
        return None  # the store's root or outside it (only ever admitted before the rule): not collected
    return store


def keys_of(md: Obj) -> set[str]:
    """Build keys in a ModelDeployment's status (history and anything else recorded)."""
    st = md.get("status", {}) or {}
    return {h["buildKey"] for h in st.get("history", []) or [] if h.get("buildKey")}


def normal_arg(arg: str) -> str:
    """An argument with its absolute path (the whole argument, or after `--flag=`) normalised, so a
    pod of a spec that spelled its folder `x/../repositories` counts under `repositories`."""
    flag, eq, value = arg.partition("=")
    if not eq:
        flag, value = "", arg
    return flag + eq + posixpath.normpath(value) if value.startswith("/") else arg


def served_keys(pod: Obj, root: str = "") -> set[str]:
    """Build keys a pod's containers name under the store root (anywhere when root is empty)."""
    out: set[str] = set()
    for c in pod.get("spec", {}).get("containers", []) or []:
        for arg in map(normal_arg, [*(c.get("command") or []), *(c.get("args") or [])]):
            if root in arg:
                out |= set(KEY_IN_ARG.findall(arg[arg.index(root) + len(root) :]))
    return out


def claims_of(pod: Obj) -> set[str]:
    return {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("spec", {}).get("volumes", []) or []
        if v.get("persistentVolumeClaim")
    }


def referenced(
    namespace: str, mds: list[Obj], pods: list[Obj]
) -> dict[render.Store, tuple[set[str], list[Obj]]]:
    """Per store: the referenced keys, and its ModelDeployments by name (the first one whose spec
    parses lends the Job its build settings, image and placement; all of them hear about it). Stores
    are told apart by their normalised folder: two spellings of one folder are one store, keeping
    every key either side's history or pods name."""
    keys: dict[render.Store, set[str]] = {}
    users: dict[render.Store, list[Obj]] = {}
    for md in sorted(mds, key=lambda m: m["metadata"]["name"]):
        store = store_of(namespace, md)
        if store is not None:
            keys[store] = keys.get(store, set()) | keys_of(md)
            users.setdefault(store, []).append(md)
    for store in keys:
        for pod in pods:
            if store.claim in claims_of(pod):
                keys[store] |= served_keys(pod, store.root + "/")
    return {store: (keys[store], users[store]) for store in keys}


@dataclass
class Memory:
    """What the janitor remembers about one store since this process started."""

    young_until: float | None = None  # when to run again for young keys (or the catch-up run)
    job: str | None = None  # a Job of ours still running
    pending: set[str] = field(default_factory=set)  # lost keys not collected yet


def due(memory: Memory, keep: set[str], now: float) -> bool:
    """Whether a store needs a collection now."""
    if memory.job is not None:
        return False
    if memory.pending - keep:
        return True
    return memory.young_until is not None and now >= memory.young_until


@dataclass
class Janitor:
    """Evaluates dirty namespaces and follows the Jobs it started."""

    client: kube.Kube  # its own Jobs and their pods (they carry no ModelDeployment label)
    grace_seconds: int
    reader: kube.Kube | None = None  # ModelDeployments and Conch's pods (the operator's cache); None: client
    poll_seconds: float = 5.0
    pause: float = 1.0  # between rounds: 1 s (a burst of events makes one round), or 10x the last round
    stores: dict[render.Store, Memory] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    md_keys: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    lost: dict[str, set[str]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def lose(self, namespace: str | None, keys: set[str]) -> None:
        """`keys` lost a reference in `namespace` (they may be garbage now)."""
        if namespace and keys:
            self.lost.setdefault(namespace, set()).update(keys)
            self.dirty.add(namespace)
            self.wake.set()

    def observe(self, namespace: str | None, name: str, body: Obj, deleted: bool) -> None:
        """A ModelDeployment event: keys its history dropped, or all of them when it is deleted.
        A first sight marks the namespace (a store not seen yet gets its catch-up run scheduled)."""
        if not namespace:
            return
        old = self.md_keys.pop((namespace, name), None)
        new = set() if deleted else keys_of(body)
        if not deleted:
            self.md_keys[(namespace, name)] = new
        if old is None:
            self.dirty.add(namespace)
            self.wake.set()
        self.lose(namespace, (old or set()) - new)

    def pod_deleted(self, namespace: str | None, pod: Obj) -> None:
        """A pod of ours is gone: the keys it named may have lost their last reference."""
        self.lose(namespace, served_keys(pod))

    async def run(self) -> None:
        """Until cancelled: evaluate dirty namespaces, follow running Jobs, wake for young keys."""
        while True:
            timeout = self._next_wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            await asyncio.sleep(self.pause)  # let a burst of events arrive: one evaluation for all
            self.wake.clear()
            if self.client.may_write is not None and not self.client.may_write():
                continue  # a standby: the leader collects (dirty marks stay for when we lead)
            began = time.monotonic()
            try:
                await asyncio.to_thread(self.step)
            except errors.ConchError as exc:
                log.warning("store collection: %s", exc)
            # at thousands of ModelDeployments a round takes a while: during a burst of new ones
            # (each a first sight) the janitor then takes at most a tenth of the time
            self.pause = max(1.0, 10 * (time.monotonic() - began))

    def _next_wake(self) -> float | None:
        if any(m.job for m in self.stores.values()):
            return self.poll_seconds
        ages = [m.young_until for m in self.stores.values() if m.young_until is not None]
        waits = [max(0.0, t - time.time()) for t in ages] + ([self.poll_seconds] if self.dirty else [])
        return min(waits) if waits else None

    def step(self) -> None:
        """One round (blocking I/O; run in a thread)."""
        now = time.time()
        timed = {s.namespace for s, m in self.stores.items() if m.job or (m.young_until or now + 1) <= now}
        namespaces = set(self.dirty) | timed
        self.dirty.clear()
        for namespace in sorted(namespaces):
            self._namespace(namespace, now)

    def _namespace(self, namespace: str, now: float) -> None:
        reader = self.reader or self.client
        mds = reader.list(kinds.MODEL_DEPLOYMENT.path(namespace))
        pods = reader.list(kinds.POD.path(namespace), label_selector=common.LABEL_MD)
        stores = referenced(namespace, mds, pods)
        lost = self.lost.pop(namespace, set())
        for store, (keep, users) in stores.items():
            if store not in self.stores:  # first sight: a catch-up run after one grace period
                self.stores[store] = Memory(young_until=now + self.grace_seconds)
            memory = self.stores[store]
            memory.pending = (memory.pending | lost) - keep
            if memory.job is not None:
                self._follow(store, memory, users)
            elif due(memory, keep, now):
                self._start(store, memory, keep, users, now)
        for store in [s for s in self.stores if s.namespace == namespace and s not in stores]:
            del self.stores[store]  # no ModelDeployment uses it any more: nothing to compare against

    def _start(self, store: render.Store, memory: Memory, keep: set[str], mds: list[Obj], now: float) -> None:
        spec = next((s for s in map(parse_spec, mds) if s is not None), None)
        if spec is None:  # no spec to take the image and placement from: look again after a while
            memory.young_until = now + max(self.grace_seconds, 300)
            log.warning("store %s/%s: not collected, no ModelDeployment on it has a valid spec",
                        store.namespace, store.claim)  # fmt: skip
            return
        job = render.render_gc_job(store, keep, self.grace_seconds, spec, run=int(now))
        self.client.apply(kube.path_of(job), job)
        memory.job, memory.young_until, memory.pending = job["metadata"]["name"], None, set()
        log.info(
            "store %s/%s: collecting (%d keys referenced), Job %s",
            store.namespace,
            store.claim,
            len(keep),
            memory.job,
        )

    def _follow(self, store: render.Store, memory: Memory, mds: list[Obj]) -> None:
        assert memory.job is not None
        job = self.client.get(kinds.JOB.path(store.namespace, memory.job))
        if job is None:  # deleted under us: try again after a grace period
            memory.job, memory.young_until = None, time.time() + self.grace_seconds
            return
        selector = f"batch.kubernetes.io/job-name={memory.job}"
        pods = self.client.list(kinds.POD.path(store.namespace), label_selector=selector)
        report = render.parse_report(job, oneshot.termination_message(pods))
        if report is None:
            return
        memory.job = None
        if memory.pending:  # lost while the Job ran: look again
            self.dirty.add(store.namespace)
        RUNS.labels("ok" if report.ok else "failed").inc()
        if not report.ok:
            memory.young_until = time.time() + max(self.grace_seconds, 300)  # retry later
            self._tell(
                mds,
                status.Event("Warning", "StoreCollectFailed", f"model store {store.claim}: {report.error}"),
            )
            return
        REMOVED.inc(report.removed_count)
        memory.young_until = time.time() + self.grace_seconds if report.young else None
        if report.removed_count:
            self._tell(mds, status.Event("Normal", "StoreCollected", describe(store, report)))

    def _tell(self, mds: Iterable[Obj], event: status.Event) -> None:
        for md in mds:
            events.post(self.client, md, event)


def describe(store: render.Store, report: render.GcReport) -> str:
    """The Event message: what went, what it freed."""
    names = ", ".join(k[:12] for k in report.removed)
    more = (
        f" and {report.removed_count - len(report.removed)} more"
        if report.removed_count > len(report.removed)
        else ""
    )
    return (
        f"model store {store.claim}: removed {report.removed_count} unreferenced repositories "
        f"({report.freed_bytes / 2**20:.1f} MiB): {names}{more}; {report.kept} referenced kept"
    )
