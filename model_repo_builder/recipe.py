"""The build recipe: what to prune, quantize, export and serve, and the accuracy gate.

This module is the single source of truth for the recipe and the one every caller imports. It holds
the whole `Recipe`, its cross-section validators, the canonical JSON hashed into the build key and
the loaders; the per-concern sections (Prune, Quantize, ..., Text, Distill) and their vocabulary live
in recipe_sections.py and are re-exported here. The operator image (no torch) imports it to embed the
recipe schema in its CRD, so it imports only the standard library and pydantic (PyYAML is imported
lazily inside ``recipe_data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from model_repo_builder import canonical, recipe_rules, tasknames
from model_repo_builder.recipe_sections import (
    GENERATION_MODES,
    TENSOR_LEARNING_RATE,
    TEXT_LEARNING_RATE,
    TEXT_MAX_LENGTH,
    WEIGHT_ONLY_MODES,
    Backend,
    Distill,
    DistillLoss,
    DynamicBatching,
    Export,
    ExportFormat,
    Gate,
    InstanceKind,
    Io,
    LossKind,
    Pooling,
    Prune,
    PruneMethod,
    Quantize,
    QuantizeMode,
    RecipeTextTask,
    Spec,
    TensorDtype,
    TensorSpec,
    Text,
    TextTask,
    Triton,
    Validation,
)

SUMMARY_MAX_BYTES = 4096
"""Kubernetes caps a termination message at 4 KiB; the one-line summary must fit in it."""

# The sections are re-exported: callers import every recipe name from this module.
__all__ = [
    "ADDED_OPTIONAL",
    "GENERATION_MODES",
    "SUMMARY_MAX_BYTES",
    "TENSOR_LEARNING_RATE",
    "TEXT_LEARNING_RATE",
    "TEXT_MAX_LENGTH",
    "TRANSFORMER_SMOOTH_ALPHA",
    "WEIGHT_ONLY_MODES",
    "Backend",
    "Distill",
    "DistillLoss",
    "DynamicBatching",
    "Export",
    "ExportFormat",
    "Gate",
    "InstanceKind",
    "Io",
    "LossKind",
    "Pooling",
    "Prune",
    "PruneMethod",
    "Quantize",
    "QuantizeMode",
    "Recipe",
    "RecipeTextTask",
    "Spec",
    "TensorDtype",
    "TensorSpec",
    "Text",
    "TextTask",
    "Triton",
    "Validation",
    "canonical_json",
    "load_recipe",
    "parse_recipe_text",
    "recipe_data",
    "tensor_modes_problem",
    "text_quantize_default",
]

_EMBED, _GENERATE = tasknames.FEATURE_EXTRACTION, tasknames.TEXT_GENERATION
TRANSFORMER_SMOOTH_ALPHA = 0.7
"""SmoothQuant strength used for text models whose recipe does not set compression.quantize."""


class Recipe(Spec):
    """The whole build recipe."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": recipe_rules.RECIPE})

    prune: Prune = Field(default_factory=Prune, description="Pruning step.")
    quantize: Quantize = Field(default_factory=Quantize, description="Quantization step.")
    export: Export = Field(default_factory=Export, description="Export step.")
    triton: Triton = Field(default_factory=Triton, description="Triton model configuration.")
    io: Io = Field(default_factory=Io, description="Input/output tensor specs.")
    validation: Validation = Field(default_factory=Validation, description="Validation data.")
    gate: Gate = Field(default_factory=Gate, description="Accuracy gate.")
    text: Text | None = Field(
        None, description="Text model settings (Hugging Face sources): the served model takes text."
    )
    distill: Distill | None = Field(
        None, description="Knowledge distillation of the original model into the compressed one."
    )
    fallback: list[QuantizeMode] | None = Field(
        None,
        max_length=4,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Precision ladder: quantize modes tried in order after quantize.mode when the gate "
        "fails (e.g. [int8-dynamic, fp16, none]); the first that passes is published.",
    )

    def ladder(self) -> list[QuantizeMode]:
        """quantize.mode, then the fallback modes: the order in which precisions are tried."""
        return [self.quantize.mode, *(self.fallback or [])]

    @model_validator(mode="after")
    def _transformer_default(self) -> Recipe:
        """Text models quantize to per-channel int8 with SmoothQuant unless the recipe says otherwise."""
        if self.text is not None and "quantize" not in self.model_fields_set:
            self.quantize = text_quantize_default(self.text.task)
        return self

    @model_validator(mode="after")
    def _text_consistent(self) -> Recipe:
        if self.text is None:
            return self
        if self.export.format != "onnx":
            raise ValueError("text models export to ONNX: export.format must be 'onnx'")
        if self.io.inputs or self.io.outputs:
            raise ValueError("text models take text: io.inputs/io.outputs come from the checkpoint")
        if self.triton.max_batch_size < 1:
            raise ValueError("text models are served batched: triton.maxBatchSize must be >= 1")
        return self

    @model_validator(mode="after")
    def _modes_fit_task(self) -> Recipe:
        """Weight-only modes for generative models only, and only they (and none) for them. Without a
        text section the task is not known here (a ModelDeployment may name it in spec.model.task):
        `tensor_modes_problem` is the check of a recipe known to build a tensor model."""
        if self.text is None:
            return self
        ladder = self.ladder()
        if self.text.task != _GENERATE and any(m in WEIGHT_ONLY_MODES for m in ladder):
            raise ValueError(
                f"quantize modes int4-weight and int8-weight apply to text.task '{_GENERATE}' only"
            )
        bad = [m for m in ladder if m not in GENERATION_MODES]
        if self.text.task == _GENERATE and bad:
            raise ValueError(
                f"quantize.mode/fallback {bad[0]!r} does not apply to text.task '{_GENERATE}' "
                f"(use {', '.join(GENERATION_MODES)})"
            )
        return self

    @model_validator(mode="after")
    def _distill_consistent(self) -> Recipe:
        d = self.distill
        if d is None:
            return self
        pruned = self.prune.method != "none" and self.prune.amount > 0
        if d.keep_layers is None and not pruned:
            raise ValueError(
                "distill needs a smaller student: set prune (method and amount) or distill.keepLayers"
            )
        if d.keep_layers is not None and self.text is None:
            raise ValueError("distill.keepLayers applies to Hugging Face text models (text.task) only")
        v = self.validation.data_path
        if v is not None and d.data_path == v:
            raise ValueError(
                "distill.dataPath is validation.dataPath: the gate must not judge the model on its own "
                "training data (use another file, or distill.holdout without validation.dataPath)"
            )
        if v is not None and d.holdout > 0:
            raise ValueError(
                "distill.holdout needs validation.dataPath unset (the held-out split is the validation data)"
            )
        return self

    @model_validator(mode="after")
    def _ladder_consistent(self) -> Recipe:
        if self.fallback is None:
            return self
        if len(set(self.fallback)) != len(self.fallback):
            raise ValueError(f"fallback {self.fallback} repeats a mode")
        if self.quantize.mode in self.fallback:
            raise ValueError(
                f"fallback repeats quantize.mode {self.quantize.mode!r}: it is always tried first"
            )
        if self.export.format == "torchscript" and any(m not in ("none", "fp16") for m in self.fallback):
            raise ValueError("torchscript exports quantize to none or fp16 only: fallback has an int8 mode")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        fmt, backend, mode = self.export.format, self.export.backend, self.quantize.mode
        if backend == "pytorch" and fmt != "torchscript":
            raise ValueError("export.backend 'pytorch' needs export.format 'torchscript'")
        if backend != "pytorch" and fmt != "onnx":
            raise ValueError(f"export.backend {backend!r} needs export.format 'onnx'")
        if fmt == "torchscript" and mode in ("int8-dynamic", "int8-static"):
            raise ValueError(f"quantize.mode {mode!r} needs export.format 'onnx'")
        if self.quantize.smooth_alpha is not None and mode != "int8-dynamic":
            raise ValueError("quantize.smoothAlpha applies to quantize.mode 'int8-dynamic' only")
        if self.triton.tensorrt_fp16 and backend != "onnxruntime":
            raise ValueError("triton.tensorrtFp16 applies to the onnxruntime backend only")
        bad = [
            b
            for b in self.triton.dynamic_batching.preferred_batch_sizes
            if b < 1 or b > self.triton.max_batch_size
        ]
        if bad:
            raise ValueError(f"triton.dynamicBatching.preferredBatchSizes {bad} not within 1..maxBatchSize")
        return self


# Optional fields added after 0.1.0: left out of the canonical JSON while unset, so that adding a field
# changes no existing build or spec key (an upgrade must not make every deployed version look changed).
# A section of "" means a top-level field.
ADDED_OPTIONAL: tuple[tuple[str, str], ...] = (
    ("quantize", "smoothAlpha"),
    ("", "text"),
    ("", "distill"),
    ("", "fallback"),
    ("quantize", "blockSize"),
    ("text", "contextLength"),
    ("gate", "maxPerplexityRatio"),
    ("gate", "minGreedyAgreement"),
)


def tensor_modes_problem(recipe: Recipe) -> str | None:
    """Why a recipe that builds a tensor model (no text task) cannot, as far as its quantize modes go."""
    if recipe.text is None and any(m in WEIGHT_ONLY_MODES for m in recipe.ladder()):
        return f"quantize modes int4-weight and int8-weight apply to text.task '{_GENERATE}' only"
    return None


def text_quantize_default(task: str = _EMBED) -> Quantize:
    """The quantize settings of a text model whose recipe has no quantize section: per-channel int8
    with SmoothQuant for encoders, int4 weight-only for generative models (the one home of this
    default; the operator's spec merge uses it too)."""
    if task == _GENERATE:
        return Quantize(mode="int4-weight")
    return Quantize(mode="int8-dynamic", per_channel=True, smooth_alpha=TRANSFORMER_SMOOTH_ALPHA)


def canonical_json(recipe: Recipe) -> str:
    """Stable JSON of a recipe (sorted keys, camelCase, no spaces); hashed into the build key."""
    data = recipe.model_dump(mode="json", by_alias=True)
    for section, field in ADDED_OPTIONAL:
        holder = data.get(section) if section else data
        if holder is not None and holder.get(field) is None:
            holder.pop(field, None)
    return canonical.dumps(data)


def recipe_data(text: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON document, not yet validated (raises ValueError if not a mapping)."""
    import yaml  # lazy: keeps this module's import-time dependencies to stdlib + pydantic

    data = yaml.safe_load(text) if text.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("a recipe must be a mapping")
    return data


def parse_recipe_text(text: str) -> Recipe:
    """Parse a YAML or JSON document into a Recipe (raises ValueError / pydantic.ValidationError)."""
    return Recipe.model_validate(recipe_data(text))


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a .yaml/.yml/.json file."""
    return parse_recipe_text(Path(path).read_text(encoding="utf-8"))
