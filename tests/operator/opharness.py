"""Test harness for the operator against the real control plane: the operator as a subprocess (and
the module fixture that runs it), polling helpers, a model store per namespace, and playing the
builder's part through kwok.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLUSTER_SH, SESSION, STATE, wait_for

from tests.support.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
LABEL_VERSION = "serving.conch.dev/version"
NS_GLOB = f"t-test-op-*{SESSION}"  # the namespace fixture: t-<test name>-<hex><session>
# Seconds a wait on the control plane's own controllers may take after restart_apiserver. The Job and
# ReplicaSet controllers and the garbage collector (kube-controller-manager) and the scheduler are
# client-go informers: after their watch breaks, each lists again only after an exponential backoff
# (0.8 s doubling to 30 s, plus up to 100 % jitter: up to 60 s a step) that resets only after 2 min without
# a failure; a watch that resumes into 410 right after the restart costs one more step. Restarts close
# together (the 410 test's two, or two fault tests in one session) stack it: a Job the operator recreated
# at once after the last restart got its pod 58 s later. The operator is not what waits there.
AFTER_RESTART = 150.0


class Operator:
    """`python -m conch` watching the operator tests' namespaces, restartable (kill -9)."""

    def __init__(self, kubeconfig: Path, log_dir: Path, args: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.args = args  # more flags, e.g. a short --resync-seconds
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        cmd = [sys.executable, "-m", "conch", "--namespace", NS_GLOB, "--metrics-port", str(self.port)]
        cmd += [*self.args, *(["--verbose"] if os.environ.get("CONCH_TEST_OPERATOR_VERBOSE") else [])]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        wait_for("operator /metrics", lambda: self.metric("conch_reconciles_total") is not None, 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)

    def metric(self, name: str, label: str = "") -> float | None:
        """Sum of a metric's samples (those whose labels contain `label`, e.g. 'resource="pods"'),
        or None while /metrics does not answer."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
        return sum(float(m.group(2)) for m in pattern.finditer(text) if label in (m.group(1) or ""))


@pytest.fixture(scope="module", name="operator")
def operator_fixture(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """Fixture `operator`: the CRD installed and one operator per test module that imports this."""
    yield from run_operator(cluster, tmp_path_factory)


def run_operator(cluster: Any, tmp: pytest.TempPathFactory, *args: str) -> Iterator[Operator]:
    """The CRD installed and an operator started with `args`, stopped when the generator resumes."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.wait_established("modeldeployments.serving.conch.dev")
    op = Operator(cluster.kubeconfig, tmp.mktemp("operator"), args)
    op.start()
    yield op
    op.stop()


class Kube:
    """kubectl helpers bound to one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace

    def k(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(
            "-n", self.ns, *args, input=input, check=check
        )
        return result

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.k("get", kind, name, "-o", "json", "--show-managed-fields", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self.k(*args).stdout)["items"]
        return items

    def apply(self, obj: dict[str, Any]) -> None:
        self.k("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(obj))

    def status(self, name: str) -> dict[str, Any]:
        md = self.get("md", name)
        return (md or {}).get("status", {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        conds = self.status(name).get("conditions", [])
        return next((c for c in conds if c["type"] == type_), {})

    def model_store(self) -> None:
        """A PV pre-bound to a `model-store` PVC in this namespace, so build and serving pods schedule."""
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"store-{self.ns}", "labels": {"conch.dev/test": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": f"/tmp/conch-store/{self.ns}"},
                "claimRef": {"namespace": self.ns, "name": "model-store"},
            },
        }  # fmt: skip
        pvc = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "model-store", "namespace": self.ns},
            "spec": {
                "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"store-{self.ns}",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }  # fmt: skip
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
        self.apply(pvc)

    def jobs(self, md: str, version: str | None = None) -> list[dict[str, Any]]:
        """The Jobs of ModelDeployment `md` (of one version's pod template, when given)."""
        jobs = self.items("jobs", f"serving.conch.dev/modeldeployment={md}")
        if version is None:
            return jobs
        return [j for j in jobs if j["spec"]["template"]["metadata"]["labels"].get(LABEL_VERSION) == version]

    def finish_build(
        self, md: str, version: str, ok: bool = True, build_key: str | None = None, timeout: float = 60
    ) -> str:
        """Play the builder: complete the Running pod of `version`'s Job with a summary (waiting at
        most `timeout` s for the Job controller to create it: AFTER_RESTART after an apiserver restart)."""
        key = build_key or f"bk-{md}-{version}"
        self.end_build(md, version, 0 if ok else 3, summary_json(ok, key, md), timeout)
        return key

    def end_build(self, md: str, version: str, exit_code: int, summary: str, timeout: float = 60) -> None:
        """Complete the Running pod of `version`'s Job with this exit code and termination message."""

        def running_pod() -> str | None:
            for job in self.jobs(md, version):
                pods = self.items("pods", f"batch.kubernetes.io/job-name={job['metadata']['name']}")
                for pod in pods:  # a Job recreated under its name: its predecessor's pod may linger
                    owners = {o.get("uid") for o in pod["metadata"].get("ownerReferences", [])}
                    ours = job["metadata"]["uid"] in owners and not pod["metadata"].get("deletionTimestamp")
                    if ours and pod["status"].get("phase") == "Running":
                        return str(pod["metadata"]["name"])
            return None

        pod = wait_for(f"running build pod of {md} {version}", running_pod, timeout)
        self.cluster.complete_pod(self.ns, pod, exit_code, summary)


@pytest.fixture(name="kube")
def kube_fixture(cluster: Any, namespace: str, operator: Operator) -> Iterator[Kube]:
    """A Kube for the test's namespace with a model store bound; the store's PV goes afterwards."""
    k = Kube(cluster, namespace)
    k.model_store()
    yield k
    cluster.kubectl("delete", "pv", f"store-{namespace}", "--wait=false", check=False)


def serving(k: Kube, name: str, version: str) -> bool:
    """Whether `name` serves `version`."""
    st = k.status(name)
    return st.get("currentVersion") == version and st.get("phase") == "Serving"


def summary_json(ok: bool, build_key: str, model: str) -> str:
    return json.dumps(
        {
            "ok": ok, "buildKey": build_key if ok else "", "repository": f"/store/repositories/{build_key}",
            "modelName": model, "cached": False, "builderVersion": "test", "sourceDigest": "sha256:00",
            "sizeBefore": 1000, "sizeAfter": 400, "compressionRatio": 2.5,
            "gate": {"passed": ok, "cosine": 0.999 if ok else 0.5},
            "error": None if ok else {"kind": "gate-failed", "message": "cosine 0.5 < 0.99"},
        },
        separators=(",", ":"),
    )  # fmt: skip


def md_object(name: str, version: str = "v1", **spec: Any) -> dict[str, Any]:
    """A CPU ModelDeployment on the test model store, with `spec` overrides (one source file per version)."""
    body: dict[str, Any] = {
        "version": version,
        "model": {"name": name, "source": {"path": f"models/{name}-{version}.pt2"}},
        "serving": {"gpus": 0, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        "replicas": 1,
        "rollout": {"progressDeadlineSeconds": 30},
        "storage": {"claimName": "model-store"},
    }
    body.update(spec)
    body = {k: v for k, v in body.items() if v is not None}
    return {"apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": body}  # fmt: skip


def restart_apiserver(while_away: Callable[[], None] | None = None) -> float:
    """SIGKILL the apiserver (a crash), wait for it to be gone, run `while_away`, start it again
    (cluster.sh up restarts what is not running); returns the seconds it was away."""
    pid = int((STATE / "pids" / "kube-apiserver").read_text())
    gone = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for("apiserver exited", lambda: not os.path.exists(f"/proc/{pid}"), 60)
    if while_away is not None:
        while_away()
    subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, timeout=300, check=True)
    return time.monotonic() - gone
