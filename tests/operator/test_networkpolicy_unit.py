"""spec.serving.networkPolicy rendered: who may reach which Triton port."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_render_unit import owner

from conch.api import types
from conch.render import common, networkpolicy

pytestmark = pytest.mark.unit


def with_policy(**policy: Any) -> common.Owner:
    o = owner("cpu-digits")
    serving = o.spec.serving.model_copy(update={"network_policy": types.NetworkPolicySpec(**policy)})
    return dataclasses.replace(o, spec=o.spec.model_copy(update={"serving": serving}))


def test_no_policy_unless_enabled() -> None:
    assert networkpolicy.render_networkpolicy(owner("cpu-digits")) is None
    assert networkpolicy.render_networkpolicy(with_policy(enabled=False, from_pods={"a": "b"})) is None


def test_default_admits_this_namespace_only_on_the_serving_and_metrics_ports() -> None:
    o = with_policy(enabled=True)
    spec = networkpolicy.render_networkpolicy(o)["spec"]  # type: ignore[index]
    assert spec["podSelector"] == {"matchLabels": common.selector(o)}
    assert spec["policyTypes"] == ["Ingress"]
    serving, metrics = spec["ingress"]
    assert serving == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8000},
                                                              {"protocol": "TCP", "port": 8001}]}  # fmt: skip
    assert metrics == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8002}]}


def test_selected_callers_and_scrapers() -> None:
    o = with_policy(
        enabled=True, from_namespaces={"team": "search"}, from_pods={"app": "frontend"},
        metrics_from_namespaces={"kubernetes.io/metadata.name": "monitoring"},
    )  # fmt: skip
    serving, metrics = networkpolicy.render_networkpolicy(o)["spec"]["ingress"]  # type: ignore[index]
    # one peer with both selectors: pods labelled app=frontend IN namespaces labelled team=search
    assert serving["from"] == [
        {
            "podSelector": {"matchLabels": {"app": "frontend"}},
            "namespaceSelector": {"matchLabels": {"team": "search"}},
        }
    ]
    assert metrics["from"] == [
        {
            "podSelector": {},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        }
    ]
