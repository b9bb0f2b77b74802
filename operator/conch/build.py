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

Obj = dict[str, Any]
MAX_MESSAGE = 1024


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


def _job_condition(job: Obj, type_: str) -> Obj | None:
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def termination_message(pods: list[Obj]) -> str | None:
    """The termination message of the most recently finished builder container, if any."""
    finished: list[tuple[str, str]] = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            term = (status.get("state") or {}).get("terminated")
            if term and term.get("message"):
                finished.append((term.get("finishedAt") or "", term["message"]))
    return max(finished)[1] if finished else None


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


def _statuses(pods: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (pod.get("metadata", {}).get("name", "?"), cs)
        for pod in pods
        for cs in pod.get("status", {}).get("containerStatuses", []) or []
    ]


def stuck(pods: list[Obj]) -> str | None:
    """Why a builder pod's container is not starting (e.g. ImagePullBackOff and the kubelet's message)."""
    for name, cs in _statuses(pods):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            return (
                f"builder pod {name} cannot start: {waiting['reason']}: {waiting.get('message', '')}".strip()
            )
    return None


def oom_killed(pods: list[Obj]) -> str | None:
    """The builder container the kernel killed for going over its memory limit, if one was."""
    for name, cs in _statuses(pods):
        for state in (cs.get("state"), cs.get("lastState")):
            term = (state or {}).get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                return (
                    f"OOMKilled: builder pod {name} went over its memory limit (exit code "
                    f"{term.get('exitCode')}); raise spec.build.resources.limits.memory"
                )
    return None


def observe(job: Obj | None, pods: list[Obj]) -> Outcome:
    """The build's outcome from its Job and pods (a missing Job is still building: it gets created)."""
    if job is None:
        return Outcome("Building")
    complete = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if complete is None and failed is None:
        why = stuck(pods)
        return Outcome("Building", message=None if why is None else _clip(why))
    oom = oom_killed(pods) if failed is not None else None
    if oom is not None:  # its termination message is only the last log lines (FallbackToLogsOnError)
        return Outcome("Failed", message=_clip(oom))
    text = termination_message(pods)
    if text is None:
        if failed is not None:
            reason = failed.get("reason", "Failed")
            return Outcome("Failed", message=_clip(f"{reason}: {failed.get('message', '')}"))
        return Outcome("Failed", message="builder finished without writing a summary")
    try:
        ok, summary, error = parse_summary(text)
    except errors.BadSummaryError as exc:
        return Outcome("Failed", message=_clip(str(exc)))
    if ok and complete is not None and summary.build_key:
        return Outcome("Succeeded", summary=summary)
    if ok and not summary.build_key:
        return Outcome("Failed", summary=summary, message="summary says ok but has no buildKey")
    return Outcome("Failed", summary=summary, message=_clip(error or "build failed"))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
