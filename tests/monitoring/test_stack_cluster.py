"""The monitoring stack itself (testenv/monitoring.sh through the `monitoring` fixture) on the real control
plane: the Prometheus Operator's configuration reaches the prometheus process, a ServiceMonitor becomes
a scrape target with the labels Conch relies on, and prometheus stops and starts on its own.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/-/ready", timeout=2).read()
    except OSError:
        return False
    return True


def test_servicemonitor_becomes_a_target_and_prometheus_restarts(
    cluster: Cluster, namespace: str, monitoring: Any
) -> None:
    # Prometheus scrapes itself through a ServiceMonitor: a selector-less Service + EndpointSlice on loopback
    port = int(monitoring.url.rsplit(":", 1)[1])
    objects = [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "self", "namespace": namespace, "labels": {"app": "self"}},
         "spec": {"ports": [{"name": "web", "port": 9090, "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "self", "namespace": namespace,
                      "labels": {"kubernetes.io/service-name": "self"}},
         "addressType": "FQDN", "endpoints": [{"addresses": ["127.0.0.1"]}],  # (IPv4 refuses loopback)
         "ports": [{"name": "web", "port": port, "protocol": "TCP"}]},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "self", "namespace": namespace},
         "spec": {"selector": {"matchLabels": {"app": "self"}},
                  "endpoints": [{"port": "web", "interval": "2s"}]}},
    ]  # fmt: skip
    for obj in objects:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    series = monitoring.wait_for_series(f'up{{namespace="{namespace}",service="self"}} == 1', 60)
    assert series[0]["metric"]["job"] == "self" and series[0]["metric"]["endpoint"] == "web"

    monitoring.stop()
    assert not answers(monitoring.url)
    monitoring.start()
    assert answers(monitoring.url)
    # same TSDB: what was scraped before the restart is still there, and scraping goes on
    assert monitoring.query(f'count_over_time(up{{namespace="{namespace}"}}[10m]) > 0')
    wait_for(
        "a scrape after the restart", lambda: monitoring.query(f'up{{namespace="{namespace}"}} == 1'), 30
    )
