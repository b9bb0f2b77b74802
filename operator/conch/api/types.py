"""The ModelDeployment API as typed Python: the single source of truth for the CRD (see crdgen).

Pydantic models parse the spec inside the operator; `crdgen` turns the same models into the
structural OpenAPI schema (with CEL rules from `rules`) that the apiserver validates against, so a
bad spec is rejected with a field path before the operator ever sees it. Field defaults live here,
not in the CRD, so a stored object shows what its author wrote and `status` shows what is in effect.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from conch.api import imageref, quantity, rules
from model_repo_builder import recipe, tasknames
from model_repo_builder.sources import limits
from model_repo_builder.triton.python_backend import llmsched

GROUP = "serving.conch.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md"]
# nvcr.io/nvidia/tritonserver:25.12-py3 plus numpy, tokenizers and onnxruntime for the python steps
# (text ensembles, the CPU backend): built from images/triton.Dockerfile.
DEFAULT_TRITON_IMAGE = "ghcr.io/conch-dev/tritonserver:25.12-py3-conch0.1.0"
DEFAULT_BUILDER_IMAGE = "ghcr.io/conch-dev/model-repo-builder:0.1.0"

# A Kubernetes quantity ("500m", "2Gi", 4): int-or-string in the schema, checked by CEL and by `quantity`.
Quantity = Annotated[
    int | str,
    AfterValidator(quantity.check),
    WithJsonSchema(
        {"x-kubernetes-int-or-string": True, "maxLength": 64, "x-kubernetes-validations": rules.QUANTITY}
    ),
]
# A container's requests and limits (name -> quantity), as the Deployment or Job takes them.
Resources = Annotated[
    dict[str, Annotated[dict[str, Quantity], Field(max_length=16)]],
    AfterValidator(quantity.check_resources),
    Field(json_schema_extra={"maxProperties": 2, "x-kubernetes-validations": rules.RESOURCES}),
]
# An object passed through to Kubernetes unchanged (tolerations, affinity): the apiserver keeps it.
FreeForm = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]
# The byte cap on a build's source (spec.build.maxSourceSize): bounded so a slipped unit is refused.
SOURCE_SIZE_RANGE = ("1Mi", "1Ti")
SourceSize = Annotated[
    int | str,
    AfterValidator(quantity.between(*SOURCE_SIZE_RANGE)),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 64,
            "x-kubernetes-validations": rules.quantity_between(*SOURCE_SIZE_RANGE),
        }
    ),
]
SCRATCH_PER_SOURCE = 4
"""The build's scratch volume (/tmp) holds this many times maxSourceSize: the download and its
unpacked copy (one each at most), and the fp32 export of a half-precision source (two)."""
Labels = Annotated[dict[str, str], Field(max_length=64)]
# A container image reference (the distribution reference grammar: api/imageref), as pods take it.
ImageRef = Annotated[str, Field(max_length=512, min_length=1, pattern=imageref.PATTERN)]
NAME_PATTERN = r"^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$"


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused (the CRD prunes them first anyway)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ModelSource(Model):
    """Where the PyTorch model comes from: a path on the model store or an https URL."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.SOURCE})
    path: str | None = Field(
        None, max_length=1024, pattern=r"^[^/]", description="Path relative to the model-store volume root."
    )
    url: str | None = Field(None, max_length=2048, pattern=r"^https://", description="An https URL.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Hex digest; required for url.")


class TextOptions(Model):
    """Tokenizer and post-processing settings of a text model; each one set replaces compression.text's.

    Unset fields keep the recipe's value (or its default: mean pooling, normalised, 128 tokens, truncated).
    """

    pooling: recipe.Pooling | None = Field(None, description="feature-extraction: mean (default) or cls.")
    normalize: bool | None = Field(None, description="feature-extraction: L2-normalise (default true).")
    max_length: int | None = Field(
        None, ge=8, le=8192, description="Longest token sequence the model sees (default 128)."
    )
    truncation: bool | None = Field(
        None, description="Cut longer texts (default true) or reject them per request (false)."
    )
    context_length: int | None = Field(
        None,
        ge=16,
        le=1_048_576,
        description="text-generation: the longest prompt plus completion served, in tokens (unset: the "
        "model's own context length; longer is refused).",
    )


class ModelRef(Model):
    """The model to build: its Triton name, where it is, and (optionally) its I/O signature or task.

    The source format is detected by the builder from the file suffix; inputs/outputs, when set,
    replace the recipe's `io` section. With `task` the source is a Hugging Face model (a directory
    or a .tar.gz of one) and the served model takes text: task and text replace compression.text's.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.MODEL})
    name: str = Field(
        max_length=63, pattern=r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$", description="Triton model name."
    )
    source: ModelSource
    inputs: list[recipe.TensorSpec] | None = Field(None, max_length=32, description="Model inputs.")
    outputs: list[recipe.TensorSpec] | None = Field(None, max_length=32, description="Model outputs.")
    task: recipe.TextTask | None = Field(
        None,
        description="Serve a Hugging Face text model: feature-extraction (text in, embedding out), "
        "text-classification (text in, label and score out) or text-generation (a causal language model, "
        "a directory or a .gguf file: prompt or chat in, tokens streamed out, an OpenAI-compatible API).",
    )
    text: TextOptions | None = Field(None, description="Text settings; needs task.")

    @model_validator(mode="after")
    def _text_fits_task(self) -> ModelRef:
        """The twins of rules.MODEL's task checks that the merged recipe cannot place on spec.model."""
        text, generative = self.text, self.task == tasknames.TEXT_GENERATION
        if text is None or self.task is None:
            return self
        if not generative and text.context_length is not None:
            raise ValueError(f"model.text.contextLength applies to task '{tasknames.TEXT_GENERATION}' only")
        if generative and (text.max_length is not None or text.truncation is not None):
            raise ValueError(
                "model.text.maxLength and model.text.truncation apply to encoder tasks; "
                f"'{tasknames.TEXT_GENERATION}' takes model.text.contextLength"
            )
        return self


class Build(Model):
    """How the builder Job runs: image, time limit, retries, and how big a source and its scratch get."""

    image: ImageRef = Field(
        DEFAULT_BUILDER_IMAGE,
        description="Builder image: a container image reference (registry/path[:tag][@digest]).",
    )
    active_deadline_seconds: int = Field(3600, ge=30, le=86400)
    backoff_limit: int = Field(1, ge=0, le=10)
    resources: Resources | None = None
    node_selector: Labels | None = None
    tolerations: list[FreeForm] | None = Field(None, max_length=32)
    max_source_size: SourceSize = Field(
        f"{limits.DEFAULT_MAX_SOURCE_GIB}Gi",
        description="Most bytes the builder takes from the source: a download (url) and an archive's "
        "unpacked contents (.tar.gz); more is refused as bad input. A file or folder on the store is read "
        f"in place. The build's scratch volume (/tmp) is limited to {SCRATCH_PER_SOURCE} times this. "
        f"Default {limits.DEFAULT_MAX_SOURCE_GIB}Gi; from {SOURCE_SIZE_RANGE[0]} to {SOURCE_SIZE_RANGE[1]}.",
    )

    def max_source_bytes(self) -> int:
        """maxSourceSize in bytes (what --max-source-bytes takes)."""
        return int(quantity.parse(self.max_source_size))

    def scratch_size(self) -> str:
        """The build's scratch volume limit: SCRATCH_PER_SOURCE times maxSourceSize, as a quantity."""
        return quantity.binary(SCRATCH_PER_SOURCE * self.max_source_bytes())


_LIMITS = llmsched.Limits()


class Generation(Model):
    """How each pod's scheduler of a text-generation model takes on work (set in the Triton container's
    environment, so changing it rolls the pods but builds nothing). Requests over maxQueue get HTTP 429
    with Retry-After from the OpenAI endpoint (503 from Triton's own)."""

    max_sequences: int = Field(
        _LIMITS.max_sequences, ge=1, le=1024, description="Sequences generated at the same time per pod."
    )
    max_tokens_in_flight: int = Field(
        _LIMITS.max_tokens_in_flight,
        ge=16,
        le=16_777_216,
        description="KV-cache budget per pod in tokens: each running sequence reserves its prompt plus "
        "max_tokens; a request that does not fit waits (one that never fits is HTTP 400).",
    )
    max_queue: int = Field(
        _LIMITS.max_queue, ge=0, le=100_000, description="Requests that may wait for a sequence per pod."
    )

    def environment(self) -> dict[str, str]:
        """The Triton container's variables llmsched reads."""
        return {
            llmsched.LIMIT_ENV[name]: str(getattr(self, name))
            for name in ("max_sequences", "max_tokens_in_flight", "max_queue")
        }


class Serving(Model):
    """How Triton serves the model: image, batching, instances, GPUs and scheduling.

    backend, maxBatchSize, dynamicBatching and instances end up in the repository's config.pbtxt,
    so they are merged into the recipe (and changing them builds a new repository).
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.SERVING})
    image: ImageRef = Field(
        DEFAULT_TRITON_IMAGE,
        description="Triton image; it must hold what the python steps import (images/triton.Dockerfile).",
    )
    backend: recipe.Backend | None = Field(None, description="Overrides compression.export.backend.")
    max_batch_size: int | None = Field(None, ge=0, le=4096, description="Overrides triton.maxBatchSize.")
    dynamic_batching: recipe.DynamicBatching | None = Field(
        None, description="Overrides compression.triton.dynamicBatching."
    )
    instances: int | None = Field(
        None, ge=1, le=64, description="Model instances per device; overrides triton.instanceCount."
    )
    gpus: int = Field(1, ge=0, le=16, description="GPUs per pod (nvidia.com/gpu); 0 serves on CPU.")
    resources: Resources | None = None
    node_selector: Labels | None = None
    tolerations: list[FreeForm] | None = Field(None, max_length=32)
    affinity: FreeForm | None = None
    startup_timeout_seconds: int = Field(
        600, ge=10, le=7200, description="Budget for loading the model before the startupProbe gives up."
    )
    network_policy: NetworkPolicySpec | None = None
    generation: Generation | None = Field(
        None, description="The scheduler's limits of a text-generation model (defaults when unset)."
    )


class NetworkPolicySpec(Model):
    """A NetworkPolicy for the Triton pods: only the selected callers reach the inference ports
    (HTTP 8000, gRPC 8001) and only the selected scrapers the metrics port (8002). Enforced by the
    cluster's network plugin (Calico, Cilium, ...); a plugin without NetworkPolicy support ignores it."""

    enabled: bool = False
    from_namespaces: Labels | None = Field(
        None,
        description="matchLabels of the namespaces whose pods may call the model; unset: this namespace.",
    )
    from_pods: Labels | None = Field(
        None, description="matchLabels of the calling pods within those namespaces; unset: any pod there."
    )
    metrics_from_namespaces: Labels | None = Field(
        None,
        description="matchLabels of the namespaces that may scrape the metrics port; unset: the callers.",
    )


class QueueTimeTarget(Model):
    """Scale on Triton's average queue time per request, read from the custom metrics API."""

    average_microseconds: int = Field(ge=1, le=60_000_000)
    metric_name: str = Field("triton_queue_time_us", max_length=128)


class WaitingSequencesTarget(Model):
    """Scale a generative model on the requests waiting for a sequence, per pod (its queue depth)."""

    average: int = Field(ge=1, le=100_000, description="Waiting requests per pod the HPA aims at.")
    metric_name: str = Field("conch_llm_waiting_sequences", max_length=128)


class KvCacheTarget(Model):
    """Scale a generative model on the share of its KV-cache budget in use, per pod."""

    average_percent: int = Field(ge=1, le=100, description="KV-cache use per pod the HPA aims at.")
    metric_name: str = Field("conch_llm_kv_cache_percent", max_length=128)


class Autoscaling(Model):
    """An HPA: replica bounds and a CPU, queue-time, waiting-sequences or KV-cache target (any mix)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.AUTOSCALING})
    min_replicas: int = Field(1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization_percentage: int | None = Field(
        None, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    queue_time: QueueTimeTarget | None = None
    waiting_sequences: WaitingSequencesTarget | None = Field(
        None, description="text-generation only: requests waiting per pod (conch_llm_waiting_sequences)."
    )
    kv_cache: KvCacheTarget | None = Field(
        None, description="text-generation only: percent of the KV-cache budget in use per pod."
    )
    scale_up_stabilization_seconds: int | None = Field(
        None, ge=0, le=3600, description="HPA scale-up stabilisation window (Kubernetes default 0)."
    )
    scale_down_stabilization_seconds: int | None = Field(
        None, ge=0, le=3600, description="HPA scale-down stabilisation window (Kubernetes default 300)."
    )


class CanaryStep(Model):
    """One canary step: move `weight` percent of the pods to the new version, then hold it."""

    weight: int = Field(ge=1, le=100, description="Percent of the serving pods that run the new version.")
    pause_seconds: int = Field(
        0, ge=0, le=86400, description="How long the step holds once its pods are ready (analysis runs)."
    )


class MetricQuery(Model):
    """A custom PromQL check: one number, within [min, max]. The query may use $namespace, $name,
    $model, $version (the canary's), $stable and $window (e.g. 30s); it must return one sample."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.METRIC_QUERY})
    name: str = Field(max_length=63, pattern=r"^[a-zA-Z][a-zA-Z0-9_-]*$")
    query: str = Field(min_length=1, max_length=4096)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> MetricQuery:
        if self.min is None and self.max is None:
            raise ValueError(f"query {self.name}: a query check needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"query {self.name}: min must be <= max")
        return self


class QualityAnalysis(Model):
    """Answers of the canary vs the stable version on a probe set (the build gate's metrics)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.QUALITY})
    min_cosine: float | None = Field(None, ge=0, le=1)
    min_top1_agreement: float | None = Field(None, ge=0, le=1, alias="minTop1Agreement")
    max_abs_error: float | None = Field(None, ge=0)
    min_greedy_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="text-generation only: the share of the first 32 greedy tokens the canary answers "
        "the build's probe prompts with that equal the stable's (the only quality bound of a generator).",
    )
    probe_path: str | None = Field(
        None, max_length=1024, pattern=r"^[^/]", description="Probe file on the store (else the gate's data)."
    )

    @model_validator(mode="after")
    def _thresholds(self) -> QualityAnalysis:
        bounds = (self.min_cosine, self.min_top1_agreement, self.max_abs_error, self.min_greedy_agreement)
        if all(b is None for b in bounds):
            raise ValueError(rules.QUALITY_MESSAGE)
        if self.probe_path is not None and ".." in self.probe_path:
            raise ValueError("probePath must stay inside the model store (no '..')")
        return self


class CanaryAnalysis(Model):
    """Checks on the canary's own Triton series in Prometheus, each intervalSeconds, plus quality."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.ANALYSIS})
    prometheus_url: str | None = Field(
        None,
        max_length=512,
        pattern=r"^https?://[^ ]+$",
        description="Prometheus base URL; else the operator's CONCH_PROMETHEUS_URL.",
    )
    interval_seconds: int = Field(30, ge=1, le=3600, description="Seconds between analyses (and the window).")
    min_success_rate: float | None = Field(
        None, ge=0, le=1, description="success / (success + failure) of the canary's requests."
    )
    max_latency_ms: float | None = Field(None, gt=0, description="Mean request duration of the canary.")
    max_latency_ratio: float | None = Field(
        None, gt=0, description="Canary's mean request duration at most this times the stable's."
    )
    max_time_to_first_token_ratio: float | None = Field(
        None,
        gt=0,
        description="text-generation only: the canary's mean TTFT over the window at most this times "
        "the stable's.",
    )
    max_inter_token_latency_ratio: float | None = Field(
        None,
        gt=0,
        description="text-generation only: the canary's mean ITL over the window at most this times "
        "the stable's.",
    )
    min_requests: int = Field(
        1, ge=1, le=1_000_000, description="Requests the canary must have had in the window to be judged."
    )
    queries: list[MetricQuery] | None = Field(None, max_length=16)
    failure_limit: int = Field(0, ge=0, le=100, description="Failed analyses tolerated; one more aborts.")
    quality: QualityAnalysis | None = None

    @model_validator(mode="after")
    def _some_check(self) -> CanaryAnalysis:
        if not self.prometheus_checks() and self.quality is None:
            raise ValueError(rules.ANALYSIS_MESSAGE)
        return self

    def prometheus_checks(self) -> bool:
        """Whether any check reads Prometheus."""
        return any(
            v is not None
            for v in (self.min_success_rate, self.max_latency_ms, self.max_latency_ratio, *self.llm_ratios())
        ) or bool(self.queries)

    def llm_ratios(self) -> tuple[float | None, float | None]:
        """The bounds on the generator's own series (TTFT, ITL): they need the stable's too."""
        return self.max_time_to_first_token_ratio, self.max_inter_token_latency_ratio


class Canary(Model):
    """Canary steps (pods of the new version beside the stable ones, behind the one Service)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.CANARY})
    steps: list[CanaryStep] = Field(min_length=1, max_length=rules.CANARY_MAX_STEPS)
    analysis: CanaryAnalysis | None = None

    @model_validator(mode="after")
    def _ascending(self) -> Canary:
        weights = [s.weight for s in self.steps]
        if weights != sorted(weights):
            raise ValueError("canary.steps weights must not decrease")
        return self


class Rollout(Model):
    """How a new version rolls: surge pods (each takes serving.gpus GPUs), deadline, auto rollback,
    and the strategy: a rolling update (default) or canary steps with analysis."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.ROLLOUT})
    progress_deadline_seconds: int = Field(600, ge=5, le=86400)
    max_surge: int = Field(1, ge=1, le=100, description="Extra pods during a rollout; never unavailable.")
    auto_rollback: bool = True
    strategy: Literal["rolling", "canary"] = "rolling"
    canary: Canary | None = None

    @model_validator(mode="after")
    def _strategy(self) -> Rollout:
        if self.strategy == "canary" and self.canary is None:
            raise ValueError("strategy 'canary' needs rollout.canary (its steps)")
        if self.strategy != "canary" and self.canary is not None:
            raise ValueError("rollout.canary applies to strategy 'canary' only: set rollout.strategy: canary")
        return self

    def canary_analysis(self) -> CanaryAnalysis | None:
        """The canary's analysis, when the strategy is canary and one is set."""
        return self.canary.analysis if self.strategy == "canary" and self.canary is not None else None


class ServiceMonitorSpec(Model):
    """A Prometheus Operator ServiceMonitor for Triton's metrics port."""

    enabled: bool = False
    interval: str = Field("30s", pattern=r"^[0-9]+(ms|s|m|h)$", max_length=16)
    labels: Labels | None = None


class Monitoring(Model):
    """Monitoring integrations."""

    service_monitor: ServiceMonitorSpec = ServiceMonitorSpec()


AuthMode = Literal["none", "token"]
AUTH_OFF_WARNING = (
    "inference is NOT authenticated: anyone who reaches the Service can call the model, read its "
    "metadata and statistics (set spec.auth.mode: token)"
)


class Auth(Model):
    """Who may call the model: with `token`, every inference, metadata, statistics and model-config
    request (HTTP, gRPC and the OpenAI-compatible API) must carry a token from the Secret, as
    `Authorization: Bearer <token>` or the header (gRPC: metadata) `conch-api-key`. Health checks
    and the metrics port stay open (kubelet probes, Prometheus).

    Every value of the Secret is a valid token, re-read while the pods run: to rotate, add a second
    key, move the clients, remove the old key (no restart). Unset secretName: Conch generates
    `<name>-inference-tokens` with one random token, and never overwrites a Secret of that name it
    does not own."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.AUTH})
    mode: AuthMode = Field("token", description="token: tokens required; none: open (not for production).")
    secret_name: str | None = Field(
        None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The Secret holding the tokens (each value one token); unset: Conch generates one.",
    )

    @model_validator(mode="after")
    def _secret_needs_tokens(self) -> Auth:
        """The twin of rules.AUTH."""
        if self.mode == "none" and self.secret_name is not None:
            raise ValueError(rules.AUTH_MESSAGE)
        return self


class Storage(Model):
    """The model-store volume: sources are read from it, repositories are published to it."""

    # repositoryPath names its folder one way only (rules.FOLDER_ALIAS): the store's garbage
    # collector tells stores apart by that folder, so `x/../repositories` must not pass for another.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.STORAGE})
    claim_name: str = Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    repository_path: str = Field(
        "repositories",
        max_length=256,
        pattern=r"^[^/]",
        description="Folder of repositories in the store (no '.', '..' or empty segments).",
    )

    @field_validator("repository_path")
    @classmethod
    def _one_spelling(cls, path: str) -> str:
        """The twin of rules.STORAGE (the error's loc is spec.storage.repositoryPath)."""
        if re.search(rules.FOLDER_ALIAS, path):
            raise ValueError(f"repositoryPath {rules.FOLDER_MESSAGE}")
        return path


def _check_quality_for_task(quality: QualityAnalysis, generative: bool) -> None:
    """The quality bounds a model's task can be judged by (rules.TEXT's twin)."""
    q = quality
    tensor_bounds = (q.min_cosine, q.min_top1_agreement, q.max_abs_error, q.probe_path)
    if generative and (q.min_greedy_agreement is None or any(b is not None for b in tensor_bounds)):
        raise ValueError(rules.GENERATIVE_QUALITY)
    if not generative and q.min_greedy_agreement is not None:
        raise ValueError(rules.GREEDY_AGREEMENT_FOR_GENERATORS)


class ModelDeploymentSpec(Model):
    """What to serve and how. Editing `version` rolls forward, or back to a version in history."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": rules.SPEC})
    version: str = Field(max_length=63, pattern=NAME_PATTERN, description="The version to serve.")
    model: ModelRef
    compression: recipe.Recipe = Field(default_factory=recipe.Recipe, description="The builder recipe.")
    build: Build = Build()
    serving: Serving = Serving()
    replicas: int | None = Field(None, ge=0, le=1000, description="Pods; exclusive with autoscaling.")
    autoscaling: Autoscaling | None = None
    rollout: Rollout = Rollout()
    revision_history_limit: int = Field(10, ge=1, le=100)
    monitoring: Monitoring = Monitoring()
    storage: Storage
    auth: Auth | None = Field(
        None,
        description="Inference authentication; unset: the operator's --default-auth-mode (chart: token).",
    )

    @model_validator(mode="after")
    def _analysis_needs_metrics(self) -> ModelDeploymentSpec:
        analysis = self.rollout.canary_analysis()
        scraped = self.monitoring.service_monitor.enabled
        if analysis is not None and analysis.prometheus_checks() and not scraped:
            raise ValueError(
                "canary analysis reads the canary's Triton series from Prometheus: set "
                "monitoring.serviceMonitor.enabled: true"
            )
        if analysis is not None and analysis.quality is not None:
            _check_quality_for_task(analysis.quality, self.text_task() == tasknames.TEXT_GENERATION)
        return self

    @model_validator(mode="after")
    def _generation_limits_for_generators(self) -> ModelDeploymentSpec:
        if self.serving.generation is not None and not self.generative():
            raise ValueError(
                f"serving.generation sets the scheduler of a '{tasknames.TEXT_GENERATION}' model only"
            )
        scaling = self.autoscaling
        if scaling and (scaling.waiting_sequences or scaling.kv_cache) and not self.generative():
            raise ValueError(
                "autoscaling.waitingSequences and autoscaling.kvCache read a "
                f"'{tasknames.TEXT_GENERATION}' model's scheduler"
            )
        return self

    @model_validator(mode="after")
    def _llm_ratios_for_generators(self) -> ModelDeploymentSpec:
        """The twin of rules.LLM_ANALYSIS: an encoder exports no TTFT or ITL series, so its canary
        would wait for data forever (Inconclusive) instead of being refused here."""
        analysis = self.rollout.canary_analysis()
        if analysis is None or self.generative():
            return self
        for field, value in zip(rules.LLM_RATIO_FIELDS, analysis.llm_ratios(), strict=True):
            if value is not None:
                raise ValueError(rules.llm_ratio_message(field))
        return self

    def text_task(self) -> str | None:
        """The text task in effect: spec.model.task, else the recipe's text.task (None: a tensor model)."""
        if self.model.task is not None:
            return self.model.task
        return None if self.compression.text is None else self.compression.text.task

    def generative(self) -> bool:
        """A generative language model: served with the OpenAI-compatible gateway beside Triton."""
        return self.text_task() == tasknames.TEXT_GENERATION

    def effective_replicas(self) -> int | None:
        """Replicas the Deployment should carry; None when the HPA owns the count."""
        if self.autoscaling is not None:
            return None
        return 1 if self.replicas is None else self.replicas

    def min_replicas(self) -> int:
        """The fewest pods this spec allows (used for the PodDisruptionBudget)."""
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas


# ---- status -------------------------------------------------------------------------------------

ConditionType = Literal["Ready", "Built", "Progressing", "Degraded", "Monitoring"]
Phase = Literal["Pending", "Building", "RollingOut", "Serving", "Degraded", "Failed"]
BuildResult = Literal["Building", "Succeeded", "Failed"]


class Condition(Model):
    """A Kubernetes condition."""

    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128)
    message: str = Field("", max_length=4096)
    last_transition_time: str
    observed_generation: int | None = None


class BuildSummary(Model):
    """What the builder reported in its one-line summary (a subset of build.json)."""

    model_config = ConfigDict(extra="ignore")
    build_key: str = ""
    repository: str = ""
    model_name: str = ""
    cached: bool = False
    builder_version: str = ""
    source_digest: str = ""
    size_before: int = 0
    size_after: int = 0
    compression_ratio: float = 0.0
    gate: FreeForm | None = None
    distill: FreeForm | None = None  # steps, wallSeconds, loss [first, last], student
    quantize: FreeForm | None = None  # with a precision ladder: published mode, failed rungs and why


class HistoryEntry(Model):
    """One version this ModelDeployment has built (or tried to)."""

    version: str
    spec_key: str
    job_name: str
    result: BuildResult
    build_key: str | None = None
    model_name: str
    message: str | None = Field(None, max_length=4096)
    summary: BuildSummary | None = None
    started_at: str
    finished_at: str | None = None


class Endpoints(Model):
    """In-cluster addresses of the Triton Service."""

    http: str
    grpc: str
    metrics: str
    openai: str | None = Field(None, description="A text-generation model's OpenAI-compatible base URL.")


class AuthStatus(Model):
    """Inference authentication in effect: the mode and where the tokens are (never a token)."""

    mode: AuthMode
    secret_name: str | None = None
    message: str | None = Field(None, max_length=1024)


class AnalysisValue(Model):
    """One measured check of a canary analysis: its value against its bound."""

    name: str = Field(max_length=63)
    value: float | None = None  # None: no data (e.g. no requests in the window)
    bound: str = Field("", max_length=64)  # e.g. ">= 0.99"
    passed: bool | None = None


CanaryPhase = Literal["Progressing", "Paused", "Promoting", "Promoted", "Aborted"]


class CanaryStatus(Model):
    """Where the canary of `version` stands: its step, weight, pods and the last analysis."""

    version: str
    phase: CanaryPhase = "Progressing"
    step: int = 0  # index into steps; len(steps): the stable rolls to it; len(steps) + 1: the canary goes
    steps: int = 0
    weight: int = 0
    stable_replicas: int = 0
    canary_replicas: int = 0
    started_at: str | None = None  # when this canary began
    step_started_at: str | None = None  # when the step's pods were all ready
    analyzed_at: str | None = None
    analysis_result: Literal["Passed", "Failed", "Inconclusive", "Unavailable"] | None = None
    analysis_message: str = Field("", max_length=2048)
    failures: int = 0
    analysis: list[AnalysisValue] = Field(default_factory=list, max_length=32)
    quality_step: int | None = None  # the step whose quality analysis passed last
    message: str = Field("", max_length=2048)


class ModelDeploymentStatus(Model):
    """What the operator observed and decided; written only by the operator."""

    phase: Phase | None = None
    current_version: str | None = None
    target_version: str | None = None
    failed_version: str | None = None
    rollout_started_at: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    selector: str | None = None
    endpoints: Endpoints | None = None
    auth: AuthStatus | None = None
    canary: CanaryStatus | None = None

    def entry(self, version: str) -> HistoryEntry | None:
        """The history entry of `version`, if any."""
        return next((h for h in self.history if h.version == version), None)

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if set."""
        return next((c for c in self.conditions if c.type == type_), None)
