"""CEL rules (`x-kubernetes-validations`) for cross-field checks, attached to the models in types.

Each rule carries a message and, where one field is to blame, a fieldPath, so the apiserver's
rejection names the field. Fields without a default in the CRD may be absent: rules use has().
Text models (spec.model.task, or a compression.text section) take Hugging Face sources only: a
model directory or a .tar.gz of one, exported to ONNX and served batched.
"""

from __future__ import annotations

from pydantic import JsonValue

from conch.api import quantity
from model_repo_builder import recipe, tasknames

Rules = list[JsonValue]


def _has(path: str) -> str:
    """CEL: the optional field at `path` (self.a.b.c) is there, and so is each field on the way."""
    parts = path.split(".")
    return " && ".join(f"has({'.'.join(parts[: i + 1])})" for i in range(1, len(parts)))


def _nonempty(path: str) -> str:
    """CEL: the optional list at `path` (self.a.b.c) is there and has items."""
    return f"({_has(path)} && {path}.size() > 0)"


def _true(path: str) -> str:
    """CEL: the optional bool at `path` is there and true."""
    return f"({_has(path)} && {path})"


def _any(*fields: str, of: str = "self") -> str:
    """CEL: at least one of the fields of `of` is set."""
    return " || ".join(f"has({of}.{name})" for name in fields)


def _inside_store(field: str) -> JsonValue:
    """The rule keeping a path on the model store inside it."""
    return {
        "rule": f"!has(self.{field}) || !self.{field}.contains('..')",
        "message": f"{field} must stay inside the model store (no '..')",
        "fieldPath": f".{field}",
    }


# A folder on the model store named one way only: no '.' or '..' segment (x/../y, ./y) and no empty
# one (a//b). A trailing slash is the one alias left (the operator strips it, conch.render.common).
# CEL and Python read this pattern alike (RE2 and re; no backslashes to escape).
FOLDER_ALIAS = "(^|/)[.][.]?(/|$)|//"
FOLDER_MESSAGE = "must be a folder inside the model store: no '.' or '..' segments and no empty ones (a//b)"


def _store_folder(field: str) -> JsonValue:
    """The rule keeping a folder on the model store inside it and spelled one way (FOLDER_ALIAS);
    stricter than _inside_store: '.' and empty segments name the same folder under another string."""
    return {
        "rule": f"!has(self.{field}) || !self.{field}.matches('{FOLDER_ALIAS}')",
        "message": f"{field} {FOLDER_MESSAGE}",
        "fieldPath": f".{field}",
    }


# The canary analysis' bounds on a generator's own histograms (types.CanaryAnalysis.llm_ratios), and
# the series each reads: an encoder exports neither, so the spec refuses them there (LLM_ANALYSIS).
LLM_RATIO_FIELDS = ("maxTimeToFirstTokenRatio", "maxInterTokenLatencyRatio")
_LLM_RATIO_SERIES = ("conch_llm_time_to_first_token_seconds", "conch_llm_inter_token_latency_seconds")


def llm_ratio_message(field: str) -> str:
    """Why a non-generative spec may not set `field` (one of LLM_RATIO_FIELDS); the pydantic twin's too."""
    series = dict(zip(LLM_RATIO_FIELDS, _LLM_RATIO_SERIES, strict=True))[field]
    return (
        f"rollout.canary.analysis.{field} applies to '{tasknames.TEXT_GENERATION}' models only "
        f"(it reads their {series})"
    )


def _prometheus_checks(of: str) -> str:
    """CEL: the canary analysis at `of` has a check that reads Prometheus (as
    types.CanaryAnalysis.prometheus_checks says)."""
    latency = _any("minSuccessRate", "maxLatencyMs", "maxLatencyRatio", *LLM_RATIO_FIELDS, of=of)
    return f"{latency} || (has({of}.queries) && {of}.queries.size() > 0)"


# A rule on the root has no field to point at by default (the apiserver prints `<nil>`); metadata
# declares no properties in the schema, so `.metadata` is the deepest valid fieldPath.
ROOT: Rules = [
    {
        "rule": "self.metadata.name.size() <= 45",
        "message": "metadata.name must be at most 45 characters (child Job names append a build suffix)",
        "fieldPath": ".metadata",
    }
]

# A resource quantity (int-or-string): a string must parse as one, and none may be negative.
QUANTITY: Rules = [
    {
        "rule": "type(self) == int ? self >= 0 : "
        "(isQuantity(self) && quantity(self).compareTo(quantity('0')) >= 0)",
        "message": "must be a non-negative Kubernetes quantity (e.g. 500m, 2Gi, 4)",
    }
]


def quantity_between(low: str, high: str) -> Rules:
    """A quantity (int-or-string) from `low` to `high`: a slipped unit ("50Pi", "50m") is refused."""
    least, most = int(quantity.parse(low)), int(quantity.parse(high))
    compare = "quantity(self).compareTo(quantity('{}'))"
    within = f"{compare.format(low)} >= 0 && {compare.format(high)} <= 0"
    return [
        {
            "rule": f"type(self) == int ? self >= {least} && self <= {most} : isQuantity(self) && {within}",
            "message": f"must be a Kubernetes quantity from {low} to {high}",
        }
    ]


# requests/limits of a container: no other keys, and no request above the limit of the same resource.
# No fieldPath: on a map the apiserver would print it as `resources.[requests]`.
RESOURCES: Rules = [
    {
        "rule": "self.all(k, k == 'limits' || k == 'requests')",
        "message": "resources takes limits and requests only",
    },
    {
        # self['requests'], not self.requests: the cost estimator bounds only the indexed form.
        "rule": "!('requests' in self) || !('limits' in self) || self['requests'].all(r, "
        "!(r in self['limits']) || !isQuantity(string(self['requests'][r])) || "
        "!isQuantity(string(self['limits'][r])) || "
        "quantity(string(self['requests'][r])).compareTo(quantity(string(self['limits'][r]))) <= 0)",
        "message": "each of resources.requests must be at most its resources.limits",
    },
]

SOURCE: Rules = [
    {"rule": "has(self.path) != has(self.url)", "message": "set exactly one of path or url"},
    {
        "rule": "!has(self.url) || has(self.sha256)",
        "message": "sha256 is required when the source is a url",
        "fieldPath": ".sha256",
    },
    _inside_store("path"),
]

STORAGE: Rules = [_store_folder("repositoryPath")]

AUTOSCALING: Rules = [
    {
        "rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must be <= maxReplicas",
        "fieldPath": ".minReplicas",
    },
    {
        "rule": _any("targetCPUUtilizationPercentage", "queueTime", "waitingSequences", "kvCache"),
        "message": "set targetCPUUtilizationPercentage, queueTime, waitingSequences and/or kvCache",
    },
]

# ---- canary rollouts (spec.rollout) -----------------------------------------------------------------

ROLLOUT: Rules = [
    {
        "rule": "!has(self.strategy) || self.strategy != 'canary' || has(self.canary)",
        "message": "strategy 'canary' needs rollout.canary (its steps)",
        "fieldPath": ".canary",
    },
    {
        "rule": "!has(self.canary) || (has(self.strategy) && self.strategy == 'canary')",
        "message": "rollout.canary applies to strategy 'canary' only: set rollout.strategy: canary",
        "fieldPath": ".strategy",
    },
]

CANARY_MAX_STEPS = 20
CANARY: Rules = [
    {
        "rule": f"{list(range(1, CANARY_MAX_STEPS))}.all(i, i >= self.steps.size() || "
        "self.steps[i].weight >= self.steps[i - 1].weight)",
        "message": "canary.steps weights must not decrease (each step moves more pods to the new version)",
        "fieldPath": ".steps",
    },
]

ANALYSIS_MESSAGE = (
    "canary.analysis needs a check: minSuccessRate, maxLatencyMs, maxLatencyRatio, "
    f"{', '.join(LLM_RATIO_FIELDS)}, queries or quality"
)
ANALYSIS: Rules = [
    {"rule": f"{_prometheus_checks('self')} || has(self.quality)", "message": ANALYSIS_MESSAGE},
]

METRIC_QUERY: Rules = [
    {"rule": _any("min", "max"), "message": "a query check needs min and/or max"},
    {
        "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
        "message": "min must be <= max",
        "fieldPath": ".min",
    },
]

QUALITY_MESSAGE = (
    "quality needs a threshold: minCosine, minTop1Agreement, maxAbsError and/or minGreedyAgreement"
)
QUALITY: Rules = [
    {
        "rule": _any("minCosine", "minTop1Agreement", "maxAbsError", "minGreedyAgreement"),
        "message": QUALITY_MESSAGE,
    },
    _inside_store("probePath"),
]

_A = "self.rollout.canary.analysis"
CANARY_SPEC: Rules = [
    {
        "rule": f"!({_has(_A)} && ({_prometheus_checks(_A)})) || "
        f"{_true('self.monitoring.serviceMonitor.enabled')}",
        "message": "canary analysis reads the canary's Triton series from Prometheus: set "
        "monitoring.serviceMonitor.enabled: true",
        "fieldPath": ".monitoring.serviceMonitor.enabled",
    },
]

_DB_OFF = f"({_has('self.dynamicBatching.enabled')} && !self.dynamicBatching.enabled)"

SERVING: Rules = [
    {
        "rule": f"!has(self.maxBatchSize) || self.maxBatchSize > 0 || {_DB_OFF}",
        "message": "dynamic batching needs maxBatchSize > 0 (or set dynamicBatching.enabled: false)",
        "fieldPath": ".maxBatchSize",
    },
]

MODEL: Rules = [
    {
        "rule": "!has(self.text) || has(self.task)",
        "message": "model.text needs model.task (text settings apply to Hugging Face text models)",
        "fieldPath": ".text",
    },
    {
        "rule": f"!has(self.text) || !has(self.task) || self.task == '{tasknames.FEATURE_EXTRACTION}' || "
        "(!has(self.text.pooling) && !has(self.text.normalize))",
        "message": "model.text.pooling and model.text.normalize apply to task "
        f"'{tasknames.FEATURE_EXTRACTION}' only",
        "fieldPath": ".text",
    },
    {
        "rule": f"!has(self.text) || !has(self.task) || self.task == '{tasknames.TEXT_GENERATION}' || "
        "!has(self.text.contextLength)",
        "message": f"model.text.contextLength applies to task '{tasknames.TEXT_GENERATION}' only",
        "fieldPath": ".text.contextLength",
    },
    {
        "rule": f"!has(self.text) || !has(self.task) || self.task != '{tasknames.TEXT_GENERATION}' || "
        "(!has(self.text.maxLength) && !has(self.text.truncation))",
        "message": "model.text.maxLength and model.text.truncation apply to encoder tasks; "
        f"'{tasknames.TEXT_GENERATION}' takes model.text.contextLength",
        "fieldPath": ".text",
    },
]

# The spec's rules check the recipe the operator builds from it (keys.effective_recipe): serving's
# backend, maxBatchSize and dynamicBatching replace compression's, spec.model's task, text and I/O are
# merged in. Rules on compression alone live on the recipe models; these cover what the merge adds.
_S = "has(self.serving)"
# A text model: the task is set on spec.model or in the recipe's text section.
_RECIPE_TEXT = _has("self.compression.text")
_TEXT = f"(has(self.model.task) || ({_RECIPE_TEXT}))"
# Text only through spec.model: the recipe's own rules do not see it.
_TASK_ONLY = f"(has(self.model.task) && !({_RECIPE_TEXT}))"
# A generative model: spec.model.task wins over the recipe's text.task (keys._merge_text).
_GENERATIVE = (
    f"(has(self.model.task) ? self.model.task == '{tasknames.TEXT_GENERATION}' : "
    f"(({_RECIPE_TEXT}) && self.compression.text.task == '{tasknames.TEXT_GENERATION}'))"
)
# quantize.mode in effect after the merge: a recipe without a quantize section takes the task's default.
_FALLBACK = f"({_has('self.compression.fallback')})"
_SPEC_MODE = (
    f"({_has('self.compression.quantize')} ? ({_has('self.compression.quantize.mode')} ? "
    f"self.compression.quantize.mode : 'none') : ({_GENERATIVE} ? 'int4-weight' : "
    f"({_TEXT} ? 'int8-dynamic' : 'none')))"
)
_WEIGHT_ONLY = "['int4-weight', 'int8-weight']"
_GENERATION_MODES = "['int4-weight', 'int8-weight', 'none']"
_SOURCE = "(has(self.model.source.path) ? self.model.source.path : self.model.source.url)"
_TENSOR_SUFFIXES = "['.pt', '.pt2', '.onnx']"
_ARCHIVE = f"({_SOURCE}.endsWith('.tar.gz') || {_SOURCE}.endsWith('.tgz'))"
_MAX_BATCH = (
    f"({_has('self.serving.maxBatchSize')} ? self.serving.maxBatchSize : "
    f"({_has('self.compression.triton.maxBatchSize')} ? self.compression.triton.maxBatchSize : "
    f"{recipe.Triton.model_fields['max_batch_size'].default}))"
)
_RECIPE_PREFERRED = (
    f"({_has('self.compression.triton.dynamicBatching.preferredBatchSizes')} ? "
    "self.compression.triton.dynamicBatching.preferredBatchSizes : [])"
)

# The canary's TTFT and ITL bounds read the generator's own series: refused on any other model.
LLM_ANALYSIS: Rules = [
    {
        "rule": f"{_GENERATIVE} || !({_has(f'self.rollout.canary.analysis.{field}')})",
        "message": llm_ratio_message(field),
        "fieldPath": f".rollout.canary.analysis.{field}",
    }
    for field in LLM_RATIO_FIELDS
]

_Q = "self.rollout.canary.analysis.quality"
GENERATIVE_QUALITY = (
    f"a '{tasknames.TEXT_GENERATION}' model's canary quality is its greedy agreement with the stable on "
    "the build's probe prompts: set quality.minGreedyAgreement only (minCosine, minTop1Agreement, "
    "maxAbsError and probePath compare tensor answers)"
)
GREEDY_AGREEMENT_FOR_GENERATORS = (
    f"quality.minGreedyAgreement compares the greedy answers of a '{tasknames.TEXT_GENERATION}' model "
    "(use minCosine, minTop1Agreement or maxAbsError)"
)

TEXT: Rules = [
    {
        "rule": f"{_GENERATIVE} || !({_has('self.autoscaling.waitingSequences')} || "
        f"{_has('self.autoscaling.kvCache')})",
        "message": "autoscaling.waitingSequences and autoscaling.kvCache read a "
        f"'{tasknames.TEXT_GENERATION}' model's scheduler",
        "fieldPath": ".autoscaling",
    },
    {
        "rule": f"{_GENERATIVE} || !({_has('self.serving.generation')})",
        "message": f"serving.generation sets the scheduler of a '{tasknames.TEXT_GENERATION}' model only",
        "fieldPath": ".serving.generation",
    },
    {  # a generator's probes are the build's chat prompts, answered greedily: no tensors to compare
        "rule": f"!{_GENERATIVE} || !({_has(_Q)}) || ({_any('minGreedyAgreement', of=_Q)}) && "
        f"!({_any('minCosine', 'minTop1Agreement', 'maxAbsError', 'probePath', of=_Q)})",
        "message": GENERATIVE_QUALITY,
        "fieldPath": ".rollout.canary.analysis.quality",
    },
    {
        "rule": f"{_GENERATIVE} || !({_has(_Q + '.minGreedyAgreement')})",
        "message": GREEDY_AGREEMENT_FOR_GENERATORS,
        "fieldPath": ".rollout.canary.analysis.quality.minGreedyAgreement",
    },
    {  # the recipe alone cannot tell a tensor model (no task anywhere) from one whose task is in spec.model
        "rule": f"{_GENERATIVE} || !({_SPEC_MODE} in {_WEIGHT_ONLY} || "
        f"({_FALLBACK} && self.compression.fallback.exists(m, m in {_WEIGHT_ONLY})))",
        "message": "quantize modes int4-weight and int8-weight apply to text-generation models only "
        "(model.task or compression.text.task)",
        "fieldPath": ".compression.quantize.mode",
    },
    {
        "rule": f"!{_GENERATIVE} || ({_SPEC_MODE} in {_GENERATION_MODES} && "
        f"(!{_FALLBACK} || self.compression.fallback.all(m, m in {_GENERATION_MODES})))",
        "message": f"a '{tasknames.TEXT_GENERATION}' model quantizes to int4-weight, int8-weight or none "
        "(compression.quantize.mode and compression.fallback)",
        "fieldPath": ".compression.quantize.mode",
    },
    {  # here, not in recipe_rules: the recipe alone cannot see spec.model.task
        "rule": f"!({_has('self.compression.distill.keepLayers')}) || {_TEXT}",
        "message": "distill.keepLayers applies to Hugging Face text models (model.task or compression.text) "
        "only",
        "fieldPath": ".compression.distill.keepLayers",
    },
    {
        "rule": f"!{_TEXT} || !{_nonempty('self.model.inputs')}",
        "message": "text models (model.task) take text: leave out model.inputs (from the checkpoint)",
        "fieldPath": ".model.inputs",
    },
    {
        "rule": f"!{_TEXT} || !{_nonempty('self.model.outputs')}",
        "message": "text models (model.task) take text: leave out model.outputs (from the checkpoint)",
        "fieldPath": ".model.outputs",
    },
    {
        "rule": f"!{_TASK_ONLY} || !({_nonempty('self.compression.io.inputs')} || "
        f"{_nonempty('self.compression.io.outputs')})",
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
        "rule": f"!{_TASK_ONLY} || !({_has('self.compression.export.format')}) || "
        "self.compression.export.format == 'onnx'",
        "message": "text models (model.task) export to ONNX: compression.export.format must be 'onnx'",
        "fieldPath": ".compression.export.format",
    },
    {
        "rule": f"!{_TEXT} || !{_S} || !has(self.serving.maxBatchSize) || self.serving.maxBatchSize >= 1",
        "message": "text models (model.task) are served batched: serving.maxBatchSize must be >= 1",
        "fieldPath": ".serving.maxBatchSize",
    },
    {
        "rule": f"!{_TASK_ONLY} || ({_has('self.serving.maxBatchSize')}) || "
        f"!({_has('self.compression.triton.maxBatchSize')}) || "
        "self.compression.triton.maxBatchSize >= 1",
        "message": "text models (model.task) are served batched: compression.triton.maxBatchSize >= 1",
        "fieldPath": ".compression.triton.maxBatchSize",
    },
    {
        "rule": f"!has(self.model.task) || self.model.task == '{tasknames.FEATURE_EXTRACTION}' || "
        f"!({_RECIPE_TEXT}) || "
        "(!has(self.compression.text.pooling) && !has(self.compression.text.normalize))",
        "message": "compression.text.pooling and normalize apply to task "
        f"'{tasknames.FEATURE_EXTRACTION}' only, "
        "and model.task replaces compression.text.task",
        "fieldPath": ".compression.text",
    },
    {
        "rule": f"!{_TASK_ONLY} || ({_has('self.compression.quantize')}) || "
        f"!({_has('self.compression.fallback')}) || !('int8-dynamic' in self.compression.fallback)",
        "message": "text models quantize to int8-dynamic unless compression.quantize says otherwise: "
        "compression.fallback must not repeat it",
        "fieldPath": ".compression.fallback",
    },
]

SPEC: Rules = [
    {
        "rule": "!(has(self.replicas) && has(self.autoscaling))",
        "message": "set replicas or autoscaling, not both: with autoscaling the HPA owns the replica count",
        "fieldPath": ".replicas",
    },
    {
        "rule": f"!{_S} || !has(self.serving.backend) || (self.serving.backend == 'pytorch') == "
        f"({_has('self.compression.export.format')} && self.compression.export.format == 'torchscript')",
        "message": "backend 'pytorch' needs compression.export.format 'torchscript', other backends 'onnx'",
        "fieldPath": ".serving.backend",
    },
    {
        "rule": f"!{_S} || !has(self.serving.backend) || self.serving.backend == 'onnxruntime' || "
        f"!{_true('self.compression.triton.tensorrtFp16')}",
        "message": "compression.triton.tensorrtFp16 applies to the onnxruntime backend only: "
        "serving.backend must be 'onnxruntime' or tensorrtFp16 false",
        "fieldPath": ".serving.backend",
    },
    {
        "rule": f"!{_S} || !has(self.serving.dynamicBatching) || "
        "!has(self.serving.dynamicBatching.preferredBatchSizes) || "
        f"self.serving.dynamicBatching.preferredBatchSizes.all(s, s >= 1 && s <= {_MAX_BATCH})",
        "message": "serving.dynamicBatching.preferredBatchSizes must be between 1 and maxBatchSize "
        "(serving.maxBatchSize, else compression.triton.maxBatchSize, else 8)",
        "fieldPath": ".serving.dynamicBatching.preferredBatchSizes",
    },
    {
        "rule": f"!{_S} || !has(self.serving.maxBatchSize) || has(self.serving.dynamicBatching) || "
        f"{_RECIPE_PREFERRED}.all(s, s <= self.serving.maxBatchSize)",
        "message": "serving.maxBatchSize is below compression.triton.dynamicBatching.preferredBatchSizes",
        "fieldPath": ".serving.maxBatchSize",
    },
    *TEXT,
    *CANARY_SPEC,
    *LLM_ANALYSIS,
]


AUTH_MESSAGE = "secretName holds inference tokens: it needs mode: token"
AUTH: Rules = [
    {"rule": "!has(self.secretName) || !has(self.mode) || self.mode == 'token'", "message": AUTH_MESSAGE,
     "fieldPath": ".secretName"},
]  # fmt: skip
