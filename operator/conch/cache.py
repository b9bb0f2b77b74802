"""A watch-fed cache of ModelDeployments and their children, so that a reconcile pass reads nothing
from the apiserver.

kopf already streams every ModelDeployment and every child carrying our label (server-side label
selector, handlers.py). Each event lands here (`Store.observe`); kopf's indexing barrier
(handlers.py registers an index per watched kind) holds every handler back until the initial
listing of all those kinds is complete, so by the time the first pass runs the store is complete
for the watched scope. `CachedKube` then answers GETs and LISTs of those kinds from the store and
sends everything else (Secrets, ServiceMonitors, Events, writes) to the apiserver. Its writes go
through to the store at once (the object the apiserver returned), so a pass never reads something
older than its own write; the watch event that follows carries the same object. A read that is
stale anyway (an event in flight) cannot do harm: children are applied with server-side apply under
deterministic names (idempotent), and the status write carries the resourceVersion it was computed
from (apply.apply_status), so a pass that read an old ModelDeployment gets 409 and runs again.

Only objects with the ModelDeployment label are streamed: the cache is authoritative for those
alone, so callers that read other objects of these kinds (the store janitor's Jobs) use the plain
client.

Kinds that are not watched (the admin-key Secret, whose RBAC is get/create/patch and never list or
watch; ServiceMonitors, an optional CRD; NetworkPolicies) are remembered for `unwatched_ttl` seconds
(the operator sets half its resync) after a read or our own write, so a pass between resyncs asks
nothing: someone else's edit to them, or their deletion, is corrected by the next resync pass instead
of at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import conch
from conch import kinds, kube
from conch.render import common

Obj = dict[str, Any]
CACHED_KINDS: frozenset[tuple[str, str]] = frozenset(
    (k.api_version, k.plural) for k in kinds.ALL if k.watched
)
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<gv>[^/]+/[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)


def parse_path(url: str) -> tuple[str, str, str, str | None] | None:
    """(apiVersion, plural, namespace, name or None) of a namespaced REST path of a cached kind."""
    m = _PATH.match(url.split("?", 1)[0])
    if m is None:
        return None
    api_version = m.group("core") or m.group("gv")
    if (api_version, m.group("plural")) not in CACHED_KINDS:
        return None
    return api_version, m.group("plural"), m.group("ns"), m.group("name")


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality (`k=v`, `k==v`, `k!=v`) and existence (`k`, `!k`) requirements, comma-separated."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def slim(obj: Obj) -> Obj:
    """What the cache keeps of an object (client-go's informer transforms do the same): never
    managedFields (often half an object's size), and of a Pod's spec only nodeName, its containers'
    command and args and its claim volumes: a pass reads a pod's labels and status (readiness,
    container states, termination message, IP), the store janitor the repositories it serves, and
    pods are most of what is cached (a build pod per version plus every serving replica). The
    caller's object is left as it was."""
    meta = obj.get("metadata") or {}
    if "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    if obj.get("kind") == "Pod" and "spec" in obj:
        obj = {**obj, "spec": _pod_spec(obj["spec"])}
    return obj


def _pod_spec(spec: Obj) -> Obj:
    kept: Obj = {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {}
    containers = [
        {k: c[k] for k in ("name", "command", "args") if k in c} for c in spec.get("containers") or []
    ]
    claims = [v for v in spec.get("volumes") or [] if v.get("persistentVolumeClaim")]
    if any(len(c) > 1 for c in containers):
        kept["containers"] = containers
    if claims:
        kept["volumes"] = claims
    return kept


Key = tuple[str, str, str, str]  # (apiVersion, plural, namespace, name)
Scope = tuple[str, str, str]  # (apiVersion, plural, namespace)


class Store:
    """The objects the watches delivered, keyed by (apiVersion, plural, namespace, name).

    Each object is kept as its compact JSON (bytes), not as parsed dicts: at thousands of
    ModelDeployments the cache is most of the operator's memory, and a dict tree costs several
    times its JSON. That JSON is deflated with a preset dictionary per kind, the first object of the
    kind this store saw: objects of one kind rendered by one operator share nearly all their text
    (a Deployment of another model differs in names, uids and hashes), so they shrink about tenfold
    where plain zlib halves them. A read inflates and parses it again (tens of microseconds for a
    Deployment), and every reader gets its own copy. The objects of a scope are indexed by the
    ModelDeployment label's value, so a pass's `LABEL_MD=<name>` listing touches its own children
    only, not every pod in the namespace.
    """

    def __init__(self) -> None:
        self._scopes: dict[Scope, dict[str, bytes]] = {}
        self._owner: dict[Key, str] = {}  # key -> its LABEL_MD value (objects that carry it)
        self._owned: dict[tuple[Scope, str], set[str]] = {}  # (scope, LABEL_MD value) -> names
        self._observed_at: dict[Key, int] = {}  # key -> sequence of its last observe
        self._presets: dict[tuple[str, str], bytes] = {}  # (apiVersion, plural) -> zlib preset dictionary
        self._sequence = 0
        self._lock = threading.Lock()

    @staticmethod
    def _key(obj: Obj) -> Key | None:
        if not kinds.known(obj.get("apiVersion"), obj.get("kind")) or not obj["metadata"].get("namespace"):
            return None
        parsed = parse_path(kube.path_of(obj))
        return None if parsed is None or parsed[3] is None else (parsed[0], parsed[1], parsed[2], parsed[3])

    def observe(self, obj: Obj, deleted: bool = False) -> None:
        """A watch event (or our own write's response)."""
        key = self._key(obj)
        if key is None:
            return
        data = None if deleted else self._pack(key, _dumps(obj))
        owner = (obj["metadata"].get("labels") or {}).get(common.LABEL_MD)
        with self._lock:
            self._sequence += 1
            self._drop(key)
            if data is not None:
                self._scopes.setdefault(key[:3], {})[key[3]] = data
                self._observed_at[key] = self._sequence
                if owner is not None:
                    self._owner[key] = owner
                    self._owned.setdefault((key[:3], owner), set()).add(key[3])

    def _drop(self, key: Key) -> None:
        """Forget `key` (the lock is held)."""
        scope = self._scopes.get(key[:3])
        if scope is not None and scope.pop(key[3], None) is not None and not scope:
            del self._scopes[key[:3]]
        self._observed_at.pop(key, None)
        owner = self._owner.pop(key, None)
        if owner is not None:
            names = self._owned[(key[:3], owner)]
            names.discard(key[3])
            if not names:
                del self._owned[(key[:3], owner)]

    def mark(self) -> int:
        """A point in the store's history: `sweep` keeps what was observed after it."""
        with self._lock:
            return self._sequence

    def sweep(
        self, api_version: str, plural: str, namespace: str | None, listed: set[tuple[str, str]], mark: int
    ) -> int:
        """A fresh listing of one kind (in `namespace`, or everywhere for None) is complete: drop the
        objects it did not contain, unless observed after `mark` (our own write, or a watch event,
        newer than the listing). Returns how many were dropped."""
        with self._lock:
            gone = [
                (*scope, name) for scope, objects in self._scopes.items()
                if scope[:2] == (api_version, plural) and (namespace is None or scope[2] == namespace)
                for name in objects
                if (scope[2], name) not in listed and self._observed_at.get((*scope, name), 0) <= mark
            ]  # fmt: skip
            for key in gone:
                self._drop(key)
        return len(gone)

    def _pack(self, key: Key, data: bytes) -> bytes:
        preset = self._presets.setdefault(key[:2], data)  # atomic: one preset per kind, ever
        deflate = zlib.compressobj(level=1, zdict=preset)  # level 6 is 1.2x smaller, 1.5x slower
        return deflate.compress(data) + deflate.flush()

    def _unpack(self, kind: tuple[str, str], data: bytes) -> Obj:
        obj: Obj = json.loads(zlib.decompressobj(zdict=self._presets[kind]).decompress(data))
        return obj

    def sizes(self) -> dict[str, int]:
        """Bytes held per plural, deflated (the operator's cache_bytes gauge)."""
        return self._per_plural(lambda objects: sum(map(len, objects.values())))

    def counts(self) -> dict[str, int]:
        """Objects held per plural (the operator's cache_objects gauge)."""
        return self._per_plural(len)

    def _per_plural(self, measure: Callable[[dict[str, bytes]], int]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for scope, objects in self._scopes.items():
                out[scope[1]] = out.get(scope[1], 0) + measure(objects)
        return out

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            data = self._scopes.get((api_version, plural, namespace), {}).get(name)
        return None if data is None else self._unpack((api_version, plural), data)

    def list(self, api_version: str, plural: str, namespace: str, selector: str | None) -> list[Obj]:
        scope = (api_version, plural, namespace)
        owner = _owner_in(selector)
        with self._lock:
            objects = self._scopes.get(scope, {})
            names = self._owned.get((scope, owner), set()) if owner is not None else objects.keys()
            found = [objects[n] for n in sorted(names)]
        return [
            o for o in (self._unpack(scope[:2], data) for data in found)
            if selector_matches(selector, o.get("metadata", {}).get("labels") or {})
        ]  # fmt: skip

    def __len__(self) -> int:
        with self._lock:
            return sum(len(objects) for objects in self._scopes.values())


def _dumps(obj: Obj) -> bytes:
    """What the cache keeps of an object: its slim form as compact JSON."""
    return json.dumps(slim(obj), separators=(",", ":")).encode()


def _loads(data: bytes) -> Obj:
    obj: Obj = json.loads(data)
    return obj


def _owner_in(selector: str | None) -> str | None:
    """The value a selector requires of the ModelDeployment label (`LABEL_MD=v`), if any."""
    for term in (selector or "").split(","):
        key, eq, value = term.replace("==", "=").partition("=")
        if eq and not key.endswith("!") and key.strip() == common.LABEL_MD:
            return value.strip()
    return None


class CachedKube(kube.Kube):
    """A Kube whose reads of the watched kinds come from a Store, and whose writes update it."""

    def __init__(
        self,
        api: Any,
        store: Store,
        unwatched_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(api)
        self.store = store
        self.unwatched_ttl, self.clock = unwatched_ttl, clock
        self._recent: dict[str, tuple[float, bytes | None]] = {}  # unwatched: path -> (when, compact JSON)
        self._recent_lock = threading.Lock()

    def _remember(self, url: str, obj: Obj | None) -> None:
        with self._recent_lock:
            self._recent[url] = (self.clock(), None if obj is None else _dumps(obj))

    def get(self, url: str) -> Obj | None:
        parsed = parse_path(url)
        if parsed is not None and parsed[3] is not None:
            return self.store.get(parsed[0], parsed[1], parsed[2], parsed[3])
        if "/namespaces/" not in url:  # discovery and cluster-scoped reads: not remembered
            return super().get(url)
        with self._recent_lock:
            hit = self._recent.get(url)
        if hit is not None and self.clock() - hit[0] < self.unwatched_ttl:
            return None if hit[1] is None else _loads(hit[1])
        obj = super().get(url)
        self._remember(url, obj)
        return obj

    def list(self, url: str, label_selector: str | None = None) -> list[Obj]:
        parsed = parse_path(url)
        if parsed is None or parsed[3] is not None:
            return super().list(url, label_selector)
        return self.store.list(parsed[0], parsed[1], parsed[2], label_selector)

    def apply(self, url: str, obj: Obj, field_manager: str = conch.FIELD_MANAGER) -> Obj:
        written = super().apply(url, obj, field_manager)
        self.store.observe(written)  # the status subresource answers with the whole object too
        if parse_path(url) is None and not url.endswith("/status"):
            self._remember(url, written)
        return written

    def delete(self, url: str) -> None:
        super().delete(url)
        self._remember(url, None)
