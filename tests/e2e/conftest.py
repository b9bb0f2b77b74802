"""The node agent as a fixture: one extra node whose pods run as local processes (hack/nodeagent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, Cluster, wait_for

AGENT_LABEL = "node.conch.dev/agent"


@dataclass(frozen=True)
class NodeAgent:
    name: str
    state: Path
    log: Path

    @staticmethod
    def scheduling() -> dict[str, object]:
        """What a pod spec section needs to land on the agent's node (and nowhere else)."""
        return {
            "nodeSelector": {AGENT_LABEL: "true"},
            "tolerations": [{"key": AGENT_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
        }


def node_ready(cluster: Cluster, name: str) -> bool:
    proc = cluster.kubectl("get", "node", name, "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    conditions = json.loads(proc.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture
def node_agent(cluster: Cluster, tmp_path: Path) -> Iterator[NodeAgent]:
    """Start `python -m nodeagent` on a fresh node; stop it (it removes its node) afterwards."""
    agent = NodeAgent(name=f"agent-{os.getpid()}", state=tmp_path / "agent", log=tmp_path / "agent.log")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "hack"), "KUBECONFIG": str(cluster.kubeconfig)}
    cmd = [sys.executable, "-m", "nodeagent", "--node-name", agent.name, "--state-dir", str(agent.state)]
    with agent.log.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_for(
            f"node {agent.name} Ready", lambda: proc.poll() is None and node_ready(cluster, agent.name), 60
        )
        yield agent
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        cluster.kubectl("delete", "node", agent.name, "--wait=false", check=False)
