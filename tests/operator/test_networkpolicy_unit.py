"""spec.serving.networkPolicy rendered: who may reach which Triton port."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_render_unit import owner

from conch.api import types
from conch.render import analysis, common, deployment, networkpolicy

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


def with_quality_analysis(o: common.Owner) -> common.Owner:
    rollout = o.spec.rollout
    assert rollout.canary is not None and rollout.canary.analysis is not None
    quality = types.QualityAnalysis.model_validate({"minCosine": 0.99})
    checks = rollout.canary.analysis.model_copy(update={"quality": quality})
    canary = rollout.canary.model_copy(update={"analysis": checks})
    spec = o.spec.model_copy(update={"rollout": rollout.model_copy(update={"canary": canary})})
    return dataclasses.replace(o, spec=spec)


def test_the_canary_quality_analysis_job_reaches_the_http_port_and_nothing_else_does() -> None:
    base = owner("canary-digits")
    policy = types.NetworkPolicySpec(enabled=True, from_pods={"app": "frontend"})
    o = with_quality_analysis(
        dataclasses.replace(
            base, spec=base.spec.model_copy(update={"serving": base.spec.serving.model_copy(
                update={"network_policy": policy})})),
    )  # fmt: skip
    ingress = networkpolicy.render_networkpolicy(o)["spec"]["ingress"]  # type: ignore[index]
    assert len(ingress) == 3
    rule = ingress[2]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]  # analyze calls Triton over HTTP
    (peer,) = rule["from"]
    assert "namespaceSelector" not in peer  # the Job runs in the model's own namespace
    request = analysis.AnalysisRequest(
        canary_version="2", step=0, canary_addresses=("127.65.0.7",), stable_addresses=("127.65.0.3",),
        stable_build_key="bk-0123456789abcdef", model_name="digits",
        thresholds=analysis.QualityThresholds(0.99, None, None),
    )  # fmt: skip
    job_pod_labels = analysis.render_analysis_job(o, request)["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= job_pod_labels.items(), (
        "the rule must select the Job"
    )
    serving_labels = deployment.render_deployment(o, deployment.Served("2", "bk-0123456789abcdef", "digits"))[
        "spec"
    ]["template"]["metadata"]["labels"]
    assert not peer["podSelector"]["matchLabels"].items() <= serving_labels.items()  # not every pod
    # metric analysis only (the example as written): no rule for a Job that never runs
    assert len(networkpolicy.render_networkpolicy(dataclasses.replace(o, spec=base.spec.model_copy(
        update={"serving": o.spec.serving})))["spec"]["ingress"]) == 2  # type: ignore[index]  # fmt: skip
