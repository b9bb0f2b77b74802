"""The operator against the real control plane (kwok nodes): build, serve, roll, roll back, heal, clean up.

One operator subprocess serves the module (watching t-test-op-* namespaces); each test has its own
namespace. kwok never runs a pod, so tests play the builder by completing its pod with a summary.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from opharness import (  # noqa: F401  (fixtures)
    Kube,
    Operator,
    kube_fixture,
    md_object,
    operator_fixture,
    serving,
    wait_for,
)

from tests.support import audit

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def deploy_version(k: Kube, name: str) -> str | None:
    dep = k.get("deployment", name)
    return None if dep is None else dep["spec"]["template"]["metadata"]["labels"]["serving.conch.dev/version"]


def bring_up(k: Kube, name: str, **spec: Any) -> None:
    k.apply(md_object(name, **spec))
    k.finish_build(name, spec.get("version", "v1"))
    wait_for("v1 serving", lambda: serving(k, name, spec.get("version", "v1")), 90)


def test_op_create_renders_every_child(kube: Kube) -> None:
    k = kube
    k.apply(md_object("demo", replicas=2, monitoring={"serviceMonitor": {"enabled": True}}))
    job = wait_for("build job", lambda: k.jobs("demo"), 30)[0]
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:3] == ["model-repo-builder", "build", "/store/models/demo-v1.pt2"]
    assert k.status("demo")["phase"] == "Building"
    assert k.condition("demo", "Built")["reason"] == "Building"
    key = k.finish_build("demo", "v1")
    wait_for("serving v1", lambda: serving(k, "demo", "v1"), 90)
    dep = k.get("deployment", "demo")
    assert dep is not None
    triton = dep["spec"]["template"]["spec"]["containers"][0]
    assert f"--model-repository=/store/repositories/{key}" in triton["args"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    md_uid = k.get("md", "demo")["metadata"]["uid"]  # type: ignore[index]
    for kind in ("deployment", "service", "poddisruptionbudget", "servicemonitor", "job"):
        objs = [k.get(kind, "demo")] if kind != "job" else k.jobs("demo")
        assert objs and objs[0] is not None, kind
        assert objs[0]["metadata"]["ownerReferences"][0]["uid"] == md_uid, kind
    st = k.status("demo")
    assert st["history"][0]["buildKey"] == key and st["history"][0]["summary"]["compressionRatio"] == 2.5
    assert st["readyReplicas"] == 2 and st["selector"].startswith("serving.conch.dev/modeldeployment=demo")
    assert k.condition("demo", "Ready")["status"] == "True"
    assert k.condition("demo", "Monitoring")["status"] == "True"
    reasons = {e["reason"] for e in k.items("events") if e["involvedObject"]["name"] == "demo"}
    assert {"BuildStarted", "BuildSucceeded", "Serving"} <= reasons
    k.k("scale", "md", "demo", "--replicas=3")
    wait_for("scaled via md scale subresource", lambda: k.status("demo").get("readyReplicas") == 3, 60)


def test_op_rollout_then_rollback_reuses_the_build(kube: Kube) -> None:
    k = kube
    bring_up(k, "roll")
    k.apply(md_object("roll", version="v2"))
    wait_for("v2 job", lambda: len(k.jobs("roll")) == 2, 30)
    assert k.status("roll")["currentVersion"] == "v1" and deploy_version(k, "roll") == "v1"
    k.finish_build("roll", "v2")
    wait_for("serving v2", lambda: serving(k, "roll", "v2"), 90)

    def running_versions() -> set[str]:
        pods = k.items("pods", "serving.conch.dev/modeldeployment=roll,app.kubernetes.io/component=triton")
        return {
            p["metadata"]["labels"]["serving.conch.dev/version"]
            for p in pods
            if p["status"]["phase"] == "Running" and "deletionTimestamp" not in p["metadata"]
        }

    wait_for("only v2 pods running", lambda: running_versions() == {"v2"}, 30)
    k.k("patch", "md", "roll", "--type=merge", "-p", '{"spec":{"version":"v1"}}')  # only the version
    wait_for("serving v1 again", lambda: serving(k, "roll", "v1"), 60)
    assert len(k.jobs("roll")) == 2, "rolling back to a built version must not start a Job"
    assert [h["version"] for h in k.status("roll")["history"]] == ["v1", "v2"]


def test_op_failed_build_keeps_serving(kube: Kube, tmp_path: Path) -> None:
    k = kube
    bring_up(k, "fb")
    k.apply(md_object("fb", version="v2"))
    k.finish_build("fb", "v2", ok=False)
    wait_for("Built=False", lambda: k.condition("fb", "Built").get("reason") == "BuildFailed", 60)
    assert "gate-failed: cosine 0.5 < 0.99" in k.condition("fb", "Built")["message"]
    st = k.status("fb")
    assert st["currentVersion"] == "v1" and st["phase"] == "Degraded" and deploy_version(k, "fb") == "v1"
    assert k.condition("fb", "Ready")["status"] == "True"
    # a malicious source: the real builder's report on a traversal archive, its exit code 2 (bad input)
    code, report = builder_refusal(tmp_path)
    k.apply(md_object("fb", version="v3"))
    k.end_build("fb", "v3", code, report)
    refused = "bad-input: evil.tar.gz: member '../../escape.txt' points outside"
    wait_for("v3 refused", lambda: refused in k.condition("fb", "Built").get("message", ""), 60)
    st = k.status("fb")
    assert st["currentVersion"] == "v1" and deploy_version(k, "fb") == "v1"
    assert k.condition("fb", "Ready")["status"] == "True"
    job = k.jobs("fb", "v3")[0]
    assert job["status"].get("failed") == 1, "bad input is not retried (podFailurePolicy FailJob on exit 2)"


def builder_refusal(tmp_path: Path) -> tuple[int, str]:
    """(exit code, termination message) of `model-repo-builder build` on a .tar.gz whose member climbs
    out with '../..' (in-process: the builder refuses it while unpacking, before any model code)."""
    from model_repo_builder.cli import main

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("../../escape.txt")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"pwned"))
    report = tmp_path / "termination-log"
    recipe = '{"text": {"task": "text-classification"}}'
    argv = ["build", str(archive), "--out", str(tmp_path / "store"), "--recipe-json", recipe]
    code = main([*argv, "--summary-file", str(report)])
    assert not Path(tempfile.gettempdir(), "escape.txt").exists()
    return code, report.read_text()


def test_op_failed_rollout_rolls_back_and_next_version_is_fresh(kube: Kube) -> None:
    k = kube
    # 10 CPUs per pod on a 16-CPU node: v1 fits, a surge pod of v2 never can.
    spec = {
        "serving": {"gpus": 0, "resources": {"requests": {"cpu": "10"}}},
        "rollout": {"progressDeadlineSeconds": 6},
    }
    bring_up(k, "fr", **spec)
    k.apply(md_object("fr", version="v2", **spec))
    k.finish_build("fr", "v2")
    wait_for("rolled back", lambda: k.status("fr").get("failedVersion") == "v2", 120)
    degraded = k.condition("fr", "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolloutFailed"
    wait_for("deployment back on v1", lambda: deploy_version(k, "fr") == "v1", 30)
    wait_for("v1 fully serving", lambda: k.status("fr").get("readyReplicas") == 1, 60)
    assert k.status("fr")["currentVersion"] == "v1"
    k.apply(md_object("fr", version="v3", **spec))
    k.finish_build("fr", "v3")
    wait_for("fresh attempt for v3", lambda: deploy_version(k, "fr") == "v3", 60)
    assert k.status("fr").get("failedVersion") is None


def operator_writes(audit_log: Path, namespace: str, offset: int) -> list[str]:
    writes = []
    for e in audit.events_since(audit_log, offset):
        agent = e.get("userAgent", "")
        if (agent.startswith("conch-operator") or agent.startswith("kopf")) and e["verb"] in {
            "create", "update", "patch", "delete"
        } and e.get("objectRef", {}).get("namespace") == namespace:  # fmt: skip
            writes.append(f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}")
    return writes


def test_op_noop_reconcile_writes_nothing_and_drift_is_corrected(
    kube: Kube, cluster: Any, operator: Operator
) -> None:
    k = kube
    bring_up(k, "idle", replicas=2)

    clean = [0]  # consecutive pokes whose pass wrote nothing

    def settled() -> bool:
        """Two pokes in a row made passes without writes: the last status write and its echoes are done."""
        start, count = cluster.audit_log.stat().st_size, operator.metric("conch_reconciles_total") or 0
        k.k("annotate", "md", "idle", f"test/settle={time.monotonic_ns()}", "--overwrite")
        wait_for("a reconcile", lambda: (operator.metric("conch_reconciles_total") or 0) > count, 30)
        clean[0] = clean[0] + 1 if operator_writes(cluster.audit_log, k.ns, start) == [] else 0
        return clean[0] >= 2

    wait_for("the operator settled after bring-up", settled, 60, every=0.1)
    offset = cluster.audit_log.stat().st_size
    before = operator.metric("conch_reconciles_total") or 0
    for i in range(3):  # metadata-only changes wake the operator without changing the spec
        k.k("annotate", "md", "idle", f"test/poke={i}", "--overwrite")
    wait_for("reconciles", lambda: (operator.metric("conch_reconciles_total") or 0) >= before + 3, 30)
    # The audit log backend is blocking: a write is logged before the operator gets its response, so
    # the passes counted above have logged every write they made.
    assert operator_writes(cluster.audit_log, k.ns, offset) == []
    k.k(
        "patch",
        "deployment",
        "idle",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/template/spec/containers/0/args/0","value":"--model-repository=/x"}]',
    )
    wait_for(
        "args restored",
        lambda: (
            "bk-idle-v1"
            in k.get("deployment", "idle")["spec"]["template"]["spec"]["containers"][0]["args"][0]
        ),
        30,
    )  # type: ignore[index]
    k.k("delete", "service", "idle")
    # well inside the 60 s idle resync: the deletion itself must wake the operator
    wait_for("service recreated", lambda: k.get("service", "idle"), 10)


def test_op_restart_mid_build_converges_without_duplicates(kube: Kube, operator: Operator) -> None:
    k = kube
    k.apply(md_object("rs"))
    wait_for("build job", lambda: k.jobs("rs"), 30)
    operator.kill()
    # An edit made while no operator runs: its observedGeneration proves the new process reconciled "rs".
    k.k("patch", "md", "rs", "--type=merge", "-p", '{"spec":{"replicas":2}}')
    generation = k.get("md", "rs")["metadata"]["generation"]  # type: ignore[index]
    operator.start()
    wait_for(
        "restarted operator observed rs", lambda: k.status("rs").get("observedGeneration") == generation, 30
    )
    assert len(k.jobs("rs")) == 1
    k.finish_build("rs", "v1")
    wait_for("serving v1", lambda: serving(k, "rs", "v1"), 90)
    assert len(k.jobs("rs")) == 1 and len(k.status("rs")["history"]) == 1


def test_op_deletion_garbage_collects(kube: Kube) -> None:
    k = kube
    bring_up(k, "gc")
    k.k("delete", "md", "gc")
    for kind in ("deployment", "service"):
        wait_for(f"{kind} collected", lambda kind=kind: k.get(kind, "gc") is None, 60)
    wait_for("jobs collected", lambda: not k.jobs("gc"), 60)


def test_op_gpu_pods_land_on_gpu_nodes_and_hpa_owns_replicas(kube: Kube) -> None:
    k = kube
    bring_up(k, "gpu", serving={"gpus": 1}, replicas=2)
    pods = k.items("pods", "serving.conch.dev/modeldeployment=gpu,app.kubernetes.io/component=triton")
    assert len(pods) == 2 and all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods)
    k.apply(
        md_object(
            "hpa",
            serving={"gpus": 0},
            replicas=None,
            autoscaling={"minReplicas": 2, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
        )
    )
    k.finish_build("hpa", "v1")
    hpa = wait_for("hpa", lambda: k.get("hpa", "hpa"), 30)
    assert hpa["spec"]["minReplicas"] == 2
    wait_for("pdb for minReplicas 2", lambda: k.get("pdb", "hpa"), 30)
    dep = wait_for("deployment", lambda: k.get("deployment", "hpa"), 60)
    ours = [m for m in dep["metadata"]["managedFields"] if m["manager"] == "conch-operator"]
    assert ours and "f:replicas" not in json.dumps(ours[0]["fieldsV1"]["f:spec"])
