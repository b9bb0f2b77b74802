"""The Triton Deployment: serves one immutable repository; a new version is a new pod template.

maxUnavailable is 0 so serving never drops during a rollout, and maxSurge bounds the extra pods
(each taking `serving.gpus` GPUs) a rollout needs. With autoscaling the replicas field is left out,
so the HPA owns it and an apply never fights it.

A canary (spec.rollout.strategy: canary) runs in a second Deployment, `<name>-canary`, whose pods
carry `serving.conch.dev/track: canary` beside the same selector labels: the one Service (and the
PodDisruptionBudget) select the pods of both, so traffic splits by pod count. The stable Deployment's
selector and template stay as they are (an immutable selector, and no re-roll of serving pods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from conch.api import quantity, types
from conch.render import authproxy, common, gateway, secret, verify
from conch.render.common import Obj, Owner

CONTAINER = "triton"
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
GPU_RESOURCE = "nvidia.com/gpu"
STARTUP_PERIOD = 10
REPLICASET_HISTORY = 3
ADMIN_KEY_ENV = "CONCH_TRITON_ADMIN_KEY"
LABEL_TRACK = "serving.conch.dev/track"
GRACE_SECONDS = 30
GENERATION_GRACE_SECONDS = 90
"""SIGTERM to SIGKILL: Triton finishes the requests in flight first (a stream of a few hundred tokens on a
busy CPU pod takes tens of seconds) and exits EXIT_MARGIN_SECONDS before the kubelet would kill it."""
EXIT_MARGIN_SECONDS = 5
CANARY_SUFFIX = "-canary"


@dataclass(frozen=True)
class Served:
    """The built version a Deployment serves."""

    version: str
    build_key: str
    model_name: str


def args(owner: Owner, served: Served) -> list[str]:
    """tritonserver's arguments: the version's repository, fixed ports, strict readiness, hardening (the
    admin key is expanded by the kubelet from the env var, so it never appears in the pod spec)."""
    return [
        f"--model-repository={common.repository_root(owner.spec)}/{served.build_key}",
        f"--http-port={authproxy.inner_port(owner, HTTP_PORT)}",
        f"--grpc-port={authproxy.inner_port(owner, GRPC_PORT)}",
        *authproxy.triton_bind_args(owner),
        f"--metrics-port={METRICS_PORT}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=0",
        f"--exit-timeout-secs={grace_seconds(owner) - EXIT_MARGIN_SECONDS}",
        *secret.hardening_args(f"$({ADMIN_KEY_ENV})"),
    ]


def grace_seconds(owner: Owner) -> int:
    """The pod's termination grace: a generative model's streams get longer to finish than one inference."""
    return GENERATION_GRACE_SECONDS if owner.spec.generative() else GRACE_SECONDS


def resources(owner: Owner) -> Obj:
    """The user's requests/limits plus the GPU limit (GPUs are requested through limits only)."""
    user = owner.spec.serving.resources or {}
    out: Obj = {kind: dict(values) for kind, values in user.items()}
    gpus = owner.spec.serving.gpus
    if gpus > 0:
        out.setdefault("limits", {})[GPU_RESOURCE] = gpus
        out.get("requests", {}).pop(GPU_RESOURCE, None)
    return out


def probes(owner: Owner, served: Served) -> Obj:
    """startup sized for model load; readiness on the model itself; liveness on the server."""
    live = {"httpGet": {"path": "/v2/health/live", "port": "http"}}
    startup_failures = max(1, -(-owner.spec.serving.startup_timeout_seconds // STARTUP_PERIOD))
    return {
        "startupProbe": {**live, "periodSeconds": STARTUP_PERIOD, "failureThreshold": startup_failures},
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{served.model_name}/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {**live, "periodSeconds": 10, "failureThreshold": 6},
    }


def tolerations(owner: Owner) -> list[Obj]:
    """The user's tolerations plus the GPU taint's, for GPU pods."""
    out = list(owner.spec.serving.tolerations or [])
    if owner.spec.serving.gpus > 0:
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return out


def container(owner: Owner, served: Served) -> Obj:
    """The triton container."""
    return {
        "name": CONTAINER,
        "image": owner.spec.serving.image,
        "command": ["tritonserver"],
        "args": args(owner, served),
        "env": [
            {
                "name": ADMIN_KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret.name(owner), "key": secret.DATA_KEY}},
            },
            *generation_env(owner),
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        **probes(owner, served),
        "resources": resources(owner),
        "securityContext": common.restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": common.STORE_VOLUME, "mountPath": common.STORE_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }


MEMORY_LIMIT_ENV = "CONCH_LLM_MEMORY_LIMIT_BYTES"
"""The triton container's memory limit in bytes: the scheduler refuses new sequences (HTTP 429) near it."""


THREADS_ENV = "CONCH_LLM_THREADS"
"""The decoder's intra-op threads: the triton container's CPU limit in whole CPUs, at least one."""


def generation_env(owner: Owner) -> list[Obj]:
    """A generative model's scheduler limits (spec.serving.generation, else the API's defaults); when
    the container has a memory limit, that limit in bytes (llmsched.MemoryGuard); when it has a CPU
    limit, that many decoder threads (more would only be throttled by the CFS quota)."""
    if not owner.spec.generative():
        return []
    limits = owner.spec.serving.generation or types.Generation()
    env = [{"name": name, "value": value} for name, value in limits.environment().items()]
    container_limits = resources(owner).get("limits", {})
    memory, cpu = container_limits.get("memory"), container_limits.get("cpu")
    if memory is not None:
        env.append({"name": MEMORY_LIMIT_ENV, "value": str(int(quantity.parse(memory)))})
    if cpu is not None:
        env.append({"name": THREADS_ENV, "value": str(max(1, math.ceil(quantity.parse(cpu))))})
    return env


def containers(owner: Owner, served: Served) -> list[Obj]:
    """Triton, for a generative model the OpenAI-compatible gateway beside it, and with spec.auth the
    auth proxy in front of both (render/authproxy.py)."""
    out = [container(owner, served)]
    drain = None
    if gateway.wanted(owner):
        grpc_port, port = authproxy.inner_port(owner, GRPC_PORT), authproxy.inner_port(owner, gateway.PORT)
        drain = grace_seconds(owner) - EXIT_MARGIN_SECONDS  # as long as Triton's own exit timeout
        host = authproxy.gateway_host(owner)
        gw = gateway.container(owner, served.model_name, grpc_port, port, host=host, drain_seconds=drain)
        out.append(gw)
        drain -= authproxy.SERVE_AFTER_SIGTERM_SECONDS  # the proxy serves new requests that long first
    return authproxy.front(owner, out, drain)


def pod_template(owner: Owner, served: Served) -> Obj:
    """The pod template: a pure function of (serving spec, served version); rollback reuses a ReplicaSet."""
    spec = owner.spec.serving
    return {
        "metadata": {
            "labels": {
                **common.labels(owner, "triton"),
                common.LABEL_VERSION: served.version,
            },
            "annotations": {common.ANNOTATION_BUILD_KEY: served.build_key},
        },
        "spec": {
            "securityContext": common.restricted_pod_security(),
            "nodeSelector": spec.node_selector,
            "tolerations": tolerations(owner),
            "affinity": spec.affinity,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": grace_seconds(owner),
            "initContainers": [verify.init_container(owner, served.build_key)],
            "containers": containers(owner, served),
            "volumes": [
                common.store_volume(owner, read_only=True),
                {"name": "tmp", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                *authproxy.volumes(owner),
            ],
        },
    }


def render_deployment(owner: Owner, served: Served) -> Obj:
    """The Deployment serving `served`."""
    spec = owner.spec
    deploy_spec: Obj = {
        "replicas": spec.effective_replicas(),
        "selector": {"matchLabels": common.selector(owner)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": spec.rollout.max_surge},
        },
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "revisionHistoryLimit": REPLICASET_HISTORY,
        "template": pod_template(owner, served),
    }
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(owner, owner.name, "triton"),
        "spec": deploy_spec,
    }
    result: Obj = common.prune(deployment)
    return result


def canary_name(owner: Owner) -> str:
    """The canary Deployment's name."""
    return f"{owner.name}{CANARY_SUFFIX}"


def render_canary_deployment(owner: Owner, served: Served, replicas: int) -> Obj:
    """The canary Deployment: `replicas` pods of `served` beside the stable ones."""
    out = render_deployment(owner, served)
    out["metadata"]["name"] = canary_name(owner)
    out["metadata"]["labels"][LABEL_TRACK] = "canary"
    out["spec"]["replicas"] = replicas
    out["spec"]["selector"]["matchLabels"][LABEL_TRACK] = "canary"
    out["spec"]["template"]["metadata"]["labels"][LABEL_TRACK] = "canary"
    return out
