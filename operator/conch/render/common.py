"""What every child shares: names, labels, the owner reference and the mount layout of the model store."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from conch.api import types

Obj = dict[str, Any]

LABEL_MD = "serving.conch.dev/modeldeployment"
LABEL_VERSION = "serving.conch.dev/version"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_BUILD_KEY = "serving.conch.dev/build-key"
ANNOTATION_SPEC_KEY = "serving.conch.dev/spec-key"
STORE_MOUNT = "/store"
STORE_VOLUME = "model-store"


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children: identity plus its parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: types.ModelDeploymentSpec


def owner_reference(owner: Owner) -> Obj:
    """A controller owner reference, so garbage collection removes children with their owner."""
    return {
        "apiVersion": f"{types.GROUP}/{types.VERSION}",
        "kind": types.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(owner: Owner, component: str) -> dict[str, str]:
    """Labels on every child object of `owner`."""
    return {
        "app.kubernetes.io/name": "conch",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": "conch-operator",
        LABEL_COMPONENT: component,
        LABEL_MD: owner.name,
    }


def selector(owner: Owner) -> dict[str, str]:
    """The label selector of the serving pods (stable across versions: Deployment selectors are immutable)."""
    return {LABEL_MD: owner.name, LABEL_COMPONENT: "triton"}


def metadata(owner: Owner, name: str, component: str, **extra: Any) -> Obj:
    """Standard metadata for a child object."""
    meta: Obj = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner_reference(owner)],
    }
    meta.update(extra)
    return meta


def store_volume(owner: Owner, read_only: bool) -> Obj:
    """The model-store PVC as a pod volume."""
    return {
        "name": STORE_VOLUME,
        "persistentVolumeClaim": {"claimName": owner.spec.storage.claim_name, "readOnly": read_only},
    }


def store_folder(repository_path: str) -> str:
    """A repositoryPath as the one folder it names: `repositories/` and (admitted before the rule
    against it) `x/../repositories` are `repositories`. Admission leaves only the trailing slash to
    strip; normpath is for what was stored earlier. ("." or "../x" for a path naming the store's root
    or outside it.)"""
    return posixpath.normpath(repository_path.strip("/"))


def repository_root(spec: types.ModelDeploymentSpec) -> str:
    """Where repositories are published inside the pods (`STORE/<buildKey>/` is one repository)."""
    return f"{STORE_MOUNT}/{store_folder(spec.storage.repository_path)}"


def restricted_container_security() -> Obj:
    """The container half of the `restricted` Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def restricted_pod_security() -> Obj:
    """The pod half of the `restricted` Pod Security Standard (uid 1000 is Triton's image user)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def prune(obj: Any) -> Any:
    """Drop None values and empty maps/lists so the desired object matches what the apiserver stores."""
    if isinstance(obj, dict):
        out = {k: prune(v) for k, v in obj.items() if v is not None}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(obj, list):
        return [prune(v) for v in obj]
    return obj
