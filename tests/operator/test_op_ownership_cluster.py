"""A child's name already taken by an object the ModelDeployment does not own (a team's own Service of
that name): the operator never takes it over, and the rest of the ModelDeployment is not held up.
Server-side apply with force would rewrite the Service's selector and ports, and Conch's
ownerReference on it would let the garbage collector delete it with the ModelDeployment. A Warning
Event names the object and its owners; once the name is free, the operator's own Service appears."""

from __future__ import annotations

import json

import pytest
from opharness import Kube, Operator, kube_fixture, md_object, operator_fixture, serving, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster
THEIRS = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken", "labels": {"team": "search"}},
    "spec": {"selector": {"app": "search-frontend"},
             "ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
}  # fmt: skip


def conflict_events(k: Kube) -> list[str]:
    events = json.loads(k.k("get", "events", "-o", "json").stdout)["items"]
    return [e["message"] for e in events if e.get("reason") == "OwnershipConflict"]


def test_op_never_takes_over_an_object_it_did_not_create(kube: Kube, operator: Operator) -> None:
    k = kube
    k.k("apply", "-f", "-", input=json.dumps(THEIRS))  # client-side apply, as a team would
    k.apply(md_object("taken"))
    k.finish_build("taken", "v1")
    wait_for("v1 serving without the Service", lambda: serving(k, "taken", "v1"), 90)
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

    wait_for("the operator's own Service once the name is free", ours, 90)
    assert len(conflict_events(k)) == 1
