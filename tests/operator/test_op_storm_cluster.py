"""Apiserver storms under a running operator: a fault-injecting proxy (tests/support/faultproxy.py)
sits between the operator and the real apiserver, and for STORM seconds answers every request 429
with a Retry-After, 500, 503, or resets its connection, while a ModelDeployment rolls out, and while
a canary steps (the test's own kubectl talks to the apiserver directly). Afterwards the rollout must
converge, with one build Job per version and the whole history, and the operator's request rate
during the storm must stay under the bounds below (each case prints its numbers: the closing table
of issue 22 item 5 comes from these lines).

The bounds, per client. The operator's own client: each of its 4 workers sends one request at most
5 times (conch.retry: the Retry-After, or full-jitter backoffs whose draws may all be small, so all
5 can fall in one second) before its pass fails and the work queue waits at least a second; with an
Event or two that is at most OWN_BOUND in any second (the namespaces of this module's earlier tests
are still being deleted, so more than one ModelDeployment may be reconciled at once). kopf's watches
(one per namespace the operator watches x watched kind: they grow as this module's namespaces
accumulate) are cut when a storm starts, reconnect once, then back off 1, 1, 2, 3 ... s (honouring
Retry-After): at most PER_STREAM per stream in any second.
A client that retried at once would send hundreds: one connection retrying a 429 without waiting
made 178 requests a second through this proxy here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import STATE, wait_for
from opharness import ROOT, Kube, Operator, kube_fixture, md_object, serving  # noqa: F401  (fixtures)

from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.cluster
STORM = 6.0  # seconds
OWN_BOUND = 5 * 4 + 2  # the operator's client (User-Agent conch-operator/...), requests in any one second
PER_STREAM = 3  # kopf's requests in any one second, per watch stream
SHAPES = ("429", "500", "503", "drop")


def upstream(kubeconfig: Path) -> tuple[str, int]:
    server = next(line for line in kubeconfig.read_text().splitlines() if line.strip().startswith("server:"))
    host, port = server.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def proxy(cluster: Any) -> Iterator[FaultProxy]:
    fp = FaultProxy(STATE / "pki", upstream(cluster.kubeconfig))
    fp.start()
    yield fp
    fp.stop()


@pytest.fixture(scope="module", name="operator")
def operator_behind_the_proxy(
    cluster: Any, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator, its kubeconfig pointing at the proxy."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.wait_established("modeldeployments.serving.conch.dev")
    tmp = tmp_path_factory.mktemp("storm")
    op = Operator(proxy.kubeconfig(cluster.kubeconfig, tmp / "kubeconfig"), tmp)
    op.start()
    yield op
    op.stop()


def history(k: Kube, name: str) -> list[tuple[str, str]]:
    return [(h["version"], h["result"]) for h in k.status(name).get("history", [])]


def deployed_version(k: Kube, name: str) -> str | None:
    dep = k.get("deployment", name)
    return None if dep is None else dep["spec"]["template"]["metadata"]["labels"]["serving.conch.dev/version"]


class Storm:
    """One storm of `mode` for STORM seconds; keeps its window for the rate measurement."""

    def __init__(self, proxy: FaultProxy, operator: Operator, mode: str) -> None:
        self.proxy, self.operator, self.mode = proxy, operator, mode
        self.retries_before = operator.metric("conch_client_retries_total") or 0.0
        self.start = time.monotonic()
        proxy.set_mode(mode)
        time.sleep(STORM)  # the storm's length, not a wait for a condition
        proxy.set_mode("pass")
        self.end = time.monotonic()

    def check_rates(self) -> None:
        own = self.proxy.max_rate(self.start, self.end, "conch-operator/")
        kopf = self.proxy.max_rate(self.start, self.end, "kopf/")
        streams = self.proxy.watch_streams(self.start, self.end)
        assert own <= OWN_BOUND, f"the operator's client sent {own} requests in one second of the storm"
        assert kopf <= PER_STREAM * max(streams, 1), f"kopf sent {kopf}/s over {streams} watch streams"

    def retries(self) -> float:
        """conch_client_retries_total since the storm began."""
        return (self.operator.metric("conch_client_retries_total") or 0.0) - self.retries_before

    def report(self, case: str, converged_after: float, jobs: int, lost: int) -> str:
        seen = self.proxy.requests(self.start, self.end)
        retries = self.retries()
        baseline = self.proxy.max_rate(self.start - 10, self.start)
        own = self.proxy.max_rate(self.start, self.end, "conch-operator/")
        kopf = self.proxy.max_rate(self.start, self.end, "kopf/")
        return (
            f"STORM {case} shape={self.mode} storm={STORM:.0f}s converged_after={converged_after:.1f}s "
            f"build_jobs={jobs} lost_history={lost} requests_in_storm={len(seen)} "
            f"max_rate={self.proxy.max_rate(self.start, self.end)}/s (own {own}/s, kopf {kopf}/s over "
            f"{self.proxy.watch_streams(self.start, self.end)} watch streams) baseline_max_rate={baseline}/s "
            f"client_retries={retries:.0f} by_agent={self.proxy.by_agent(self.start, self.end)}"
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_op_storm_during_a_rollout(kube: Kube, operator: Operator, proxy: FaultProxy, shape: str) -> None:
    k = kube
    name = "st"
    k.apply(md_object(name, replicas=2))
    k.finish_build(name, "v1")
    wait_for("v1 serving", lambda: serving(k, name, "v1"), 90)
    k.apply(md_object(name, version="v2", replicas=2))
    k.finish_build(name, "v2")
    wait_for("the rollout started", lambda: deployed_version(k, name) == "v2", 60, every=0.1)
    mid_rollout = not serving(k, name, "v2")
    storm = Storm(proxy, operator, shape)
    wait_for("v2 serving after the storm", lambda: serving(k, name, "v2"), 120)
    converged = time.monotonic() - storm.end
    jobs = {v: len(k.jobs(name, v)) for v in ("v1", "v2")}
    lost = 2 - len(history(k, name))
    print(storm.report(f"rollout(mid={mid_rollout})", converged, sum(jobs.values()), lost))
    assert jobs == {"v1": 1, "v2": 1}, jobs
    assert history(k, name) == [("v1", "Succeeded"), ("v2", "Succeeded")]
    assert k.status(name)["readyReplicas"] == 2
    storm.check_rates()
    assert operator.proc is not None and operator.proc.poll() is None  # rode it out, no restart


@pytest.mark.parametrize("shape", ["429", "drop"])
def test_op_storm_during_a_canary(kube: Kube, operator: Operator, proxy: FaultProxy, shape: str) -> None:
    k = kube
    name = "sc"
    rollout = {
        "strategy": "canary", "maxSurge": 1, "progressDeadlineSeconds": 60,
        "canary": {"steps": [{"weight": 25, "pauseSeconds": 3}, {"weight": 50, "pauseSeconds": 3}]},
    }  # fmt: skip
    k.apply(md_object(name, replicas=4, rollout=rollout))
    k.finish_build(name, "v1")
    wait_for("v1 serving", lambda: serving(k, name, "v1"), 90)
    k.apply(md_object(name, version="v2", replicas=4, rollout=rollout))
    k.finish_build(name, "v2")
    wait_for(
        "the canary stepping", lambda: k.status(name).get("canary", {}).get("phase") == "Progressing", 60
    )
    step = k.status(name)["canary"].get("step")
    storm = Storm(proxy, operator, shape)

    def promoted() -> bool:
        return serving(k, name, "v2") and k.status(name).get("canary", {}).get("phase") == "Promoted"

    wait_for("canary promoted after the storm", promoted, 120, every=0.5)
    converged = time.monotonic() - storm.end
    jobs = {v: len(k.jobs(name, v)) for v in ("v1", "v2")}
    lost = 2 - len(history(k, name))
    print(storm.report(f"canary(step={step})", converged, sum(jobs.values()), lost))
    assert jobs == {"v1": 1, "v2": 1}, jobs
    assert history(k, name) == [("v1", "Succeeded"), ("v2", "Succeeded")]
    storm.check_rates()
    assert operator.proc is not None and operator.proc.poll() is None
