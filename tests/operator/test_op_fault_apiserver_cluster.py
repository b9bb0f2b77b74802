"""The apiserver restarted under a running operator, mid-rollout: every watch breaks and every request
fails for a while, then the watches resume (or relist, if their resourceVersion is gone) and the
rollout completes with one build Job per version and the whole history.

Restarts the shared control plane's apiserver: it runs in the suite's sequence like every test.
"""

from __future__ import annotations

import pytest
from conftest import wait_for
from opharness import (  # noqa: F401
    AFTER_RESTART,
    Kube,
    Operator,
    kube_fixture,
    md_object,
    operator_fixture,
    restart_apiserver,
    serving,
)

pytestmark = [pytest.mark.cluster, pytest.mark.restarts_apiserver]


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
    k.finish_build("as", "v2", timeout=AFTER_RESTART)  # the control plane's controllers list again late
    wait_for("v2 serving after the restart", lambda: serving(k, "as", "v2"), AFTER_RESTART)
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
