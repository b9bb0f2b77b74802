"""A child's name already taken by an object the ModelDeployment does not control (a team's own Service
or Secret of that name): the operator never takes it over, nor uses it. Server-side apply with force
would rewrite the Service's selector and ports, and Conch's ownerReference on it would let the garbage
collector delete it with the ModelDeployment; a borrowed admin-key Secret would hand Triton's admin
APIs to whoever wrote it. Degraded says OwnershipConflict (one Warning Event), naming the object and
its owners; a taken Service does not hold up the rollout, a taken Secret holds back the Deployment.
Once the name is free the operator's own child appears, and a child deleted by hand comes back.

The operator here resyncs every 5 s: the admin-key Secret is not watched (its RBAC has no list or
watch), so its deletion is noticed by the next resync."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opharness import Kube, Operator, kube_fixture, md_object, run_operator, serving, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster
RESYNC = 5.0
THEIRS = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken", "labels": {"team": "search"}},
    "spec": {"selector": {"app": "search-frontend"},
             "ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
}  # fmt: skip


@pytest.fixture(scope="module", name="operator")
def fast_resync_operator(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    yield from run_operator(cluster, tmp_path_factory, "--resync-seconds", str(RESYNC))


def conflict_events(k: Kube) -> list[str]:
    events = json.loads(k.k("get", "events", "-o", "json").stdout)["items"]
    return [e["message"] for e in events if e.get("reason") == "OwnershipConflict"]


def test_op_never_takes_over_an_object_it_did_not_create(kube: Kube, operator: Operator) -> None:
    k = kube
    k.k("apply", "-f", "-", input=json.dumps(THEIRS))  # client-side apply, as a team would
    k.apply(md_object("taken"))
    k.finish_build("taken", "v1")
    wait_for("v1 serving without the Service", lambda: k.status("taken").get("currentVersion") == "v1", 90)
    degraded = wait_for("Degraded OwnershipConflict", lambda: conflicted(k, "taken"), 30)
    assert "Service" in degraded["message"] and "/taken already exists" in degraded["message"]
    assert k.status("taken")["phase"] == "Degraded"
    messages = wait_for("an OwnershipConflict Event", lambda: conflict_events(k), 30)
    assert len(messages) == 1, messages  # said once, though every retry meets it
    assert (
        "Service" in messages[0] and "/taken already exists" in messages[0] and "owners: none" in messages[0]
    )
    theirs = k.get("service", "taken")
    assert theirs is not None and "ownerReferences" not in theirs["metadata"]
    assert theirs["spec"]["selector"] == {"app": "search-frontend"}
    assert [p["port"] for p in theirs["spec"]["ports"]] == [80]
    assert (operator.metric("conch_ownership_conflicts_total") or 0) >= 1
    k.k("delete", "service", "taken", "--wait=true")

    def ours() -> bool:
        svc = k.get("service", "taken") or {}
        return any(
            r.get("kind") == "ModelDeployment" for r in svc.get("metadata", {}).get("ownerReferences", [])
        )

    wait_for("the operator's own Service once the name is free", ours, 30)
    wait_for("v1 serving", lambda: serving(k, "taken", "v1"), 30)
    assert len(conflict_events(k)) == 1


def conflicted(k: Kube, name: str) -> dict[str, Any] | None:
    degraded = k.condition(name, "Degraded")
    return degraded if degraded.get("reason") == "OwnershipConflict" else None


def controlled_by(obj: dict[str, Any] | None, uid: str) -> bool:
    refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def references(k: Kube, secret: str) -> list[str]:
    """Deployments and pods whose pod spec names Secret `secret`."""
    specs = [
        (f"deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in k.items("deployments")
    ]
    specs += [(f"pod/{p['metadata']['name']}", p["spec"]) for p in k.items("pods")]
    return [what for what, spec in specs if f'"{secret}"' in json.dumps(spec)]


def test_op_never_uses_a_secret_it_did_not_create_and_repairs_deleted_children(
    kube: Kube, operator: Operator
) -> None:
    k, name = kube, "own"
    secret = f"{name}-triton-admin"
    theirs = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret},
        "stringData": {"admin-key": "x"},
    }
    k.k("apply", "-f", "-", input=json.dumps(theirs))
    autoscaling = {"minReplicas": 2, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}
    k.apply(md_object(name, replicas=None, autoscaling=autoscaling))
    k.finish_build(name, "v1")
    degraded = wait_for("Degraded OwnershipConflict", lambda: conflicted(k, name), 60)
    assert f"Secret {k.ns}/{secret} already exists" in degraded["message"]
    assert f"Deployment {k.ns}/{name} is not applied" in degraded["message"]
    assert any(secret in m for m in wait_for("the Event", lambda: conflict_events(k), 30))
    assert k.get("deployment", name) is None and references(k, secret) == []
    left = k.get("secret", secret) or {}
    assert "ownerReferences" not in left["metadata"] and left["data"] == {"admin-key": "eA=="}

    k.k("delete", "secret", secret, "--wait=true")  # the name is free: the operator takes it
    wait_for("v1 serving", lambda: serving(k, name, "v1"), 60)
    uid = (k.get("md", name) or {})["metadata"]["uid"]
    assert controlled_by(k.get("secret", secret), uid)
    assert k.condition(name, "Degraded")["reason"] == "AsExpected"

    repaired: dict[str, float] = {}
    for kind in ("deployment", "service", "hpa", "pdb", "secret"):
        before = k.get(kind, secret if kind == "secret" else name)
        assert before is not None and controlled_by(before, uid), kind
        child = before["metadata"]["name"]
        k.k("delete", kind, child, "--wait=true")
        deleted = time.monotonic()

        def back(kind: str = kind, child: str = child, old: str = before["metadata"]["uid"]) -> bool:
            now = k.get(kind, child)
            return now is not None and now["metadata"]["uid"] != old and controlled_by(now, uid)

        wait_for(f"{kind} {child} back", back, 3 * RESYNC if kind == "secret" else 20)
        repaired[kind] = round(time.monotonic() - deleted, 1)
    wait_for("v1 serving", lambda: serving(k, name, "v1"), 60)
    print(f"seconds from a child's deletion to its repair (resync {RESYNC} s): {repaired}")


def test_op_repairs_the_admin_secret_in_the_middle_of_a_canary(kube: Kube, operator: Operator) -> None:
    """The canary strategy applies the admin-key Secret too (it used to leave it to the rolling one):
    deleted by hand while a canary pauses at its step, it is back by the next resync."""
    k, name = kube, "mid"
    secret = f"{name}-triton-admin"
    rollout = {"strategy": "canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 600}]}}
    k.apply(md_object(name, replicas=2, rollout=rollout))
    k.finish_build(name, "v1")
    wait_for("v1 serving", lambda: serving(k, name, "v1"), 90)
    k.apply(md_object(name, version="v2", replicas=2, rollout=rollout))
    k.finish_build(name, "v2")

    def at_step() -> bool:
        canary = k.status(name).get("canary") or {}
        return canary.get("phase") == "Progressing" and bool(canary.get("stepStartedAt"))

    wait_for("the canary paused at its step", at_step, 60)
    before = k.get("secret", secret)
    assert before is not None
    k.k("delete", "secret", secret, "--wait=true")

    def back() -> bool:
        now = k.get("secret", secret)
        return now is not None and now["metadata"]["uid"] != before["metadata"]["uid"]

    wait_for("the Secret back mid-canary", back, 3 * RESYNC)
    assert at_step(), "the canary is still at its step"
