"""Leader election on the real apiserver.

Two electors in this process, each with its own controllable clock, contend for one Lease: exactly
one leads; a successor takes over only after the Lease stood unchanged for a lease duration on its
own clock; the demoted leader's `leading()` is already false by then; a simultaneous takeover by two
candidates is won by one (resourceVersion precondition). Then two real operator processes: the standby
does nothing while the leader serves; the leader frozen (SIGSTOP) -> the standby takes over and serves
a new version; the old leader thawed writes nothing (audit log, by its identity in the User-Agent).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SESSION, wait_for
from opharness import ROOT, Kube, md_object, serving

from conch import kube, leader
from tests.support import audit
from tests.support.processes import free_port, stop_process

pytestmark = pytest.mark.cluster
FAST = leader.Timing(lease_duration=4, renew_deadline=3, retry_period=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(namespace: str, identity: str, clock: Clock) -> leader.Elector:
    return leader.Elector(
        kube.Kube.from_environment(), namespace, "conch", identity, timing=FAST, clock=clock
    )


def holder(namespace: str) -> str:
    lease = kube.Kube.from_environment().get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/conch"
    )
    return str((lease or {}).get("spec", {}).get("holderIdentity", ""))


def test_leader_lease_protocol_on_the_real_apiserver(cluster: Any, namespace: str) -> None:
    ca, cb = Clock(), Clock()
    a, b = elector(namespace, "a", ca), elector(namespace, "b", cb)
    assert a.try_once() and holder(namespace) == "a"
    assert not b.try_once()  # b saw a fresh record: it waits
    for _ in range(3):  # a renews every retry period; b's clock runs past a lease duration meanwhile
        ca.now += 1
        cb.now += 2
        assert a.try_once() and not b.try_once()
    assert holder(namespace) == "a"
    ca.now += FAST.renew_deadline  # a hangs: no renewal; its own clock says stop writing
    assert not a.leading()
    cb.now += FAST.lease_duration - 0.5
    assert not b.try_once()  # not yet unchanged for a whole lease duration on b's clock
    cb.now += 0.5
    assert b.try_once() and holder(namespace) == "b"
    assert not a.try_once() and not a.leading()  # a wakes up, sees b, stays out
    lease = kube.Kube.from_environment().get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/conch"
    )
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1


def test_two_candidates_racing_for_an_expired_lease_one_wins(cluster: Any, namespace: str) -> None:
    c0, c1, c2 = Clock(), Clock(), Clock()
    assert elector(namespace, "old", c0).try_once()
    x, y = elector(namespace, "x", c1), elector(namespace, "y", c2)
    assert not x.try_once() and not y.try_once()  # both observe the same record
    c1.now += FAST.lease_duration
    c2.now += FAST.lease_duration
    # Both decide "takeover" from the same resourceVersion; the second PUT must get 409.
    x_seen, y_seen = x._seen, y._seen
    assert x_seen is not None and y_seen is not None and x_seen.resource_version == y_seen.resource_version
    won = [x.try_once(), y.try_once()]
    assert won.count(True) == 1 and holder(namespace) == ("x" if won[0] else "y")


class Replica:
    """One `python -m conch --leader-elect` process."""

    def __init__(self, cluster: Any, namespace: str, log: Path) -> None:
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "conch", "--namespace", f"t-test-leader-*{SESSION}",
            "--metrics-port", str(self.port),
            "--leader-elect", "--leader-election-namespace", namespace, "--leader-election-id", "conch",
            "--lease-duration", str(FAST.lease_duration), "--renew-deadline", str(FAST.renew_deadline),
            "--retry-period", str(FAST.retry_period),
        ]  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def leading(self) -> bool:
        return "acquired leadership" in self.log.read_text(errors="replace")

    def identity(self) -> str | None:
        """Its Lease identity, once it has led (from its log line)."""
        found = re.search(r"(\S+) acquired leadership of lease", self.log.read_text(errors="replace"))
        return found.group(1) if found else None


@pytest.fixture
def replicas(cluster: Any, namespace: str, tmp_path: Path) -> Iterator[list[Replica]]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    started = [Replica(cluster, namespace, tmp_path / f"replica-{i}.log") for i in range(2)]
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGCONT)
            stop_process(r.proc, 10)
    cluster.kubectl("delete", "pv", f"store-{namespace}", "--wait=false", check=False)


def writes_by(audit_log: Path, identity: str, offset: int) -> list[str]:
    out = []
    for e in audit.events_since(audit_log, offset):
        if identity in e.get("userAgent", "") and e["verb"] in {"create", "update", "patch", "delete"}:
            out.append(f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}")
    return out


def test_leader_failover_between_two_operator_replicas(
    cluster: Any, namespace: str, replicas: list[Replica]
) -> None:
    k = Kube(cluster, namespace)
    k.model_store()
    first = wait_for("one replica leads", lambda: holder(namespace) or None, 30)
    lead = wait_for("the leader's log says so", lambda: next((r for r in replicas if r.leading()), None), 10)
    standby = next(r for r in replicas if r is not lead)
    k.apply(md_object("ha", version="v1"))
    k.finish_build("ha", "v1")
    wait_for("v1 serving", lambda: serving(k, "ha", "v1"), 60)
    assert not standby.leading(), "the standby acted while the leader held the Lease"

    lead.proc.send_signal(signal.SIGSTOP)  # hung leader: keeps its connections, stops renewing
    frozen = time.monotonic()
    k.apply(md_object("ha", version="v2"))
    took_over = wait_for("the standby takes the Lease", lambda: holder(namespace) != first or None, 30)
    failover = time.monotonic() - frozen
    k.finish_build("ha", "v2")
    wait_for("v2 served by the new leader", lambda: serving(k, "ha", "v2"), 60)
    assert standby.leading() and took_over != first
    # the standby could not have taken over before a whole lease duration of silence
    assert failover >= FAST.lease_duration - 1.0, failover

    offset = cluster.audit_log.stat().st_size
    lead.proc.send_signal(signal.SIGCONT)
    wait_for(
        "the old leader notices",
        lambda: "lost leadership" in lead.log.read_text(errors="replace") or None,
        20,
    )
    k.apply(md_object("ha", version="v2", replicas=2))  # work for whoever leads
    wait_for(
        "the new leader scales",
        lambda: (k.get("deployment", "ha") or {}).get("spec", {}).get("replicas") == 2,
        30,
    )
    assert writes_by(cluster.audit_log, first, offset) == [], (
        "the demoted leader wrote after losing the Lease"
    )
    print(f"failover: Lease taken {failover:.1f}s after the leader froze (lease {FAST.lease_duration}s)")


def deployed_version(k: Kube, name: str) -> str | None:
    dep = k.get("deployment", name)
    return None if dep is None else dep["spec"]["template"]["metadata"]["labels"]["serving.conch.dev/version"]


def kill_the_leader(namespace: str, replicas: list[Replica]) -> tuple[Replica, float]:
    """SIGKILL the replica holding the Lease; returns it and the seconds until another one holds it."""
    first = holder(namespace)
    lead = next(r for r in replicas if r.proc.poll() is None and r.identity() == first)
    lead.proc.send_signal(signal.SIGKILL)
    lead.proc.wait(10)
    killed = time.monotonic()
    wait_for("another replica takes the Lease", lambda: holder(namespace) not in ("", first), 30)
    return lead, time.monotonic() - killed


def test_leader_killed_mid_rollout_then_mid_canary(
    cluster: Any, namespace: str, replicas: list[Replica], tmp_path: Path
) -> None:
    """The leader SIGKILLed while a rollout runs, then (a fresh standby started) while a canary steps:
    the survivor completes each, with one build Job per version and the whole history."""
    k = Kube(cluster, namespace)
    k.model_store()
    wait_for("one replica leads", lambda: holder(namespace) or None, 30)
    k.apply(md_object("lr", replicas=2))
    k.finish_build("lr", "v1")
    wait_for("v1 serving", lambda: serving(k, "lr", "v1"), 60)
    k.apply(md_object("lr", version="v2", replicas=2))
    k.finish_build("lr", "v2")
    wait_for("the rollout started", lambda: deployed_version(k, "lr") == "v2", 60, every=0.1)
    mid = not serving(k, "lr", "v2")
    _, rollout_failover = kill_the_leader(namespace, replicas)
    wait_for("v2 serving under the new leader", lambda: serving(k, "lr", "v2"), 60)
    assert [len(k.jobs("lr", v)) for v in ("v1", "v2")] == [1, 1]
    assert [(h["version"], h["result"]) for h in k.status("lr")["history"]] == [
        ("v1", "Succeeded"), ("v2", "Succeeded"),
    ]  # fmt: skip

    replicas.append(Replica(cluster, namespace, tmp_path / "replica-2.log"))  # a standby again
    rollout = {
        "strategy": "canary", "maxSurge": 1, "progressDeadlineSeconds": 60,
        "canary": {"steps": [{"weight": 25, "pauseSeconds": 3}, {"weight": 50, "pauseSeconds": 3}]},
    }  # fmt: skip
    k.apply(md_object("lc", replicas=4, rollout=rollout))
    k.finish_build("lc", "v1")
    wait_for("canary's v1 serving", lambda: serving(k, "lc", "v1"), 60)
    k.apply(md_object("lc", version="v2", replicas=4, rollout=rollout))
    k.finish_build("lc", "v2")
    wait_for(
        "the canary stepping", lambda: k.status("lc").get("canary", {}).get("phase") == "Progressing", 60
    )
    step = k.status("lc")["canary"].get("step")
    _, canary_failover = kill_the_leader(namespace, replicas)
    wait_for(
        "the canary promoted by the new leader",
        lambda: serving(k, "lc", "v2") and k.status("lc")["canary"].get("phase") == "Promoted",
        90,
    )
    assert [len(k.jobs("lc", v)) for v in ("v1", "v2")] == [1, 1]
    assert [(h["version"], h["result"]) for h in k.status("lc")["history"]] == [
        ("v1", "Succeeded"), ("v2", "Succeeded"),
    ]  # fmt: skip
    print(
        f"FAILOVER rollout(mid={mid}): Lease taken {rollout_failover:.1f}s after the kill; "
        f"canary(step={step}): {canary_failover:.1f}s (lease {FAST.lease_duration}s)"
    )
