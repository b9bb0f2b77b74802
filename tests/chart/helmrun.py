"""Helpers shared by the chart and e2e tests: the chart and binaries, running helm, parsing output, and a
release with the operator running locally under the release's ServiceAccount."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conch"
CACHE = Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache" / "conch"))
BIN = CACHE / "bin"
HELM = BIN / "helm"

Obj = dict[str, Any]


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run helm (isolated from the user's helm config); AssertionError on failure when `check`.

    A missing helm fails the calling test (never a skip): `make tools` builds it into the cache.
    """
    if not HELM.exists():
        raise AssertionError(f"helm is not installed at {HELM}: run `make tools` (or set CONCH_CACHE)")
    env = dict(os.environ)
    for var in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{var}_HOME"] = f"/tmp/conch-helm/{var.lower()}"
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template(*args: str, namespace: str = "conch-system", release: str = "conch") -> str:
    """`helm template` of the chart; extra args are passed through (--set, --api-versions ...)."""
    return helm("template", release, str(CHART), "--namespace", namespace, *args).stdout


def objects(rendered: str) -> list[Obj]:
    """The non-empty documents of a rendered manifest."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def one(docs: list[Obj], kind: str) -> Obj:
    """The only object of this kind."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def sa_kubeconfig(cluster: Any, namespace: str, sa: str, dest: Path) -> Path:
    """A kubeconfig for the same apiserver that authenticates as the ServiceAccount (no admin creds)."""
    raw = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    token = cluster.kubectl("-n", namespace, "create", "token", sa, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": raw["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
    }  # fmt: skip
    dest.write_text(yaml.safe_dump(config))
    return dest


def model_store(cluster: Any, namespace: str, path: Path) -> None:
    """A hostPath PV at `path`, pre-bound to the `model-store` claim in `namespace` (no provisioner here)."""
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"store-{namespace}", "labels": {"conch.dev/test": "true"}},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)},
            "claimRef": {"namespace": namespace, "name": "model-store"},
        },
    }  # fmt: skip
    pvc = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "model-store", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"store-{namespace}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pvc))


@contextlib.contextmanager
def operator_as_release(
    cluster: Any, namespace: str, workdir: Path, *, chart_crds: bool = False, namespaced: bool = False
) -> Iterator[Path]:
    """CRDs, a release (replicas 0) in `namespace`, and the operator run locally as the release's
    ServiceAccount (a token kubeconfig: nothing but the chart's RBAC), watching only `namespace`.
    Yields the operator's log file; uninstalls and stops everything afterwards.

    chart_crds: the release installs the CRD itself (`--take-ownership`, since earlier tests may have
    applied the same CRD with kubectl); otherwise the CRD comes from crds/ and the release skips it.
    namespaced: the release watches only `namespace` (a Role there, no cluster-wide grants but CRD
    discovery) and elects a leader on a Lease in it, as an HA install does.
    """
    from conftest import wait_for

    from tests.support.processes import free_port, stop_process

    if not chart_crds:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    release = f"conch-r{secrets.token_hex(3)}"
    crds = ["--set", f"crds.install={str(chart_crds).lower()}"] + (["--take-ownership"] if chart_crds else [])
    scope = (
        ["--set", f"watchNamespaces={{{namespace}}}", "--set", "leaderElection.enabled=true"]
        if namespaced
        else []
    )
    helm(
        "install", release, str(CHART), "-n", namespace, *crds, *scope, "--set", "replicaCount=0",
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    cluster.wait_established("modeldeployments.serving.conch.dev")
    kubeconfig = sa_kubeconfig(cluster, namespace, release, workdir / "sa-kubeconfig")
    log_path = workdir / "operator.log"
    port = free_port()
    # A namespace glob (matching only this namespace) makes kopf observe namespaces too.
    cmd = [sys.executable, "-m", "conch", "--namespace", f"{namespace}*", "--metrics-port", str(port)]
    if namespaced:  # the chart's args for this mode: an exact namespace and a Lease named after the release
        cmd[3:5] = ["--namespace", namespace]
        cmd += ["--leader-elect", "--leader-election-namespace", namespace, "--leader-election-id", release]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:

        def metrics_up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            except OSError:
                return False
            return True

        wait_for("operator /metrics", metrics_up, 30)
        yield log_path
    finally:
        stop_process(proc, 15)
        helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig, check=False)
        cluster.kubectl("delete", "pv", f"store-{namespace}", "--wait=false", check=False)
