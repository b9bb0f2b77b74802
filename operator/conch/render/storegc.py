"""The model store's garbage-collection Job, and what the operator reads back from it. Pure.

One store is one (namespace, claim, repository folder): every ModelDeployment naming that claim and
folder shares it, so what is referenced is the union over all of them (conch.storegc computes it).
The folder is the normalised repositoryPath (common.store_folder): `repositories` and `repositories/`
are one store, not two whose Jobs would each delete what only the other one keeps.
The Job runs `model-repo-builder gc` (model_repo_builder/store/gc.py) in the builder image with the
claim mounted read-write; its termination message is one JSON line:
{"ok", "store", "removed": [key...], "removedCount", "freedBytes", "kept", "young": [key...],
"staging": [dir...], "error"} (`removed`/`young` cut to the first 40 keys).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from conch.api import types
from conch.render import common, oneshot

Obj = dict[str, Any]
COMPONENT = "store-gc"
LABEL_STORE = "storegc.conch.dev/store"
CONTAINER = "gc"
TTL_SECONDS = 3600
DEADLINE_SECONDS = 1800
RESOURCES: Obj = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


@dataclass(frozen=True, order=True)
class Store:
    """One model store as the pods see it (repository_path: normalised, as `of` makes it)."""

    namespace: str
    claim: str
    repository_path: str

    @property
    def root(self) -> str:
        return f"{common.STORE_MOUNT}/{self.repository_path}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.namespace}/{self.claim}/{self.repository_path}".encode()).hexdigest()[
            :10
        ]

    @staticmethod
    def of(namespace: str, claim: str, repository_path: str) -> Store:
        return Store(namespace, claim, common.store_folder(repository_path))


@dataclass(frozen=True)
class GcReport:
    """The Job's report, or why there is none."""

    ok: bool
    removed: list[str] = field(default_factory=list)
    removed_count: int = 0
    freed_bytes: int = 0
    kept: int = 0
    young: list[str] = field(default_factory=list)
    error: str | None = None


def job_name(store: Store, run: int) -> str:
    """`conch-store-gc-<store digest>-<run>` (run: the janitor's counter, e.g. a Unix time)."""
    return f"conch-store-gc-{store.digest}-{run}"


def render_gc_job(
    store: Store, keep: set[str], grace_seconds: int, spec: types.ModelDeploymentSpec, run: int
) -> Obj:
    """The Job that collects `store`, keeping `keep`; image and placement from `spec.build`."""
    labels = {
        common.LABEL_COMPONENT: COMPONENT,
        LABEL_STORE: store.digest,
        "app.kubernetes.io/part-of": "conch",
    }
    command = [
        "model-repo-builder", "gc", store.root, "--keep", ",".join(sorted(keep)),
        "--grace-seconds", str(grace_seconds), "--summary-file", oneshot.SUMMARY_FILE,
    ]  # fmt: skip
    container = oneshot.container(
        CONTAINER, spec.build.image, command, RESOURCES,
        [{"name": common.STORE_VOLUME, "mountPath": common.STORE_MOUNT}],
    )  # fmt: skip
    claim = {"name": common.STORE_VOLUME, "persistentVolumeClaim": {"claimName": store.claim}}
    return oneshot.job(
        {"name": job_name(store, run), "namespace": store.namespace, "labels": labels},
        {"labels": labels},
        oneshot.pod_spec(spec, container, [claim]),
        backoff_limit=0,
        deadline_seconds=DEADLINE_SECONDS,
        ttl_seconds=TTL_SECONDS,
    )


def parse_report(job: Obj, message: str | None) -> GcReport | None:
    """The report of a finished Job (None while it runs)."""
    if oneshot.condition(job, "Complete", "Failed") is None:  # not FailureTarget: the pod may still run
        return None
    if not message:
        conds = job.get("status", {}).get("conditions", []) or []
        why = next((c.get("message") or c.get("reason") for c in conds if c.get("status") == "True"), "")
        return GcReport(ok=False, error=f"store gc Job {job['metadata']['name']} wrote no report: {why}")
    try:
        data = json.loads(message)
        return GcReport(
            ok=bool(data["ok"]), removed=list(data.get("removed", [])),
            removed_count=int(data.get("removedCount", 0)), freed_bytes=int(data.get("freedBytes", 0)),
            kept=int(data.get("kept", 0)),
            young=list(data.get("young", [])), error=data.get("error"),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return GcReport(ok=False, error=f"store gc report is not valid JSON: {message[:200]!r}")
