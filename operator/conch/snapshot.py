"""Observe: everything a reconcile pass may look at, read once, before anything is decided.

`observe` reads the ModelDeployment and all its children up front: its Jobs and Pods by the
ModelDeployment label (build and quality-analysis Jobs and their pods carry it, as do the serving
pods), the stable and canary Deployments, Service, HPA, PDB, NetworkPolicy, ServiceMonitor (when its
API is served) and the admin-key Secret. In the operator the client is a cache.CachedKube, so these
reads cost nothing (watched kinds) or are remembered (the rest); `decide` then works on this
Snapshot alone, and the act step writes with the live objects it holds, so the cache is the only
reader in a pass.

A child's name may be taken by an object this ModelDeployment does not control (a team's own Secret
or Service of that name, a predecessor's child the garbage collector has not removed yet). Such an
object is never used: `claimed` moves it out of its slot into `Snapshot.taken`, so that no pass reads
its key, its replicas or its template, and `decide` leaves that child out of the plan and says so.
The cache holds only objects with our label, so an unlabeled one is first met by apply.apply, on the
way to a create; the controller then names it in `recheck`, and every later pass reads it from the
apiserver itself until the name is free.

Prometheus is observed in a second, small step (`measure`), after the Kubernetes snapshot and right
before `decide`: whether a canary analysis is due is itself a decision of the canary state machine
(the step reached, an interval since the last analysis), so the controller first asks the pure
`decide.analysis_query` what to ask, then asks Prometheus only then. Asking on every pass instead
would send a query every few seconds for every canary (and stall passes on an unreachable
Prometheus); deciding "due" inside observe would duplicate the state machine. The answer goes into
`Snapshot.measured`, so `decide` stays a pure function of the snapshot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from conch import apply, canary, kinds, kube, prometheus, promql
from conch.api import types
from conch.render import authproxy, common, deployment, secret

Obj = dict[str, Any]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
NO_PROMETHEUS = (
    "no Prometheus configured: set spec.rollout.canary.analysis.prometheusUrl or the operator's "
    f"{prometheus.ENV_URL}"
)


DEFAULT_AUTH_MODE: list[types.AuthMode] = ["none"]
"""The operator's --default-auth-mode (main sets it; the chart passes token): what an unset spec.auth
means. Tests and the demo run the operator in process and get none, which status and an Event say."""


@dataclass(frozen=True)
class Snapshot:
    """The ModelDeployment and its children as one pass saw them (None: absent)."""

    md: Obj
    now: float  # epoch seconds when the pass began: the only clock `decide` sees
    jobs: list[Obj] = field(default_factory=list)  # build and quality-analysis Jobs
    pods: list[Obj] = field(default_factory=list)  # builder, analysis and serving pods
    stable_deployment: Obj | None = None  # <name>
    canary_deployment: Obj | None = None  # <name>-canary
    service: Obj | None = None
    hpa: Obj | None = None
    pdb: Obj | None = None
    network_policy: Obj | None = None
    service_monitor: Obj | None = None
    admin_secret: Obj | None = None
    token_secret: Obj | None = None  # <name>-inference-tokens, the generated inference-token Secret
    default_auth: types.AuthMode = "none"  # the operator's --default-auth-mode, for an unset spec.auth
    taken: tuple[Obj, ...] = ()  # objects under a child's name that this ModelDeployment does not control
    monitors_served: bool = False  # monitoring.coreos.com/v1 is served
    measured: canary.Measurement | None = None  # the due canary analysis' answer (see `measure`)

    def job(self, name: str) -> Obj | None:
        """The Job called `name`, if it exists."""
        return next((j for j in self.jobs if j["metadata"]["name"] == name), None)

    def pods_with(self, labels: dict[str, str]) -> list[Obj]:
        """The pods carrying all of `labels` (what a label selector of equalities selects)."""
        return [
            p
            for p in self.pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]


@dataclass(frozen=True)
class Query:
    """A due canary analysis: what to ask which Prometheus (url None: the operator's default)."""

    url: str | None
    queries: dict[str, str]
    analysis: types.CanaryAnalysis
    window: int


def md_url(namespace: str, name: str) -> str:
    """REST path of a ModelDeployment."""
    return kinds.MODEL_DEPLOYMENT.path(namespace, name)


SLOTS = (
    "stable_deployment", "canary_deployment", "service", "hpa", "pdb", "network_policy", "service_monitor",
    "admin_secret", "token_secret",
)  # fmt: skip


def claimed(snap: Snapshot) -> Snapshot:
    """`snap` with every child slot holding only an object this ModelDeployment controls; any other
    object there moves to `taken`. Idempotent."""
    uid = snap.md["metadata"]["uid"]
    foreign = {
        slot: obj for slot in SLOTS
        if (obj := getattr(snap, slot)) is not None and not apply.controlled(obj, uid)
    }  # fmt: skip
    if not foreign:
        return snap
    emptied: dict[str, Any] = dict.fromkeys(foreign)
    return dataclasses.replace(snap, taken=snap.taken + tuple(foreign.values()), **emptied)


def _generates(md: Obj) -> bool:
    """Whether the spec (as stored, before parsing) has Conch generate a token Secret: only then is
    that name read (a GET per pass and model otherwise, for a Secret that does not exist)."""
    auth = (md.get("spec") or {}).get("auth")
    mode = DEFAULT_AUTH_MODE[0] if auth is None else auth.get("mode", "token")
    return mode == "token" and not (auth or {}).get("secretName")


def observe(
    client: kube.Kube, namespace: str, name: str, now: float, recheck: Collection[str] = ()
) -> Snapshot | None:
    """Read the ModelDeployment and its children; None when it is gone or being deleted. `recheck`:
    REST paths of names found taken before, read from the apiserver itself (the cache may not hold
    them, or may remember them as they were)."""
    md = client.get(md_url(namespace, name))
    if md is None or md["metadata"].get("deletionTimestamp"):
        return None
    by_md = f"{common.LABEL_MD}={name}"
    served = client.served(kinds.SERVICE_MONITOR.api_version)
    uid, seen = md["metadata"]["uid"], set()

    def one(kind: kinds.Kind, child: str) -> Obj | None:
        url = kind.path(namespace, child)
        seen.add(url)
        obj = client.get(url)
        if url in recheck or (obj is not None and not apply.controlled(obj, uid)):
            obj = client.read(url)  # a taken name: as the apiserver has it now, not as remembered
        return obj

    snap = Snapshot(
        md=md,
        now=now,
        jobs=client.list(kinds.JOB.path(namespace), by_md),
        pods=client.list(kinds.POD.path(namespace), by_md),
        stable_deployment=one(kinds.DEPLOYMENT, name),
        canary_deployment=one(kinds.DEPLOYMENT, f"{name}{deployment.CANARY_SUFFIX}"),
        service=one(kinds.SERVICE, name),
        hpa=one(kinds.HPA, name),
        pdb=one(kinds.PDB, name),
        network_policy=one(kinds.NETWORK_POLICY, name),
        service_monitor=one(kinds.SERVICE_MONITOR, name) if served else None,
        admin_secret=one(kinds.SECRET, f"{name}{secret.NAME_SUFFIX}"),
        token_secret=one(kinds.SECRET, f"{name}{authproxy.GENERATED_SUFFIX}") if _generates(md) else None,
        default_auth=DEFAULT_AUTH_MODE[0],
        monitors_served=served,
    )
    others = (client.read(url) for url in sorted(set(recheck) - seen))  # e.g. a build Job's name
    extra = tuple(o for o in others if o is not None and not apply.controlled(o, uid))
    return claimed(dataclasses.replace(snap, taken=extra))


def measure(query: Query) -> canary.Measurement:
    """Ask Prometheus a due analysis' queries and judge the answers (3 s timeouts; an unreachable or
    refusing Prometheus is an Unavailable measurement, never an error)."""
    url = query.url or prometheus.default_url()
    if url is None:
        return canary.Measurement("Unavailable", (), NO_PROMETHEUS)
    try:
        values = prometheus.measure(url, query.queries)
    except prometheus.Unavailable as exc:
        return canary.Measurement("Unavailable", (), f"Prometheus at {exc}")
    return promql.judge(query.analysis, values, query.window)


def with_measurement(snap: Snapshot, measured: canary.Measurement | None) -> Snapshot:
    """The snapshot with the due analysis' answer."""
    return dataclasses.replace(snap, measured=measured)
