"""The Service in front of the Triton pods: HTTP, gRPC and metrics ports."""

from __future__ import annotations

from conch.render import common, deployment
from conch.render.common import Obj, Owner


def render_service(owner: Owner) -> Obj:
    """A ClusterIP Service selecting every serving pod of the ModelDeployment."""
    ports = [
        {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
        for name, port in (
            ("http", deployment.HTTP_PORT),
            ("grpc", deployment.GRPC_PORT),
            ("metrics", deployment.METRICS_PORT),
        )
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(owner, owner.name, "triton"),
        "spec": {"type": "ClusterIP", "selector": common.selector(owner), "ports": ports},
    }


def endpoints(owner: Owner) -> dict[str, str]:
    """In-cluster addresses of the Service's ports."""
    host = f"{owner.name}.{owner.namespace}.svc"
    return {
        "http": f"http://{host}:{deployment.HTTP_PORT}",
        "grpc": f"{host}:{deployment.GRPC_PORT}",
        "metrics": f"http://{host}:{deployment.METRICS_PORT}/metrics",
    }
