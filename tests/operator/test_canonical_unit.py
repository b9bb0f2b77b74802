"""One canonical JSON (keys.canonical): sorted keys, no spaces, ASCII only; the spec key and the
applied-object hash are both taken over it."""

from __future__ import annotations

import hashlib

import pytest

from conch import apply
from conch.api import keys

pytestmark = pytest.mark.unit


def test_canonical_bytes() -> None:
    assert keys.canonical({"b": [1, {"d": None, "c": "é"}], "a": True}) == (
        '{"a":true,"b":[1,{"c":"\\u00e9","d":null}]}'
    )


def test_applied_hash_is_over_the_canonical_json() -> None:
    obj = {"metadata": {"name": "x"}, "apiVersion": "v1", "kind": "Service"}
    assert apply.desired_hash(obj) == hashlib.sha256(keys.canonical(obj).encode()).hexdigest()[:16]
    assert apply.desired_hash(obj) == "005fe68210e8755f"  # as before keys.canonical was its home
