"""The node agent against the real control plane: pods bound to its node run as processes, and what a
kubelet would report (exit codes, termination messages, StartError, read-only volumes) comes back
through the API. The happy path (builder + Triton + probes + deletion) is the e2e test's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, NodeAgent, wait_for

from testenv.nodeagent import pod as agent_pod
from tests.support import digits_model

pytestmark = pytest.mark.cluster


def bare_pod(name: str, agent: NodeAgent, command: list[str], volumes: list[dict[str, Any]],
             mounts: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            **agent.scheduling(), "restartPolicy": "Never", "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "ghcr.io/conch-dev/model-repo-builder:0.1.0",
                            "command": command, "volumeMounts": mounts,
                            "terminationMessagePolicy": "FallbackToLogsOnError"}],
            "volumes": volumes,
        },
    }  # fmt: skip


def finished(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    pod = json.loads(cluster.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout)
    return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None


def test_read_only_store_makes_the_builder_fail_with_its_message(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, tmp_path: Path
) -> None:
    if not agent_pod.ISOLATE:
        pytest.skip("readOnly mounts are enforced only when the agent runs as root with unshare")
    store = tmp_path / "store"
    model, _ = digits_model.train(epochs=1)
    digits_model.save(model, store / "models" / "m.pt2")
    command = ["model-repo-builder", "build", "/store/models/m.pt2", "--out", "/store/repositories",
               "--summary-file", "/dev/termination-log"]  # fmt: skip
    volumes = [{"name": "store", "hostPath": {"path": str(store)}}]
    pod = bare_pod(
        "ro", node_agent, command, volumes, [{"name": "store", "mountPath": "/store", "readOnly": True}]
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(pod))
    done = wait_for("the builder pod to finish", lambda: finished(cluster, namespace, "ro"), 120)
    state = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert done["status"]["phase"] == "Failed" and state["exitCode"] != 0, state
    assert "Read-only file system" in state["message"], state
    assert str(store) not in state["message"], "local paths must show as the container's (/store/...)"
    assert not (store / "repositories").exists()


def test_a_command_the_agent_cannot_run_is_a_start_error(
    cluster: Cluster, namespace: str, node_agent: NodeAgent
) -> None:
    pod = bare_pod("bad", node_agent, ["/bin/sh", "-c", "echo hi"], [], [])
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(pod))
    done = wait_for("the pod to fail", lambda: finished(cluster, namespace, "bad"), 60)
    state = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (done["status"]["phase"], state["exitCode"], state["reason"]) == ("Failed", 128, "StartError")
    assert "'/bin/sh' is not one of conch-gateway, model-repo-builder, tritonserver" in state["message"]
    events = json.loads(cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    assert any(e["reason"] == "Failed" and e["source"]["component"] == "conch-node-agent" for e in events)
