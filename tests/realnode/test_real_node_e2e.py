"""Conch on a real kubelet: helm installs the operator, which runs IN its container from its image; the
builder Job runs in the builder image and Triton in the serving image, under the restricted Pod Security
Standard, with cgroup-enforced limits, the kubelet's probes and `kubectl logs`; the serving pod's init
container verifies the repository first, and a changed file holds the pod back with the file named in
Degraded until it is restored. A builder whose image is missing, and one over its memory limit, show why
in the ModelDeployment's Built condition.

Runs inside testenv/realnode.sh's network namespace (make test-realnode); pod addresses exist only there.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from chart import helmrun
from conftest import Cluster, wait_for
from e2e import test_end_to_end as e2e
from tritonclient.utils import InferenceServerException

from tests.support import digits_model

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

EXPORT = {"format": "onnx", "backend": "python"}
V1 = {"quantize": {"mode": "fp16"}, "export": EXPORT, "gate": {"minTop1Agreement": 0.9, "minCosine": 0.99}}
SERVING_MEMORY = "1Gi"


def modeldeployment(
    name: str, build: dict[str, Any], compression: dict[str, Any], serving: dict[str, Any] | None = None
) -> dict[str, Any]:
    md: dict[str, Any] = {
        "apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "version": "v1",
            "model": {"name": "digits", "source": {"path": "models/digits.pt2"},
                      "inputs": [{"name": digits_model.INPUT, "dtype": "float32", "shape": [64]}]},
            "compression": compression,
            "build": {"backoffLimit": 0, **build},
            "serving": {"gpus": 0, "maxBatchSize": 64, "startupTimeoutSeconds": 120,
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                      "limits": {"memory": SERVING_MEMORY}}},
            "replicas": 1,
            "rollout": {"progressDeadlineSeconds": 240},
            "storage": {"claimName": "model-store"},
        },
    }  # fmt: skip
    md["spec"]["serving"].update(serving or {})
    return md


class Ns(e2e.Ns):
    def pods(self, selector: str) -> list[dict[str, Any]]:
        return self.items("pods", selector)

    def built(self, name: str, kind: str = "Built") -> dict[str, Any]:
        conds = self.get("md", name).get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == kind), {})


@pytest.fixture
def release(realnode: Cluster, tmp_path: Path) -> Iterator[tuple[Ns, Path, torch.nn.Module]]:
    """A restricted namespace, a model store with the digits model, and the chart installed in it with
    the operator watching it. Uninstalled and deleted afterwards."""
    ns = f"real-{secrets.token_hex(3)}"
    realnode.kubectl("create", "namespace", ns)
    realnode.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    store = tmp_path / "store"
    model, _ = digits_model.train()
    digits_model.save(model, store / "models" / "digits.pt2")
    for path in [tmp_path, store, *store.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)  # the builder runs as uid 1000
    name = "conch"
    try:
        helmrun.helm(
            "install", name, str(helmrun.CHART), "-n", ns, "--take-ownership",
            "--set", f"watchNamespaces={{{ns}}}", "--wait", "--timeout", "180s",
            kubeconfig=realnode.kubeconfig, timeout=240,
        )  # fmt: skip
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{why_nothing_started(realnode, ns)}") from None
    helmrun.model_store(realnode, ns, store)
    try:
        yield Ns(realnode, ns), store, model
    finally:
        helmrun.helm("uninstall", name, "-n", ns, "--wait", kubeconfig=realnode.kubeconfig, check=False)
        realnode.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        realnode.kubectl("delete", "pv", f"store-{ns}", "--wait=false", check=False)


def why_nothing_started(realnode: Cluster, ns: str) -> str:
    """What a failed `helm install --wait` leaves to read: the node's conditions that are not as they
    should be (DiskPressure, MemoryPressure, not Ready) and the namespace's pods and Events."""
    node = json.loads(realnode.kubectl("get", "node", "realnode", "-o", "json").stdout)
    wrong = [
        f"{c['type']}={c['status']} ({c.get('message', '')})"
        for c in node["status"]["conditions"]
        if (c["type"] == "Ready") != (c["status"] == "True")
    ]
    pods = realnode.kubectl("-n", ns, "get", "pods", "-o", "wide", check=False).stdout
    events = realnode.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout
    return f"node conditions: {wrong or 'all as expected'}\npods:\n{pods}\nevents:\n{events}"


def memory_cgroup(pod: dict[str, Any], container: str = "triton") -> Path:
    """The memory cgroup of the pod's container `container` (cgroup v1, the kubelet's cgroupfs driver);
    by name: with auth on (the chart's default) the auth proxy's status comes first."""
    (state,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == container]
    cid = state["containerID"].split("//", 1)[1]
    found = list(Path("/sys/fs/cgroup/memory/kubepods").glob(f"**/pod{pod['metadata']['uid']}/{cid}"))
    assert found, f"no memory cgroup for container {cid}"
    return found[0]


def process_status(pod: dict[str, Any]) -> dict[str, str]:
    """/proc/PID/status of the container's first process, and whether its root is mounted read-only."""
    pid = (memory_cgroup(pod) / "cgroup.procs").read_text().split()[0]
    fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    root = next(
        line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/"
    )
    return {**fields, "root": root.split()[5]}


def test_operator_builder_and_triton_run_in_their_containers(
    release: tuple[Ns, Path, torch.nn.Module],
) -> None:
    k, store, model = release
    operator = k.pods("app.kubernetes.io/component=operator")
    assert len(operator) == 1
    assert operator[0]["spec"]["containers"][0]["image"] == "ghcr.io/conch-dev/conch-operator:0.1.0"
    assert operator[0]["status"]["containerStatuses"][0]["ready"]

    t0 = time.monotonic()
    k.apply(modeldeployment("digits", {}, V1))
    status = wait_for("digits Serving and Ready", lambda: e2e.serving(k, "v1"), 400, every=2)
    served_in = time.monotonic() - t0
    entry = status["history"][0]
    assert entry["result"] == "Succeeded" and entry["summary"]["gate"]["passed"] is True
    assert (store / "repositories" / entry["buildKey"] / "digits" / "config.pbtxt").is_file()

    builder = k.pods(f"{e2e.LABEL},app.kubernetes.io/component=builder")[0]
    assert builder["status"]["phase"] == "Succeeded"
    assert builder["spec"]["containers"][0]["image"] == "ghcr.io/conch-dev/model-repo-builder:0.1.0"
    assert builder["status"]["containerStatuses"][0]["imageID"], "ran from an image"
    triton = wait_for("a Ready Triton pod", lambda: [
        p for p in k.pods(f"{e2e.LABEL},app.kubernetes.io/component=triton")
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ], 60)[0]  # fmt: skip
    assert triton["spec"]["containers"][0]["image"] == "ghcr.io/conch-dev/tritonserver:25.12-py3-conch0.1.0"
    limit = int((memory_cgroup(triton) / "memory.limit_in_bytes").read_text())
    assert limit == 1 << 30, "the kubelet put the container's memory limit in its cgroup"
    proc = process_status(triton)  # the restricted securityContext, as runc applied it
    assert proc["Uid"].split()[:2] == ["1000", "1000"] and proc["CapEff"].strip() == "0" * 16, proc
    assert proc["NoNewPrivs"].strip() == "1" and proc["Seccomp"].strip() == "2", proc
    assert proc["root"].startswith("ro"), f"root filesystem mounted {proc['root']}"

    x = digits_model.dataset()[0][:64].numpy()
    with torch.no_grad():
        original = model(torch.from_numpy(x)).numpy()
    # the chart's default: inference needs the token of the generated Secret
    assert status["auth"] == {"mode": "token", "secretName": "digits-inference-tokens"}
    secret = k.get("secret", "digits-inference-tokens")
    token = base64.b64decode(secret["data"]["token"]).decode()
    with pytest.raises(InferenceServerException, match="missing inference token"):
        e2e.infer(triton["status"]["podIP"], x)
    top1, cosine = e2e.agreement(e2e.infer(triton["status"]["podIP"], x, token), original)
    assert top1 >= 0.9 and cosine >= 0.99, (top1, cosine)

    logs = k.cluster.kubectl("-n", k.ns, "logs", triton["metadata"]["name"], "-c", "triton").stdout
    assert "Started HTTPService" in logs, logs[-2000:]
    operator_logs = k.cluster.kubectl("-n", k.ns, "logs", operator[0]["metadata"]["name"]).stdout
    assert "digits" in operator_logs, operator_logs[-2000:]
    builder_logs = k.cluster.kubectl("-n", k.ns, "logs", builder["metadata"]["name"]).stdout
    assert '"ok": true' in builder_logs or '"ok":true' in builder_logs, builder_logs[-2000:]
    print(f"real node: digits built and Serving in {served_in:.1f} s")
    repository_check(k, store, entry["buildKey"], triton)


def tampered(k: Ns) -> dict[str, Any] | None:
    cond = k.built("digits", "Degraded")
    return cond if cond.get("reason") == "RepositoryTampered" else None


def healed(k: Ns) -> dict[str, Any] | None:
    status = e2e.serving(k, "v1")
    return status if status and k.built("digits", "Degraded").get("status") == "False" else None


def repository_check(k: Ns, store: Path, key: str, triton: dict[str, Any]) -> None:
    """The kubelet ran conch-verify (the Triton image's) before Triton and it passed; once a file of the
    served repository changes, a new pod stops at its init container (Init:Error, the kubelet's
    back-off), Degraded says RepositoryTampered naming the file; restored, the pod serves again."""
    [init] = triton["status"]["initContainerStatuses"]
    assert init["name"] == "verify" and init["image"] == triton["spec"]["containers"][0]["image"], init
    done = init["state"]["terminated"]
    assert (done["exitCode"], done["reason"]) == (0, "Completed"), init
    assert done["message"] == f"repository /store/repositories/{key} verified", done

    victim = store / "repositories" / key / "digits" / "config.pbtxt"
    original = victim.read_bytes()
    victim.write_bytes(original + b"\n# edited\n")
    t0 = time.monotonic()
    k.cluster.kubectl("-n", k.ns, "delete", "pod", triton["metadata"]["name"], "--wait=false")
    cond = wait_for("RepositoryTampered in Degraded", lambda: tampered(k), 120, every=1)
    refused_in = time.monotonic() - t0
    assert cond["status"] == "True" and "modified: digits/config.pbtxt" in cond["message"], cond
    pod = next(
        p for p in k.pods(f"{e2e.LABEL},app.kubernetes.io/component=triton")
        if not p["metadata"].get("deletionTimestamp")
    )  # fmt: skip
    [init] = pod["status"]["initContainerStatuses"]
    failed = init["state"].get("terminated") or init["lastState"]["terminated"]
    assert failed["exitCode"] == 2 and "modified: digits/config.pbtxt" in failed["message"], init
    assert "running" not in pod["status"]["containerStatuses"][0]["state"], "Triton never started"

    victim.write_bytes(original)
    t1 = time.monotonic()
    wait_for("digits Serving again, Degraded cleared", lambda: healed(k), 240, every=2)
    again = time.monotonic() - t1
    print(
        f"real node: tampered repository refused in {refused_in:.1f} s, serving {again:.1f} s after restoring"
    )


def test_missing_builder_image_and_oom_show_in_the_built_condition(
    release: tuple[Ns, Path, torch.nn.Module],
) -> None:
    k, _, _ = release
    k.apply(modeldeployment("noimage", {"image": "conch.local/missing:0"}, V1))
    k.apply(modeldeployment("noserve", {}, V1, {"image": "conch.local/missing-triton:0"}))
    oom = {"resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}}
    k.apply(modeldeployment("oom", oom, {**V1, "quantize": {"mode": "none"}}))

    def image_reported() -> dict[str, Any] | None:
        built = k.built("noimage")
        text = built.get("message", "")
        reasons = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")
        return built if any(r in text for r in reasons) else None

    built = wait_for("the missing image in noimage's Built condition", image_reported, 120, every=2)
    assert built["status"] == "False" and "conch.local/missing:0" in built["message"], built
    print(f"real node: noimage Built={built['status']} {built['reason']}: {built['message']}")

    def oom_reported() -> dict[str, Any] | None:
        built = k.built("oom")
        return built if built.get("reason") == "BuildFailed" else None

    built = wait_for("oom's build failed", oom_reported, 240, every=2)
    assert "OOMKilled" in built["message"], built
    print(f"real node: oom Built={built['status']} {built['reason']}: {built['message']}")

    def serving_image_reported() -> dict[str, Any] | None:
        progressing = k.built("noserve", "Progressing")
        text = progressing.get("message", "")
        return progressing if "ErrImagePull" in text or "ImagePullBackOff" in text else None

    progressing = wait_for("the missing Triton image in Progressing", serving_image_reported, 240, every=2)
    assert "conch.local/missing-triton:0" in progressing["message"], progressing
    print(f"real node: noserve Progressing {progressing['reason']}: {progressing['message']}")
    pod = k.pods("app.kubernetes.io/component=builder,serving.conch.dev/modeldeployment=oom")[0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled", json.dumps(terminated)
