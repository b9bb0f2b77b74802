"""Pod status as a kubelet reports it, rendered from what the agent observed. Pure code, no I/O.

The agent sends the whole status each time (a merge patch of `status`), and only when the rendered
status differs from the last one it sent, so a steady pod costs no writes.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
MESSAGE_LIMIT = 4096  # the kubelet's cap on a termination message
LOG_FALLBACK_BYTES = 2048
LOG_FALLBACK_LINES = 80


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerView:
    """What the agent knows about one container."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    started: bool = False
    ready: bool = False
    restart_count: int = 0
    last_terminated: Obj | None = None

    def terminated(self) -> Obj:
        out: Obj = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            out["message"] = self.message[:MESSAGE_LIMIT]
        return out

    def render(self) -> Obj:
        if self.state == "running":
            state: Obj = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated()}
        else:
            state = {
                "waiting": {"reason": self.reason, **({"message": self.message} if self.message else {})}
            }
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": f"conch-node-agent://{self.image}",
            "containerID": f"conch-node-agent://{self.name}-{self.restart_count}",
            "state": state,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        }
        if self.last_terminated is not None:
            out["lastState"] = {"terminated": self.last_terminated}
        return out


def condition(type_: str, ok: bool, since: str, reason: str | None = None) -> Obj:
    out: Obj = {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": since}
    if reason and not ok:
        out["reason"] = reason
    return out


def initialized(inits: Sequence[ContainerView]) -> bool:
    """Every init container ran to completion (exit 0)."""
    return all(c.state == "terminated" and c.exit_code == 0 for c in inits)


def phase_of(
    containers: list[ContainerView], restart_policy: str, inits: Sequence[ContainerView] = ()
) -> str:
    """Pending until the init containers succeeded and every container started (Failed when an init
    container failed and the policy is Never); terminal only when no container will run again."""
    if not initialized(inits):
        failed = any(c.state == "terminated" and c.exit_code != 0 for c in inits)
        return "Failed" if failed and restart_policy == "Never" else "Pending"
    if any(
        c.state == "waiting" and c.restart_count == 0 and c.reason in ("ContainerCreating", "PodInitializing")
        for c in containers
    ):
        return "Pending"
    finished = [c for c in containers if c.state == "terminated"]
    if len(finished) < len(containers):
        return "Running"
    if all(c.exit_code == 0 for c in finished):
        return "Succeeded" if restart_policy != "Always" else "Running"
    return "Failed" if restart_policy == "Never" else "Running"


def render(
    containers: list[ContainerView],
    restart_policy: str,
    pod_ip: str,
    start_time: str,
    ready_since: str,
    *,
    inits: list[ContainerView] | None = None,
) -> Obj:
    """The pod's status subresource (initContainerStatuses when the pod has init containers)."""
    inits = inits or []
    phase = phase_of(containers, restart_policy, inits)
    ready = phase == "Running" and all(c.ready for c in containers)
    unready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
    init_done = initialized(inits)
    out: Obj = {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            condition("PodReadyToStartContainers", True, start_time),
            condition("Initialized", init_done, start_time, "ContainersNotInitialized"),
            condition("ContainersReady", ready, ready_since, unready),
            condition("Ready", ready, ready_since, unready),
            condition("PodScheduled", True, start_time),
        ],
        "containerStatuses": [c.render() for c in containers],
    }
    if inits:
        out["initContainerStatuses"] = [c.render() for c in inits]
    return out


def log_tail(data: bytes) -> str:
    """FallbackToLogsOnError: the last 80 lines or 2048 bytes of the log, whichever is smaller."""
    lines = data[-LOG_FALLBACK_BYTES:].splitlines()[-LOG_FALLBACK_LINES:]
    return b"\n".join(lines).decode(errors="replace")
