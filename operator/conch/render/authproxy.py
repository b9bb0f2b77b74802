"""Authenticated inference (spec.auth.mode: token): the serving pod's auth proxy and its token Secret.

Triton's own `--http-restricted-api` takes one key per API group, so it cannot hold two valid tokens
while clients rotate; and the OpenAI gateway would need its own copy of the check. So with auth on,
Triton and the gateway listen on the pod's loopback (their usual port + UPSTREAM_OFFSET) and a third
container, `conch-gateway auth-proxy` from the same serving image (conch_gateway/authproxy.py), takes
the pod's http, grpc (and openai) ports in front of them: every request but the health checks needs
a token, refusals count in `conch_auth_refusals_total` on its metrics port (`auth-metrics`, scraped
like Triton's 8002, which stays open for Prometheus).

The tokens are the values of one Secret, mounted into the proxy (a volume, so a rotated Secret
reaches the running pods: the proxy re-reads the files): the user's (spec.auth.secretName) or one
Conch generates, `<name>-inference-tokens`, with one random token under DATA_KEY, generated once and
read back from the live Secret after (like the admin key, render/secret.py). The token is never in
the pod spec, status or an Event: pods get the Secret's name only.

`front` is the one hook into the pod template (deployment.containers): it moves the exposed ports
from Triton and the gateway to the proxy and points their probes at the proxy's port numbers (a
named port is looked up in the probing container's own ports), so the kubelet's probes take the same
path as clients (health paths are open).
"""

from __future__ import annotations

import base64
import copy

from conch.render import common, secret
from conch.render.common import Obj, Owner

CONTAINER = "auth-proxy"
COMMAND = ["conch-gateway", "auth-proxy"]
UPSTREAM_OFFSET = 10000
"""Triton's and the gateway's loopback ports with auth on: 8000 -> 18000, 8001 -> 18001, 9000 -> 19000."""
LOOPBACK = "127.0.0.1"
METRICS_PORT = 8003
METRICS_PORT_NAME = "auth-metrics"
TOKENS_VOLUME = "inference-tokens"
TOKENS_MOUNT = "/var/run/conch/inference-tokens"
GENERATED_SUFFIX = "-inference-tokens"
DATA_KEY = "token"
FRONTED = {"http": "http", "grpc": "grpc", "openai": "openai"}
"""Port name -> the proxy's flag for a listener of that kind."""
RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
"""No CPU limit: a throttled proxy would add its throttling to every request's latency."""


def enabled(owner: Owner) -> bool:
    """Whether the pods of `owner` require tokens (an unresolved spec.auth is off: passctx resolves
    the operator's default before anything renders)."""
    auth = owner.spec.auth
    return auth is not None and auth.mode == "token"


def secret_name(owner: Owner) -> str | None:
    """The Secret holding the tokens (None: auth off)."""
    if not enabled(owner):
        return None
    assert owner.spec.auth is not None
    return owner.spec.auth.secret_name or f"{owner.name}{GENERATED_SUFFIX}"


def generated(owner: Owner) -> bool:
    """Whether Conch generates the token Secret (auth on, no spec.auth.secretName)."""
    return enabled(owner) and owner.spec.auth is not None and owner.spec.auth.secret_name is None


def generated_name(owner: Owner) -> str:
    """The name of the Secret Conch generates (whether or not it does, for this spec)."""
    return f"{owner.name}{GENERATED_SUFFIX}"


def inner_port(owner: Owner, port: int) -> int:
    """Where Triton or the gateway listens for `port` of the pod: itself, or its loopback twin."""
    return port + UPSTREAM_OFFSET if enabled(owner) else port


def triton_bind_args(owner: Owner) -> list[str]:
    """tritonserver flags keeping HTTP and gRPC on the pod's loopback (metrics stays on every address)."""
    return [f"--http-address={LOOPBACK}", f"--grpc-address={LOOPBACK}"] if enabled(owner) else []


def gateway_host(owner: Owner) -> str:
    """The address the OpenAI gateway binds."""
    return LOOPBACK if enabled(owner) else "0.0.0.0"


def _probe_ports(container: Obj, moved: dict[str, int]) -> None:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if get is not None and get.get("port") in moved:
            get["port"] = moved[get["port"]]


SERVE_AFTER_SIGTERM_SECONDS = 5
"""The proxy answers new requests this long after SIGTERM (conch_gateway.authproxy.DRAIN_SECONDS)."""


def front(owner: Owner, containers: list[Obj], drain_seconds: int | None = None) -> list[Obj]:
    """The pod's containers with the proxy in front of their exposed ports (unchanged with auth off);
    `drain_seconds`: how long requests in flight may go on after SIGTERM (default: the proxy's own)."""
    if not enabled(owner):
        return containers
    out, exposed = [], []
    for original in containers:
        c: Obj = copy.deepcopy(original)
        moved = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if p.get("name") in FRONTED}
        c["ports"] = [p for p in c.get("ports") or [] if p.get("name") not in FRONTED]
        _probe_ports(c, moved)
        exposed += list(moved.items())
        out.append(c)
    out.append(proxy_container(owner, exposed, drain_seconds))
    return out


def proxy_container(owner: Owner, exposed: list[tuple[str, int]], drain_seconds: int | None = None) -> Obj:
    """The proxy: one listener per exposed (name, port), relaying to its loopback twin."""
    listeners = [f"--{FRONTED[name]}={port}={LOOPBACK}:{port + UPSTREAM_OFFSET}" for name, port in exposed]
    ports = [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in exposed]
    ports.append({"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"})
    return {
        "name": CONTAINER,
        "image": owner.spec.serving.image,
        "command": list(COMMAND),
        "args": [
            f"--tokens={TOKENS_MOUNT}",
            "--host=0.0.0.0",
            *listeners,
            f"--metrics-port={METRICS_PORT}",
            *([f"--drain-seconds={drain_seconds}"] if drain_seconds is not None else []),
        ],
        "ports": ports,
        "resources": RESOURCES,
        "securityContext": common.restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": TOKENS_VOLUME, "mountPath": TOKENS_MOUNT, "readOnly": True}],
    }


def volumes(owner: Owner) -> list[Obj]:
    """The token Secret as a pod volume (none with auth off)."""
    name = secret_name(owner)
    return [] if name is None else [{"name": TOKENS_VOLUME, "secret": {"secretName": name}}]


def service_ports(owner: Owner) -> list[tuple[str, int]]:
    """(name, port) the Service adds for the proxy's metrics."""
    return [(METRICS_PORT_NAME, METRICS_PORT)] if enabled(owner) else []


# ---- the generated Secret ----------------------------------------------------------------------------


def token_of(live: Obj | None) -> str | None:
    """The token the live generated Secret holds, or None (absent, empty or unreadable)."""
    return secret.key_of(live, DATA_KEY)


def render_secret(owner: Owner, token: str) -> Obj:
    """The generated token Secret holding `token`. Other keys a user adds to it (a second token while
    rotating) are not this apply's fields, so server-side apply leaves them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": common.metadata(owner, generated_name(owner), "triton"),
        "type": "Opaque",
        "data": {DATA_KEY: base64.b64encode(token.encode()).decode()},
    }
