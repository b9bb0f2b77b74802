"""The one-shot Job in the builder image, rendered and read back: one home for build, analysis and GC.

Three Jobs run `model-repo-builder` once and report through their container's termination message:
the build (render/job.py), the canary's quality analysis (render/analysis.py) and the model store's
collection (render/storegc.py). They share a skeleton (a restricted, never-restarted pod placed where
builds go, the container writing /dev/termination-log and falling back to its last log lines on an
error) and a way of reading the outcome (the Job's finishing conditions, the most recent termination
message, a container the kernel killed for its memory). Each caller keeps only what is its own: the
command, the labels, the deadline, and what its report says. Pure.
"""

from __future__ import annotations

from typing import Any

from conch.api import types
from conch.render import common

Obj = dict[str, Any]
SUMMARY_FILE = "/dev/termination-log"  # where the builder writes its one-line JSON report
MAX_MESSAGE = 1024  # what a status message or an Event carries of a report, at most
COMPLETE = ("Complete", "SuccessCriteriaMet")  # the Job succeeded (SuccessCriteriaMet comes first)
FAILED = ("Failed", "FailureTarget")  # the Job failed (FailureTarget comes first)
TMP_VOLUME: Obj = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT: Obj = {"name": "tmp", "mountPath": "/tmp"}


# ---- rendering ------------------------------------------------------------------------------------


def container(
    name: str, image: str, command: list[str], resources: Obj | None, mounts: list[Obj], *,
    env: list[Obj] | None = None,
) -> Obj:  # fmt: skip
    """The Job's one container: restricted, its summary in the termination message (or its last log
    lines when it fails without writing one)."""
    out: Obj = {
        "name": name,
        "image": image,
        "command": command,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env is not None:
        out["env"] = env
    out.update(
        {
            "resources": resources,
            "securityContext": common.restricted_container_security(),
            "volumeMounts": mounts,
        }
    )
    return out


def pod_spec(spec: types.ModelDeploymentSpec, container: Obj, volumes: list[Obj]) -> Obj:
    """The Job's pod: restricted, never restarted, no API token, placed where builds go
    (spec.build nodeSelector/tolerations)."""
    return {
        "restartPolicy": "Never",
        "securityContext": common.restricted_pod_security(),
        "nodeSelector": spec.build.node_selector,
        "tolerations": spec.build.tolerations,
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }


def job(
    metadata: Obj, pod_metadata: Obj, pod: Obj, *, backoff_limit: int, deadline_seconds: int,
    ttl_seconds: int | None = None, failure_policy: Obj | None = None,
) -> Obj:  # fmt: skip
    """The Job around `pod` (ttl None: kept until deleted; failure_policy: a podFailurePolicy)."""
    spec: Obj = {"backoffLimit": backoff_limit, "activeDeadlineSeconds": deadline_seconds}
    if failure_policy is not None:
        spec["podFailurePolicy"] = failure_policy
    if ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    spec["template"] = {"metadata": pod_metadata, "spec": pod}
    out: Obj = common.prune({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec})
    return out


# ---- reading ---------------------------------------------------------------------------------------


def condition(job: Obj, *types_: str) -> Obj | None:
    """The Job's true condition of the first of `types_` that has one (COMPLETE: Complete, else
    SuccessCriteriaMet; FAILED: Failed, else FailureTarget), if any."""
    conds = job.get("status", {}).get("conditions", []) or []
    for type_ in types_:
        for cond in conds:
            if cond.get("type") == type_ and cond.get("status") == "True":
                return dict(cond)
    return None


def failure(cond: Obj) -> str:
    """A failed condition as `<reason>: <message>`."""
    return f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}"


def container_statuses(pods: list[Obj]) -> list[tuple[str, Obj]]:
    """(pod name, container status) of every container of `pods`."""
    return [
        (pod.get("metadata", {}).get("name", "?"), cs)
        for pod in pods
        for cs in pod.get("status", {}).get("containerStatuses", []) or []
    ]


def termination_message(pods: list[Obj]) -> str | None:
    """The termination message of the most recently finished container, if any."""
    finished: list[tuple[str, str]] = []
    for _, status in container_statuses(pods):
        term = (status.get("state") or {}).get("terminated")
        if term and term.get("message"):
            finished.append((term.get("finishedAt") or "", term["message"]))
    return max(finished)[1] if finished else None


def oom_killed(pods: list[Obj]) -> tuple[str, Obj] | None:
    """(pod name, its terminated state) of a container the kernel killed for its memory, if one was."""
    for name, cs in container_statuses(pods):
        for state in (cs.get("state"), cs.get("lastState")):
            term = (state or {}).get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                return name, term
    return None


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, cut to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
