"""How one container of a pod becomes a local process: the command table, path and env mapping.

There are no images here, so a container is matched by its command: `model-repo-builder` runs the
project's venv entry point, `tritonserver` runs the binary bundled with nvidia-pytriton (python
backend) bound to the pod's own IP, `conch-gateway` (a generative model's OpenAI API) runs the
venv's entry point on that IP, talking to its Triton there (`conch-gateway auth-proxy`, the token
check in front of both, too), and `conch-verify` (the serving pods' init container) runs this
checkout's model_repo_builder/store/verify.py with `python -I`, the file alone, as the serving image
does. Container paths (volume mounts, the
termination-message file) are rewritten to the pod's local directories in argv and env, and mapped
back in what the process reports, so the API shows the same paths a real kubelet's pod would. Pure
code: no I/O but path arithmetic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
VERIFY_SCRIPT = Path(__file__).resolve().parents[2] / "model_repo_builder" / "store" / "verify.py"
_REFERENCE = re.compile(r"\$(?:\$|\(([A-Za-z_][A-Za-z0-9_]*)\))")


class UnsupportedPodError(Exception):
    """The container asks for something this agent cannot run (reported as the container's StartError)."""


@dataclass(frozen=True)
class Toolchain:
    """The local programs that stand in for the images."""

    venv_bin: Path
    triton_bin: Path
    backend_dir: Path
    python_path: str
    library_path: str = ""  # the bundle's shared libraries (the python stub's RPATH assumes its own place)
    verify_script: Path = VERIFY_SCRIPT

    def commands(self) -> dict[str, Path]:
        return {
            "model-repo-builder": self.venv_bin / "model-repo-builder",
            "tritonserver": self.triton_bin,
            "conch-gateway": self.gateway_bin,
            "conch-verify": self.verify_script,
        }

    @property
    def gateway_bin(self) -> Path:
        return self.venv_bin / "conch-gateway"


@dataclass(frozen=True)
class Mounts:
    """Container path -> local path, longest container path first so nested mounts win."""

    table: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @staticmethod
    def of(pairs: Mapping[str, Path | str]) -> Mounts:
        ordered = sorted(((c.rstrip("/") or "/", str(h)) for c, h in pairs.items()), key=lambda p: -len(p[0]))
        return Mounts(tuple(ordered))

    def to_local(self, value: str) -> str:
        """A container path (or `--flag=path`) as the local path; anything else unchanged."""
        flag, eq, path = value.partition("=")
        if eq and flag.startswith("-"):
            return f"{flag}={self.to_local(path)}"
        for container, local in self.table:
            if value == container or value.startswith(container + "/"):
                return local + value[len(container) :]
        return value

    def to_container(self, text: str) -> str:
        """Local paths in `text` (a termination message, a log line) shown as the container's paths."""
        for container, local in sorted(self.table, key=lambda p: -len(p[1])):
            text = text.replace(local, container)
        return text


# Run in a private mount namespace where the first $1 paths are read-only bind mounts of themselves.
READ_ONLY_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" || exit 126; shift; n=$((n-1)); done; '
    'exec "$@"'
)


def with_read_only(argv: list[str], paths: list[str]) -> list[str]:
    """argv run with `paths` read-only, as readOnly volumeMounts are (needs root and util-linux unshare)."""
    if not paths:
        return argv
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_SCRIPT, "sh",
            str(len(paths)), *paths, *argv]  # fmt: skip


def termination_path(container: Obj) -> str:
    return str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)


def local_argv(container: Obj, tools: Toolchain, mounts: Mounts, pod_ip: str) -> list[str]:
    """The argv that runs `container` here, or UnsupportedPodError naming what is missing."""
    command = list(container.get("command") or [])
    if not command:
        raise UnsupportedPodError(
            f"container {container['name']!r} has no command: the node agent cannot read image entrypoints"
        )
    program = tools.commands().get(os.path.basename(command[0]))
    if program is None:
        known = ", ".join(sorted(tools.commands()))
        raise UnsupportedPodError(
            f"container {container['name']!r}: command {command[0]!r} is not one of {known}"
        )
    argv = [str(program)] + [mounts.to_local(a) for a in command[1:] + list(container.get("args") or [])]
    if program == tools.triton_bin:
        argv += [
            f"--backend-directory={tools.backend_dir}",
            f"--http-address={pod_ip}",
            f"--grpc-address={pod_ip}",
            f"--metrics-address={pod_ip}",
            # A kubelet gives each pod its own /dev/shm; here every pod shares the host's, and two python
            # backends with the default region names corrupt each other's (boost lock_exception aborts).
            f"--backend-config=python,shm-region-prefix-name=conch_{pod_ip.replace('.', '_')}_",
        ]
    if program == tools.gateway_bin:
        argv = [_on_pod_ip(a, pod_ip) for a in argv] + [f"--host={pod_ip}"]
    if program == tools.verify_script:  # isolated: the standard library only, like the image's copy
        argv = [str(tools.venv_bin / "python"), "-I", *argv]
    return argv


_LOOPBACK = ("127.0.0.1:", "localhost:")
_PROXY_LISTENERS = ("--http", "--grpc", "--openai")  # `conch-gateway auth-proxy`: PORT=HOST:PORT


def _on_pod_ip(arg: str, pod_ip: str) -> str:
    """The gateway's Triton address, and the auth proxy's upstreams, on the pod's own IP: containers of
    one pod share a loopback under a kubelet, but here each pod's processes bind its 127.64/16 address
    (Triton's and the gateway's loopback binds are overridden by the flags the agent appends)."""
    flag, eq, address = arg.partition("=")
    if flag == "--triton-grpc" and eq and address.startswith(_LOOPBACK):
        return f"{flag}={pod_ip}:{address.rsplit(':', 1)[1]}"
    port, eq2, upstream = address.partition("=")
    if flag in _PROXY_LISTENERS and eq and eq2 and upstream.startswith(_LOOPBACK):
        return f"{flag}={port}={pod_ip}:{upstream.rsplit(':', 1)[1]}"
    return arg


def field_value(path: str, pod: Obj, pod_ip: str) -> str:
    """A downward-API fieldRef value (the fields a pod may read about itself)."""
    meta = pod["metadata"]
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    if path not in values:
        raise UnsupportedPodError(f"env fieldRef {path!r} is not supported by the node agent")
    return str(values[path])


def expand(argv: list[str], values: dict[str, str]) -> list[str]:
    """The kubelet's `$(VAR)` expansion of command/args from the container's env (`$$` escapes `$`;
    a reference to an undefined variable stays as written)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return values.get(name, match.group(0))

    return [_REFERENCE.sub(one, arg) for arg in argv]


def local_env(
    *,
    container: Obj,
    pod: Obj,
    tools: Toolchain,
    mounts: Mounts,
    pod_ip: str,
    home: Path,
    secret: Callable[[str, str, str], str | None] | None = None,
) -> dict[str, str]:
    """The process environment: a clean base (nothing of the agent's own), then the container's env
    (`secret(namespace, name, key)` reads a secretKeyRef)."""
    env = {
        "PATH": os.pathsep.join([str(tools.venv_bin), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(tools.venv_bin.parent),
        "PYTHONPATH": tools.python_path,
        "LD_LIBRARY_PATH": tools.library_path,
        "HOSTNAME": pod["metadata"]["name"],
        "TMPDIR": mounts.to_local("/tmp"),
    }
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = mounts.to_local(str(var["value"]))
        elif "fieldRef" in (var.get("valueFrom") or {}):
            env[var["name"]] = field_value(var["valueFrom"]["fieldRef"]["fieldPath"], pod, pod_ip)
        elif "secretKeyRef" in (var.get("valueFrom") or {}) and secret is not None:
            ref = var["valueFrom"]["secretKeyRef"]
            value = secret(pod["metadata"]["namespace"], ref["name"], ref["key"])
            if value is None:
                raise UnsupportedPodError(f"env {var['name']!r}: secret {ref['name']}/{ref['key']} not found")
            env[var["name"]] = value
        else:
            raise UnsupportedPodError(
                f"env {var['name']!r}: only value, fieldRef and secretKeyRef are supported"
            )
    return env


def container_port(container: Obj, port: int | str) -> int:
    """A probe's port: a number or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise UnsupportedPodError(f"container {container['name']!r} has no port named {port!r}")
