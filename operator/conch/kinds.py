"""Every kind of object the operator reads or writes, listed once: its apiVersion, kind, plural and
whether the operator watches it.

Four places used to keep their own list: the kopf watches and label selectors (handlers.py), the
kinds the watch-fed cache answers for (cache.py), the REST paths (kube.py) and what a pass observes
(snapshot.py). A kind added here is watched, cached and addressable everywhere at once. Everything
the operator touches is namespaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from conch.api import types


@dataclass(frozen=True)
class Kind:
    """One resource kind. `watched`: listed and watched (children by the ModelDeployment label),
    so reads of it come from the cache; `child`: the operator creates it for a ModelDeployment."""

    api_version: str
    kind: str
    plural: str
    watched: bool
    child: bool = True

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str, name: str | None = None) -> str:
        """The REST path of the collection in `namespace`, or of one object when `name` is given."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        out = f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{out}/{quote(name)}" if name else out


MODEL_DEPLOYMENT = Kind(f"{types.GROUP}/{types.VERSION}", types.KIND, types.PLURAL, watched=True, child=False)
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments", watched=True)
JOB = Kind("batch/v1", "Job", "jobs", watched=True)  # builds, quality analyses (and store GC, uncached)
POD = Kind("v1", "Pod", "pods", watched=True)
SERVICE = Kind("v1", "Service", "services", watched=True)
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", watched=True)
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", watched=True)
# Not watched: the admin-key Secret (RBAC grants get/create/patch only), NetworkPolicies and the
# optional ServiceMonitor CRD are read by name and remembered (cache.CachedKube); Events only posted.
SECRET = Kind("v1", "Secret", "secrets", watched=False)
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", watched=False)
SERVICE_MONITOR = Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", watched=False)
EVENT = Kind("v1", "Event", "events", watched=False, child=False)

ALL: tuple[Kind, ...] = (
    MODEL_DEPLOYMENT, DEPLOYMENT, JOB, POD, SERVICE, HPA, PDB, SECRET, NETWORK_POLICY, SERVICE_MONITOR, EVENT,
)  # fmt: skip
WATCHED_CHILDREN: tuple[Kind, ...] = tuple(k for k in ALL if k.watched and k.child)
_BY_TYPE: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in ALL}


def of(api_version: str, kind: str) -> Kind:
    """The Kind of (apiVersion, kind); KeyError for one the operator does not touch."""
    return _BY_TYPE[(api_version, kind)]


def known(api_version: object, kind: object) -> bool:
    """Whether the operator touches objects of (apiVersion, kind)."""
    return (api_version, kind) in _BY_TYPE
