"""A generative model scales on its own load (issue 21): examples/cpu-smollm2.yaml (a cache hit on the
session's llm_store when the generation e2e ran first) on the node agent with one sequence per pod and a
ServiceMonitor every 2 s; the real Prometheus scrapes its Triton's conch_llm_* series, prometheus-adapter
serves its waiting sequences (the chart's rule) to a real HPA, which goes 1 -> 2 under a bounded
streaming load on the first pod's own address and back to 1 after it. The second pod is a second real
tritonserver that loads the model and answers a real token before it is Ready. After the load, the canary
analysis' own TTFT and ITL queries (conch.promql, as the operator sends them) are asked of the real
Prometheus with the serving version on both sides: each finds the scraped histograms and the ratios are 1.

A second test rolls out a canary with a slower decoder: the same checkpoint exported unquantized (fp32,
about 2.3x the int8 decoder's time per token on this machine, measured with onnxruntime-genai alone).
Under the same load on both versions' pods the analysis' interTokenLatencyRatio (the generators' own
histograms in the real Prometheus) is over its bound of 1.5 and the canary is aborted with the number.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import yaml
from chart import helmrun
from conftest import Cluster, running_node_agent, wait_for

from conch import promql
from conch.api import types
from conch.render import common
from monitoring import release
from monitoring.scenario import Scenario

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MD, MODEL = "smollm2-scaling", "smollm2"
PODS = f"serving.conch.dev/modeldeployment={MD},app.kubernetes.io/component=triton"
CUSTOM_METRIC = "conch_llm_waiting_sequences"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
STREAMS = 4
LOAD_S = 240.0
MAX_ITL_RATIO = 1.5


def _modeldeployment(agent: Any) -> dict[str, Any]:
    md = yaml.safe_load((ROOT / "examples" / "cpu-smollm2.yaml").read_text())
    spec = md["spec"]
    spec.pop("replicas")
    for section in ("build", "serving"):
        spec.setdefault(section, {}).update(agent.scheduling())
    spec["serving"] |= {
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "startupTimeoutSeconds": 300,
        "generation": {"maxSequences": 1, "maxQueue": 32},
    }
    spec["autoscaling"] = {
        "minReplicas": 1, "maxReplicas": 2, "waitingSequences": {"average": 1},
        "scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": 10,  # test-only: default 300
    }  # fmt: skip
    spec["monitoring"] = {"serviceMonitor": {"enabled": True, "interval": "2s"}}
    spec["rollout"] = {"progressDeadlineSeconds": 300}
    md["metadata"]["name"] = MD
    return dict(md)


class Load:
    """STREAMS clients asking for completions back to back on one pod until stopped (or LOAD_S)."""

    def __init__(self, ip: str) -> None:
        self.client = openai.OpenAI(
            base_url=f"http://{ip}:9000/v1", api_key="unused", max_retries=0, timeout=120
        )
        self.stop = threading.Event()
        self.done = self.errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(STREAMS)]
        self.deadline = time.monotonic() + LOAD_S
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                self.client.completions.create(model=MODEL, prompt=COUNTING, temperature=0, max_tokens=48)
                ok = True
            except openai.APIError:
                ok = False
            with self.lock:
                self.done, self.errors = self.done + ok, self.errors + (not ok)

    def finish(self) -> tuple[int, int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=150)
        return self.done, self.errors


def test_hpa_scales_a_generator_on_its_waiting_sequences_and_back(
    cluster: Cluster, monitoring: Any, llm_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert monitoring.custom_metrics, "custom.metrics.k8s.io is not served (see test_metrics_e2e)"
    with _serving(cluster, llm_store, tmp_path_factory, "llm-scaling", _modeldeployment) as sc:
        _scale_up_and_down(sc, monitoring)


def test_a_canary_with_a_slower_decoder_is_aborted_on_its_inter_token_latency(
    cluster: Cluster, monitoring: Any, llm_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    version_1 = lambda agent: _canary_md(agent, "1", monitoring.url)  # noqa: E731
    with _serving(cluster, llm_store, tmp_path_factory, "llm-canary", version_1) as sc:
        _slow_canary_is_aborted(sc, monitoring.url)


@contextlib.contextmanager
def _serving(
    cluster: Cluster,
    llm_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    modeldeployment: Callable[[Any], dict[str, Any]],
) -> Iterator[Scenario]:
    """A namespace of its own with a node agent, an operator release and the store; the ModelDeployment
    `modeldeployment(agent)` applied and serving version 1. Everything is removed afterwards."""
    workdir = tmp_path_factory.mktemp(name)
    ns = f"t-{name}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "conch.dev/test=true")
    try:
        with (
            # a /24 of its own: the generation e2e's gateway can outlive its agent on the session's /24
            running_node_agent(cluster, workdir, subnet=os.getpid() + 127) as agent,
            release.operator_release(cluster, ns, workdir) as rel,
        ):
            helmrun.model_store(cluster, ns, llm_store)
            sc = Scenario(cluster, ns, rel, agent, np.zeros(1))
            sc.apply(modeldeployment(agent))
            sc.wait_serving(MD, "1", 900)
            yield sc
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"store-{ns}", "--wait=false", check=False)


def _canary_md(agent: Any, version: str, prometheus_url: str) -> dict[str, Any]:
    """The scaling test's model at a fixed single replica, rolling out by canary on the ITL ratio;
    version "2-fp32" is the same checkpoint exported unquantized."""
    md = _modeldeployment(agent)
    spec = md["spec"]
    spec.pop("autoscaling")
    spec["replicas"] = 1
    spec["version"] = version
    if version != "1":
        spec["compression"]["quantize"] = {"mode": "none"}
        spec["compression"].pop("fallback", None)
    analysis = {"prometheusUrl": prometheus_url, "intervalSeconds": 10, "minRequests": 3,
                "maxInterTokenLatencyRatio": MAX_ITL_RATIO}  # fmt: skip
    spec["rollout"] |= {"strategy": "canary", "canary": {"steps": [{"weight": 50}], "analysis": analysis}}
    return md


def _slow_canary_is_aborted(sc: Scenario, prometheus_url: str) -> None:
    stable = Load(sc.ready_ips(PODS)[0])
    canary_load: Load | None = None
    try:
        sc.apply(_canary_md(sc.agent, "2-fp32", prometheus_url))
        t0 = time.monotonic()
        canary_pods = f"{PODS},serving.conch.dev/version=2-fp32"
        canary_ip = wait_for("a Ready fp32 canary pod", lambda: sc.ready_ips(canary_pods), 600, every=1)[0]
        canary_load = Load(canary_ip)
        degraded = wait_for("the slow canary aborted", lambda: _aborted(sc, "2-fp32"), 300, every=1)
        took = time.monotonic() - t0
    finally:
        for load in (stable, canary_load):
            if load is not None:
                load.finish()
    status = sc.get("md", MD)["status"]
    assert status["currentVersion"] == "1" and status["failedVersion"] == "2-fp32", status
    (itl,) = [v for v in status["canary"]["analysis"] if v["name"] == "interTokenLatencyRatio"]
    assert itl["passed"] is False and itl["value"] > MAX_ITL_RATIO, status["canary"]
    said = f"interTokenLatencyRatio {itl['value']:g} not <= {MAX_ITL_RATIO:g}"
    assert said in degraded["message"], degraded
    print(f"slow decoder canary: interTokenLatencyRatio {itl['value']} (bound {MAX_ITL_RATIO}); aborted "
          f"{took:.1f} s after its apply (build included): {degraded['message'][:200]}")  # fmt: skip


def _aborted(sc: Scenario, version: str) -> dict[str, Any] | None:
    conditions = sc.get("md", MD).get("status", {}).get("conditions", [])
    cond = next((c for c in conditions if c["type"] == "Degraded"), {})
    ok = cond.get("reason") == "AnalysisFailed" and f"canary {version} " in cond.get("message", "")
    return cond if ok else None


def _hpa(sc: Scenario) -> dict[str, Any]:
    status: dict[str, Any] = sc.get("hpa", MD).get("status", {})
    return status


def _custom_metric(sc: Scenario) -> list[str]:
    path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{sc.ns}/pods/*/{CUSTOM_METRIC}"
    proc = sc.cluster.kubectl("get", "--raw", path, check=False)
    return [i["value"] for i in json.loads(proc.stdout)["items"]] if proc.returncode == 0 else []


def _scale_up_and_down(sc: Scenario, monitoring: Any) -> None:
    ip = wait_for("a Ready pod", lambda: sc.ready_ips(PODS), 60)[0]
    monitoring.wait_for_series(f'conch_llm_waiting_sequences{{namespace="{sc.ns}"}}', 60)
    wait_for("the custom metrics API serving 0 waiting", lambda: _custom_metric(sc) == ["0"], 120)
    t0 = time.monotonic()
    load = Load(ip)
    try:
        wait_for("the HPA to want 2 pods", lambda: _hpa(sc).get("desiredReplicas", 0) >= 2, 180)
        decided = time.monotonic() - t0
        seen = _hpa(sc)["currentMetrics"][0]["pods"]["current"]["averageValue"]
        wait_for("2 Ready Triton pods", lambda: len(sc.ready_ips(PODS)) >= 2, 300, every=1)
        ready = time.monotonic() - t0
    finally:
        done, errors = load.finish()
    assert done > 0 and errors == 0, (done, errors)
    ratios = _llm_ratios_of_one_version(sc, monitoring)
    t1 = time.monotonic()
    wait_for(
        "the HPA back to 1 pod",
        lambda: _hpa(sc).get("desiredReplicas") == 1 and sc.get("deployment", MD)["spec"]["replicas"] == 1,
        240,
        every=1,
    )
    print(
        f"llm hpa seconds: load start -> scale-up decision {decided:.1f} (waiting sequences seen {seen}, "
        f"target 1), -> 2 Ready {ready:.1f}; load stop -> back to 1 {time.monotonic() - t1:.1f}; "
        f"{done} completions, {errors} errors; canary TTFT/ITL ratio queries on one version: {ratios}"
    )


def _llm_ratios_of_one_version(sc: Scenario, monitoring: Any) -> dict[str, float | None]:
    """The canary analysis' TTFT/ITL queries and verdict on the real series, version 1 against itself."""
    spec = types.ModelDeploymentSpec.model_validate(_modeldeployment(sc.agent)["spec"])
    owner = common.Owner(MD, sc.ns, "uid", spec)
    analysis = types.CanaryAnalysis(maxTimeToFirstTokenRatio=1.5, maxInterTokenLatencyRatio=1.5)
    window = int(LOAD_S)
    values: dict[str, float | None] = {}
    for name, query in promql.queries(owner, analysis, "1", "1", window).items():
        series = monitoring.query(query)
        values[name] = float(series[0]["value"][1]) if series else None
    for part in ("ttft", "itl"):
        assert (values[f"canary_{part}_count"] or 0) > 0, (part, values)
    verdict = promql.judge(analysis, values, window)
    got = {c.name: c.value for c in verdict.values}
    assert verdict.result == "Passed", verdict
    # both sides are one series, asked a moment apart (a scrape may land in between)
    assert got["timeToFirstTokenRatio"] == pytest.approx(1.0, rel=0.05), got
    assert got["interTokenLatencyRatio"] == pytest.approx(1.0, rel=0.05), got
    return {k: got[k] for k in ("timeToFirstTokenRatio", "interTokenLatencyRatio")}
