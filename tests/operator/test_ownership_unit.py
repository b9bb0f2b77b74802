"""An object under a child's name that this ModelDeployment does not control is never used, written
or adopted: the decision leaves that child out (and every Deployment while the admin-key Secret's
name is taken), says OwnershipConflict in Degraded (an Event), and takes the name once it is free.
Pure: snapshots from the table tests' World, and a fake client for `snapshot.observe`."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import test_decide_unit as tables
from test_decide_unit import NAME, NS, UID, World, cond, md_obj, metric, reasons

from conch import apply, controller, decide, errors, kinds, plan, snapshot
from conch.render import common, secret

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
SECRET = f"{NAME}{secret.NAME_SUFFIX}"
SECRET_URL = kinds.SECRET.path(NS, SECRET)


def theirs(kind: str, name: str, owner_uid: str | None = None, **extra: Any) -> Obj:
    """An object someone else made under a child's name (with our labels, even: labels prove nothing)."""
    api_version = {"Secret": "v1", "Service": "v1", "Deployment": "apps/v1"}[kind]
    meta: Obj = {"name": name, "namespace": NS, "labels": {common.LABEL_MD: NAME}}
    if owner_uid is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment", "name": NAME,
             "uid": owner_uid, "controller": True},
        ]  # fmt: skip
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}


def their_secret() -> Obj:
    return theirs("Secret", SECRET, data={secret.DATA_KEY: base64.b64encode(b"their-key").decode()})


def built() -> World:
    """A world whose v1 build has just succeeded: the next pass would roll it out."""
    w = World(md_obj())
    w.run()
    w.finish_build()
    return w


def mentions(p: plan.Plan, text: str) -> bool:
    return any(text in str(c.desired) for c in p.children)


def test_an_unowned_admin_secret_holds_back_the_deployment_and_is_never_read() -> None:
    w = built()
    w.objects[("Secret", SECRET)] = their_secret()
    p = w.run()
    assert p.applied("Secret") == [] and p.applied("Deployment") == [], "neither written nor used"
    assert not mentions(p, "their-key")
    degraded = cond(p, "Degraded")
    assert degraded.status == "True" and degraded.reason == "OwnershipConflict"
    assert f"Secret {NS}/{SECRET} already exists" in degraded.message and "owners: none" in degraded.message
    assert f"Deployment {NS}/{NAME} is not applied" in degraded.message
    assert "OwnershipConflict" in reasons(p)
    assert p.new_status is not None and p.new_status.phase == "Failed"
    assert p.new_status.current_version is None
    assert SECRET_URL in p.taken and metric(p, "ROLLOUTS", "started") == 0
    assert metric(p, "OWNERSHIP_CONFLICTS") == 2
    assert p.requeue is not None and p.requeue <= decide.CONFLICT_RETRY
    again = w.decide()
    assert again.writes() == [] and again.events == [], "said once; an unchanged conflict writes nothing"
    del w.objects[("Secret", SECRET)]  # the team frees the name
    p = w.run()
    ours = {secret.DATA_KEY: base64.b64encode(b"admin-key").decode()}
    assert [s["data"] for s in p.applied("Secret")] == [ours], "a key of its own"
    assert len(p.applied("Deployment")) == 1 and p.taken == []
    assert cond(p, "Degraded").reason == "AsExpected"


def test_a_secret_another_modeldeployment_controls_is_theirs_too() -> None:
    w = built()
    w.objects[("Secret", SECRET)] = {
        **their_secret(),
        "metadata": theirs("Secret", SECRET, "uid-0")["metadata"],
    }
    p = w.decide()
    assert p.applied("Deployment") == [] and "ModelDeployment/md" in cond(p, "Degraded").message


def test_a_taken_service_is_left_out_and_the_rest_rolls_out() -> None:
    w = built()
    w.objects[("Service", NAME)] = theirs("Service", NAME, spec={"selector": {"app": "web"}})
    w.run()
    p = w.run()
    assert p.new_status is not None and p.new_status.current_version == "v1"
    assert p.new_status.phase == "Degraded" and cond(p, "Ready").status == "True"
    degraded = cond(p, "Degraded")
    assert degraded.reason == "OwnershipConflict" and f"Service {NS}/{NAME}" in degraded.message
    assert w.objects[("Service", NAME)]["spec"] == {"selector": {"app": "web"}}, "never written"
    assert w.get("Deployment", NAME) is not None and w.get("Secret", SECRET) is not None


def test_a_predecessors_deployment_is_neither_read_nor_rolled() -> None:
    w = built()
    w.objects[("Deployment", NAME)] = theirs("Deployment", NAME, "uid-0", spec={"replicas": 7})
    p = w.decide()
    assert p.applied("Deployment") == [] and f"Deployment {NS}/{NAME}" in cond(p, "Degraded").message
    assert p.new_status is not None and p.new_status.replicas == 0, "its replicas are not ours"


def test_claimed_moves_what_we_do_not_control_out_of_the_slots() -> None:
    ours = theirs("Service", NAME, UID)
    snap = snapshot.Snapshot(md=md_obj(), now=tables.T0, service=ours, admin_secret=their_secret())
    out = snapshot.claimed(snap)
    assert out.service is ours and out.admin_secret is None and out.taken == (their_secret(),)
    assert snapshot.claimed(out) is out


def test_controlled_wants_the_controller_reference() -> None:
    obj = theirs("Service", NAME, UID)
    assert apply.controlled(obj, UID) and not apply.controlled(obj, "uid-0")
    obj["metadata"]["ownerReferences"][0]["controller"] = False
    assert not apply.controlled(obj, UID) and apply.owned(obj, UID)


class FakeKube:
    """`get` answers from what the cache would hold (objects with our label); `read` from the apiserver."""

    def __init__(self, cached: dict[str, Obj], apiserver: dict[str, Obj]) -> None:
        self.cached, self.apiserver = cached, apiserver
        self.reads: list[str] = []

    def get(self, url: str) -> Obj | None:
        return self.cached.get(url)

    def read(self, url: str) -> Obj | None:
        self.reads.append(url)
        return self.apiserver.get(url)

    def list(self, url: str, label_selector: str | None = None) -> list[Obj]:
        return []

    def served(self, group_version: str) -> bool:
        return False


def test_observe_reads_a_taken_name_from_the_apiserver_until_it_is_free() -> None:
    md = md_obj()
    svc_url, md_url = kinds.SERVICE.path(NS, NAME), snapshot.md_url(NS, NAME)
    unlabeled = theirs("Service", NAME)
    client = FakeKube({md_url: md}, {md_url: md, svc_url: unlabeled})
    snap = snapshot.observe(client, NS, NAME, tables.T0)  # type: ignore[arg-type]
    assert snap is not None and snap.taken == () and client.reads == [], "the cache cannot see it"
    snap = snapshot.observe(client, NS, NAME, tables.T0, recheck={svc_url})  # type: ignore[arg-type]
    assert snap is not None and snap.service is None and snap.taken == (unlabeled,)
    # a Secret remembered as someone else's is read again: it may be gone by now
    client.cached[SECRET_URL] = their_secret()
    snap = snapshot.observe(client, NS, NAME, tables.T0)  # type: ignore[arg-type]
    assert snap is not None and snap.admin_secret is None and snap.taken == ()
    assert client.reads[-1] == SECRET_URL


def test_an_ownership_conflict_error_names_its_path() -> None:
    exc = errors.OwnershipConflictError("taken", SECRET_URL)
    assert exc.url == SECRET_URL and str(exc) == "taken"


class ApplyKube(FakeKube):
    def __init__(self, apiserver: dict[str, Obj]) -> None:
        super().__init__({}, apiserver)
        self.applied: list[str] = []

    def apply(self, url: str, obj: Obj, field_manager: str = "") -> Obj:
        self.applied.append(url)
        return obj


def test_act_meeting_a_taken_secret_applies_no_deployment() -> None:
    w = built()
    p = w.decide()  # the snapshot saw no Secret: the name was taken after it was read
    client = ApplyKube({SECRET_URL: their_secret()})
    met = controller.act(client, w.md, plan.Plan(children=p.children))  # type: ignore[arg-type]
    assert [c.url for c in met] == [SECRET_URL]
    assert not any("/deployments/" in url for url in client.applied)
