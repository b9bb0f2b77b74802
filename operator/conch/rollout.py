"""The rollout state machine: from (wanted version, history, observed Deployment) to what to serve.

Pure. `currentVersion` moves only when the Deployment has fully rolled out the version it serves.
A rollout that exceeds its progress deadline, or whose new pods crash-loop (or wait on a
configuration no retry fixes, or fail their repository's verification: `tampered`) before then,
rolls back to the last good version (when autoRollback is on) and records the failed version; the
failure pins nothing but that version, so any other spec.version starts a fresh attempt and nothing
deadlocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conch.api import types
from conch.render import common, verify
from conch.render.deployment import Served

Obj = dict[str, Any]


@dataclass(frozen=True)
class DeploymentState:
    """What matters about the live Deployment."""

    exists: bool = False
    version: str | None = None
    observed: bool = False
    desired: int = 0
    replicas: int = 0
    updated: int = 0
    available: int = 0
    ready: int = 0
    deadline_exceeded: bool = False
    message: str = ""
    crash: str = ""  # why the version's pods cannot start, once that is certain (see crash_reason)
    waiting: str = ""  # why a pod waits for its image (a retry may heal it; see waiting_reason)
    cause: str = ""  # the Degraded reason `crash` deserves, when it is not a plain crash (RepositoryTampered)


CRASH_RESTARTS = 2
FATAL_WAITING = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)
MESSAGE_TAIL = 800


def tampered(pods: list[Obj]) -> str:
    """A pod of the version whose repository failed verification (its init container exited
    verify.TAMPERED_EXIT), with the verifier's message naming the files; empty when none did. Certain
    at the first failure: hashing the same files again gives the same answer."""
    for pod in _live(pods):
        for cs in pod.get("status", {}).get("initContainerStatuses", []):
            if cs.get("name") != verify.CONTAINER:
                continue
            state = cs.get("state", {})
            last = state.get("terminated") or (
                {} if "running" in state else cs.get("lastState", {}).get("terminated")
            )
            if last and last.get("exitCode") == verify.TAMPERED_EXIT:
                words = (last.get("message") or "").strip()[:MESSAGE_TAIL]
                return f"pod {pod['metadata']['name']}: init container {cs['name']}: {words}"
    return ""


def crash_reason(pods: list[Obj]) -> str:
    """Why a version's pods cannot start, once that is certain rather than slow: a repository that
    failed verification (`tampered`), a container (or init container) that restarted CRASH_RESTARTS
    times without becoming ready, or a waiting reason no retry fixes. The container's own last words
    (its termination message, e.g. Triton's load error) come with it. Empty when no pod is in that state.
    """
    found = tampered(pods)
    for pod in _live(pods):
        status = pod.get("status", {})
        for kind, cs in [("init container", c) for c in status.get("initContainerStatuses", [])] + [
            ("container", c) for c in status.get("containerStatuses", [])
        ]:
            found = found or _crashed(pod["metadata"]["name"], kind, cs)
    return found


def _live(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _crashed(pod: str, kind: str, cs: Obj) -> str:
    waiting = cs.get("state", {}).get("waiting", {})
    done = kind == "init container" and cs.get("state", {}).get("terminated", {}).get("exitCode") == 0
    if cs.get("ready") or done:
        return ""
    if waiting.get("reason") in FATAL_WAITING:
        return f"pod {pod}: {waiting['reason']}: {waiting.get('message', '')}".strip()
    if cs.get("restartCount", 0) >= CRASH_RESTARTS:
        last = cs.get("lastState", {}).get("terminated", {})
        words = (last.get("message") or last.get("reason") or "").strip()[-MESSAGE_TAIL:]
        oom = ", OOMKilled: over its memory limit" if last.get("reason") == "OOMKilled" else ""
        return (
            f"pod {pod}: {kind} {cs['name']} restarted {cs['restartCount']} times "
            f"(last exit code {last.get('exitCode')}{oom}): {words}"
        )
    return ""


IMAGE_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff"})


def waiting_reason(pods: list[Obj]) -> str:
    """A pod of the version waiting for an image the kubelet cannot pull (its init container pulls the
    serving image first), with the kubelet's message. Not a failure (a registry hiccup heals; the
    progress deadline decides), but said while it lasts."""
    for pod in _live(pods):
        status = pod.get("status", {})
        for cs in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
            waiting = cs.get("state", {}).get("waiting", {})
            if waiting.get("reason") in IMAGE_WAITING:
                text = f"pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message', '')}"
                return text.strip()[:MESSAGE_TAIL]
    return ""


def observe(deployment: Obj | None) -> DeploymentState:
    """Summarise a Deployment object."""
    if deployment is None:
        return DeploymentState()
    meta, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    progressing: Obj = next((c for c in status.get("conditions", []) if c.get("type") == "Progressing"), {})
    return DeploymentState(
        exists=True,
        version=labels.get(common.LABEL_VERSION),
        observed=status.get("observedGeneration", 0) >= meta.get("generation", 0),
        desired=spec.get("replicas", 1),
        replicas=status.get("replicas", 0),
        updated=status.get("updatedReplicas", 0),
        available=status.get("availableReplicas", 0),
        ready=status.get("readyReplicas", 0),
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        message=progressing.get("message", ""),
    )


def rolled_out(state: DeploymentState, version: str) -> bool:
    """Whether the Deployment fully serves `version` (as `kubectl rollout status` judges)."""
    return (
        state.exists
        and state.version == version
        and state.observed
        and state.updated >= state.desired
        and state.replicas == state.updated
        and state.available >= state.desired
    )


@dataclass(frozen=True)
class Decision:
    """What the controller should serve and record."""

    serve: Served | None
    current: str | None
    failed: str | None
    rolled_back: bool = False
    stuck: bool = False
    reason: str = ""
    keep_template: bool = False  # the live pods serve `serve`, an older version: leave them as they are
    cause: str = ""  # the Degraded reason of `reason` when it is not the generic one (RepositoryTampered)


def built(history: Sequence[types.HistoryEntry]) -> dict[str, Served]:
    """Versions with a successful build, as what a Deployment would serve."""
    return {
        h.version: Served(h.version, h.build_key, h.model_name)
        for h in history
        if h.result == "Succeeded" and h.build_key
    }


def serving(status: types.ModelDeploymentStatus, ready: dict[str, Served]) -> str | None:
    """The version status says serves, while its build is still one to serve (else None)."""
    return status.current_version if status.current_version in ready else None


def keeps_template(served: str, live: str | None, wanted: str, failed: str | None) -> bool:
    """The keep-the-template rule: while the wanted version is not the one served (and has not
    failed), the version still served keeps the pod template its live pods run with (`live`: their
    version): spec changes (GPUs, resources, image) arrive with the new version, never before it."""
    return served != wanted and failed is None and live == served


def decide(
    wanted: str, history: list[types.HistoryEntry], status: types.ModelDeploymentStatus,
    state: DeploymentState, auto_rollback: bool,
) -> Decision:  # fmt: skip
    """The next step of the rollout."""
    ready = built(history)
    current = serving(status, ready)
    return next_step(
        wanted, ready, current, failed_version=status.failed_version, state=state, auto_rollback=auto_rollback
    )


def next_step(
    wanted: str, ready: dict[str, Served], current: str | None, *, failed_version: str | None,
    state: DeploymentState, auto_rollback: bool,
) -> Decision:  # fmt: skip
    """The next step of the rollout, from facts a pass has worked out once: the versions ready to
    serve, the one serving (`serving`) and status' failed version."""
    failed = failed_version if failed_version == wanted else None  # new version: fresh try
    serve: Served | None = None
    rolled_back = stuck = False
    reason = cause = ""
    if wanted in ready and failed is None:
        serve = ready[wanted]
        if (
            (state.deadline_exceeded or state.crash)
            and state.version == wanted
            and state.observed
            and not rolled_out(state, wanted)
        ):
            reason = state.crash or state.message or "progress deadline exceeded"
            cause = state.cause if state.crash else ""
            if auto_rollback and current is not None and current != wanted:
                failed, serve, rolled_back = wanted, ready[current], True
            else:
                stuck = True
    elif current is not None:
        serve = ready[current]
    if serve is not None and rolled_out(state, serve.version):
        current = serve.version
    keep = serve is not None and keeps_template(serve.version, state.version, wanted, failed)
    return Decision(
        serve=serve, current=current, failed=failed, rolled_back=rolled_back, stuck=stuck, reason=reason,
        keep_template=keep, cause=cause,
    )  # fmt: skip
