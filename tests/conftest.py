"""Shared pytest fixtures: one real local control plane per test session, a namespace per test.

The cluster is the one `testenv/cluster.sh` runs (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok). The `cluster` fixture starts it when it is not already answering, and stops it
at the end of the session only if it started it (set CONCH_KEEP_CLUSTER=1 to keep it running).
kwok never runs a pod: Job pods stay Running until a test plays the workload's part with
`cluster.complete_pod(ns, pod, exit_code, message)`, which annotates the pod so that kwok (stage
testenv/cluster/kwok-pod-complete.yaml) terminates it like a kubelet would, with that exit code and
termination message. Every test must carry exactly one of the markers unit / cluster / serving / e2e, so that
`pytest -m unit` really selects the pure tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SH = ROOT / "testenv" / "cluster.sh"
CACHE = Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache" / "conch"))
STATE = Path(os.environ.get("CONCH_CLUSTER_DIR", Path.home() / ".local" / "state" / "conch" / "cluster"))
KINDS = ("unit", "cluster", "serving", "e2e")
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60, every: float = 0.3) -> T:
    """Poll `fn` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AssertionError as exc:
            last = exc
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass(frozen=True)
class Cluster:
    """Handles to the running control plane."""

    kubeconfig: Path
    audit_log: Path
    bin_dir: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built for this cluster's version against it."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until the apiserver serves a CRD. (`kubectl wait --for=condition=Established` fails
        at once, instead of waiting, while a just-created CRD has no conditions yet: seen on a fresh
        control plane under load.)"""
        jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
        wait_for(
            f"CRD {crd} established",
            lambda: (
                self.kubectl("get", "crd", crd, "-o", f"jsonpath={jsonpath}", check=False).stdout == "True"
            ),
            timeout,
        )

    def complete_pod(self, namespace: str, pod: str, exit_code: int = 0, message: str = "") -> None:
        """Make kwok terminate a Running pod with this exit code and termination message."""
        self.kubectl(
            "-n",
            namespace,
            "annotate",
            "--overwrite",
            "pod",
            pod,
            f"kwok.conch.dev/termination-message={message}",
            f"kwok.conch.dev/exit-code={exit_code}",
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse tests that do not say which kind they are; run the ones that restart the shared apiserver
    last. After a restart the control plane's own controllers trust it again only slowly (client-go's
    reflector backoff, up to a minute a step, reset after 2 quiet minutes: see
    test_op_fault_gone_cluster.py): a test that came next once saw kube-controller-manager's node
    lifecycle controller mark a kwok node's pods NotReady from a stale lease, 0 Ready pods mid-rollout."""
    for item in items:
        kinds = [k for k in KINDS if item.get_closest_marker(k) is not None]
        if len(kinds) != 1:
            raise pytest.UsageError(f"{item.nodeid}: needs exactly one marker of {KINDS}, has {kinds}")
    last = [i for i in items if i.get_closest_marker("restarts_apiserver") is not None]
    items[:] = [i for i in items if i.get_closest_marker("restarts_apiserver") is None] + last


def _cluster_answers() -> bool:
    return (
        subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, check=False).returncode == 0
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    started = False
    if not _cluster_answers():
        proc = subprocess.run(
            ["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=300, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"testenv/cluster.sh up failed:\n{proc.stderr[-4000:]}")
        started = True
    handle = Cluster(kubeconfig=STATE / "kubeconfig", audit_log=STATE / "audit.log", bin_dir=CACHE / "bin")
    os.environ["KUBECONFIG"] = str(handle.kubeconfig)
    yield handle
    if started and os.environ.get("CONCH_KEEP_CLUSTER") != "1":
        subprocess.run(["bash", str(CLUSTER_SH), "down"], capture_output=True, check=False)


# Ends every test namespace of this pytest process, so that an operator a test runs (watching a glob
# of namespaces) never reconciles the objects of another pytest process sharing the cluster.
SESSION = secrets.token_hex(2)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}{SESSION}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "conch.dev/test=true")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# ---- the node agent (testenv/nodeagent): one extra node whose pods run as local processes -------------

AGENT_LABEL = "node.conch.dev/agent"


@dataclass(frozen=True)
class NodeAgent:
    name: str
    state: Path
    log: Path

    def scheduling(self) -> dict[str, object]:
        """What a pod spec section needs to land on the agent's node (and nowhere else: the agents of
        other sessions on this machine carry the same label, and may run other code)."""
        return {
            "nodeSelector": {AGENT_LABEL: "true", "kubernetes.io/hostname": self.name},
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
    """Start `python -m testenv.nodeagent` on a fresh node; stop it (it removes its node) afterwards."""
    with running_node_agent(cluster, tmp_path) as agent:
        yield agent


@contextlib.contextmanager
def running_node_agent(cluster: Cluster, tmp_path: Path, subnet: int | None = None) -> Iterator[NodeAgent]:
    """The node agent of the `node_agent` fixture, for fixtures of a wider scope; `subnet` picks another
    /24 than the session's own (a pod process an earlier agent left behind keeps its address busy)."""
    agent = NodeAgent(name=f"agent-{os.getpid()}", state=tmp_path / "agent", log=tmp_path / "agent.log")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}  # cwd=ROOT puts testenv on its path
    # One advertised GPU (tests see Triton fail on it: there is no real one) besides the CPU pods.
    cmd = [
        sys.executable,
        "-m",
        "testenv.nodeagent",
        "--node-name",
        agent.name,
        "--state-dir",
        str(agent.state),
        "--gpus",
        "1",
        # A /24 of its own: agents of concurrent sessions on one machine would otherwise hand out the
        # same first addresses of 127.65.0.0/16, and a pod's Triton fails on "address already in use".
        "--pod-cidr",
        f"127.65.{1 + (os.getpid() if subnet is None else subnet) % 254}.0/24",
    ]
    with agent.log.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_for(
            f"node {agent.name} Ready", lambda: proc.poll() is None and node_ready(cluster, agent.name), 60
        )
        yield agent
    finally:
        stop_process(proc, 60)
        cluster.kubectl("delete", "node", agent.name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def sentiment_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT sentiment classifier, trained once per session (seconds) and saved_pretrained."""
    from builder import textmodels

    return textmodels.tiny_classifier(tmp_path_factory.mktemp("sentiment") / "checkpoint")


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """SmolLM2's GGUF file loaded once per session as the builder loads it (fp32, and written out as a
    Hugging Face directory: `.hf_dir`), for the serving tests and the builder's directory-source test."""
    from tests.support import llm

    return llm.smollm2(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def llm_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding SmolLM2's GGUF file, shared by the tests that build examples/cpu-smollm2.yaml
    (the examples test and the generation e2e): the builder's content-addressed cache makes the second
    build of the same (source, recipe) a cache hit instead of minutes of export and gate."""
    from tests.support import llm

    store = tmp_path_factory.mktemp("llm-store")
    llm.place_gguf(store)
    return store


# ---- the monitoring stack (testenv/monitoring.sh): Prometheus Operator, Prometheus, prometheus-adapter ---


@pytest.fixture(scope="session")
def monitoring(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real monitoring stack against the session's cluster, scraping every 2 s by default; yields a
    `monitoring.stack.Monitoring` (url, query(promql), wait_for_series(promql, timeout), stop()/start()
    of the prometheus process, alerts(), targets(), custom_metrics). Stopped at the end of the session."""
    from monitoring import stack

    name = f"s{os.getpid()}"
    with stack.running(STATE, name, tmp_path_factory.mktemp("monitoring") / "state") as handle:
        yield handle
