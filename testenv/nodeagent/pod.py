"""One pod on the agent's node: its sandbox (directories, IP), its container processes, their probes,
restarts and termination, and the status it reports. One thread per pod, ticking every half second.

Init containers run first, one at a time in order, each to completion, as a kubelet runs them: the
pod's containers start only once every one exited 0. A failed init container is restarted with the
same back-off as a crashing container (restartPolicy Always or OnFailure; an init container never
restarts after it succeeded), or, with Never, fails the pod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testenv.nodeagent import probes, runtime, status

Obj = dict[str, Any]
TICK = 0.5
STOP_POLL_S = 0.2  # how often a stopping container is checked for having exited (or the pod for vanishing)
SECRET_SYNC = 2.0  # seconds between re-reads of Secret volumes (a kubelet's period is about a minute)
BACKOFF_START, BACKOFF_CAP = 10.0, 300.0
log = logging.getLogger("nodeagent.pod")
# readOnly mounts are enforced in a private mount namespace when the agent may create one (root + unshare)
ISOLATE = os.geteuid() == 0 and shutil.which("unshare") is not None


class PodApi(Protocol):
    """What a pod worker needs from the API (agent.Api implements it)."""

    def patch_pod_status(self, pod: Obj, body: Obj) -> bool: ...
    def delete_pod(self, pod: Obj) -> None: ...
    def event(self, pod: Obj, reason: str, message: str, warning: bool = False) -> None: ...
    def volume_path(self, pod: Obj, volume: Obj, scratch: Path) -> Path: ...
    def secret_value(self, namespace: str, name: str, key: str) -> str | None: ...


@dataclass
class Container:
    """A container's process, its probes and its view for the status."""

    spec: Obj
    view: status.ContainerView
    probes: dict[str, probes.Probe] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    backoff: float = BACKOFF_START
    read_only: list[str] = field(default_factory=list)  # local paths mounted readOnly
    init: bool = False  # an init container: runs to completion before the pod's containers start
    launched: bool = False  # its first start happened (an init container starts when its turn comes)


class PodWorker(threading.Thread):
    """Runs one pod until it is deleted (or the agent stops)."""

    def __init__(self, api: PodApi, pod: Obj, tools: runtime.Toolchain, pod_ip: str, root: Path) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.api, self.pod, self.tools, self.ip = api, pod, tools, pod_ip
        self.dir = root / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        self.policy = str(pod["spec"].get("restartPolicy", "Always"))
        self.inits = [
            Container(c, status.ContainerView(name=c["name"], image=c.get("image", "")), init=True)
            for c in pod["spec"].get("initContainers") or []
        ]
        waiting = "PodInitializing" if self.inits else "ContainerCreating"
        self.containers = [
            Container(c, status.ContainerView(name=c["name"], image=c.get("image", ""), reason=waiting))
            for c in pod["spec"]["containers"]
        ]
        self.initialized = not self.inits
        self.start_time = status.now_iso()
        self.ready_since = self.start_time
        self.was_ready = False
        self.sent: Obj | None = None
        self.stop_grace: float | None = None
        self.gone = False
        self.lock = threading.Lock()

    # ---- called from the agent's watch thread ------------------------------------------------------

    def update(self, pod: Obj) -> None:
        """A newer object from the watch: a deletionTimestamp means stop within the grace period."""
        with self.lock:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp") and self.stop_grace is None:
                self.stop_grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)

    def vanish(self) -> None:
        """The pod object is gone: stop now, report nothing."""
        with self.lock:
            self.gone = True
            self.stop_grace = 0.0

    # ---- the pod's own thread ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            mounts = self.prepare()
            self.report()
            if self.initialized:
                self.start_all(mounts)
            self.loop(mounts)
        except Exception:
            log.exception("pod %s failed in the agent", self.name)
        finally:
            self.kill_all(0.0 if self.gone else (self.stop_grace or 0.0))
            if not self.gone and self.pod["metadata"].get("deletionTimestamp"):
                self.api.delete_pod(self.pod)
            shutil.rmtree(self.dir / "volumes", ignore_errors=True)

    def prepare(self) -> dict[str, runtime.Mounts | None]:
        """Directories for the pod's volumes and each container's mount table (None: cannot run)."""
        volumes_dir = self.dir / "volumes"
        volumes_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        problems: dict[str, str] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            try:
                paths[volume["name"]] = self.api.volume_path(self.pod, volume, volumes_dir / volume["name"])
            except runtime.UnsupportedPodError as exc:
                problems[volume["name"]] = str(exc)
        read_only_volumes = {
            v["name"]
            for v in self.pod["spec"].get("volumes") or []
            if v.get("persistentVolumeClaim", {}).get("readOnly")
        }
        out: dict[str, runtime.Mounts | None] = {}
        for c in self.inits + self.containers:
            table: dict[str, Path | str] = {}
            for mount in c.spec.get("volumeMounts") or []:
                if mount["name"] in problems:
                    self.fail_start(c, problems[mount["name"]])
                    break
                table[mount["mountPath"]] = paths[mount["name"]] / mount.get("subPath", "")
                if mount.get("readOnly") or mount["name"] in read_only_volumes:
                    c.read_only.append(str(table[mount["mountPath"]]))
            else:
                table[runtime.termination_path(c.spec)] = self.dir / f"{c.spec['name']}.termination-log"
                out[c.spec["name"]] = runtime.Mounts.of(table)
                continue
            out[c.spec["name"]] = None
        return out

    def start_all(self, mounts: dict[str, runtime.Mounts | None]) -> None:
        for c in self.containers:
            self.start_container(c, mounts.get(c.spec["name"]))

    def initialize(self, mounts: dict[str, runtime.Mounts | None], now: float) -> bool:
        """One tick of the init containers, in order: True once every one of them exited 0."""
        for c in self.inits:
            if c.view.state == "terminated" and c.view.exit_code == 0:
                continue
            if not c.launched:
                c.launched = True
                self.start_container(c, mounts.get(c.spec["name"]))
            self.tick(c, mounts.get(c.spec["name"]), now)
            if not (c.view.state == "terminated" and c.view.exit_code == 0):
                return False
        return True

    def fail_start(self, c: Container, message: str) -> None:
        now = status.now_iso()
        c.view.state, c.view.reason, c.view.exit_code, c.view.message = (
            "terminated",
            "StartError",
            128,
            message,
        )
        c.view.started_at = c.view.finished_at = now
        self.api.event(self.pod, "Failed", message, warning=True)

    def start_container(self, c: Container, mounts: runtime.Mounts | None) -> None:
        """Start (or restart) one container's process."""
        if mounts is None:
            return
        try:
            env = runtime.local_env(
                container=c.spec,
                pod=self.pod,
                tools=self.tools,
                mounts=mounts,
                pod_ip=self.ip,
                home=self.dir,
                secret=self.api.secret_value,
            )
            declared = {var["name"]: env[var["name"]] for var in c.spec.get("env") or []}
            argv = runtime.expand(runtime.local_argv(c.spec, self.tools, mounts, self.ip), declared)
            if ISOLATE:
                argv = runtime.with_read_only(argv, c.read_only)
            port_of = {
                kind: runtime.container_port(c.spec, self.probe_port(c.spec[kind]))
                for kind in self.probe_kinds(c)
            }
        except runtime.UnsupportedPodError as exc:
            self.fail_start(c, str(exc))
            return
        termination = Path(mounts.to_local(runtime.termination_path(c.spec)))
        termination.write_text("")
        logfile = (self.dir / f"{c.spec['name']}.log").open("ab")
        c.proc = subprocess.Popen(
            argv, env=env, cwd=self.dir, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        logfile.close()
        now = time.monotonic()
        c.probes = {kind: probes.Probe(kind, c.spec[kind], port) for kind, port in port_of.items()}
        for probe in c.probes.values():
            probe.arm(now)
        c.view.state, c.view.reason, c.view.message, c.view.started_at = "running", "", "", status.now_iso()
        c.view.started = "startupProbe" not in c.probes
        c.view.ready = c.view.started and "readinessProbe" not in c.probes
        self.api.event(
            self.pod, "Started", f"Started container {c.spec['name']} (pid {c.proc.pid}) on {self.ip}"
        )

    @staticmethod
    def probe_kinds(c: Container) -> list[str]:
        return [k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c.spec]

    @staticmethod
    def probe_port(probe: Obj) -> int | str:
        action = probe.get("httpGet") or probe.get("tcpSocket")
        if action is None:
            raise runtime.UnsupportedPodError("only httpGet and tcpSocket probes are supported")
        port: int | str = action["port"]
        return port

    def loop(self, mounts: dict[str, runtime.Mounts | None]) -> None:
        synced = time.monotonic()
        while True:
            with self.lock:
                stopping = self.stop_grace is not None
            if stopping:
                return
            now = time.monotonic()
            if not self.initialized and self.initialize(mounts, now):
                self.initialized = True
                self.start_all(mounts)
            elif self.initialized:
                for c in self.containers:
                    self.tick(c, mounts.get(c.spec["name"]), now)
            self.report()
            if now - synced >= SECRET_SYNC:
                self.sync_secrets()
                synced = now
            time.sleep(TICK)

    def sync_secrets(self) -> None:
        """Secret volumes follow their Secret while the pod runs (a deleted Secret keeps the last files)."""
        for volume in self.pod["spec"].get("volumes") or []:
            if "secret" in volume:
                try:
                    self.api.volume_path(self.pod, volume, self.dir / "volumes" / volume["name"])
                except Exception as exc:  # an apiserver hiccup must not end the pod: the next sync retries
                    log.warning("pod %s: secret volume %s not synced: %s", self.name, volume["name"], exc)

    def tick(self, c: Container, mounts: runtime.Mounts | None, now: float) -> None:
        if c.proc is not None and c.proc.poll() is not None:
            self.exited(c, mounts)
        if c.proc is None and c.restart_at is not None and now >= c.restart_at:
            c.restart_at = None
            c.view.restart_count += 1
            self.start_container(c, mounts)
        if c.proc is not None:
            self.run_probes(c, now)

    def run_probes(self, c: Container, now: float) -> None:
        for kind, probe in c.probes.items():
            gated = kind != "startupProbe" and not c.view.started
            if gated or (kind == "startupProbe" and c.view.started) or now < probe.next_at:
                continue
            verdict = probe.record(probe.check(self.ip), now)
            if verdict is None:
                continue
            if kind == "startupProbe":
                c.view.started = verdict
                c.view.ready = verdict and "readinessProbe" not in c.probes
            elif kind == "readinessProbe":
                c.view.ready = verdict
            if verdict is False:
                self.api.event(
                    self.pod, "Unhealthy", f"{kind} failed for container {c.spec['name']}", warning=True
                )
                if kind != "readinessProbe":
                    self.terminate(c, float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def exited(self, c: Container, mounts: runtime.Mounts | None) -> None:
        """Record an exit, with the termination message; schedule a restart if the policy says so."""
        assert c.proc is not None and mounts is not None
        code = int(c.proc.returncode)
        c.proc = None
        c.view.state, c.view.exit_code, c.view.finished_at = (
            "terminated",
            code if code >= 0 else 128 - code,
            status.now_iso(),
        )
        c.view.reason = "Completed" if code == 0 else "Error"
        c.view.ready = c.init and code == 0  # a kubelet reports a completed init container ready
        c.view.message = mounts.to_container(self.termination_message(c, mounts))
        policy = ("Never" if self.policy == "Never" else "OnFailure") if c.init else self.policy
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            c.view.last_terminated = c.view.terminated()
            c.view.state, c.view.reason, c.view.message = (
                "waiting",
                "CrashLoopBackOff",
                f"back-off {c.backoff:.0f}s restarting",
            )
            c.restart_at = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 2, BACKOFF_CAP)

    def termination_message(self, c: Container, mounts: runtime.Mounts) -> str:
        path = Path(mounts.to_local(runtime.termination_path(c.spec)))
        message = path.read_text(errors="replace") if path.exists() else ""
        fallback = c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        if not message.strip() and fallback and c.view.exit_code != 0:
            with contextlib.suppress(OSError):
                message = status.log_tail((self.dir / f"{c.spec['name']}.log").read_bytes())
        return message

    def terminate(self, c: Container, grace: float) -> None:
        """SIGTERM to the container's process group, SIGKILL after `grace` seconds."""
        self.stop_together([c], grace)

    def kill_all(self, grace: float) -> None:
        self.stop_together(self.inits + self.containers, grace)

    def stop_together(self, containers: list[Container], grace: float) -> None:
        """As a kubelet stops a pod: SIGTERM to every running container's process group at once, then
        SIGKILL to those still running when the grace ends, or at once when the pod vanishes meanwhile
        (the agent shutting down: no process may outlive it)."""
        running = [c for c in containers if c.proc is not None and c.proc.poll() is None]
        for c in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for c in running:
            proc = c.proc
            assert proc is not None
            while proc.poll() is None and time.monotonic() < deadline and not self.gone:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def report(self) -> None:
        """Patch the pod's status when what we would report changed."""
        views = [c.view for c in self.containers]
        ready = all(v.ready for v in views)
        if ready != self.was_ready:
            self.ready_since, self.was_ready = status.now_iso(), ready
        inits = [c.view for c in self.inits]
        body = status.render(views, self.policy, self.ip, self.start_time, self.ready_since, inits=inits)
        if body != self.sent and self.api.patch_pod_status(self.pod, body):
            self.sent = body
