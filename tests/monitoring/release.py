"""The chart installed with its monitoring objects, and the operator run on the host as the release.

The operator's Deployment is scaled to 0 (no image runs here): the operator runs as a local process
under the release's ServiceAccount token, and the chart's metrics Service reaches it the way any
Service reaches an address outside the cluster: an EndpointSlice naming 127.0.0.1:<its port> (FQDN:
IPv4 slices refuse loopback addresses), which
the chart's ServiceMonitor (through the Prometheus Operator) turns into a real scrape target.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chart import helmrun
from conftest import wait_for

from tests.support.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Release:
    """A release whose operator runs on the host: names the chart's rules use, and where to look."""

    name: str  # the chart's fullname (release names here contain "conch")
    namespace: str
    port: int
    log: Path
    manifest: str  # the rendered manifest, as installed

    @property
    def job(self) -> str:
        """The `job` label of the operator's series (the metrics Service's name)."""
        return f"{self.name}-metrics"

    def metric(self, name: str) -> float | None:
        """Sum of a metric's samples on the operator's own /metrics, or None while it does not answer."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
        )


def metrics_endpoint(release: str, namespace: str, port: int) -> dict[str, Any]:
    """An EndpointSlice that puts the host operator's 127.0.0.1:port behind the chart's metrics Service."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": f"{release}-metrics-host", "namespace": namespace,
            "labels": {"kubernetes.io/service-name": f"{release}-metrics",
                       "endpointslice.kubernetes.io/managed-by": "conch.dev-tests"},
        },
        "addressType": "FQDN",  # the apiserver refuses loopback IPs in IPv4 slices; the literal passes here
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "metrics", "port": port, "protocol": "TCP"}],
    }  # fmt: skip


@contextlib.contextmanager
def operator_release(cluster: Any, namespace: str, workdir: Path, *values: str) -> Iterator[Release]:
    """CRDs from crds/, a release (replicas 0, ServiceMonitor every 2 s, PrometheusRule) in `namespace`,
    and the operator as a local process watching only `namespace`. Uninstalls and stops afterwards."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.wait_established("modeldeployments.serving.conch.dev")
    name = f"conch-m{secrets.token_hex(3)}"
    settings = ("--set", "crds.install=false", "--set", "replicaCount=0",
                "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.interval=2s",
                *values)  # fmt: skip
    helmrun.helm(
        "install", name, str(helmrun.CHART), "-n", namespace, *settings, kubeconfig=cluster.kubeconfig
    )
    manifest = helmrun.helm("get", "manifest", name, "-n", namespace, kubeconfig=cluster.kubeconfig).stdout
    kubeconfig = helmrun.sa_kubeconfig(cluster, namespace, name, workdir / "sa-kubeconfig")
    port, log_path = free_port(), workdir / "operator.log"
    cmd = [sys.executable, "-m", "conch", "--namespace", f"{namespace}*", "--metrics-port", str(port)]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    release = Release(name, namespace, port, log_path, manifest)
    try:
        wait_for("operator /metrics", lambda: release.metric("conch_reconciles_total") is not None, 30)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(metrics_endpoint(name, namespace, port)))
        yield release
    finally:
        stop_process(proc, 15)
        helmrun.helm("uninstall", name, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig, check=False)
        cluster.kubectl("delete", "pv", f"store-{namespace}", "--wait=false", check=False)
