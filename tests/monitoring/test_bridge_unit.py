"""The config bridge (testenv/monitoring_bridge.py) changes only what a prometheus outside the cluster
needs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from testenv import monitoring_bridge

pytestmark = pytest.mark.unit

GENERATED = {  # the shape of what the Prometheus Operator writes into prometheus-<name>'s Secret
    "global": {"scrape_interval": "2s", "external_labels": {"prometheus": "conch-monitoring/s1",
                                                            "prometheus_replica": "$(POD_NAME)"}},
    "rule_files": ["/etc/prometheus/rules/prometheus-s1-rulefiles-0/*.yaml"],
    "scrape_configs": [{
        "job_name": "serviceMonitor/ns/digits/0",
        "kubernetes_sd_configs": [{"role": "endpointslice", "namespaces": {"names": ["ns"]}}],
        "relabel_configs": [{"source_labels": ["__meta_kubernetes_pod_label_serving_conch_dev_version"],
                             "target_label": "serving_conch_dev_version"},
                            {"source_labels": ["__tmp_hash", "__tmp_disable_sharding"],
                             "regex": "$(SHARD);|.+;.+", "action": "keep"}],
    }],
}  # fmt: skip


def test_adapt_points_discovery_and_rules_at_local_files(tmp_path: Path) -> None:
    cfg = monitoring_bridge.adapt(
        copy.deepcopy(GENERATED), "/k/kubeconfig", tmp_path / "rules", "prometheus-s1-0"
    )
    sd = cfg["scrape_configs"][0]["kubernetes_sd_configs"][0]
    assert sd == {
        "role": "endpointslice",
        "namespaces": {"names": ["ns"]},
        "kubeconfig_file": "/k/kubeconfig",
    }
    assert cfg["rule_files"] == [str(tmp_path / "rules" / "prometheus-s1-rulefiles-0" / "*.yaml")]
    assert cfg["global"]["external_labels"]["prometheus_replica"] == "prometheus-s1-0"
    relabel = cfg["scrape_configs"][0]["relabel_configs"]
    assert relabel[1]["regex"] == "0;|.+;.+"  # the only shard
    # everything else as the operator generated it
    assert relabel[0] == GENERATED["scrape_configs"][0]["relabel_configs"][0]  # type: ignore[index]
    assert cfg["global"]["scrape_interval"] == "2s"


def test_write_if_changed_reports_only_real_changes(tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    assert monitoring_bridge.write_if_changed(path, "a: 1\n")
    assert not monitoring_bridge.write_if_changed(path, "a: 1\n")
    assert monitoring_bridge.write_if_changed(path, "a: 2\n") and path.read_text() == "a: 2\n"


def pod(name: str, ip: str, phase: str = "Running", ready: bool = True, app: str = "triton") -> Any:
    ports = [{"name": "metrics", "containerPort": 8002}]
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"app": app, "v": "1"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "t", "ports": ports}]},
        "status": {"phase": phase, "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_mirror_slice_names_the_loopback_pods_a_service_selects() -> None:
    service = {"metadata": {"name": "digits", "namespace": "ns"},
               "spec": {"selector": {"app": "triton"}, "ports": [{"name": "metrics", "port": 8002,
                                                                    "targetPort": "metrics"}]}}  # fmt: skip
    pods = [pod("b", "127.65.0.3", ready=False), pod("a", "127.65.0.2"), pod("other", "127.65.0.4", app="x"),
            pod("done", "127.65.0.5", phase="Succeeded"), pod("remote", "10.0.0.7")]  # fmt: skip
    body = monitoring_bridge.mirror_slice(service, pods)
    assert body is not None and body["addressType"] == "FQDN"
    assert body["metadata"]["labels"]["kubernetes.io/service-name"] == "digits"
    seen = [(e["addresses"], e["conditions"]["ready"], e["targetRef"]["name"]) for e in body["endpoints"]]
    assert seen == [(["127.65.0.2"], True, "a"), (["127.65.0.3"], False, "b")]
    assert body["ports"] == [{"name": "metrics", "port": 8002, "protocol": "TCP"}]
    assert monitoring_bridge.mirror_slice({**service, "spec": {"ports": []}}, pods) is None  # no selector
