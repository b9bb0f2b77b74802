"""spec.serving.networkPolicy on the real apiserver: applied with the ModelDeployment's owner
reference, corrected when edited, removed when disabled."""

from __future__ import annotations

import pytest
from opharness import Kube, Operator, kube_fixture, md_object, operator_fixture, serving, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster


def test_op_networkpolicy_follows_the_spec(kube: Kube, operator: Operator) -> None:
    k = kube
    policy = {"enabled": True, "fromNamespaces": {"team": "search"}}
    k.apply(md_object("np", serving={"gpus": 0, "networkPolicy": policy}))
    k.finish_build("np", "v1")
    wait_for("v1 serving", lambda: serving(k, "np", "v1"), 90)
    np = wait_for("NetworkPolicy", lambda: k.get("networkpolicy", "np"), 30)
    assert np["metadata"]["ownerReferences"][0]["name"] == "np"
    assert np["spec"]["ingress"][0]["from"] == [
        {"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "search"}}}
    ]
    k.apply(md_object("np", serving={"gpus": 0, "networkPolicy": {**policy, "fromPods": {"app": "web"}}}))
    wait_for(
        "edited policy",
        lambda: (
            (k.get("networkpolicy", "np") or {})
            .get("spec", {})
            .get("ingress", [{}])[0]
            .get("from", [{}])[0]
            .get("podSelector")
            == {"matchLabels": {"app": "web"}}
        ),
        30,
    )
    k.apply(md_object("np", serving={"gpus": 0, "networkPolicy": {"enabled": False}}))
    wait_for("NetworkPolicy removed", lambda: k.get("networkpolicy", "np") is None, 30)
