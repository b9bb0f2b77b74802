"""The apiserver restarted under a running operator, mid-rollout: every watch breaks and every request
fails for a while, then the watches resume (or relist, if their resourceVersion is gone) and the
rollout completes with one build Job per version and the whole history.

Restarts the shared control plane's apiserver: it runs in the suite's sequence like every test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import CLUSTER_SH, STATE, wait_for
from opharness import Kube, Operator, kube_fixture, md_object, operator_fixture, serving  # noqa: F401

pytestmark = pytest.mark.cluster


def restart_apiserver() -> float:
    """SIGKILL the apiserver (a crash), wait for it to be gone, start it again (cluster.sh up restarts
    what is not running); returns the seconds it was away."""
    pid = int((STATE / "pids" / "kube-apiserver").read_text())
    gone = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for("apiserver exited", lambda: not os.path.exists(f"/proc/{pid}"), 60)
    subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, timeout=300, check=True)
    return time.monotonic() - gone


def test_op_fault_apiserver_restarted_mid_rollout(kube: Kube, operator: Operator) -> None:
    k = kube
    k.apply(md_object("as", replicas=2))
    k.finish_build("as", "v1")
    wait_for("v1 serving", lambda: serving(k, "as", "v1"), 90)
    k.apply(md_object("as", version="v2", replicas=2))
    wait_for(
        "v2 build Job",
        lambda: [j for j in k.jobs("as") if j["metadata"]["name"].startswith("as-build")][1:],
        30,
    )
    away = restart_apiserver()
    k.finish_build("as", "v2")
    wait_for("v2 serving after the restart", lambda: serving(k, "as", "v2"), 120)
    versions = [
        j["spec"]["template"]["metadata"]["labels"]["serving.conch.dev/version"] for j in k.jobs("as")
    ]
    assert sorted(versions) == ["v1", "v2"]
    assert [(h["version"], h["result"]) for h in k.status("as")["history"]] == [
        ("v1", "Succeeded"),
        ("v2", "Succeeded"),
    ]
    assert operator.proc is not None and operator.proc.poll() is None  # it rode it out, no restart
    print(f"apiserver away for {away:.1f}s")
