"""The Service in front of the Triton pods: HTTP, gRPC and metrics ports (and a generative model's
OpenAI-compatible port)."""

from __future__ import annotations

from conch.render import authproxy, common, deployment, gateway
from conch.render.common import Obj, Owner


def render_service(owner: Owner) -> Obj:
    """A ClusterIP Service selecting every serving pod of the ModelDeployment."""
    ports = [
        {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
        for name, port in (
            ("http", deployment.HTTP_PORT),
            ("grpc", deployment.GRPC_PORT),
            ("metrics", deployment.METRICS_PORT),
            *gateway.service_ports(owner),
            *authproxy.service_ports(owner),
        )
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(owner, owner.name, "triton"),
        "spec": {"type": "ClusterIP", "selector": common.selector(owner), "ports": ports},
    }


def endpoints(owner: Owner) -> dict[str, str]:
    """In-cluster addresses of the Service's ports (openai: a generative model's OpenAI base URL)."""
    host = f"{owner.name}.{owner.namespace}.svc"
    out = {
        "http": f"http://{host}:{deployment.HTTP_PORT}",
        "grpc": f"{host}:{deployment.GRPC_PORT}",
        "metrics": f"http://{host}:{deployment.METRICS_PORT}/metrics",
    }
    openai = gateway.endpoint(owner, host)
    if openai is not None:
        out["openai"] = openai
    return out
