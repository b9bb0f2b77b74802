"""The one write path for child objects: server-side apply, skipped when nothing would change.

Every child is applied with `application/apply-patch+yaml`, field manager `conch-operator`,
force=True. Before writing, the desired object is compared with the live one: the write is skipped
when (a) the live object carries the hash of exactly this desired object, so nothing we want has
been added or removed since our last apply, and (b) every field we set still has the value we set
(so drift by someone else is corrected). The apiserver normalises a few values (quantities), which
the comparison tolerates. An unchanged spec therefore causes no write at all.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from conch import errors, kube
from conch.api import keys, quantity

Obj = dict[str, Any]
HASH_ANNOTATION = "serving.conch.dev/applied-hash"


def amount(value: Any) -> Decimal | None:
    """`value` as a Kubernetes quantity, or None when it is not one. Text without a digit ("m", "E",
    an enum's value) parses as a quantity of 0, but is compared as text."""
    if isinstance(value, str) and not any(c.isdigit() for c in value):
        return None
    return quantity.value_of(value)


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    a, b = amount(want), amount(have)
    return a is not None and a == b


def matches(want: Any, have: Any) -> bool:
    """Whether every field of `want` is present in `have` with the same value (lists: same length)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and matches(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(matches(a, b) for a, b in zip(want, have, strict=True))
        )
    return _scalar_equal(want, have)


def desired_hash(obj: Obj) -> str:
    """A short stable hash of the desired object."""
    return hashlib.sha256(keys.canonical(obj).encode()).hexdigest()[:16]


def with_hash(obj: Obj) -> Obj:
    """`obj` with its own hash recorded in an annotation."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), HASH_ANNOTATION: desired_hash(obj)}
    return {**obj, "metadata": meta}


def up_to_date(desired: Obj, live: Obj | None) -> bool:
    """Whether applying `desired` over `live` would change nothing we manage."""
    if live is None:
        return False
    stamped = with_hash(desired)
    live_hash = live.get("metadata", {}).get("annotations", {}).get(HASH_ANNOTATION)
    return live_hash == stamped["metadata"]["annotations"][HASH_ANNOTATION] and matches(stamped, live)


def apply(client: kube.Kube, desired: Obj, live: Obj | None = None) -> tuple[bool, Obj]:
    """Apply `desired` unless the live object already matches; returns (written, live object).

    `live` is what the caller saw (a pass's snapshot, from the cache). When it saw nothing, the name
    is read from the apiserver itself before anything is created (the cache holds only objects with
    our label): an object there that the desired owner does not control (a user's own Service of
    that name, another ModelDeployment's canary) is never taken over. Server-side apply with force
    would rewrite it, and our ownerReference would let the garbage collector delete it with the owner.
    (`decide` already leaves out every child whose name the snapshot saw taken; this is the check for
    what the cache could not see: an object without our label.)
    """
    url = kube.path_of(desired)
    if live is None:
        live = client.read(url)  # only on the way to a create: an idle pass never gets here
    uid = owner_uid(desired)
    if live is not None and uid is not None and not controlled(live, uid):
        raise errors.OwnershipConflictError(taken(desired, live), url)
    if live is not None and up_to_date(desired, live):
        return False, live
    return True, client.apply(url, with_hash(desired))


def owner_uid(desired: Obj) -> str | None:
    """The uid of the controller a rendered child names (None: it names none)."""
    refs = desired.get("metadata", {}).get("ownerReferences") or []
    return next((r["uid"] for r in refs if r.get("controller")), refs[0]["uid"] if refs else None)


def taken(desired: Obj, live: Obj) -> str:
    """Why `desired` is not applied: `live`, under its name, is another owner's (or nobody's)."""
    meta = desired["metadata"]
    owners = ", ".join(
        f"{r.get('kind')}/{r.get('name')}" for r in live["metadata"].get("ownerReferences") or []
    )
    return (
        f"{desired['kind']} {meta.get('namespace')}/{meta['name']} already exists and is not owned by this "
        f"{_owner_kind(desired)} (owners: {owners or 'none'}): Conch never takes over an object it did not "
        "create; delete or rename it, or rename the ModelDeployment"
    )


def _owner_kind(desired: Obj) -> str:
    refs = desired.get("metadata", {}).get("ownerReferences") or [{}]
    return str(refs[0].get("kind", "owner"))


def controlled(live: Obj | None, owner_uid: str) -> bool:
    """Whether `live` exists and its controller is `owner_uid`: the only objects Conch uses or writes
    under a child's name (anything else there is someone else's, even with our labels)."""
    owners = (live or {}).get("metadata", {}).get("ownerReferences") or []
    return live is not None and any(r.get("uid") == owner_uid and r.get("controller") for r in owners)


def owned(live: Obj | None, owner_uid: str) -> bool:
    """Whether `live` exists and `owner_uid` is among its owners (we delete only what we own)."""
    owners = (live or {}).get("metadata", {}).get("ownerReferences", [])
    return live is not None and any(ref.get("uid") == owner_uid for ref in owners)


def absent(client: kube.Kube, url: str, owner_uid: str) -> bool:
    """Delete the object at `url` if it exists and we own it; returns whether a delete was sent."""
    if not owned(client.get(url), owner_uid):
        return False
    client.delete(url)
    return True


def remove(client: kube.Kube, url: str) -> None:
    """Delete the object at `url`, which the caller saw and found owned (a reconcile pass's snapshot);
    one already gone is no error."""
    client.delete(url)


def apply_status(client: kube.Kube, owner: Obj, status: Obj) -> bool:
    """Apply the owner's status subresource unless it is already exactly `status`; returns whether written.

    The write carries the resourceVersion the status was computed from: if the object changed since
    (a spec edit, or a read from a cache an event behind), the apiserver answers 409 and the pass runs
    again on the newer object, instead of overwriting history computed from an older one.
    """
    if owner.get("status", {}) == status:
        return False
    meta = owner["metadata"]
    body = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": status,
    }
    if meta.get("resourceVersion"):
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]
    client.apply(kube.path_of(owner) + "/status", body)
    return True
