"""The local control plane behaves like a real cluster for what Conch relies on.

Scheduling with GPU capacity, Jobs, HPAs, the ServiceMonitor CRD, CEL validation and RBAC are each
checked against the real apiserver, controller-manager, scheduler and kwok nodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "-o", "json", *args).stdout))


def deployment(name: str, gpus: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "example.invalid/gpu:1",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                            }
                        ]
                    },
                },
            },
        }
    )


def test_gpu_deployment_lands_on_gpu_node_and_becomes_available(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=deployment("gpu1", 1))

    def available() -> bool:
        conds = (
            get_json(cluster, "-n", namespace, "deployment", "gpu1").get("status", {}).get("conditions", [])
        )
        return any(c["type"] == "Available" and c["status"] == "True" for c in conds)

    wait_for("Deployment Available", available)
    pod = get_json(cluster, "-n", namespace, "pods", "-l", "app=gpu1")["items"][0]
    node = get_json(cluster, "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    # ExtendedResourceToleration admission added the toleration for the tainted GPU nodes.
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["spec"]["tolerations"])


def test_too_many_gpus_stays_pending_with_failed_scheduling(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=deployment("gpu9", 9))

    def failed_scheduling_event() -> list[dict[str, Any]]:
        events = get_json(cluster, "-n", namespace, "events")["items"]
        return [e for e in events if e.get("reason") == "FailedScheduling"]

    events = wait_for("FailedScheduling event", failed_scheduling_event)
    assert "nvidia.com/gpu" in events[0]["message"]
    pod = get_json(cluster, "-n", namespace, "pods", "-l", "app=gpu9")["items"][0]
    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]


def test_job_completes_with_termination_message(cluster: Cluster, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example.invalid/job:1"}],
                }
            },
        },
    }
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(job))

    def running_pod() -> str:
        pods = get_json(cluster, "-n", namespace, "pods", "-l", "job-name=once")["items"]
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return str(running[0]["metadata"]["name"]) if running else ""

    pod = wait_for("Job pod Running", running_pod)
    cluster.complete_pod(namespace, pod, 0, '{"ok": true}')

    def complete() -> bool:
        conds = get_json(cluster, "-n", namespace, "job", "once").get("status", {}).get("conditions", [])
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)

    wait_for("Job Complete", complete)
    status = get_json(cluster, "-n", namespace, "pod", pod)["status"]
    assert status["containerStatuses"][0]["state"]["terminated"]["message"] == '{"ok": true}'


def test_hpa_v2_and_service_monitor_are_accepted(cluster: Cluster, namespace: str) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    sm = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "endpoints": [{"port": "metrics", "interval": "15s"}],
        },
    }
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(hpa))
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(sm))
    assert get_json(cluster, "-n", namespace, "hpa", "h")["spec"]["maxReplicas"] == 3
    assert (
        get_json(cluster, "-n", namespace, "servicemonitor", "m")["spec"]["endpoints"][0]["port"] == "metrics"
    )
    # A ServiceMonitor that breaks the real CRD's schema is refused.
    sm["spec"]["endpoints"] = "not-a-list"
    bad = cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(sm), check=False)
    assert bad.returncode != 0 and "endpoints" in bad.stderr


CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.foundation.conch.dev"},
    "spec": {
        "group": "foundation.conch.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_cel_rule_rejects_object_with_its_message(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(CEL_CRD))
    cluster.wait_established("widgets.foundation.conch.dev", timeout=30)

    def widget(lo: int, hi: int) -> str:
        return json.dumps(
            {
                "apiVersion": "foundation.conch.dev/v1",
                "kind": "Widget",
                "metadata": {"name": f"w{lo}-{hi}"},
                "spec": {"min": lo, "max": hi},
            }
        )

    ok = wait_for(
        "Widget kind served",
        lambda: (
            cluster.kubectl("-n", namespace, "apply", "-f", "-", input=widget(1, 2), check=False).returncode
            == 0
        ),
    )
    assert ok
    bad = cluster.kubectl("-n", namespace, "apply", "-f", "-", input=widget(3, 2), check=False)
    assert bad.returncode != 0
    assert "min must not exceed max" in bad.stderr and "spec" in bad.stderr


def test_rbac_denies_what_a_narrow_role_does_not_allow(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "narrow")
    cluster.kubectl("-n", namespace, "create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "narrow",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:narrow",
    )
    token = cluster.kubectl("-n", namespace, "create", "token", "narrow").stdout.strip()
    # A kubeconfig with nothing but the token, so no admin client certificate rides along.
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    sa_config = tmp_path / "sa.kubeconfig"
    sa_config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}
                ],
                "current-context": "sa",
            }
        )
    )
    sa = Cluster(kubeconfig=sa_config, audit_log=cluster.audit_log, bin_dir=cluster.bin_dir)
    who = sa.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert who == f"system:serviceaccount:{namespace}:narrow"
    allowed = sa.kubectl("-n", namespace, "get", "pods", check=False)
    assert allowed.returncode == 0, allowed.stderr
    denied = sa.kubectl("-n", namespace, "get", "secrets", check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    denied_write = sa.kubectl("-n", namespace, "delete", "pod", "anything", check=False)
    assert denied_write.returncode != 0 and "forbidden" in denied_write.stderr.lower()


def test_every_node_heartbeats_through_a_lease(cluster: Cluster) -> None:
    # Without leases the node-lifecycle controller marks kwok's nodes NotReady after its grace
    # period and every pod on them unready: the flake this guards against.
    leases = get_json(cluster, "-n", "kube-node-lease", "leases")["items"]
    names = {lease["metadata"]["name"] for lease in leases if lease["spec"].get("renewTime")}
    assert {"gpu-node-1", "gpu-node-2", "cpu-node-1"} <= names
    nodes = get_json(cluster, "nodes", "-l", "type=kwok")["items"]
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", node["metadata"]["name"]
