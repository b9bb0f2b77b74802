"""The Prometheus Operator ServiceMonitor for Triton's metrics port (only where that API is served).

Every Triton series carries `namespace`, `pod` and `service` (the Prometheus Operator adds them) and,
through podTargetLabels, the pod's version as `serving_conch_dev_version`: canary analysis queries the
canary's own series with it, and the prometheus-adapter rule (charts/conch) averages queue time per pod.
"""

from __future__ import annotations

from conch.render import authproxy, common
from conch.render.common import Obj, Owner

API_GROUP_VERSION = "monitoring.coreos.com/v1"


def render_servicemonitor(owner: Owner) -> Obj | None:
    """The ServiceMonitor, or None when monitoring.serviceMonitor.enabled is false."""
    monitor = owner.spec.monitoring.service_monitor
    if not monitor.enabled:
        return None
    meta = common.metadata(owner, owner.name, "triton")
    meta["labels"] = {**(monitor.labels or {}), **meta["labels"]}
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": common.labels(owner, "triton")},
            "namespaceSelector": {"matchNames": [owner.namespace]},
            "endpoints": [
                {"port": port, "path": "/metrics", "interval": monitor.interval}
                for port in ("metrics", *(name for name, _ in authproxy.service_ports(owner)))
            ],
            "podTargetLabels": [common.LABEL_VERSION],
        },
    }
