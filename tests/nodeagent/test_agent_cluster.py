"""The node agent against the real control plane: pods bound to its node run as processes, and what a
kubelet would report (exit codes, termination messages, StartError, read-only volumes) comes back
through the API, and init containers run first, in order, to completion. The happy path (builder +
Triton + probes + deletion) is the e2e test's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, NodeAgent, wait_for

from model_repo_builder.store import repository
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
    assert (
        "'/bin/sh' is not one of conch-gateway, conch-verify, model-repo-builder, tritonserver"
        in state["message"]
    )
    events = json.loads(cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    assert any(e["reason"] == "Failed" and e["source"]["component"] == "conch-node-agent" for e in events)


def published(store: Path) -> Path:
    """A small repository with its build.json, as the builder publishes one."""
    repo = store / "repositories" / "bk1"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\n')
    (repo / "m" / "1" / "model.onnx").write_bytes(b"w" * 4096)
    repository.write_build_json(repo, {"buildKey": "bk1"})
    return repo


def verifying_pod(name: str, agent: NodeAgent, store: Path, policy: str) -> dict[str, Any]:
    """The serving pods' shape: `conch-verify` as the init container, then the main container."""
    pod = bare_pod(name, agent, ["model-repo-builder", "verify", "/store/repositories/bk1"],
                   [{"name": "store", "hostPath": {"path": str(store)}}],
                   [{"name": "store", "mountPath": "/store", "readOnly": True}])  # fmt: skip
    pod["spec"]["restartPolicy"] = policy
    pod["spec"]["initContainers"] = [
        {"name": "verify", "image": "x", "command": ["conch-verify"],
         "args": ["/store/repositories/bk1", "--message-file=/dev/termination-log"],
         "volumeMounts": [{"name": "store", "mountPath": "/store", "readOnly": True}]}
    ]  # fmt: skip
    return pod


def get(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout))


def test_init_containers_run_first_and_a_failed_one_holds_the_pod(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    repo = published(store)
    pods = [verifying_pod("intact", node_agent, store, "Never")]
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(pods[0]))
    done = wait_for("the intact pod to finish", lambda: finished(cluster, namespace, "intact"), 60)
    [init] = done["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0 and init["ready"] is True, init
    assert init["state"]["terminated"]["message"] == "repository /store/repositories/bk1 verified"
    main = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert done["status"]["phase"] == "Succeeded" and main["exitCode"] == 0, done["status"]
    assert main["startedAt"] >= init["state"]["terminated"]["finishedAt"], "the main container ran after it"

    weights = repo / "m" / "1" / "model.onnx"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + b"x")
    cluster.kubectl("-n", namespace, "apply", "-f", "-",
                    input=json.dumps(verifying_pod("never", node_agent, store, "Never")))  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-",
                    input=json.dumps(verifying_pod("always", node_agent, store, "Always")))  # fmt: skip
    failed = wait_for("the Never pod to fail", lambda: finished(cluster, namespace, "never"), 60)
    [init] = failed["status"]["initContainerStatuses"]
    terminated = init["state"]["terminated"]
    assert (failed["status"]["phase"], terminated["exitCode"], terminated["reason"]) == ("Failed", 2, "Error")
    assert terminated["message"] == (
        "repository /store/repositories/bk1 failed verification: modified: m/1/model.onnx"
    )
    assert failed["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    conds = {c["type"]: c["status"] for c in failed["status"]["conditions"]}
    assert conds["Initialized"] == "False"

    def backing_off() -> dict[str, Any] | None:
        pod = get(cluster, namespace, "always")
        init = (pod["status"].get("initContainerStatuses") or [{}])[0]
        return pod if init.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff" else None

    pod = wait_for("the Always pod's init container to back off", backing_off, 60)
    [init] = pod["status"]["initContainerStatuses"]
    assert pod["status"]["phase"] == "Pending" and init["lastState"]["terminated"]["exitCode"] == 2, init
    assert "modified: m/1/model.onnx" in init["lastState"]["terminated"]["message"]
    weights.write_bytes(original)  # restored: after its back-off the init container passes, the pod runs

    def started() -> dict[str, Any] | None:
        pod = get(cluster, namespace, "always")
        main = pod["status"]["containerStatuses"][0]
        return pod if main.get("restartCount", 0) > 0 or "waiting" not in main["state"] else None

    pod = wait_for("the Always pod to run after its init container passed", started, 60)
    [init] = pod["status"]["initContainerStatuses"]
    assert init["restartCount"] == 1 and init["state"]["terminated"]["exitCode"] == 0, init
    assert pod["status"]["phase"] == "Running"
