"""The agent's Node object: registration, heartbeats (a Lease, like a kubelet) and removal.

The node is tainted so that only pods that ask for it (a toleration plus a nodeSelector on
`node.conch.dev/agent`) land here: every other pod in the cluster keeps going to kwok's nodes.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import threading
from typing import Any

from testenv.nodeagent import status

Obj = dict[str, Any]
LABEL = "node.conch.dev/agent"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
LEASE_SECONDS = 40
HEARTBEAT = 10.0
VERSION = "v0.1.0-conch-node-agent"
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def render_node(name: str, pod_cidr: str, cpu: str, memory: str, gpus: int) -> Obj:
    """The Node object (spec and metadata; status goes through the status subresource)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                LABEL: "true",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **({"nvidia.com/gpu.present": "true"} if gpus else {}),
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": [TAINT]},
    }


def render_node_status(cpu: str, memory: str, gpus: int) -> Obj:
    now = status.now_iso()
    capacity = {"cpu": cpu, "memory": memory, "pods": "32", "ephemeral-storage": "50Gi"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    healthy = {"MemoryPressure": "KubeletHasSufficientMemory", "DiskPressure": "KubeletHasNoDiskPressure",
               "PIDPressure": "KubeletHasSufficientPID"}  # fmt: skip
    conditions = [
        {"type": t, "status": "False", "reason": r, "lastHeartbeatTime": now, "lastTransitionTime": now}
        for t, r in healthy.items()
    ]
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "conch node agent",
             "lastHeartbeatTime": now, "lastTransitionTime": now}  # fmt: skip
    conditions.append(ready)
    return {
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": socket.gethostname()},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "osImage": "local processes",
                "kernelVersion": "", "kubeletVersion": VERSION, "kubeProxyVersion": "",
                "containerRuntimeVersion": "conch-node-agent://0.1.0",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        }
    }  # fmt: skip


def render_lease(name: str, renew: datetime.datetime) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


class IpPool:
    """Pod IPs from the node's loopback CIDR, never handed out twice in one agent run."""

    def __init__(self, cidr: str) -> None:
        network = ipaddress.ip_network(cidr, strict=False)
        if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(LOOPBACK):
            raise ValueError(f"--pod-cidr {cidr} must lie inside 127.0.0.0/8 (pods bind real sockets)")
        self.hosts = network.hosts()
        next(self.hosts)  # the first address stays the node's own
        self.lock = threading.Lock()

    def take(self) -> str:
        with self.lock:
            return str(next(self.hosts))
