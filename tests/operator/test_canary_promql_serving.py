"""The canary analysis' PromQL against a real Prometheus scraping real tritonservers.

Two tritonservers (the bundled 2.51, python backend) serve a model `m` as a stable (v1) and a canary
(v2) would; Prometheus (3.5, the one testenv/monitoring.sh runs) scrapes both every second,
each target labelled as Conch's ServiceMonitor labels a pod (namespace, service,
serving_conch_dev_version). The canary's model raises on negative inputs (Triton counts them in
nv_inference_request_failure{reason="BACKEND"}; an error *response* from the python backend counts as
a success there) and sleeps 30 ms per request; the stable echoes. Requests go to
127.0.0.1 only, a fixed count. conch.promql's queries, conch.prometheus' client and the verdict:
success rate and latency fail for the canary with the numbers the servers saw; the stable alone
passes; a stopped Prometheus is Unavailable naming its URL.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from conftest import CACHE, wait_for

from conch import prometheus, promql
from conch.api import types
from conch.render import common
from tests.support.processes import free_port, stop_process
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
CONFIG = """name: "m"
backend: "python"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ 2 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""
MODEL = """import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            if BAD and float(x.min()) < 0:
                raise pb_utils.TritonModelException("negative input")  # counted as a failure
            if BAD:
                time.sleep(0.03)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return out
"""


def repository(root: Path, bad: bool) -> Path:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text(CONFIG)
    (root / "m" / "1" / "model.py").write_text(f"BAD = {bad}\n" + MODEL)
    return root


@contextlib.contextmanager
def prometheus_scraping(work: Path, targets: dict[str, Triton]) -> Iterator[str]:
    """Prometheus on a free loopback port scraping each Triton as Conch's ServiceMonitor labels a pod."""
    static = "".join(
        f'  - targets: ["127.0.0.1:{t.metrics}"]\n'
        f'    labels: {{namespace: ns, service: md, pod: md-{v}, serving_conch_dev_version: "{v}"}}\n'
        for v, t in targets.items()
    )
    config = work / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: triton\n  static_configs:\n{static}"
    )
    port = free_port()
    cmd = [str(CACHE / "bin" / "prometheus"), f"--config.file={config}",
           f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with (work / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("prometheus ready", lambda: _ok(f"{url}/-/ready"), 60)
        yield url
    finally:
        stop_process(proc, 10)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def send(server: Triton, count: int, negative_every: int = 0) -> None:
    """`count` single requests; every `negative_every`-th one has a negative input (0: none)."""
    client = triton_http.InferenceServerClient(server.http_url, network_timeout=10)
    for i in range(count):
        x = np.ones((1, 2), np.float32) * (-1 if negative_every and i % negative_every == 0 else 1)
        request = triton_http.InferInput("x", [1, 2], "FP32")
        request.set_data_from_numpy(x)
        with contextlib.suppress(Exception):  # the canary's failures are the point
            client.infer("m", [request])
    client.close()


def owner() -> common.Owner:
    spec = types.ModelDeploymentSpec.model_validate({
        "version": "v2", "model": {"name": "m", "source": {"path": "m.pt2"}}, "storage": {"claimName": "s"},
        "monitoring": {"serviceMonitor": {"enabled": True, "interval": "1s"}},
    })  # fmt: skip
    return common.Owner("md", "ns", "uid", spec)


def test_canary_checks_read_real_triton_counters_through_real_prometheus(tmp_path: Path) -> None:
    analysis = types.CanaryAnalysis(
        min_success_rate=0.95, max_latency_ms=20, max_latency_ratio=3, min_requests=10, interval_seconds=30
    )
    with (
        run_triton(repository(tmp_path / "stable", bad=False), tmp_path / "ws") as stable,
        run_triton(repository(tmp_path / "canary", bad=True), tmp_path / "wc") as canary,
    ):
        (tmp_path / "prom").mkdir()
        with prometheus_scraping(tmp_path / "prom", {"v1": stable, "v2": canary}) as url:
            # increase() extrapolates past the last sample by up to 1.1 scrape intervals: with only a
            # few idle samples before the load, 40 requests read as 50-60. Ten idle seconds of both
            # series at 0 bound that to 10%.
            idle = 'count(count_over_time(nv_inference_request_success{model="m"}[30s]) >= 10)'
            wait_for("both servers scraped idle for 10 s", lambda: prometheus.query(url, idle) == 2, 40)
            send(stable, 40)
            send(canary, 40, negative_every=4)  # 10 of 40 fail
            queries = promql.queries(owner(), analysis, "v2", "v1", 30)

            def scraped() -> dict[str, float | None] | None:
                v = prometheus.measure(url, queries)
                done = [
                    (v["canary_success"] or 0) >= 29,
                    (v["canary_failure"] or 0) >= 9.5,
                    (v["stable_success"] or 0) >= 39,
                ]
                return v if all(done) else None

            values = wait_for("the counters scraped", scraped, 60, every=1)
            verdict = promql.judge(analysis, values, 30)
            assert verdict.result == "Failed", verdict
            checks = {v.name: v for v in verdict.values}
            # increase() extrapolates to the window's edges: about 40, not exactly
            assert checks["requests"].value is not None and 39 <= checks["requests"].value <= 50
            assert checks["successRate"].value == pytest.approx(0.75, abs=0.05), checks  # 30 of 40
            assert not checks["successRate"].passed and checks["successRate"].bound == ">= 0.95"
            assert (
                checks["latencyMs"].value is not None and checks["latencyMs"].value >= 30
            )  # the 30 ms sleep
            assert checks["latencyRatio"].value is not None and checks["latencyRatio"].value > 3
            assert "successRate 0.7" in verdict.message and "not >= 0.95" in verdict.message
            stable_queries = promql.queries(owner(), analysis, "v1", "v1", 30)
            stable_only = promql.judge(analysis, prometheus.measure(url, stable_queries), 30)
            assert stable_only.result == "Passed", stable_only
        with pytest.raises(prometheus.Unavailable, match=url):
            prometheus.query(url, "up")
