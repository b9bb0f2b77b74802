"""The HorizontalPodAutoscaler: CPU utilisation, and through the custom metrics API (the chart's
prometheus-adapter rules) Triton's queue time or, for a generative model, its waiting sequences and
KV-cache use per pod."""

from __future__ import annotations

from conch.api import types
from conch.render import common
from conch.render.common import Obj, Owner


def metrics(autoscaling: types.Autoscaling) -> list[Obj]:
    """HPA metric specs for the targets that are set."""
    out: list[Obj] = []
    if autoscaling.target_cpu_utilization_percentage is not None:
        target = {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization_percentage}
        out.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    if autoscaling.queue_time is not None:
        queue = autoscaling.queue_time
        out.append(_per_pod(queue.metric_name, queue.average_microseconds))
    if autoscaling.waiting_sequences is not None:
        waiting = autoscaling.waiting_sequences
        out.append(_per_pod(waiting.metric_name, waiting.average))
    if autoscaling.kv_cache is not None:
        out.append(_per_pod(autoscaling.kv_cache.metric_name, autoscaling.kv_cache.average_percent))
    return out


def _per_pod(metric: str, average: int) -> Obj:
    """A Pods metric of the custom metrics API with an average-value target."""
    target = {"type": "AverageValue", "averageValue": str(average)}
    return {"type": "Pods", "pods": {"metric": {"name": metric}, "target": target}}


def behavior(autoscaling: types.Autoscaling) -> Obj | None:
    """Stabilisation windows the spec sets; unset ones keep Kubernetes' defaults (up 0 s, down 300 s)."""
    out: Obj = {}
    for direction, seconds in (
        ("scaleUp", autoscaling.scale_up_stabilization_seconds),
        ("scaleDown", autoscaling.scale_down_stabilization_seconds),
    ):
        if seconds is not None:
            out[direction] = {"stabilizationWindowSeconds": seconds}
    return out or None


def render_hpa(owner: Owner) -> Obj | None:
    """The HPA, or None when the spec sets a fixed replica count."""
    autoscaling = owner.spec.autoscaling
    if autoscaling is None:
        return None
    hpa: Obj = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": common.metadata(owner, owner.name, "triton"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": metrics(autoscaling),
            "behavior": behavior(autoscaling),
        },
    }
    result: Obj = common.prune(hpa)
    return result
