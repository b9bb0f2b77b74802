"""Canary rollouts with real analysis: the real builder, real tritonserver pods on the node agent, a
real Prometheus (the `monitoring` fixture: Prometheus Operator + Prometheus scraping the pods through
Conch's ServiceMonitor) and the operator. Traffic goes only to the pods' own 127.65.x.y addresses,
from a bounded generator (2 threads, stops by itself after TRAFFIC_S seconds).

One ModelDeployment, canaries in a row:
- v2 is slow (dynamic batching that waits 200 ms for a batch of 64): analysis sees its mean latency
  above the bound and aborts; v1 keeps serving, spec.version stays v2, Degraded names the metric.
- v3 (v1's model and build) starts; Prometheus is stopped mid-canary: the canary pauses
  (AnalysisUnavailable naming the URL) and is not promoted; Prometheus starts again: the canary
  continues step by step and is promoted (the quality analysis of the same build agrees).
- v4 has other weights (the MLP trained 20 epochs; fast, no errors, it passes its own build gate):
  the quality analysis sends the stable build's probe set through both and aborts it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as triton_http
from conftest import NodeAgent
from opharness import Kube, kube_fixture, md_object, operator_fixture, wait_for  # noqa: F401  (fixtures)

from tests.support import digits_model

pytestmark = pytest.mark.e2e
MD = "dg"
TRITON = f"serving.conch.dev/modeldeployment={MD},app.kubernetes.io/component=triton"
TRAFFIC_S = 600.0  # the generator's own bound; the test stops it sooner
V1 = {
    "quantize": {"mode": "fp16"},
    "export": {"format": "onnx", "backend": "python"},
    "gate": {"minCosine": 0.99},
}
SLOW = {"maxQueueDelayMicroseconds": 200_000, "preferredBatchSizes": [64]}


def modeldeployment(
    version: str, agent: NodeAgent, prometheus: str, slow: bool = False, source: str = "models/digits.pt2"
) -> dict[str, Any]:
    on_agent = agent.scheduling()
    serving = {
        "gpus": 0, "maxBatchSize": 64, "startupTimeoutSeconds": 120,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}, **on_agent,
        **({"dynamicBatching": SLOW} if slow else {}),
    }  # fmt: skip
    analysis = {
        "prometheusUrl": prometheus, "intervalSeconds": 4, "minRequests": 20,
        "minSuccessRate": 0.99, "maxLatencyMs": 100,
        "quality": {"minCosine": 0.999, "minTop1Agreement": 0.99},
    }  # fmt: skip
    rollout = {
        "strategy": "canary", "progressDeadlineSeconds": 180,
        "canary": {"steps": [{"weight": 25, "pauseSeconds": 8}, {"weight": 50, "pauseSeconds": 8}],
                   "analysis": analysis},
    }  # fmt: skip
    return md_object(
        MD, version=version, replicas=1, build=on_agent, serving=serving, compression=V1, rollout=rollout,
        model={"name": "digits", "source": {"path": source},
               "inputs": [{"name": digits_model.INPUT, "dtype": "float32", "shape": [64]}]},
        monitoring={"serviceMonitor": {"enabled": True, "interval": "2s"}},
    )  # fmt: skip


def ready_ips(k: Kube) -> dict[str, str]:
    """Ready Triton pods' IPs -> their version."""
    out = {}
    for pod in k.items("pods", TRITON):
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            out[pod["status"]["podIP"]] = pod["metadata"]["labels"]["serving.conch.dev/version"]
    return out


class Traffic:
    """Requests to every ready pod in turn (what the Service's split does), from 2 threads, bounded.

    The threads count and never assert (an assert in a thread only ends that thread): successes by
    version, failures by version and kind, and anything else that went wrong; `check` asserts on them
    in the test's own thread."""

    def __init__(self, k: Kube) -> None:
        self.k, self.stop = k, threading.Event()
        self.versions: dict[str, str] = {}  # ready pod IP -> its version
        self.sent: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._guarded, args=(self._send,), daemon=True) for _ in range(2)
        ]
        self.threads.append(threading.Thread(target=self._guarded, args=(self._watch,), daemon=True))
        self.started = time.monotonic()

    def __enter__(self) -> Traffic:
        self._refresh()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def check(self, min_sent: dict[str, int], max_failed_share: float) -> str:
        """Nothing went wrong in a thread, each version answered at least `min_sent[version]` requests,
        and failures (pods going away between two refreshes) are at most that share of all sent."""
        assert self.problems == [], self.problems
        short = {v: self.sent[v] for v, n in min_sent.items() if self.sent[v] < n}
        assert short == {}, f"too few answered requests: {short} (wanted {min_sent})"
        total, failed = sum(self.sent.values()), sum(self.failed.values())
        assert failed <= max_failed_share * (total + failed), (
            f"{failed} of {total + failed} failed: {self.failed}"
        )
        return f"sent {dict(self.sent)}, failed {dict(self.failed)}"

    def _live(self) -> bool:
        return not self.stop.is_set() and time.monotonic() - self.started < TRAFFIC_S

    def _guarded(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # kept for check(), in the test's thread
            self.problems.append(f"{loop.__name__}: {exc!r}")
            self.stop.set()

    def _refresh(self) -> None:
        found = ready_ips(self.k)
        outside = [ip for ip in found if not ip.startswith("127.")]
        if outside:  # loopback only: stop sending at once
            self.problems.append(f"pod addresses outside 127.0.0.0/8: {outside}")
            self.stop.set()
            return
        self.versions = found

    def _watch(self) -> None:
        while self._live():
            self._refresh()
            time.sleep(1)

    def _send(self) -> None:
        x = digits_model.dataset()[0][:1].numpy()
        clients: dict[str, triton_http.InferenceServerClient] = {}
        i = 0
        while self._live():
            pods = sorted(self.versions.items())
            if not pods:
                time.sleep(0.2)
                continue
            ip, version = pods[i % len(pods)]
            i += 1
            try:
                if ip not in clients:
                    clients[ip] = triton_http.InferenceServerClient(f"{ip}:8000", network_timeout=5)
                request = triton_http.InferInput(digits_model.INPUT, list(x.shape), "FP32")
                request.set_data_from_numpy(x)
                clients[ip].infer("digits", [request])
                with self.lock:
                    self.sent[version] += 1
            except Exception as exc:  # a pod going away mid-request: counted, the next one is elsewhere
                with self.lock:
                    self.failed[f"{version}: {type(exc).__name__}"] += 1
                clients.pop(ip, None)
                time.sleep(0.1)


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _ = digits_model.train()
    return digits_model.save(model, tmp_path_factory.mktemp("digits") / "digits.pt2")


@pytest.fixture(scope="module")
def other_digits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same MLP trained 20 epochs instead of 40: other answers, and it passes its own build gate."""
    model, _ = digits_model.train(epochs=20)
    return digits_model.save(model, tmp_path_factory.mktemp("digits20") / "digits.pt2")


@pytest.fixture
def store(kube: Kube, digits_file: Path, other_digits_file: Path) -> Iterator[Path]:
    root = Path(f"/tmp/conch-store/{kube.ns}")
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "digits.pt2").write_bytes(digits_file.read_bytes())
    (root / "models" / "digits-20.pt2").write_bytes(other_digits_file.read_bytes())
    yield root


def canary_state(k: Kube) -> dict[str, Any]:
    return dict(k.status(MD).get("canary") or {})


def aborted_by_analysis(k: Kube, version: str) -> dict[str, Any] | None:
    cond = k.condition(MD, "Degraded")
    ok = cond.get("reason") == "AnalysisFailed" and f"canary {version} " in cond.get("message", "")
    return cond if ok else None


def slow_canary_is_aborted(k: Kube, agent: NodeAgent, prom: Any) -> float:
    """(b) v2 waits 200 ms per request for a batch: the latency check aborts it; v1 keeps serving."""
    k.apply(modeldeployment("v2", agent, prom.url, slow=True))
    t0 = time.monotonic()
    degraded = wait_for("v2 aborted by analysis", lambda: aborted_by_analysis(k, "v2"), 300, every=1)
    took = time.monotonic() - t0
    assert "latencyMs" in degraded["message"] and "not <= 100" in degraded["message"], degraded
    st = k.status(MD)
    assert st["currentVersion"] == "v1" and st["failedVersion"] == "v2" and st["phase"] == "Degraded"
    assert k.get("md", MD)["spec"]["version"] == "v2"  # type: ignore[index]  # the user's spec stays
    latency = next(v for v in st["canary"]["analysis"] if v["name"] == "latencyMs")
    assert latency["value"] > 100 and latency["passed"] is False
    wait_for("the canary scaled away", lambda: set(ready_ips(k).values()) == {"v1"}, 60)
    assert k.get("deployment", f"{MD}-canary")["spec"]["replicas"] == 0  # type: ignore[index]
    reasons = {e["reason"] for e in k.items("events") if e["involvedObject"]["name"] == MD}
    assert {"CanaryStarted", "CanaryAborted"} <= reasons, reasons
    return took


def canary_pauses_without_prometheus(k: Kube, agent: NodeAgent, prom: Any) -> float:
    """(c) v3 (v1's build): Prometheus stops mid-canary -> paused, not promoted; back -> promoted."""
    k.apply(modeldeployment("v3", agent, prom.url))
    wait_for("v3 step 1 reached", lambda: canary_state(k).get("stepStartedAt"), 180, every=1)
    prom.stop()
    t0 = time.monotonic()
    try:
        paused = wait_for(
            "paused on Prometheus",
            lambda: (c := k.condition(MD, "Progressing")).get("reason") == "AnalysisUnavailable" and c,
            60,
        )
        assert prom.url in paused["message"] and paused["status"] == "False", paused
        first = canary_state(k)["analyzedAt"]
        wait_for("a later analysis", lambda: canary_state(k)["analyzedAt"] != first, 30)
        st = k.status(MD)
        assert st["currentVersion"] == "v1" and st["canary"]["phase"] == "Paused", st["canary"]
    finally:
        prom.start()
    took = time.monotonic() - t0
    steps_seen: set[int] = set()

    def promoted() -> bool:
        c = canary_state(k)
        if c.get("phase") == "Progressing" and c.get("stepStartedAt"):
            steps_seen.add(c["step"])
        return k.status(MD).get("currentVersion") == "v3" and c.get("phase") == "Promoted"

    wait_for("v3 promoted", promoted, 240, every=0.5)
    assert 1 in steps_seen, steps_seen
    assert "failedVersion" not in k.status(MD)  # v3 is a fresh attempt
    values = {v["name"]: v for v in canary_state(k)["analysis"]}
    assert values["successRate"]["value"] >= 0.99 and values["latencyMs"]["passed"] is True, values
    assert values["cosine"]["passed"] is True and values["cosine"]["value"] >= 0.999, values  # same build
    wait_for("only v3 pods", lambda: set(ready_ips(k).values()) == {"v3"}, 90)
    return took


def other_weights_are_aborted_by_quality(k: Kube, agent: NodeAgent, prom: Any) -> float:
    """(d) v4: the MLP trained 20 epochs (fast, error-free, passing its own build gate): the quality
    analysis (the stable build's probe set through both versions' pods) aborts it."""
    k.apply(modeldeployment("v4", agent, prom.url, source="models/digits-20.pt2"))
    t0 = time.monotonic()
    degraded = wait_for("v4 aborted by quality analysis", lambda: aborted_by_analysis(k, "v4"), 300, every=1)
    took = time.monotonic() - t0
    assert "quality" in degraded["message"], degraded
    st = k.status(MD)
    assert st["currentVersion"] == "v3" and st["failedVersion"] == "v4", st
    built = next(h for h in st["history"] if h["version"] == "v4")
    assert built["summary"]["gate"]["passed"] is True  # it passed its own gate
    failing = [v for v in st["canary"]["analysis"] if v["passed"] is False]
    assert {v["name"] for v in failing} & {"cosine", "top1Agreement"}, st["canary"]["analysis"]
    wait_for("the v4 canary scaled away", lambda: set(ready_ips(k).values()) == {"v3"}, 60)
    return took


def test_op_canary_analysis_aborts_pauses_and_promotes(
    kube: Kube, node_agent: NodeAgent, monitoring: Any, store: Path
) -> None:
    k, prom = kube, monitoring
    started = time.monotonic()
    k.apply(modeldeployment("v1", node_agent, prom.url))
    wait_for("v1 serving", lambda: k.status(MD).get("phase") == "Serving", 300, every=1)
    t_v1 = time.monotonic() - started
    with Traffic(k) as traffic:
        v1_series = f'nv_inference_request_success{{namespace="{k.ns}",serving_conch_dev_version="v1"}}'
        prom.wait_for_series(v1_series, 60)
        t_slow = slow_canary_is_aborted(k, node_agent, prom)
        t_paused = canary_pauses_without_prometheus(k, node_agent, prom)
        t_quality = other_weights_are_aborted_by_quality(k, node_agent, prom)
    # each version answered traffic (v2 and v4 only as canaries; the analysis needs minRequests 20),
    # and failures are only the pods that went away between two refreshes of the ready list
    counts = traffic.check({"v1": 100, "v2": 20, "v3": 100, "v4": 20}, max_failed_share=0.02)
    print(
        f"canary traffic: {counts}; canary seconds: v1 serving {t_v1:.1f}, slow v2 aborted {t_slow:.1f}, "
        f"paused without Prometheus {t_paused:.1f}, v4 aborted by quality {t_quality:.1f}, "
        f"total {time.monotonic() - started:.1f}"
    )
