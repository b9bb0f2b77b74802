"""CEL rules (`x-kubernetes-validations`) for cross-field checks, attached to the models in types.

Each rule carries a message and, where one field is to blame, a fieldPath, so the apiserver's
rejection names the field. Fields without a default in the CRD may be absent: rules use has().
"""

from __future__ import annotations

from pydantic import JsonValue

Rules = list[JsonValue]

ROOT: Rules = [
    {
        "rule": "self.metadata.name.size() <= 45",
        "message": "metadata.name must be at most 45 characters (child Job names append a build suffix)",
    }
]

SOURCE: Rules = [
    {"rule": "has(self.path) != has(self.url)", "message": "set exactly one of path or url"},
    {
        "rule": "!has(self.url) || has(self.sha256)",
        "message": "sha256 is required when the source is a url",
        "fieldPath": ".sha256",
    },
    {
        "rule": "!has(self.path) || !self.path.contains('..')",
        "message": "path must stay inside the model store (no '..')",
        "fieldPath": ".path",
    },
]

AUTOSCALING: Rules = [
    {
        "rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must be <= maxReplicas",
        "fieldPath": ".minReplicas",
    },
    {
        "rule": "has(self.targetCPUUtilizationPercentage) || has(self.queueTime)",
        "message": "set targetCPUUtilizationPercentage and/or queueTime",
    },
]

_DB_OFF = "(has(self.dynamicBatching) && has(self.dynamicBatching.enabled) && !self.dynamicBatching.enabled)"

SERVING: Rules = [
    {
        "rule": f"!has(self.maxBatchSize) || self.maxBatchSize > 0 || {_DB_OFF}",
        "message": "dynamic batching needs maxBatchSize > 0 (or set dynamicBatching.enabled: false)",
        "fieldPath": ".maxBatchSize",
    },
    {
        "rule": "!has(self.maxBatchSize) || !has(self.dynamicBatching) || "
        "!has(self.dynamicBatching.preferredBatchSizes) || "
        "self.dynamicBatching.preferredBatchSizes.all(s, s >= 1 && s <= self.maxBatchSize)",
        "message": "preferredBatchSizes must be between 1 and maxBatchSize",
        "fieldPath": ".dynamicBatching.preferredBatchSizes",
    },
]

SPEC: Rules = [
    {
        "rule": "!(has(self.replicas) && has(self.autoscaling))",
        "message": "set replicas or autoscaling, not both: with autoscaling the HPA owns the replica count",
        "fieldPath": ".replicas",
    },
    {
        "rule": "!has(self.serving) || !has(self.serving.backend) || (self.serving.backend == 'pytorch') == "
        "(has(self.compression) && has(self.compression.export) && has(self.compression.export.format) "
        "&& self.compression.export.format == 'torchscript')",
        "message": "backend 'pytorch' needs compression.export.format 'torchscript', other backends 'onnx'",
        "fieldPath": ".serving.backend",
    },
]
