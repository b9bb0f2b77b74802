"""The canary analysis' PromQL: queries on the canary's own Triton series, and the judgment of the values.

Pure: the controller sends the queries (prometheus.py) and passes the numbers back here. Triton's
counters are cumulative per model and pod; the ServiceMonitor's podTargetLabels put the pod's version
on every series (serving_conch_dev_version), so the canary's series are told from the stable's by
label. Checks: success rate = success / (success + failure) over the window; mean latency = request
duration / successful requests (Triton 2.51 exports no latency histogram or summary unless started
with --metrics-config summary_latencies=true, so the mean of the window is what every pod has);
custom queries with $placeholders and min/max bounds. A text-generation model also exports its own
histograms (llmmetrics: time to first token, inter-token latency); their _sum / _count over the
window is the mean, bounded as a ratio to the stable's, since an absolute bound would depend on the
prompt and output lengths of whatever traffic the window saw. Too few requests in the window is
inconclusive: the step waits for traffic rather than promote on no evidence.
"""

from __future__ import annotations

import math
import re
import string

from conch import canary
from conch.api import types
from conch.render import common

VERSION_LABEL = "serving_conch_dev_version"
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# A generator's histograms (model_repo_builder/triton/python_backend/llmmetrics.py), by query prefix.
LLM_SERIES = {"ttft": "conch_llm_time_to_first_token_seconds", "itl": "conch_llm_inter_token_latency_seconds"}
# Their checks' names, in the order of types.CanaryAnalysis.llm_ratios.
_LLM_CHECKS = {"ttft": "timeToFirstTokenRatio", "itl": "interTokenLatencyRatio"}


def seconds(duration: str) -> float:
    """A Prometheus duration of the ServiceMonitor's form ("15s", "1m") in seconds."""
    match = _DURATION.match(duration)
    return float(match.group(1)) * _UNIT[match.group(2)] if match else 30.0


def window_seconds(spec: types.ModelDeploymentSpec, analysis: types.CanaryAnalysis) -> int:
    """The range of increase(): the analysis interval, but at least three scrapes (two samples needed)."""
    scrape = seconds(spec.monitoring.service_monitor.interval)
    return max(analysis.interval_seconds, math.ceil(3 * scrape))


def selector(owner: common.Owner, version: str) -> str:
    """The label matchers of one version's series of the served model."""
    return (
        f'namespace="{owner.namespace}",service="{owner.name}",model="{owner.spec.model.name}",'
        f'{VERSION_LABEL}="{version}"'
    )


def _increase(metric: str, sel: str, window: int) -> str:
    return f"sum(increase({metric}{{{sel}}}[{window}s]))"


def queries(
    owner: common.Owner, analysis: types.CanaryAnalysis, version: str, stable: str, window: int
) -> dict[str, str]:
    """Name -> PromQL for every number the analysis needs."""
    out: dict[str, str] = {}
    llm = any(bound is not None for bound in analysis.llm_ratios())
    for who, ver in (("canary", version), ("stable", stable)):
        sel = selector(owner, ver)
        if who == "canary" or analysis.max_latency_ratio is not None:
            out[f"{who}_success"] = _increase("nv_inference_request_success", sel, window)
            out[f"{who}_failure"] = _increase("nv_inference_request_failure", sel, window)
            out[f"{who}_duration_us"] = _increase("nv_inference_request_duration_us", sel, window)
        for short, metric in LLM_SERIES.items() if llm else ():
            out[f"{who}_{short}_sum"] = _increase(f"{metric}_sum", sel, window)
            out[f"{who}_{short}_count"] = _increase(f"{metric}_count", sel, window)
    names = {
        "namespace": owner.namespace, "name": owner.name, "model": owner.spec.model.name,
        "version": version, "stable": stable, "window": f"{window}s",
    }  # fmt: skip
    for custom in analysis.queries or []:
        out[f"query_{custom.name}"] = string.Template(custom.query).safe_substitute(names)
    return out


def _check(name: str, value: float | None, low: float | None, high: float | None) -> types.AnalysisValue:
    parts = [f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else ""]
    bound = " and ".join(p for p in parts if p)
    if value is None:
        return types.AnalysisValue(name=name, value=None, bound=bound, passed=None)
    ok = (low is None or value >= low) and (high is None or value <= high)
    return types.AnalysisValue(name=name, value=round(value, 6), bound=bound, passed=ok)


def _mean_ms(values: dict[str, float | None], who: str) -> float | None:
    success, duration = values.get(f"{who}_success"), values.get(f"{who}_duration_us")
    if not success or duration is None:
        return None
    return duration / success / 1000.0


def _mean(values: dict[str, float | None], who: str, short: str) -> float | None:
    """A histogram's mean over the window: _sum / _count (None: no observation, or no series)."""
    count, total = values.get(f"{who}_{short}_count"), values.get(f"{who}_{short}_sum")
    return total / count if count and total is not None else None


def _llm_ratio(values: dict[str, float | None], short: str) -> float | None:
    canary_mean, stable_mean = _mean(values, "canary", short), _mean(values, "stable", short)
    return canary_mean / stable_mean if canary_mean is not None and stable_mean else None


def judge(analysis: types.CanaryAnalysis, values: dict[str, float | None], window: int) -> canary.Measurement:
    """The analysis' verdict from the queried numbers (None: no sample)."""
    requests = (values.get("canary_success") or 0.0) + (values.get("canary_failure") or 0.0)
    checks: list[types.AnalysisValue] = [_check("requests", requests, analysis.min_requests, None)]
    enough = requests >= analysis.min_requests
    if analysis.min_success_rate is not None:
        rate = (values.get("canary_success") or 0.0) / requests if enough else None
        checks.append(_check("successRate", rate, analysis.min_success_rate, None))
    mean = _mean_ms(values, "canary") if enough else None
    if analysis.max_latency_ms is not None:
        checks.append(_check("latencyMs", mean, None, analysis.max_latency_ms))
    if analysis.max_latency_ratio is not None:
        stable = _mean_ms(values, "stable")
        ratio = mean / stable if mean is not None and stable else None
        checks.append(_check("latencyRatio", ratio, None, analysis.max_latency_ratio))
    for (short, name), bound in zip(_LLM_CHECKS.items(), analysis.llm_ratios(), strict=True):
        if bound is not None:
            checks.append(_check(name, _llm_ratio(values, short) if enough else None, None, bound))
    for custom in analysis.queries or []:
        checks.append(_check(custom.name, values.get(f"query_{custom.name}"), custom.min, custom.max))
    return _verdict(checks, requests, analysis.min_requests, window)


def _verdict(
    checks: list[types.AnalysisValue], requests: float, needed: int, window: int
) -> canary.Measurement:
    failed = [c for c in checks[1:] if c.passed is False]
    if failed:
        text = "; ".join(f"{c.name} {c.value:g} not {c.bound}" for c in failed if c.value is not None)
        return canary.Measurement("Failed", tuple(checks), text)
    if requests < needed:
        text = f"{requests:g} requests reached the canary in the last {window}s (minRequests {needed})"
        return canary.Measurement("Inconclusive", tuple(checks), text)
    missing = [c.name for c in checks if c.passed is None]
    if missing:
        return canary.Measurement("Inconclusive", tuple(checks), f"no data for {', '.join(missing)}")
    text = ", ".join(f"{c.name} {c.value:g} {c.bound}" for c in checks)
    return canary.Measurement("Passed", tuple(checks), text)
