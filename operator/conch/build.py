"""The build state machine: from a Job's status and its pod's termination message to a build result.

Pure: the controller fetches the Job and its pods and hands them in. The builder writes a one-line
JSON summary to /dev/termination-log, so the result survives the pod being gone from the node and
needs no log scraping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic

from conch import errors
from conch.api import types
from conch.render import oneshot

Obj = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """Where a build stands: still running, or finished with a summary / an error message."""

    result: types.BuildResult
    summary: types.BuildSummary | None = None
    message: str | None = None


def parse_summary(text: str) -> tuple[bool, types.BuildSummary, str | None]:
    """(ok, summary, error message) from the builder's one-line JSON."""
    try:
        raw = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except (json.JSONDecodeError, IndexError) as exc:
        raise errors.BadSummaryError(f"termination message is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("ok"), bool):
        raise errors.BadSummaryError("termination message has no boolean 'ok'")
    try:
        summary = types.BuildSummary.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise errors.BadSummaryError(f"summary breaks the contract: {exc.errors()[0]['msg']}") from exc
    error = raw.get("error")
    message = None
    if isinstance(error, dict):
        message = f"{error.get('kind', 'internal')}: {error.get('message', '')}"
    return raw["ok"], summary, message


# Why a builder container cannot start, worth telling while the Job waits for it (the kubelet keeps
# retrying, the Job's activeDeadlineSeconds ends it): a missing image or a config the pod cannot use.
STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
    }
)


def stuck(pods: list[Obj]) -> str | None:
    """Why a builder pod's container is not starting (e.g. ImagePullBackOff and the kubelet's message)."""
    for name, cs in oneshot.container_statuses(pods):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            return (
                f"builder pod {name} cannot start: {waiting['reason']}: {waiting.get('message', '')}".strip()
            )
    return None


def oom_killed(pods: list[Obj]) -> str | None:
    """The builder container the kernel killed for going over its memory limit, if one was."""
    killed = oneshot.oom_killed(pods)
    if killed is None:
        return None
    name, term = killed
    return (
        f"OOMKilled: builder pod {name} went over its memory limit (exit code "
        f"{term.get('exitCode')}); raise spec.build.resources.limits.memory"
    )


def evicted(pods: list[Obj]) -> str | None:
    """A builder pod the kubelet evicted, if one was: its scratch volume (/tmp) over the sizeLimit that
    follows spec.build.maxSourceSize, or the node short of disk or memory."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            name = pod.get("metadata", {}).get("name", "?")
            message = str(status.get("message", "")).strip().rstrip(".")
            hint = (
                f"; /tmp holds {types.SCRATCH_PER_SOURCE} x spec.build.maxSourceSize: raise it"
                if '"tmp"' in message
                else ""
            )
            return f"Evicted: builder pod {name}: {message}{hint}"
    return None


def observe(job: Obj | None, pods: list[Obj]) -> Outcome:
    """The build's outcome from its Job and pods (a missing Job is still building: it gets created)."""
    if job is None:
        return Outcome("Building")
    complete = oneshot.condition(job, *oneshot.COMPLETE)
    failed = oneshot.condition(job, *oneshot.FAILED)
    if complete is None and failed is None:
        why = stuck(pods)
        return Outcome("Building", message=None if why is None else oneshot.clip(why))
    oom = oom_killed(pods) if failed is not None else None
    if oom is not None:  # its termination message is only the last log lines (FallbackToLogsOnError)
        return Outcome("Failed", message=oneshot.clip(oom))
    text = oneshot.termination_message(pods)
    # an evicted container was killed: its message is log lines, not a summary (a summary still wins)
    eviction = evicted(pods) if failed is not None else None
    if text is None:
        if failed is not None:
            return Outcome("Failed", message=oneshot.clip(eviction or oneshot.failure(failed)))
        return Outcome("Failed", message="builder finished without writing a summary")
    try:
        ok, summary, error = parse_summary(text)
    except errors.BadSummaryError as exc:
        return Outcome("Failed", message=oneshot.clip(eviction or str(exc)))
    if ok and complete is not None and summary.build_key:
        return Outcome("Succeeded", summary=summary)
    if ok and not summary.build_key:
        return Outcome("Failed", summary=summary, message="summary says ok but has no buildKey")
    return Outcome("Failed", summary=summary, message=oneshot.clip(error or "build failed"))
