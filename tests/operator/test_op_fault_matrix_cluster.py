"""The fault matrix: the operator killed with SIGKILL at each phase of a ModelDeployment's life,
several times, on the real control plane (kwok nodes). Every case must converge to the right state
with no duplicate build Job, no history entry lost, and no moment without a Ready pod of a version
that served before (a watcher samples the pods all along).

Phases: build Job created / build finished but the status perhaps not yet written / rolling out /
rolling back by an edit / automatic rollback after a failed rollout / deleting. A kill lands right
after the phase is observable from outside, so across the repetitions it hits both sides of the
operator's next write. About two minutes with a running control plane.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from opharness import (  # noqa: F401  (fixtures)
    Kube,
    Operator,
    kube_fixture,
    md_object,
    operator_fixture,
    serving,
    wait_for,
)

pytestmark = pytest.mark.cluster
KILLS = 2


def crash(operator: Operator) -> None:
    """SIGKILL, then start a fresh process (it lists everything again)."""
    operator.kill()
    operator.start()


class ReadyWatch:
    """Samples the Ready serving pods of one ModelDeployment; remembers the least ever seen."""

    def __init__(self, k: Kube, name: str) -> None:
        self.k, self.name, self.least = k, name, 10**6
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ready(self) -> int:
        out = self.k.k(
            "get", "pods", "-l", f"serving.conch.dev/modeldeployment={self.name}", "-o", "json", check=False
        )
        if out.returncode != 0:
            return self.least  # a failed read proves nothing either way
        pods = json.loads(out.stdout)["items"]
        return sum(
            1
            for p in pods
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "triton"
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self.least = min(self.least, self._ready())
            self.samples += 1
            self._stop.wait(0.2)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def history(k: Kube, name: str) -> list[tuple[str, str]]:
    return [(h["version"], h["result"]) for h in k.status(name).get("history", [])]


@pytest.fixture
def served(kube: Kube, operator: Operator) -> Iterator[Kube]:
    """`fm` serving v1 (the operator crashed while building it)."""
    k = kube
    k.apply(md_object("fm", replicas=2))
    wait_for("build Job", lambda: k.jobs("fm"), 30)
    crash(operator)
    k.finish_build("fm", "v1")
    wait_for("v1 serving", lambda: serving(k, "fm", "v1"), 90)
    assert len(k.jobs("fm")) == 1 and history(k, "fm") == [("v1", "Succeeded")]
    yield k


def test_op_fault_build_finished_then_killed_before_or_after_the_status_write(
    served: Kube, operator: Operator
) -> None:
    k = served
    with ReadyWatch(k, "fm") as watch:
        for i, version in enumerate(f"v{n}" for n in range(2, 2 + KILLS)):
            k.apply(md_object("fm", version=version, replicas=2))
            wait_for(f"{version} build Job", lambda version=version: k.jobs("fm", version), 30)
            k.finish_build("fm", version)
            if i % 2:
                time.sleep(0.05 * i)  # vary where the kill lands relative to the operator's status write
            crash(operator)
            wait_for(f"{version} serving", lambda version=version: serving(k, "fm", version), 90)
            assert len(k.jobs("fm", version)) == 1
    assert history(k, "fm") == [(f"v{n}", "Succeeded") for n in range(1, 2 + KILLS)]
    assert watch.samples > 10 and watch.least >= 2, watch.least  # maxUnavailable 0 held through every kill


def test_op_fault_killed_while_rolling_out_and_while_rolling_back(served: Kube, operator: Operator) -> None:
    k = served
    k.apply(md_object("fm", version="v2", replicas=2))
    k.finish_build("fm", "v2")
    wait_for("v2 serving", lambda: serving(k, "fm", "v2"), 90)
    with ReadyWatch(k, "fm") as watch:
        for back, forth in [("v1", "v2")] * KILLS:
            k.apply(md_object("fm", version=back, replicas=2))  # a rollback by edit: no rebuild
            crash(operator)
            wait_for(f"{back} serving", lambda back=back: serving(k, "fm", back), 90)
            k.apply(md_object("fm", version=forth, replicas=2))
            wait_for("the rollout started", lambda forth=forth: _version_of(k, "fm") == forth, 30)
            crash(operator)  # mid-rollout
            wait_for(f"{forth} serving", lambda forth=forth: serving(k, "fm", forth), 90)
    assert len(k.jobs("fm")) == 2  # one per version, never rebuilt
    assert history(k, "fm") == [("v1", "Succeeded"), ("v2", "Succeeded")]
    assert watch.least >= 2, watch.least


def test_op_fault_killed_during_an_automatic_rollback(kube: Kube, operator: Operator) -> None:
    k = kube
    # 10 CPUs per pod on a 16-CPU node: v1 fits, a surge pod of v2 never can -> progress deadline.
    spec = {
        "serving": {"gpus": 0, "resources": {"requests": {"cpu": "10"}}},
        "rollout": {"progressDeadlineSeconds": 6},
    }
    k.apply(md_object("ar", **spec))
    k.finish_build("ar", "v1")
    wait_for("v1 serving", lambda: serving(k, "ar", "v1"), 90)
    with ReadyWatch(k, "ar") as watch:
        k.apply(md_object("ar", version="v2", **spec))
        k.finish_build("ar", "v2")
        wait_for("v2 rolling out", lambda: _version_of(k, "ar") == "v2", 30)
        crash(operator)  # before the deadline
        wait_for(
            "deadline exceeded (or already rolled back)",
            lambda: (
                _progress_reason(k, "ar") == "ProgressDeadlineExceeded" or k.status("ar").get("failedVersion")
            ),
            60,
        )
        crash(operator)  # between the deadline and the rollback write (or just after it)
        wait_for("rolled back", lambda: k.status("ar").get("failedVersion") == "v2", 60)
        wait_for("deployment back on v1", lambda: _version_of(k, "ar") == "v1", 60)
        wait_for("v1 fully serving", lambda: k.status("ar").get("readyReplicas") == 1, 60)
    assert k.status("ar")["currentVersion"] == "v1"
    assert watch.least >= 1, watch.least
    assert history(k, "ar") == [("v1", "Succeeded"), ("v2", "Succeeded")]
    assert k.condition("ar", "Degraded")["reason"] == "RolloutFailed"


def _version_of(k: Kube, name: str) -> str | None:
    dep = k.get("deployment", name)
    return None if dep is None else dep["spec"]["template"]["metadata"]["labels"]["serving.conch.dev/version"]


def _progress_reason(k: Kube, name: str) -> str | None:
    dep = k.get("deployment", name) or {}
    conds = dep.get("status", {}).get("conditions", [])
    return next((c.get("reason") for c in conds if c["type"] == "Progressing"), None)


def test_op_fault_killed_while_deleting(served: Kube, operator: Operator) -> None:
    k = served
    k.k("delete", "md", "fm", "--wait=false")
    crash(operator)
    for kind in ("deployment", "service"):
        wait_for(f"{kind} collected", lambda kind=kind: k.get(kind, "fm") is None, 60)
    wait_for("jobs collected", lambda: not k.jobs("fm"), 60)
    crash(operator)  # a fresh process finds nothing to recreate
    time_limit = time.monotonic() + 3  # a negative check: a recreation would show within one pass
    while time.monotonic() < time_limit:
        assert k.get("deployment", "fm") is None and k.get("md", "fm") is None
        time.sleep(0.5)
