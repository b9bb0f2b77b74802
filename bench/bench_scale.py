"""Scale benchmark (issue #12): N ModelDeployments on the local cluster, side by side with raw applies.

Why it exists: a platform team runs hundreds to thousands of models; Conch must converge about as
fast as applying the same children directly, be silent when nothing changes, stay small, and serve
one user's edit while a burst of new models is being processed. This measures, in one run on the
running local cluster (`make cluster-up`; kwok nodes are added for the pods):

A. raw: the children Conch would render for N models (build Job, admin-key Secret, Deployment,
   Service), server-side applied directly, all at once, with as many client threads as the operator
   has workers; the bench plays the builder for the Jobs as in B; time until every Deployment is
   available and every Job has succeeded. (Before 2026-11-30 14:00 UTC raw applied the Deployments
   and Services only, and the control plane kept its default client QPS: those ratios are not
   comparable with later ones.)
B. Conch: the operator (a subprocess, watching one namespace) and N ModelDeployments created in a
   burst; the bench plays the builder (each build pod is completed with a summary through kwok).
   Time to all build Jobs, time to all Serving; one existing ModelDeployment edited during the burst
   (time until its status observes the edit); peak RSS; then an idle minute: the operator's requests
   and writes per the apiserver's audit log (user agent conch-operator; watches excluded).

Writes bench/results/scale.json. Not a test: it reports what it gets, met or not.
Usage: python -m bench.bench_scale [--n 1000] [--n 5000] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from conch import kube  # noqa: E402
from conch.api import types  # noqa: E402
from conch.render import common, deployment, job, secret, service  # noqa: E402

STATE = Path(os.environ.get("CONCH_CLUSTER_DIR", Path.home() / ".local" / "state" / "conch" / "cluster"))
OUT = ROOT / "bench" / "results" / "scale.json"
WORKERS = 4
TARGETS = {
    "serving_ratio_max": 1.2,
    "idle_requests_per_min": 0,
    "idle_writes": 0,
    "rss_mib_max": 200,
    "edit_latency_s_max": 5.0,
}
Obj = dict[str, Any]


def client() -> kube.Kube:
    os.environ["KUBECONFIG"] = str(STATE / "kubeconfig")
    k = kube.Kube.from_environment()
    k.api.user_agent = "conch-bench"  # the audit log's conch-operator requests are the operator's alone
    return k


def poll(what: str, fn: Callable[[], bool], timeout: float, every: float = 1.0) -> float:
    """Seconds until fn() holds (raises after timeout)."""
    start = time.monotonic()
    while not fn():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)
    return time.monotonic() - start


def progress(line: str) -> None:
    """A phase's numbers as they come (a long run that is cut short still leaves them)."""
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def poll_every(n: int) -> float:
    """Seconds between the bench's own full LISTs (of N Jobs, Deployments or ModelDeployments): 2 s at
    1000; at 5000 a LIST every 2 s was megabytes a time on the apiserver the run measures."""
    return max(2.0, n / 500)


def add_nodes(k: kube.Kube, n: int) -> list[str]:
    """kwok nodes with room for the pods (removed at the end)."""
    names = []
    for i in range((n // 400) + 1):
        name = f"bench-node-{i}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/os": "linux", "bench": "scale"},
            },
            "status": {
                "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
                "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
            },
        }
        k.apply(f"/api/v1/nodes/{name}", node)
        names.append(name)
    return names


def namespace(k: kube.Kube, name: str) -> None:
    """A namespace with a bound `model-store` claim (the pods mount it; kwok never reads it)."""
    k.apply(
        f"/api/v1/namespaces/{name}", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    poll(
        f"namespace {name}",
        lambda: k.get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is not None,
        60,
    )
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"store-{name}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": f"/tmp/conch-store/{name}"},
            "claimRef": {"namespace": name, "name": "model-store"},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "model-store", "namespace": name},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": f"store-{name}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    k.apply(f"/api/v1/persistentvolumes/store-{name}", pv)
    k.apply(f"/api/v1/namespaces/{name}/persistentvolumeclaims/model-store", pvc)


def drop_namespace(k: kube.Kube, name: str, wait: bool = True) -> None:
    """Delete a namespace; wait (the next phase must not share the control plane with its teardown)."""
    k.request("DELETE", f"/api/v1/namespaces/{name}")
    k.request("DELETE", f"/api/v1/persistentvolumes/store-{name}")
    if wait:
        poll(f"namespace {name} gone", lambda: _released(k, name), 1800, every=2)


def _released(k: kube.Kube, name: str) -> bool:
    """Whether the namespace is gone; meanwhile, lets go of its deleted pods' Job-tracking finalizers
    (the job controller drops them from a deleted Job's pods only minutes later: a teardown of
    thousands of build pods waited on them, not on any work)."""
    if k.get(f"/api/v1/namespaces/{name}") is None:
        return True
    for pod in k.list(kube.path("v1", "Pod", name)):
        if pod["metadata"].get("deletionTimestamp") and pod["metadata"].get("finalizers"):
            k.request(
                "PATCH",
                kube.path("v1", "Pod", name, pod["metadata"]["name"]),
                body={"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
    return False


def md_body(name: str, version: str = "v1", replicas: int = 1) -> Obj:
    return {
        "apiVersion": "serving.conch.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "version": version,
            "model": {"name": name, "source": {"path": f"models/{name}.pt2"}},
            "serving": {"gpus": 0, "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
            "replicas": replicas,
            "storage": {"claimName": "model-store"},
        },
    }


def build_key(name: str, version: str) -> str:
    return hashlib.sha256(f"{name}/{version}".encode()).hexdigest()


def rendered(ns: str, name: str) -> list[Obj]:
    """The children Conch renders for one model (what the raw run applies): the build Job, the
    Triton admin-key Secret, the Deployment and the Service."""
    spec = types.ModelDeploymentSpec.model_validate(md_body(name)["spec"])
    owner = common.Owner(name=name, namespace=ns, uid="00000000-0000-0000-0000-000000000000", spec=spec)
    objs = [
        job.render_job(owner, "v1", build_key(name, "v1")),
        secret.render_secret(owner, secret.new_key()),
        deployment.render_deployment(owner, deployment.Served("v1", build_key(name, "v1"), name)),
        service.render_service(owner),
    ]
    for obj in objs:
        obj["metadata"].pop("ownerReferences", None)
    return objs


def run_raw(k: kube.Kube, n: int) -> float:
    """Every child of every model applied at once (no ordering: a Deployment does not wait for its
    build); done when every Deployment is available and every build Job has succeeded."""
    ns = "bench-raw"
    namespace(k, ns)
    builder = Builder(k, ns)
    builder.start()
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda i: [k.apply(kube.path_of(o), o) for o in rendered(ns, f"m{i}")], range(n)))

        def done() -> bool:
            deps = k.list(kube.path("apps/v1", "Deployment", ns))
            if sum(1 for d in deps if d.get("status", {}).get("availableReplicas", 0) >= 1) < n:
                return False
            jobs = k.list(kube.path("batch/v1", "Job", ns))
            return sum(1 for j in jobs if j.get("status", {}).get("succeeded", 0) >= 1) >= n

        poll("raw: all Deployments available and all Jobs succeeded", done, 3600, every=poll_every(n))
        took = time.monotonic() - start
        progress(f"raw: all available and built after {took:.1f} s")
    finally:
        builder.stop.set()
    drop_namespace(k, ns)
    return took


def summary(name: str, version: str) -> str:
    key = build_key(name, version)
    return json.dumps(
        {
            "ok": True,
            "buildKey": key,
            "repository": f"/store/repositories/{key}",
            "modelName": name,
            "cached": False,
            "builderVersion": "bench",
            "sourceDigest": "sha256:00",
            "sizeBefore": 1000,
            "sizeAfter": 400,
            "compressionRatio": 2.5,
            "gate": {"passed": True},
            "error": None,
        },
        separators=(",", ":"),
    )


class Builder(threading.Thread):
    """Plays the builder: completes every Running build pod in the namespace with a summary."""

    def __init__(self, k: kube.Kube, ns: str) -> None:
        super().__init__(daemon=True)
        self.k, self.ns, self.stop = k, ns, threading.Event()
        self.done: set[str] = set()

    def run(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            while not self.stop.is_set():
                query = {
                    "labelSelector": f"{common.LABEL_COMPONENT}=builder",
                    "fieldSelector": "status.phase=Running",
                }
                pods = (self.k.request("GET", kube.path("v1", "Pod", self.ns), query=query) or {}).get(
                    "items", []
                )
                todo = [
                    p
                    for p in pods
                    if p["status"].get("phase") == "Running" and p["metadata"]["name"] not in self.done
                ]
                list(pool.map(self._complete, todo))
                self.stop.wait(1.0)

    def _complete(self, pod: Obj) -> None:
        labels = pod["metadata"]["labels"]
        note = {
            "kwok.conch.dev/exit-code": "0",
            "kwok.conch.dev/termination-message": summary(
                labels[common.LABEL_MD], labels[common.LABEL_VERSION]
            ),
        }
        path = kube.path("v1", "Pod", self.ns, pod["metadata"]["name"])
        self.k.request(
            "PATCH",
            path,
            body={"metadata": {"annotations": note}},
            content_type="application/merge-patch+json",
        )
        self.done.add(pod["metadata"]["name"])


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> list[str]:
    """The operator's /metrics, line by line."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode().splitlines()


def metric(lines: list[str], name: str) -> float:
    """A metric's samples summed over their labels (0 when absent)."""
    return sum(float(line.split()[-1]) for line in lines if line.startswith((name + " ", name + "{")))


def operator_state(pid: int, port: int) -> Obj:
    """The operator's memory, CPU and cache once every model serves."""
    lines = scrape(port)
    return {
        "peak_rss_mib": round(rss_mib(pid), 1),
        "cache_objects_all_serving": int(metric(lines, "conch_cache_objects")),
        "cache_mib_all_serving": round(metric(lines, "conch_cache_bytes") / 2**20, 1),  # deflated JSON
        "operator_cpu_s_until_all_serving": round(cpu_seconds(pid), 1),
        "operator_throttled_s": round(metric(lines, "conch_client_throttled_seconds_total"), 1),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def audit_requests(since_offset: int) -> list[Obj]:
    out = []
    with (STATE / "audit.log").open() as f:
        f.seek(since_offset)
        for line in f:
            e = json.loads(line)
            if (
                e.get("userAgent", "").startswith("conch-operator")
                and e.get("verb") != "watch"
                and e.get("stage") == "ResponseComplete"
            ):
                out.append(e)
    return out


def serving_count(k: kube.Kube, ns: str) -> int:
    mds = k.list(kube.path("serving.conch.dev/v1alpha1", "ModelDeployment", ns))
    return sum(1 for m in mds if (m.get("status") or {}).get("phase") == "Serving")


def run_conch(k: kube.Kube, n: int, idle_seconds: float, operator_workers: int) -> Obj:
    ns = "bench-conch"
    namespace(k, ns)
    log = (ROOT / "bench" / "results" / f"scale-operator-{n}.log").open("wb")
    with socket.socket() as probe:  # a free loopback port for the operator's /metrics
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KUBECONFIG": str(STATE / "kubeconfig"), "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conch",
            "--namespace",
            ns,
            "--metrics-port",
            str(port),
            "--workers",
            str(operator_workers),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    builder = Builder(k, ns)
    builder.start()
    try:
        md_path = kube.path("serving.conch.dev/v1alpha1", "ModelDeployment", ns)
        k.apply(f"{md_path}/edit-target", md_body("edit-target"))
        poll("edit-target serving", lambda: serving_count(k, ns) == 1, 300)
        start = time.monotonic()
        edit: dict[str, float] = {}

        def edit_during_burst() -> None:
            time.sleep(2.0)  # well inside the burst
            k.apply(f"{md_path}/edit-target", md_body("edit-target", replicas=2))
            generation = k.get(f"{md_path}/edit-target")["metadata"]["generation"]  # type: ignore[index]
            t0 = time.monotonic()
            poll(
                "edit observed",
                lambda: (
                    (k.get(f"{md_path}/edit-target") or {}).get("status", {}).get("observedGeneration")
                    == generation
                ),
                600,
                every=0.1,
            )
            edit["latency"] = time.monotonic() - t0

        editor = threading.Thread(target=edit_during_burst, daemon=True)
        editor.start()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda i: k.apply(f"{md_path}/m{i}", md_body(f"m{i}")), range(n)))
        created = time.monotonic() - start

        def all_jobs() -> bool:
            return len(k.list(kube.path("batch/v1", "Job", ns), label_selector=common.LABEL_MD)) >= n + 1

        jobs_s = created + poll("all build Jobs", all_jobs, 3600, every=poll_every(n))
        progress(f"conch: all build Jobs after {jobs_s:.1f} s, RSS {rss_mib(proc.pid, 'VmRSS'):.1f} MiB")
        serving_s = (
            time.monotonic()
            - start
            + poll("all Serving", lambda: serving_count(k, ns) >= n + 1, 3600, every=poll_every(n))
        )
        editor.join(600)
        at_serving = operator_state(proc.pid, port)
        progress(f"conch: all Serving after {serving_s:.1f} s: {at_serving}")
        builder.stop.set()
        time.sleep(5)  # let the last status writes land before the idle window
        offset = (STATE / "audit.log").stat().st_size
        time.sleep(idle_seconds)
        idle = audit_requests(offset)
        rss_idle = rss_mib(proc.pid, "VmRSS")
        writes = [e for e in idle if e["verb"] in {"create", "update", "patch", "delete"}]
        return {
            "operator_workers": operator_workers,  # reconcile passes at once
            "create_burst_s": round(created, 1),
            "all_jobs_s": round(jobs_s, 1),
            "all_serving_s": round(serving_s, 1),
            "edit_latency_during_burst_s": round(edit.get("latency", -1), 2),
            **at_serving,
            "rss_after_idle_mib": round(rss_idle, 1),
            "idle_window_s": idle_seconds,
            "idle_requests_per_min": round(len(idle) * 60 / idle_seconds, 1),
            "idle_writes": len(writes),
            "idle_request_kinds": sorted({f"{e['verb']} {e['objectRef'].get('resource')}" for e in idle}),
        }
    finally:
        builder.stop.set()
        proc.terminate()
        proc.wait(30)
        log.close()
        drop_namespace(k, ns, wait=False)  # the results are in; its teardown needs no timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, action="append", help="ModelDeployments per run (repeat; default 1000)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--operator-workers", type=int, default=4, help="the operator's --workers (default 4, as its own)"
    )
    args = parser.parse_args()
    k = client()
    if subprocess.run(["bash", str(ROOT / "testenv/cluster.sh"), "status"], check=False).returncode:
        raise SystemExit("no local cluster: run `make cluster-up` first")
    kubectl = [str(Path.home() / ".cache/conch/bin/kubectl"), "--kubeconfig", str(STATE / "kubeconfig")]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")], check=True
    )
    for leftover in ("bench-raw", "bench-conch"):  # an earlier run's teardown must not load this one
        if k.get(f"/api/v1/namespaces/{leftover}") is not None:
            drop_namespace(k, leftover)
    runs = []
    for n in args.n or [1000]:
        nodes = add_nodes(k, n)
        try:
            raw = run_raw(k, n)
            conch = run_conch(k, n, args.idle_seconds, args.operator_workers)
        finally:
            for name in nodes:
                k.request("DELETE", f"/api/v1/nodes/{name}")
        ratio = conch["all_serving_s"] / raw
        runs.append(
            {
                "n": n,
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "loadavg1": round(os.getloadavg()[0], 2),
                "raw_children": [o["kind"] for o in rendered("bench-raw", "m0")],
                "raw_all_available_s": round(raw, 1),
                "conch": conch,
                "serving_ratio": round(ratio, 2),
                "met": {
                    "serving_ratio": ratio <= TARGETS["serving_ratio_max"],
                    "idle_requests": conch["idle_requests_per_min"] <= TARGETS["idle_requests_per_min"],
                    "idle_writes": conch["idle_writes"] <= TARGETS["idle_writes"],
                    "rss": conch["peak_rss_mib"] <= TARGETS["rss_mib_max"],
                    "edit_latency": 0
                    <= conch["edit_latency_during_burst_s"]
                    <= TARGETS["edit_latency_s_max"],
                },
            }
        )
        print(json.dumps(runs[-1], indent=2), flush=True)
    OUT.write_text(
        json.dumps(
            {
                "benchmark": "scale",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "loadavg1": round(os.getloadavg()[0], 2),
                },
                "workers": WORKERS,  # the bench's own clients (raw applies, MD creates, its builder)
                "targets": TARGETS,
                "runs": _merged(runs),
            },
            indent=2,
        )
        + "\n"
    )


def _merged(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's results replace those of the same N in the file; other N's results stay (a
    5000-model run takes an hour: it is not repeated with every 1000-model run)."""
    try:
        old = json.loads(OUT.read_text())
    except (OSError, ValueError):
        old = {}
    before = [{"date": old.get("date"), **r} for r in old.get("runs", [])]
    fresh = {r["n"] for r in runs}
    return sorted([r for r in before if r.get("n") not in fresh] + runs, key=lambda r: int(r["n"]))


if __name__ == "__main__":
    main()
