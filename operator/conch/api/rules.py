"""CEL rules (`x-kubernetes-validations`) for cross-field checks, attached to the models in types.

Each rule carries a message and, where one field is to blame, a fieldPath, so the apiserver's
rejection names the field. Fields without a default in the CRD may be absent: rules use has().
Text models (spec.model.task, or a compression.text section) take Hugging Face sources only: a
model directory or a .tar.gz of one, exported to ONNX and served batched.
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

MODEL: Rules = [
    {
        "rule": "!has(self.text) || has(self.task)",
        "message": "model.text needs model.task (text settings apply to Hugging Face text models)",
        "fieldPath": ".text",
    },
    {
        "rule": "!has(self.text) || !has(self.task) || self.task == 'feature-extraction' || "
        "(!has(self.text.pooling) && !has(self.text.normalize))",
        "message": "model.text.pooling and model.text.normalize apply to task 'feature-extraction' only",
        "fieldPath": ".text",
    },
]

# A text model: the task is set on spec.model or in the recipe's text section.
_TEXT = "(has(self.model.task) || (has(self.compression) && has(self.compression.text)))"
_SOURCE = "(has(self.model.source.path) ? self.model.source.path : self.model.source.url)"
_TENSOR_SUFFIXES = "['.pt', '.pt2', '.onnx']"
_ARCHIVE = f"({_SOURCE}.endsWith('.tar.gz') || {_SOURCE}.endsWith('.tgz'))"
_TRITON = "has(self.compression) && has(self.compression.triton)"

TEXT: Rules = [
    {
        "rule": f"!{_TEXT} || !has(self.model.inputs)",
        "message": "text models (model.task) take text: leave out model.inputs (from the checkpoint)",
        "fieldPath": ".model.inputs",
    },
    {
        "rule": f"!{_TEXT} || !has(self.model.outputs)",
        "message": "text models (model.task) take text: leave out model.outputs (from the checkpoint)",
        "fieldPath": ".model.outputs",
    },
    {
        "rule": f"!{_TEXT} || !(has(self.compression) && has(self.compression.io))",
        "message": "text models (model.task) take text: leave out compression.io",
        "fieldPath": ".compression.io",
    },
    {
        "rule": f"!{_TEXT} || !(has(self.model.source.path) || has(self.model.source.url)) || "
        f"!{_TENSOR_SUFFIXES}.exists(s, {_SOURCE}.endsWith(s))",
        "message": "model.task needs a Hugging Face model directory or a .tar.gz of one as source, "
        "not a .pt/.pt2/.onnx file",
        "fieldPath": ".model.source",
    },
    {
        "rule": f"!(has(self.model.source.path) || has(self.model.source.url)) || !{_ARCHIVE} || {_TEXT}",
        "message": "a .tar.gz source is a Hugging Face model archive: set model.task",
        "fieldPath": ".model.task",
    },
    {
        "rule": f"!{_TEXT} || !(has(self.compression) && has(self.compression.export) && "
        "has(self.compression.export.format)) || self.compression.export.format == 'onnx'",
        "message": "text models (model.task) export to ONNX: compression.export.format must be 'onnx'",
        "fieldPath": ".compression.export.format",
    },
    {
        "rule": f"!{_TEXT} || !has(self.serving) || !has(self.serving.maxBatchSize) || "
        "self.serving.maxBatchSize >= 1",
        "message": "text models (model.task) are served batched: serving.maxBatchSize must be >= 1",
        "fieldPath": ".serving.maxBatchSize",
    },
    {
        "rule": f"!{_TEXT} || (has(self.serving) && has(self.serving.maxBatchSize)) || "
        f"!({_TRITON} && has(self.compression.triton.maxBatchSize)) || "
        "self.compression.triton.maxBatchSize >= 1",
        "message": "text models (model.task) are served batched: compression.triton.maxBatchSize >= 1",
        "fieldPath": ".compression.triton.maxBatchSize",
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
    *TEXT,
]
