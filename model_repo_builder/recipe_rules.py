"""CEL twins (`x-kubernetes-validations`) of the recipe's cross-field validators, for the CRD.

The recipe's pydantic validators refuse a recipe in the builder and in the operator; the CRD embeds the
recipe as spec.compression, so each validator has a rule here that the apiserver runs at admission and
a spec the operator would park as InvalidSpec is rejected with its field path instead. Fields have no
defaults in the CRD, so rules spell the recipe's defaults out (`has(...) ? ... : default`).
tests/operator/specgen.py walks every validator message against these rules on a real apiserver.
Imports only pydantic (for the JSON type) and the task names: recipe.py and recipe_sections.py, light
by design, import this module.
"""

from __future__ import annotations

from pydantic import JsonValue

from model_repo_builder import tasknames

Rules = list[JsonValue]

_FORMAT = "(has(self.export) && has(self.export.format) ? self.export.format : 'onnx')"
_BACKEND = "(has(self.export) && has(self.export.backend) ? self.export.backend : 'onnxruntime')"
# quantize.mode in effect: a text recipe without a quantize section quantizes to int8-dynamic (an
# encoder) or int4-weight (a generative model).
_MODE = (
    "(has(self.quantize) ? (has(self.quantize.mode) ? self.quantize.mode : 'none') : "
    f"(has(self.text) ? (self.text.task == '{tasknames.TEXT_GENERATION}' ? 'int4-weight' : 'int8-dynamic') "
    ": 'none'))"
)

QUANTIZE: Rules = [
    {
        "rule": "!has(self.smoothAlpha) || (has(self.mode) && self.mode == 'int8-dynamic')",
        "message": "smoothAlpha applies to mode 'int8-dynamic' only",
        "fieldPath": ".smoothAlpha",
    }
]

EXPORT: Rules = [
    {
        "rule": "((has(self.backend) ? self.backend : 'onnxruntime') == 'pytorch') == "
        "((has(self.format) ? self.format : 'onnx') == 'torchscript')",
        "message": "export.backend 'pytorch' needs export.format 'torchscript', other backends 'onnx'",
        "fieldPath": ".format",
    }
]

TRITON: Rules = [
    {
        "rule": "!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes) || "
        "self.dynamicBatching.preferredBatchSizes.all(s, s >= 1 && "
        "s <= (has(self.maxBatchSize) ? self.maxBatchSize : 8))",
        "message": "triton.dynamicBatching.preferredBatchSizes must be within 1..triton.maxBatchSize "
        "(8 unless set)",
        "fieldPath": ".dynamicBatching.preferredBatchSizes",
    }
]

_EMBED = tasknames.FEATURE_EXTRACTION
_GENERATE = tasknames.TEXT_GENERATION
_WEIGHT_ONLY = "['int4-weight', 'int8-weight']"
_GENERATION_MODES = "['int4-weight', 'int8-weight', 'none']"
TEXT: Rules = [
    {
        "rule": f"self.task == '{_GENERATE}' || !has(self.contextLength)",
        "message": f"text.contextLength applies to task '{_GENERATE}' only",
        "fieldPath": ".contextLength",
    },
    {
        "rule": f"self.task == '{_EMBED}' || (!has(self.pooling) && !has(self.normalize))",
        "message": f"text.pooling and text.normalize apply to task '{_EMBED}' only",
    },
]

RECIPE: Rules = [
    {
        # without a text section the task is unknown here (spec.model.task may name it): the
        # ModelDeployment's rules (conch.api.rules.TEXT) check the tensor case
        "rule": f"!has(self.text) || self.text.task == '{_GENERATE}' || !({_MODE} in {_WEIGHT_ONLY} || "
        f"(has(self.fallback) && self.fallback.exists(m, m in {_WEIGHT_ONLY})))",
        "message": f"quantize modes int4-weight and int8-weight apply to text.task '{_GENERATE}' only",
        "fieldPath": ".quantize.mode",
    },
    {
        "rule": f"!has(self.text) || self.text.task != '{_GENERATE}' || ({_MODE} in {_GENERATION_MODES} && "
        f"(!has(self.fallback) || self.fallback.all(m, m in {_GENERATION_MODES})))",
        "message": f"text.task '{_GENERATE}' quantizes to int4-weight, int8-weight or none "
        "(quantize.mode and fallback)",
        "fieldPath": ".quantize.mode",
    },
    {
        "rule": f"!({_FORMAT} == 'torchscript' && has(self.quantize) && has(self.quantize.mode) && "
        "self.quantize.mode in ['int8-dynamic', 'int8-static'])",
        "message": "quantize.mode int8-dynamic and int8-static need export.format 'onnx'",
        "fieldPath": ".quantize.mode",
    },
    {
        "rule": f"!(has(self.triton) && has(self.triton.tensorrtFp16) && self.triton.tensorrtFp16) || "
        f"{_BACKEND} == 'onnxruntime'",
        "message": "triton.tensorrtFp16 applies to the onnxruntime backend only",
        "fieldPath": ".triton.tensorrtFp16",
    },
    {
        "rule": f"!has(self.text) || {_FORMAT} == 'onnx'",
        "message": "text models export to ONNX: export.format must be 'onnx'",
        "fieldPath": ".export.format",
    },
    {
        "rule": "!has(self.text) || !has(self.io) || "
        "((!has(self.io.inputs) || self.io.inputs.size() == 0) && "
        "(!has(self.io.outputs) || self.io.outputs.size() == 0))",
        "message": "text models take text: io.inputs/io.outputs come from the checkpoint",
        "fieldPath": ".io",
    },
    {
        "rule": "!has(self.text) || !has(self.triton) || !has(self.triton.maxBatchSize) || "
        "self.triton.maxBatchSize >= 1",
        "message": "text models are served batched: triton.maxBatchSize must be >= 1",
        "fieldPath": ".triton.maxBatchSize",
    },
    {
        "rule": "!has(self.distill) || has(self.distill.keepLayers) || (has(self.prune) && "
        "has(self.prune.method) && self.prune.method != 'none' && has(self.prune.amount) && "
        "self.prune.amount > 0.0)",
        "message": "distill needs a smaller student: set prune (method and amount) or distill.keepLayers",
        "fieldPath": ".distill",
    },
    {
        "rule": "!has(self.distill) || !has(self.validation) || !has(self.validation.dataPath) || "
        "(self.distill.dataPath != self.validation.dataPath && "
        "(!has(self.distill.holdout) || self.distill.holdout == 0.0))",
        "message": "distill.dataPath must differ from validation.dataPath, and distill.holdout "
        "needs validation.dataPath unset (the held-out split is the validation data)",
        "fieldPath": ".distill",
    },
    {
        "rule": f"!has(self.fallback) || !({_MODE} in self.fallback)",
        "message": "fallback lists the modes tried after quantize.mode (int8-dynamic for text models "
        "without a quantize section): do not repeat it",
        "fieldPath": ".fallback",
    },
    {
        "rule": f"!has(self.fallback) || {_FORMAT} != 'torchscript' || "
        "self.fallback.all(m, m == 'none' || m == 'fp16')",
        "message": "torchscript exports quantize to none or fp16 only",
        "fieldPath": ".fallback",
    },
]
