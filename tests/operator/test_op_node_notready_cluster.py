"""A node goes NotReady under a serving ModelDeployment: its pods are evicted by the controller
manager's taint-based eviction, replaced on another node, and the ModelDeployment is Ready again
without a rebuild or a new history entry. The test times each stage.

The nodes are this test's own kwok nodes (labelled and tainted for it alone, so no other test's pods
land there and no shared node is taken down). The node dies as a kubelet does: kwok stops managing it
(its heartbeats stop) and its status says Ready=False; the node lifecycle controller then taints it
node.kubernetes.io/not-ready:NoExecute. Pods tolerate that taint for 300 s by default (the
DefaultTolerationSeconds admission plugin); the ModelDeployment here sets spec.serving.tolerations
to 5 s, as a user who wants fast failover does, so the test measures the replacement and not the
default's five minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opharness import Kube, kube_fixture, md_object, operator_fixture, serving, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster
TOLERATE_SECONDS = 5
TRITON = "serving.conch.dev/modeldeployment={},app.kubernetes.io/component=triton"


def node(name: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            # no type=kwok label: testenv/cluster.sh up counts the Ready nodes carrying it
            "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", key: "true"},
        },
        "spec": {"taints": [{"key": key, "value": "true", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "20"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "20"},
        },
    }  # fmt: skip


def node_ready(k: Kube, name: str) -> bool:
    got = k.cluster.kubectl("get", "node", name, "-o", "json", check=False)
    if got.returncode != 0:
        return False
    conditions = json.loads(got.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture
def nodes(kube: Kube) -> Iterator[tuple[str, str, str]]:
    """Two kwok nodes of this test's own: (first, second, the label/taint key that selects them)."""
    key = f"conch.dev/test-node-{kube.ns[-12:]}"
    names = (f"{kube.ns[-20:]}-a", f"{kube.ns[-20:]}-b")
    yield names[0], names[1], key
    for pod in kube.items("pods"):  # pods of a dead node never finish terminating: no kubelet confirms
        kube.k("delete", "pod", pod["metadata"]["name"], "--force", "--grace-period=0", check=False)
    for name in names:
        kube.cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def triton_pods(k: Kube, name: str) -> list[dict[str, Any]]:
    return k.items("pods", TRITON.format(name))


def ready_on(k: Kube, name: str, node_name: str) -> int:
    return sum(
        1
        for p in triton_pods(k, name)
        if p["spec"].get("nodeName") == node_name
        and not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    )


def test_op_node_notready_pods_replaced_and_ready_again(kube: Kube, nodes: tuple[str, str, str]) -> None:
    k = kube
    first, second, key = nodes
    k.cluster.kubectl("apply", "-f", "-", input=json.dumps(node(first, key)))
    wait_for(f"node {first} Ready", lambda: node_ready(k, first), 60)
    tolerations = [
        {"key": key, "operator": "Exists", "effect": "NoSchedule"},
        *[
            {"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": TOLERATE_SECONDS}
            for t in ("not-ready", "unreachable")
        ],
    ]  # fmt: skip
    serving_spec = {
        "gpus": 0, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "nodeSelector": {key: "true"}, "tolerations": tolerations,
    }  # fmt: skip
    k.apply(md_object("nr", replicas=2, serving=serving_spec))
    k.finish_build("nr", "v1")
    wait_for(
        "v1 serving on the first node", lambda: serving(k, "nr", "v1") and ready_on(k, "nr", first) == 2, 90
    )
    k.cluster.kubectl("apply", "-f", "-", input=json.dumps(node(second, key)))
    wait_for(f"node {second} Ready", lambda: node_ready(k, second), 60)

    # the first node dies: kwok stops heartbeating it and its status says NotReady
    k.cluster.kubectl("annotate", "node", first, "kwok.x-k8s.io/node-")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    down = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "test: node died",
            "lastHeartbeatTime": now, "lastTransitionTime": now}  # fmt: skip
    k.cluster.kubectl(
        "patch", "node", first, "--subresource=status", "--type=strategic",
        "-p", json.dumps({"status": {"conditions": [down]}}),
    )  # fmt: skip
    died = time.monotonic()
    least = [2]  # the fewest ready replicas the ModelDeployment's status showed meanwhile

    def replaced_on_second() -> bool:
        least[0] = min(least[0], k.status("nr").get("readyReplicas") or 0)
        return ready_on(k, "nr", second) == 2

    wait_for("2 Ready pods on the second node", replaced_on_second, 90, every=0.2)
    replaced = time.monotonic() - died

    def ready_again() -> bool:
        st = k.status("nr")
        least[0] = min(least[0], st.get("readyReplicas") or 0)
        ready = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
        return st.get("readyReplicas") == 2 and ready.get("status") == "True" and serving(k, "nr", "v1")

    wait_for("the ModelDeployment Ready again", ready_again, 60, every=0.2)
    again = time.monotonic() - died
    left = [p for p in triton_pods(k, "nr") if p["spec"].get("nodeName") == first]
    assert all(p["metadata"].get("deletionTimestamp") for p in left), "a pod stayed on the dead node"
    assert len(k.jobs("nr")) == 1  # nothing rebuilt
    assert [(h["version"], h["result"]) for h in k.status("nr")["history"]] == [("v1", "Succeeded")]
    assert replaced >= TOLERATE_SECONDS, "pods left before their toleration ran out"
    reasons = [e["reason"] for e in k.items("events") if e["involvedObject"]["name"] == "nr"]
    print(
        f"NOTREADY replaced_after={replaced:.1f}s md_ready_after={again:.1f}s "
        f"least_ready_replicas_seen={least[0]} unavailable_events={reasons.count('Unavailable')} "
        f"(tolerationSeconds {TOLERATE_SECONDS})"
    )
