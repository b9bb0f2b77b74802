"""The HorizontalPodAutoscaler: CPU utilisation and/or Triton queue time through the custom metrics API."""

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
        out.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": queue.metric_name},
                    "target": {"type": "AverageValue", "averageValue": str(queue.average_microseconds)},
                },
            }
        )
    return out


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
