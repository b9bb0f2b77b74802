"""The canary analysis' bounds on a generator's own histograms (TTFT, ITL as ratios to the stable's):
the PromQL asked, the verdict on the answers, and the spec's refusal on non-generative models (the
pydantic twin here; the apiserver's rule runs in test_validation_cluster through specgen's cases)."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest
import specgen

from conch import promql
from conch.api import crdgen, rules, types
from conch.render import common

pytestmark = pytest.mark.unit
TTFT, ITL = "maxTimeToFirstTokenRatio", "maxInterTokenLatencyRatio"


def generator(**analysis: Any) -> common.Owner:
    """specgen's text-generation base (a canary with a ServiceMonitor), with this analysis."""
    body = copy.deepcopy(specgen.BASES["text-generation"])
    body["rollout"]["canary"]["analysis"] = analysis
    return common.Owner("md", "ns", "uid", types.ModelDeploymentSpec.model_validate(body))


def sel(version: str) -> str:
    return f'namespace="ns",service="md",model="smollm2",serving_conch_dev_version="{version}"'


LLM_KEYS = {
    f"{who}_{s}_{end}" for who in ("canary", "stable") for s in ("ttft", "itl") for end in ("sum", "count")
}


@pytest.mark.parametrize(
    ("analysis", "llm", "nv"),
    [
        ({TTFT: 1.5}, True, False),  # the stable's histograms, not its nv_* series
        ({ITL: 2.0, "maxLatencyRatio": 2.0}, True, True),
        ({"maxLatencyRatio": 2.0}, False, True),
        ({"minSuccessRate": 0.99}, False, False),
    ],
)  # fmt: skip
def test_queries_ask_the_histograms_a_ratio_needs(analysis: dict[str, Any], llm: bool, nv: bool) -> None:
    o = generator(**analysis)
    spec_analysis = o.spec.rollout.canary_analysis()
    assert spec_analysis is not None
    got = promql.queries(o, spec_analysis, "v2", "v1", 30)
    assert LLM_KEYS & got.keys() == (LLM_KEYS if llm else set())
    assert ("stable_success" in got) == nv and "canary_success" in got
    if llm:
        assert got["canary_ttft_sum"] == (
            f"sum(increase(conch_llm_time_to_first_token_seconds_sum{{{sel('v2')}}}[30s]))"
        )
        assert got["stable_itl_count"] == (
            f"sum(increase(conch_llm_inter_token_latency_seconds_count{{{sel('v1')}}}[30s]))"
        )


def _values(ttft: tuple[float | None, ...] | None, **extra: float | None) -> dict[str, float | None]:
    """100 canary requests, and (canary sum, canary count, stable sum, stable count) of TTFT."""
    out: dict[str, float | None] = {"canary_success": 100, "canary_failure": 0}
    if ttft is not None:
        keys = ("canary_ttft_sum", "canary_ttft_count", "stable_ttft_sum", "stable_ttft_count")
        out.update(zip(keys, ttft, strict=True))
    return {**out, **extra}


@pytest.mark.parametrize(
    ("bounds", "values", "result", "message"),
    [
        ({TTFT: 1.5}, _values((12.0, 100, 10.0, 100)), "Passed", "timeToFirstTokenRatio 1.2 <= 1.5"),
        ({TTFT: 1.5}, _values((30.0, 100, 10.0, 100)), "Failed", "timeToFirstTokenRatio 3 not <= 1.5"),
        ({ITL: 1.5}, _values(None, canary_itl_sum=3.2, canary_itl_count=400, stable_itl_sum=1.0,
                             stable_itl_count=400), "Failed", "interTokenLatencyRatio 3.2 not <= 1.5"),
        ({ITL: 1.5, TTFT: 1.5}, _values((12.0, 100, 10.0, 100), canary_itl_sum=1.2, canary_itl_count=10,
                                        stable_itl_sum=1.0, stable_itl_count=10), "Passed",
         "timeToFirstTokenRatio 1.2 <= 1.5, interTokenLatencyRatio 1.2 <= 1.5"),
        ({TTFT: 1.5}, _values((12.0, 100, 0.0, 0)), "Inconclusive", "no data for timeToFirstTokenRatio"),
        ({TTFT: 1.5}, _values((12.0, 100, None, None)), "Inconclusive", "no data for timeToFirstTokenRatio"),
        ({TTFT: 1.5}, _values((0.0, 0, 10.0, 100)), "Inconclusive", "no data for timeToFirstTokenRatio"),
        # too few requests: a bad ratio of a handful of tokens waits for traffic, it does not fail
        ({TTFT: 1.5, "minRequests": 200}, _values((30.0, 100, 10.0, 100)), "Inconclusive",
         "100 requests reached the canary"),
    ],
)  # fmt: skip
def test_judge_bounds_the_ratios_to_the_stable(
    bounds: dict[str, Any], values: dict[str, float | None], result: str, message: str
) -> None:
    got = promql.judge(types.CanaryAnalysis.model_validate(bounds), values, 30)
    assert got.result == result and message in got.message, got


@pytest.mark.parametrize("field", [TTFT, ITL])
@pytest.mark.parametrize("base", ["batching", "text-task", "text-recipe"])
def test_an_encoder_spec_is_refused_naming_the_field(field: str, base: str) -> None:
    body = specgen.mutate(
        {"spec": specgen.BASES[base]},
        {"spec.rollout": {"strategy": "canary",
                          "canary": {"steps": [{"weight": 50}], "analysis": {field: 1.5}}},
         "spec.monitoring.serviceMonitor.enabled": True},
    )["spec"]  # fmt: skip
    with pytest.raises(pydantic.ValidationError, match=rf"rollout\.canary\.analysis\.{field} applies to"):
        types.ModelDeploymentSpec.model_validate(body)


@pytest.mark.parametrize("field", [TTFT, ITL])
def test_the_ratios_are_prometheus_checks(field: str) -> None:
    """Alone they make an analysis (no "needs a check"), and, like every Prometheus check, need the
    ServiceMonitor that labels the series with the pod's version."""
    assert types.CanaryAnalysis.model_validate({field: 1.5}).prometheus_checks()
    body = copy.deepcopy(specgen.BASES["text-generation"])
    body["rollout"]["canary"]["analysis"] = {field: 1.5}
    types.ModelDeploymentSpec.model_validate(body)
    body["monitoring"]["serviceMonitor"]["enabled"] = False
    with pytest.raises(pydantic.ValidationError, match=r"monitoring\.serviceMonitor\.enabled: true"):
        types.ModelDeploymentSpec.model_validate(body)
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        types.CanaryAnalysis.model_validate({field: 0})


def test_the_crd_carries_the_rules() -> None:
    """The apiserver's side of the twins: the spec's rule per field, and the analysis' check list."""
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    paths = {r.get("fieldPath") for r in schema["x-kubernetes-validations"]}
    assert {f".rollout.canary.analysis.{f}" for f in (TTFT, ITL)} <= paths
    analysis = schema["properties"]["rollout"]["properties"]["canary"]["properties"]["analysis"]
    assert {TTFT, ITL} <= analysis["properties"].keys()
    rule = analysis["x-kubernetes-validations"][0]
    assert f"has(self.{TTFT})" in rule["rule"] and rule["message"] == rules.ANALYSIS_MESSAGE
