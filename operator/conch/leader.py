"""Leader election on a coordination.k8s.io/v1 Lease, so that two operator replicas never both write.

The protocol is client-go's leaderelection, which every controller-runtime operator uses:
- the leader renews the Lease every `retry_period`; a candidate may take it over only when the record
  it observed has not changed for `lease_duration` on the candidate's OWN clock (no clock is compared
  across machines: the observation time is local, as in client-go);
- every write is a PUT carrying the resourceVersion that was read, so two candidates racing for one
  expired Lease cannot both win (the loser gets 409 Conflict);
- the leader stops acting when it has not renewed for `renew_deadline` (< lease_duration): a demoted
  leader (hung, partitioned, or its apiserver slow) has stopped writing before any successor can
  have taken over. `Elector.leading()` is that clock check; the Kube client consults it before every
  write, and the work queue pauses while it is false.
The decision is the pure `decide()`; `Elector.try_once()` is the only I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import prometheus_client

from conch import clock, errors, kube

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Action = Literal["create", "renew", "takeover", "wait"]
LEADING = prometheus_client.Gauge("conch_leader", "1 while this replica holds the leader Lease")
TRANSITIONS = prometheus_client.Counter(
    "conch_leader_transitions_total", "Leadership gained or lost by this replica", ["change"]
)


@dataclass(frozen=True)
class Timing:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration")


@dataclass(frozen=True)
class Seen:
    """The Lease record as last read, and when (on the local monotonic clock) it last changed."""

    holder: str
    resource_version: str
    transitions: int
    changed_at: float


def decide(seen: Seen | None, identity: str, now: float, timing: Timing) -> Action:
    """What a candidate does next with the Lease it observed."""
    if seen is None:
        return "create"
    if seen.holder == identity:
        return "renew"
    if not seen.holder or now - seen.changed_at >= timing.lease_duration:
        return "takeover"
    return "wait"


def render_lease(
    namespace: str, name: str, identity: str, *, timing: Timing, wall: float, acquired: str,
    transitions: int, resource_version: str | None = None,
) -> Obj:  # fmt: skip
    """The Lease as this replica writes it (acquired = acquireTime to keep or set)."""
    metadata: Obj = {"name": name, "namespace": namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": max(1, round(timing.lease_duration)),
            "acquireTime": acquired,
            "renewTime": clock.micro_time(wall),
            "leaseTransitions": transitions,
        },
    }


class Elector:
    """Campaigns for one Lease and keeps it; `leading()` says whether this replica may write now."""

    def __init__(
        self, client: kube.Kube, namespace: str, name: str, identity: str, *, timing: Timing = Timing(),
        on_change: Callable[[bool], None] | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.timing, self.on_change, self.clock = timing, on_change, clock
        self._seen: Seen | None = None
        self._lease: Obj | None = None
        self._renewed_at: float | None = None  # local time of our last successful write
        self._was_leading = False

    @property
    def url(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def leading(self) -> bool:
        """True while our last successful renewal is younger than the renew deadline."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.timing.renew_deadline

    def _observe(self, lease: Obj | None, now: float) -> None:
        if lease is None:
            self._seen, self._lease = None, None
            return
        spec, version = lease.get("spec", {}), lease["metadata"]["resourceVersion"]
        changed = self._seen is None or self._seen.resource_version != version
        self._seen = Seen(
            holder=spec.get("holderIdentity") or "",
            resource_version=version,
            transitions=int(spec.get("leaseTransitions") or 0),
            changed_at=now if changed or self._seen is None else self._seen.changed_at,
        )
        self._lease = lease

    def try_once(self) -> bool:
        """One round: read the Lease, then create, renew or take it over if `decide` says so."""
        now = self.clock()
        try:
            self._observe(self.client.get(f"{self.url}/{self.name}"), now)
            action = decide(self._seen, self.identity, now, self.timing)
            if action != "wait":
                self._write(action, now)
        except errors.KubeError as exc:  # 409 = another replica won the race; anything else: retry
            log.debug("leader election round failed: %s", exc)
        return self.leading()

    def _write(self, action: Action, now: float) -> None:
        seen, wall = self._seen, time.time()
        stamp = clock.micro_time(wall)
        if action == "create" or seen is None:
            body = render_lease(
                self.namespace, self.name, self.identity, timing=self.timing, wall=wall, acquired=stamp,
                transitions=0,
            )  # fmt: skip
            written = self.client.create(self.url, body)
        else:
            keep = action == "renew" and self._lease is not None
            acquired = self._lease["spec"].get("acquireTime", stamp) if keep and self._lease else stamp
            transitions = seen.transitions + (0 if action == "renew" else 1)
            body = render_lease(
                self.namespace, self.name, self.identity, timing=self.timing, wall=wall, acquired=acquired,
                transitions=transitions, resource_version=seen.resource_version,
            )  # fmt: skip
            written = self.client.request("PUT", f"{self.url}/{self.name}", body=body)
        if written is not None:
            self._renewed_at = now
            self._observe(written, now)

    def _notify(self) -> None:
        leading = self.leading()
        LEADING.set(1 if leading else 0)
        if leading != self._was_leading:
            self._was_leading = leading
            TRANSITIONS.labels("gained" if leading else "lost").inc()
            change = "acquired" if leading else "lost"
            log.info("%s %s leadership of lease %s/%s", self.identity, change, self.namespace, self.name)
            if self.on_change is not None:
                self.on_change(leading)

    async def run(self) -> None:
        """Campaign and renew until cancelled. A watchdog notices a passed renew deadline within half a
        retry period even while a request to an unreachable apiserver is still hanging."""
        watchdog = asyncio.create_task(self._watch())
        try:
            while True:
                await asyncio.to_thread(self.try_once)
                self._notify()
                await asyncio.sleep(self.timing.retry_period)
        finally:
            watchdog.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.timing.retry_period / 2)
            self._notify()
