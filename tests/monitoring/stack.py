"""The monitoring stack of testenv/monitoring.sh as a test handle: one per test session, on free ports.

`Monitoring` is what the session fixture `monitoring` (tests/conftest.py) yields:

- `url`: the Prometheus base URL on 127.0.0.1 (HTTP API under /api/v1).
- `query(promql)`: an instant query; the result vector as a list of {"metric": {...}, "value": [t, "v"]}.
- `wait_for_series(promql, timeout)`: polls `query` until it returns at least one series, and returns them.
- `stop()` / `start()`: stop and start only the prometheus process (same port, same TSDB), e.g. for
  "Prometheus down mid-canary"; the operator, the config bridge and the adapter keep running.
- `alerts()`, `rule_groups()`, `targets()`: /api/v1/alerts, /api/v1/rules and /api/v1/targets.
- `custom_metrics`: whether prometheus-adapter is registered as custom.metrics.k8s.io (needs a cluster
  started with the front-proxy flags of testenv/cluster.sh).
- `scrape_interval`: the global one; a ServiceMonitor's own interval wins (Conch's: spec.monitoring).

The stack is real: the Prometheus Operator (controller-id = this session's name) turns every
ServiceMonitor and PrometheusRule in the cluster into Prometheus' configuration, which a bridge hands
to a prometheus process on the host; prometheus-adapter serves the chart's queue-time rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MONITORING_SH = ROOT / "testenv" / "monitoring.sh"
Series = dict[str, Any]


@dataclass
class Monitoring:
    """Handle to a running monitoring stack (see the module docstring)."""

    url: str
    env: dict[str, str]
    state: Path
    scrape_interval: str
    custom_metrics: bool

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=15) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[Series]:
        """Instant query: the series of the result vector (a scalar comes back as one series)."""
        data = self._get("/api/v1/query", query=promql)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[Series] = data["result"]
        return result

    def wait_for_series(self, promql: str, timeout: float = 60) -> list[Series]:
        """Poll `promql` until it returns at least one series; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                series = self.query(promql)
                if series:
                    return series
                last = "no series"
            except OSError as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for series of {promql!r}; last: {last}")

    def alerts(self) -> list[Series]:
        alerts: list[Series] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[Series]:
        """/api/v1/rules groups; a group's `file` is named <namespace>-<PrometheusRule>-<uid>.yaml."""
        groups: list[Series] = self._get("/api/v1/rules")["groups"]
        return groups

    def targets(self) -> list[Series]:
        targets: list[Series] = self._get("/api/v1/targets", state="active")["activeTargets"]
        return targets

    def script(self, command: str, timeout: float = 240) -> str:
        proc = subprocess.run(
            ["bash", str(MONITORING_SH), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"testenv/monitoring.sh {command} failed:\n{proc.stderr[-4000:]}{self.logs()}")
        return proc.stdout

    def logs(self) -> str:
        return "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.state.glob("logs/*.log"))
        )

    def stop(self) -> None:
        """Stop the prometheus process only (the rest of the stack keeps running)."""
        self.script("prometheus-stop", timeout=30)

    def start(self) -> None:
        """Start prometheus again (same port and TSDB); returns when it answers /-/ready."""
        self.script("prometheus-start", timeout=90)


def free_port() -> int:
    from tests.support.processes import free_port as port

    return port()


@contextlib.contextmanager
def running(cluster_dir: Path, name: str, state: Path, scrape_interval: str = "2s") -> Iterator[Monitoring]:
    """Start a stack against the cluster in `cluster_dir`; stop it and remove its objects afterwards."""
    prom_port = free_port()
    env = {
        **os.environ,
        "CONCH_CLUSTER_DIR": str(cluster_dir),
        "CONCH_MONITORING_DIR": str(state),
        "CONCH_MONITORING_NAME": name,
        "CONCH_PROM_PORT": str(prom_port),
        "CONCH_PROM_OPERATOR_PORT": str(free_port()),
        "CONCH_ADAPTER_PORT": str(free_port()),
        "CONCH_SCRAPE_INTERVAL": scrape_interval,
        "CONCH_ADAPTER_RATE_WINDOW": "10s",
    }
    handle = Monitoring(f"http://127.0.0.1:{prom_port}", env, state, scrape_interval, custom_metrics=False)
    try:
        handle.script("up")
        handle.custom_metrics = _apiservice_ours(cluster_dir, name)
        yield handle
    finally:
        subprocess.run(
            ["bash", str(MONITORING_SH), "down"], env=env, capture_output=True, timeout=120, check=False
        )


def _apiservice_ours(cluster_dir: Path, name: str) -> bool:
    cache = Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache" / "conch"))
    proc = subprocess.run(
        [str(cache / "bin" / "kubectl"), "--kubeconfig", str(cluster_dir / "kubeconfig"), "get", "apiservice",
         "v1beta1.custom.metrics.k8s.io", "-o", "jsonpath={.metadata.labels.conch\\.dev/monitoring}"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return proc.returncode == 0 and proc.stdout.strip() == name
