"""The serving pod's init container: verify the repository against build.json before Triton loads it.

A repository is immutable once published (model_repo_builder's store), and build.json lists every
file's sha256. Anything that changes a file afterwards (a person, a bad restore, a disk error) must not
be served silently, so every serving pod first runs `conch-verify` (model_repo_builder/store/verify.py,
shipped in the serving image) over its repository, read-only, with nothing else in the pod started.
A tampered repository fails the init container with exit code TAMPERED_EXIT and a one-line termination
message naming the files; `conch.rollout` reads that into the ModelDeployment's Degraded condition
(RepositoryTampered), and the serving version stays up (maxUnavailable 0).

The same image as Triton's (no builder image on GPU nodes); small fixed resources: hashing reads the
files once, in 1 MiB chunks.
"""

from __future__ import annotations

from conch.render import common
from conch.render.common import Obj, Owner
from model_repo_builder.store.verify import TAMPERED_EXIT

CONTAINER = "verify"
COMMAND = "conch-verify"
__all__ = ["CONTAINER", "REASON", "TAMPERED_EXIT", "init_container"]
REASON = "RepositoryTampered"
TERMINATION_LOG = "/dev/termination-log"
RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}


def init_container(owner: Owner, build_key: str) -> Obj:
    """`conch-verify` over the repository of `build_key`, where Triton's --model-repository points."""
    repository = f"{common.repository_root(owner.spec)}/{build_key}"
    return {
        "name": CONTAINER,
        "image": owner.spec.serving.image,
        "command": [COMMAND],
        "args": [repository, f"--message-file={TERMINATION_LOG}"],
        "resources": RESOURCES,
        "securityContext": common.restricted_container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": common.STORE_VOLUME, "mountPath": common.STORE_MOUNT, "readOnly": True}],
    }
