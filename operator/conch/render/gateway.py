"""The OpenAI-compatible gateway beside a generative model's Triton: a second container of the pod.

A `text-generation` model is a decoupled python-backend model that streams tokens over Triton's gRPC;
clients speak OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models). `conch-gateway`
(package conch_gateway, installed in the serving image) translates one into the other over the pod's
loopback, so the Service exposes both Triton's own protocols and the OpenAI one, and the pod is Ready
only when the gateway answers a real one-token generation through Triton (its /health/ready), not
when a port is merely open. Encoders and tensor models get no gateway.
"""

from __future__ import annotations

from conch.render import common
from conch.render.common import Obj, Owner

CONTAINER = "openai"
PORT = 9000
PORT_NAME = "openai"
COMMAND = "conch-gateway"
READY_PATH = "/health/ready"
LIVE_PATH = "/health/live"
READY_TIMEOUT = 10
"""Seconds one readiness generation may take: a busy CPU pod makes its first token in well under this."""
RESOURCES: Obj = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
"""The gateway relays text; the model's memory and CPU are Triton's (spec.serving.resources)."""


def wanted(owner: Owner) -> bool:
    """Whether the serving pods of `owner` carry the gateway (generative models only)."""
    return owner.spec.generative()


def container(
    owner: Owner,
    model_name: str,
    grpc_port: int,
    port: int = PORT,
    *,
    host: str = "0.0.0.0",
    drain_seconds: int = 5,
) -> Obj:
    """The gateway container: Triton's model `model_name` over gRPC on the pod's loopback, OpenAI out
    on `host:port` (the loopback when the auth proxy fronts it). After SIGTERM its streams in flight get
    `drain_seconds` to end (Triton's own exit timeout, so a rollout cuts no stream of the old pods)."""
    return {
        "name": CONTAINER,
        "image": owner.spec.serving.image,
        "command": [COMMAND],
        "args": [
            f"--model={model_name}",
            f"--triton-grpc=127.0.0.1:{grpc_port}",
            f"--host={host}",
            f"--port={port}",
            f"--drain-seconds={drain_seconds}",
        ],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": READY_TIMEOUT,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": RESOURCES,
        "securityContext": common.restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def service_ports(owner: Owner) -> list[tuple[str, int]]:
    """(name, port) the Service adds for the gateway."""
    return [(PORT_NAME, PORT)] if wanted(owner) else []


def endpoint(owner: Owner, host: str) -> str | None:
    """The OpenAI base URL clients use (what `openai.OpenAI(base_url=...)` takes), or None."""
    return f"http://{host}:{PORT}/v1" if wanted(owner) else None
