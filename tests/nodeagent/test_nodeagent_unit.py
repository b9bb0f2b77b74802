"""The node agent's pure parts: command and path mapping, pod status, probe thresholds, the IP pool."""

from __future__ import annotations

import subprocess
import time
import types
from pathlib import Path

import pytest

from testenv.nodeagent import node, pod, probes, runtime, status

pytestmark = pytest.mark.unit

TOOLS = runtime.Toolchain(
    venv_bin=Path("/venv/bin"), triton_bin=Path("/triton/bin/tritonserver"),
    backend_dir=Path("/state/backends"), python_path="/venv/site",
)  # fmt: skip
MOUNTS = runtime.Mounts.of({"/store": "/data/store", "/store/cache": "/fast", "/tmp": "/pod/tmp",
                            "/dev/termination-log": "/pod/term"})  # fmt: skip
POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"nodeName": "n1"}}


@pytest.mark.parametrize(
    ("arg", "local"),
    [
        ("/store/models/a.pt2", "/data/store/models/a.pt2"),
        ("--model-repository=/store/repositories/bk", "--model-repository=/data/store/repositories/bk"),
        ("/store/cache/x", "/fast/x"),  # the nested mount wins
        ("/storefront", "/storefront"),  # a prefix that is not a path component
        ("/dev/termination-log", "/pod/term"),
        ('--recipe-json={"a": 1}', '--recipe-json={"a": 1}'),
        ("relative/store", "relative/store"),
    ],
)
def test_container_paths_map_to_local_ones(arg: str, local: str) -> None:
    assert MOUNTS.to_local(arg) == local


def test_reported_text_shows_container_paths() -> None:
    assert MOUNTS.to_container('{"repository": "/data/store/repositories/bk"}') == (
        '{"repository": "/store/repositories/bk"}'
    )


def test_builder_runs_the_venv_entry_point_with_mapped_paths() -> None:
    command = ["model-repo-builder", "build", "/store/m.pt2", "--out", "/store/r",
               "--summary-file", "/dev/termination-log"]  # fmt: skip
    container = {"name": "builder", "command": command}
    argv = runtime.local_argv(container, TOOLS, MOUNTS, "127.65.0.2")
    assert argv == ["/venv/bin/model-repo-builder", "build", "/data/store/m.pt2", "--out", "/data/store/r",
                    "--summary-file", "/pod/term"]  # fmt: skip


def test_tritonserver_binds_the_pod_ip_and_finds_the_python_backend() -> None:
    container = {"name": "triton", "command": ["tritonserver"], "args": ["--model-repository=/store/r/bk"]}
    argv = runtime.local_argv(container, TOOLS, MOUNTS, "127.65.0.9")
    assert argv[:2] == ["/triton/bin/tritonserver", "--model-repository=/data/store/r/bk"]
    assert {"--http-address=127.65.0.9", "--grpc-address=127.65.0.9", "--metrics-address=127.65.0.9",
            "--backend-directory=/state/backends",
            "--backend-config=python,shm-region-prefix-name=conch_127_65_0_9_"} <= set(argv)  # fmt: skip


def test_the_gateway_binds_the_pod_ip_and_reaches_its_triton_there() -> None:
    args = ["--model=m", "--triton-grpc=127.0.0.1:8001", "--host=0.0.0.0", "--port=9000"]
    argv = runtime.local_argv(
        {"name": "openai", "command": ["conch-gateway"], "args": args}, TOOLS, MOUNTS, "127.65.0.9"
    )
    assert argv[0] == "/venv/bin/conch-gateway"
    assert (
        "--triton-grpc=127.65.0.9:8001" in argv and argv[-1] == "--host=127.65.0.9"
    )  # argparse: the last wins


def test_the_auth_proxy_listens_on_the_pod_ip_and_relays_to_its_loopback_twins_there() -> None:
    args = ["auth-proxy", "--tokens=/t", "--host=0.0.0.0", "--http=8000=127.0.0.1:18000",
            "--grpc=8001=127.0.0.1:18001", "--openai=9000=localhost:19000",
            "--metrics-port=8003"]  # fmt: skip
    argv = runtime.local_argv(
        {"name": "auth-proxy", "command": ["conch-gateway"], "args": args}, TOOLS, MOUNTS, "127.65.0.9"
    )
    assert argv[:2] == ["/venv/bin/conch-gateway", "auth-proxy"]
    assert {"--http=8000=127.65.0.9:18000", "--grpc=8001=127.65.0.9:18001",
            "--openai=9000=127.65.0.9:19000", "--metrics-port=8003"} <= set(argv)  # fmt: skip
    assert argv[-1] == "--host=127.65.0.9"


def test_the_verifier_runs_this_checkouts_module_alone_with_mapped_paths() -> None:
    """The serving pods' init container: the file the image copies, run isolated (standard library
    only: no PYTHONPATH, no site-packages), on the local path of the repository."""
    container = {"name": "verify", "command": ["conch-verify"],
                 "args": ["/store/r/bk", "--message-file=/dev/termination-log"]}  # fmt: skip
    argv = runtime.local_argv(container, TOOLS, MOUNTS, "127.65.0.9")
    assert argv == ["/venv/bin/python", "-I", str(runtime.VERIFY_SCRIPT), "/data/store/r/bk",
                    "--message-file=/pod/term"]  # fmt: skip
    assert runtime.VERIFY_SCRIPT.is_file() and runtime.VERIFY_SCRIPT.parts[-3:] == (
        "model_repo_builder", "store", "verify.py"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (
            {"name": "c", "command": ["python", "serve.py"]},
            "'python' is not one of conch-gateway, conch-verify, model-repo-builder, tritonserver",
        ),
        ({"name": "c", "image": "x"}, "has no command"),
    ],
)
def test_unknown_commands_are_refused_by_name(container: dict[str, object], message: str) -> None:
    with pytest.raises(runtime.UnsupportedPodError, match=message):
        runtime.local_argv(container, TOOLS, MOUNTS, "127.65.0.2")


def test_env_is_clean_and_resolves_field_refs() -> None:
    pod_ip = {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    container = {"name": "c", "env": [{"name": "A", "value": "/store/x"}, pod_ip]}
    env = runtime.local_env(
        container=container, pod=POD, tools=TOOLS, mounts=MOUNTS, pod_ip="127.65.0.3", home=Path("/pod")
    )
    assert env["A"] == "/data/store/x" and env["IP"] == "127.65.0.3" and env["TMPDIR"] == "/pod/tmp"
    assert "KUBECONFIG" not in env and env["PATH"].startswith("/venv/bin")
    bad = {"name": "c", "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(runtime.UnsupportedPodError, match="'S'"):
        runtime.local_env(container=bad, pod=POD, tools=TOOLS, mounts=MOUNTS, pod_ip="x", home=Path("/pod"))


def test_secret_key_refs_resolve_and_args_expand() -> None:
    ref = {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    container = {"name": "c", "env": [ref]}
    asked: list[tuple[str, str, str]] = []

    def secret(namespace: str, name: str, key: str) -> str | None:
        asked.append((namespace, name, key))
        return "sesame" if (name, key) == ("s", "k") else None

    env = runtime.local_env(
        container=container, pod=POD, tools=TOOLS, mounts=MOUNTS, pod_ip="x", home=Path("/pod"), secret=secret
    )
    assert env["KEY"] == "sesame" and asked == [(POD["metadata"]["namespace"], "s", "k")]
    missing = {"name": "c", "env": [{"name": "M", "valueFrom": {"secretKeyRef": {"name": "s", "key": "no"}}}]}
    with pytest.raises(runtime.UnsupportedPodError, match="secret s/no not found"):
        runtime.local_env(
            container=missing,
            pod=POD,
            tools=TOOLS,
            mounts=MOUNTS,
            pod_ip="x",
            home=Path("/pod"),
            secret=secret,
        )
    argv = ["--k=a:h=$(KEY)", "$$(KEY)", "$(UNSET)", "x$(KEY)$(KEY)"]
    assert runtime.expand(argv, {"KEY": "sesame"}) == [
        "--k=a:h=sesame",
        "$(KEY)",
        "$(UNSET)",
        "xsesamesesame",
    ]


def test_named_probe_ports_resolve() -> None:
    container = {"name": "t", "ports": [{"name": "http", "containerPort": 8000}]}
    assert runtime.container_port(container, "http") == 8000
    assert runtime.container_port(container, 8002) == 8002
    with pytest.raises(runtime.UnsupportedPodError, match="no port named 'grpc'"):
        runtime.container_port(container, "grpc")


def view(state: str, code: int | None = None, restarts: int = 0, reason: str = "") -> status.ContainerView:
    return status.ContainerView(
        "c", "img", state=state, exit_code=code, restart_count=restarts, reason=reason
    )


@pytest.mark.parametrize(
    ("views", "policy", "phase"),
    [
        ([view("waiting", reason="ContainerCreating")], "Never", "Pending"),
        ([view("running")], "Never", "Running"),
        ([view("terminated", 0)], "Never", "Succeeded"),
        ([view("terminated", 3)], "Never", "Failed"),
        ([view("terminated", 0), view("running")], "Never", "Running"),
        ([view("terminated", 1)], "OnFailure", "Running"),
        ([view("waiting", restarts=2, reason="CrashLoopBackOff")], "Always", "Running"),
    ],
)
def test_pod_phase(views: list[status.ContainerView], policy: str, phase: str) -> None:
    assert status.phase_of(views, policy) == phase


@pytest.mark.parametrize(
    ("inits", "policy", "phase"),
    [
        ([view("running")], "Always", "Pending"),
        ([view("terminated", 0), view("waiting", reason="ContainerCreating")], "Always", "Pending"),
        ([view("terminated", 2)], "Never", "Failed"),  # Init:Error, and nothing will run again
        ([view("terminated", 2)], "Always", "Pending"),  # Init:Error, restarted after a back-off
        ([view("waiting", restarts=1, reason="CrashLoopBackOff")], "OnFailure", "Pending"),
        ([view("terminated", 0)], "Always", "Running"),
    ],
)
def test_pod_phase_with_init_containers(inits: list[status.ContainerView], policy: str, phase: str) -> None:
    containers = [view("running") if phase == "Running" else view("waiting", reason="PodInitializing")]
    assert status.phase_of(containers, policy, inits) == phase


def test_init_container_statuses_and_the_initialized_condition() -> None:
    init, main = view("terminated", 2, reason="Error"), view("waiting", reason="PodInitializing")
    init.message = "repository /store/r/k failed verification: modified: m/1/w"
    rendered = status.render([main], "Always", "127.65.0.2", "t0", "t1", inits=[init])
    conds = {c["type"]: c for c in rendered["conditions"]}
    assert (conds["Initialized"]["status"], conds["Initialized"]["reason"]) == (
        "False",
        "ContainersNotInitialized",
    )
    [reported] = rendered["initContainerStatuses"]
    assert reported["state"]["terminated"] == {
        "exitCode": 2, "reason": "Error", "startedAt": None, "finishedAt": None, "message": init.message
    }  # fmt: skip
    assert rendered["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert "initContainerStatuses" not in status.render([main], "Always", "127.65.0.2", "t0", "t1")


def test_ready_only_when_every_container_is_ready() -> None:
    a, b = view("running"), view("running")
    a.ready = True
    conds = {c["type"]: c for c in status.render([a, b], "Always", "127.65.0.2", "t0", "t1")["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ContainersNotReady"
    b.ready = True
    rendered = status.render([a, b], "Always", "127.65.0.2", "t0", "t1")
    assert {c["type"]: c["status"] for c in rendered["conditions"]}["Ready"] == "True"
    assert rendered["podIP"] == "127.65.0.2"


def test_terminated_status_carries_the_message_capped() -> None:
    done = view("terminated", 3, reason="Error")
    done.message = "x" * 5000
    state = done.render()["state"]["terminated"]
    assert state["exitCode"] == 3 and len(state["message"]) == status.MESSAGE_LIMIT


def test_log_fallback_is_the_smaller_of_80_lines_and_2048_bytes() -> None:
    assert status.log_tail(b"\n".join(b"line %d" % i for i in range(200))).splitlines()[0] == "line 120"
    assert len(status.log_tail(b"y" * 10_000)) == 2048


def test_probe_thresholds() -> None:
    probe = probes.Probe(
        "readinessProbe", {"periodSeconds": 5, "failureThreshold": 3, "successThreshold": 2}, 8000
    )
    probe.arm(0.0)
    assert probe.record(True, 0.0) is None
    assert probe.record(True, 5.0) is True and probe.next_at == 10.0
    assert [probe.record(False, t) for t in (10.0, 15.0, 20.0)] == [None, None, False]
    assert probe.record(False, 25.0) is None  # already failing: no new verdict


@pytest.mark.parametrize("cidr", ["10.0.0.0/24", "::1/128", "0.0.0.0/0"])
def test_pod_cidr_must_be_loopback(cidr: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        node.IpPool(cidr)


def test_ip_pool_never_repeats_and_skips_the_node_address() -> None:
    pool = node.IpPool("127.65.0.0/29")
    assert [pool.take() for _ in range(3)] == ["127.65.0.2", "127.65.0.3", "127.65.0.4"]


def _ignores_sigterm(pid: int) -> bool:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return bool(int(fields["SigIgn"].strip(), 16) & (1 << (15 - 1)))


def _stubborn() -> pod.Container:
    """A container whose process ignores SIGTERM (a server still draining), in its own process group."""
    proc = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 60"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not _ignores_sigterm(proc.pid):  # bash sets its trap before a signal may arrive
        assert time.monotonic() < deadline, "bash never ignored SIGTERM"
        time.sleep(0.01)
    return pod.Container(spec={"name": "c"}, view=status.ContainerView("c", "stub"), proc=proc)


def test_a_pods_containers_stop_together_within_one_grace_and_at_once_when_it_vanishes() -> None:
    worker = types.SimpleNamespace(gone=False)
    containers = [_stubborn(), _stubborn()]
    start = time.monotonic()
    pod.PodWorker.stop_together(worker, containers, 1.0)  # type: ignore[arg-type]
    took = time.monotonic() - start
    assert all(c.proc is not None and c.proc.returncode == -9 for c in containers)
    assert 1.0 <= took < 1.9, took  # one grace for both, not one each
    worker.gone = True  # the agent shutting down: no waiting out a grace
    containers = [_stubborn()]
    start = time.monotonic()
    pod.PodWorker.stop_together(worker, containers, 90.0)  # type: ignore[arg-type]
    assert time.monotonic() - start < 1.0 and containers[0].proc is not None
    assert containers[0].proc.returncode == -9
