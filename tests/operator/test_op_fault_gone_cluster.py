"""A watch that expires (410 Gone) under a running operator: while it was frozen, a user deleted the
build Job it was following and another ModelDeployment. The apiserver restarted first (the frozen
operator's watches broke, so no DELETED event was in flight to it) and etcd was compacted after the
deletions, while the apiserver was down again: every resourceVersion the operator had seen is gone,
each watch resumes into 410 and kopf lists again. The relisting must drop what vanished in the gap
(relist.py): the deleted build Job is recreated under its own name (not waited for for ever), the
build completes and serves with one Job per version and the whole history, and the cache holds no
ghost of the deleted ModelDeployment.

Restarts the shared control plane's apiserver, so the session runs it last (marker
restarts_apiserver, tests/conftest.py), after every test that needs the control plane's controllers
prompt. It once hung when run right after test_op_fault_apiserver_cluster.py (issue #12) and was
renamed to sort first. The operator was not at fault: it relisted and recreated the Job within a second of the
apiserver's return, and its watches delivered the next events the moment they came. They came late
because the control plane's own controllers (kube-controller-manager's Job controller and garbage
collector) relist only after client-go's reflector backoff, which the three restarts within 2 minutes
had stacked up to 30-60 s a step (opharness.AFTER_RESTART; seen: the recreated Job's pod 58 s after
the Job, the deleted Job's pod not yet collected). The harness then took that lingering pod of the
deleted Job, which carries the same job-name label, for the new build pod (finish_build now takes
only a pod of the current Job), and gave the Job controller 60 s, at times too few. With both mended
the order between the two restarting tests no longer matters; what runs after them does (a fault-matrix
test once saw the node lifecycle controller mark its pods NotReady from a stale lease), hence last.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.request
from typing import Any

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
ETCD = f"http://127.0.0.1:{os.environ.get('CONCH_ETCD_PORT', '22379')}"


def etcd(call: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"{ETCD}/v3/kv/{call}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def compact_etcd() -> None:
    """Compact etcd to its current revision: every older resourceVersion is gone (410 on a watch)."""
    header = etcd("range", {"key": base64.b64encode(b"/").decode()})["header"]
    etcd("compaction", {"revision": int(header["revision"]), "physical": True})  # type: ignore[index]


def build_job(k: Kube, md: str, version: str) -> dict[str, Any] | None:
    jobs = k.jobs(md, version)
    return jobs[0] if jobs else None


def test_op_fault_watch_gone_relists_and_forgets_what_was_deleted(kube: Kube, operator: Operator) -> None:
    k = kube

    k.apply(md_object("gone", replicas=1))
    k.finish_build("gone", "v1")
    wait_for("v1 serving", lambda: serving(k, "gone", "v1"), 90)
    k.apply(md_object("other"))
    wait_for("the other's build Job", lambda: build_job(k, "other", "v1"), 30)
    k.apply(md_object("gone", version="v2", replicas=1))
    first = wait_for("v2 build Job", lambda: build_job(k, "gone", "v2"), 30)
    listings = operator.metric("conch_watch_listings_total", 'resource="jobs"')
    assert operator.proc is not None
    operator.proc.send_signal(signal.SIGSTOP)
    try:  # the restart breaks the frozen operator's watches before the deletions: no event reaches it
        away = restart_apiserver()
        k.k("delete", "job", first["metadata"]["name"], "--wait=true")
        k.k("delete", "md", "other", "--wait=true")
        away += restart_apiserver(while_away=compact_etcd)  # compacted under no apiserver's watch cache
    finally:
        operator.proc.send_signal(signal.SIGCONT)

    def relisted() -> bool:
        return (operator.metric("conch_watch_listings_total", 'resource="jobs"') or 0) > (listings or 0)

    wait_for("the Jobs watch answered 410 and listed again", relisted, 120)
    again = wait_for("the v2 build Job recreated", lambda: build_job(k, "gone", "v2"), 60)
    assert again["metadata"]["name"] == first["metadata"]["name"]
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    started = time.monotonic()
    k.finish_build("gone", "v2", timeout=AFTER_RESTART)  # the Job controller lists again after its backoff
    pod_after = time.monotonic() - started
    wait_for("v2 serving", lambda: serving(k, "gone", "v2"), 120)
    versions = [
        j["spec"]["template"]["metadata"]["labels"]["serving.conch.dev/version"] for j in k.jobs("gone")
    ]
    assert sorted(versions) == ["v1", "v2"]  # no duplicate build Job
    assert [(h["version"], h["result"]) for h in k.status("gone")["history"]] == [
        ("v1", "Succeeded"),
        ("v2", "Succeeded"),
    ]

    def cached_mds() -> bool:
        return operator.metric("conch_cache_objects", 'resource="modeldeployments"') == 1

    wait_for("no ghost of the deleted ModelDeployment in the cache", cached_mds, 30)
    assert (operator.metric("conch_cache_evicted_total", 'resource="modeldeployments"') or 0) >= 1
    assert (operator.metric("conch_cache_evicted_total", 'resource="jobs"') or 0) >= 1
    assert operator.proc.poll() is None
    print(f"apiserver away for {away:.1f}s; the recreated Job's pod came {pod_after:.1f}s after the Job")
