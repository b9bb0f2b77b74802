"""The recipe's sections: one pydantic model per concern (prune, quantize, export, triton, io,
validation, gate, text, distill), with the vocabulary (Literal types) and defaults they use.

Why a module of its own: each section validates only itself, and the builder's steps read one
section each (compression takes Prune/Quantize/Distill, the gate takes Gate, sources take Text and
TensorSpec); the whole `Recipe`, its cross-section validators and the canonical JSON and loading
helpers stay in recipe.py, which re-exports every name here so callers keep importing from there.
Like recipe.py it imports only the standard library and pydantic: the operator image (no torch)
builds its CRD schema from these models. Every model follows the rules of a Kubernetes structural
schema: camelCase aliases, no free-form maps, no unions of models, a description on every field and
a default wherever a field is not required.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from model_repo_builder import recipe_rules, tasknames

PruneMethod = Literal["none", "magnitude", "channel"]
QuantizeMode = Literal["none", "fp16", "int8-dynamic", "int8-static", "int4-weight", "int8-weight"]
WEIGHT_ONLY_MODES: tuple[QuantizeMode, ...] = ("int4-weight", "int8-weight")
"""Block-wise weight-only quantization (MatMulNBits) of a generative model's MatMuls."""
GENERATION_MODES: tuple[QuantizeMode, ...] = (*WEIGHT_ONLY_MODES, "none")
"""The modes a generative model's precision ladder takes (none: fp32)."""
ExportFormat = Literal["onnx", "torchscript"]
Backend = Literal["onnxruntime", "tensorrt", "pytorch", "python"]
InstanceKind = Literal["KIND_GPU", "KIND_CPU"]
TensorDtype = Literal["float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"]
TextTask = tasknames.TextTaskName
RecipeTextTask = tasknames.RecipeTextTaskName
_EMBED, _CLASSIFY = tasknames.FEATURE_EXTRACTION, tasknames.TEXT_CLASSIFICATION
_GENERATE = tasknames.TEXT_GENERATION
Pooling = Literal["mean", "cls"]
DistillLoss = Literal["auto", "kl", "mse", "cosine"]
LossKind = Literal["kl", "mse", "cosine"]
"""The loss a distillation trains with once `auto` is resolved (by the task, or the tensor outputs)."""
TENSOR_LEARNING_RATE = 3e-3
TEXT_LEARNING_RATE = 5e-4
"""Distillation learning rates used unless distill.learningRate is set (they work for the examples:
the digits CNN and MiniLM-sized transformers)."""
TEXT_MAX_LENGTH = 128
"""text.maxLength's default; a checkpoint whose max_position_embeddings is smaller gets its own limit."""


class Spec(BaseModel):
    """Base for all recipe models: camelCase aliases, unknown fields are an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Prune(Spec):
    """Pruning applied to the PyTorch model before export."""

    method: PruneMethod = Field(
        "none",
        description="none; magnitude: global unstructured L1 pruning made permanent (zeros, same shapes); "
        "channel: structured channel pruning (torch-pruning) that shrinks conv/linear layers.",
    )
    amount: float = Field(0.0, ge=0.0, le=0.95, description="Fraction of weights (or channels) to remove.")
    ignore_layers: list[str] = Field(
        default_factory=list,
        description="Qualified module names never pruned by channel pruning (the output layer always is).",
    )


class Quantize(Spec):
    """Numeric precision of the exported model."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": recipe_rules.QUANTIZE})

    mode: QuantizeMode = Field(
        "none",
        description="none; fp16 (float16 weights, float32 inputs/outputs kept); int8-dynamic "
        "(onnxruntime dynamic quantization of weights); int8-static (QDQ with calibration samples); "
        f"int4-weight, int8-weight ({_GENERATE} only: block-wise weight-only MatMulNBits).",
    )
    calibration_samples: int = Field(
        64, ge=1, le=100_000, description="Number of samples used to calibrate int8-static."
    )
    calibration_data_path: str | None = Field(
        None,
        description="Optional .npz of calibration inputs keyed by input name; else validation data or "
        "generated inputs are used.",
    )
    per_channel: bool = Field(False, description="Per-channel weight scales for int8 quantization.")
    smooth_alpha: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="int8-dynamic only: SmoothQuant strength (0.7 suits transformers); moves activation "
        "outlier channels into the MatMul weights, calibrated on the calibration samples.",
    )
    block_size: int | None = Field(
        None,
        ge=16,
        le=256,
        description="int4-weight and int8-weight: weights per quantization block (16, 32, 64, 128 or "
        "256; default 32).",
    )


class Export(Spec):
    """Serialized model format and the Triton backend that serves it."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": recipe_rules.EXPORT})

    format: ExportFormat = Field(
        "onnx", description="onnx for onnxruntime/tensorrt/python; torchscript for pytorch."
    )
    opset: int = Field(17, ge=17, le=23, description="ONNX opset version (>= 17).")
    backend: Backend = Field(
        "onnxruntime",
        description="Triton backend: onnxruntime, tensorrt, pytorch, or python (runs the ONNX file "
        "through onnxruntime, for CPU-only Triton builds).",
    )


class DynamicBatching(Spec):
    """Triton dynamic batcher settings."""

    enabled: bool = Field(True, description="Enable Triton's dynamic batcher.")
    max_queue_delay_microseconds: int = Field(
        100, ge=0, le=10_000_000, description="Longest time a request waits to be batched."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list, description="Batch sizes the batcher tries to form (each <= maxBatchSize)."
    )


class Triton(Spec):
    """Settings rendered into config.pbtxt."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": recipe_rules.TRITON})

    max_batch_size: int = Field(8, ge=0, le=4096, description="Triton max_batch_size; 0 disables batching.")
    dynamic_batching: DynamicBatching = Field(
        default_factory=DynamicBatching, description="Dynamic batcher settings."
    )
    instance_kind: InstanceKind = Field("KIND_GPU", description="Run instances on GPU or CPU.")
    instance_count: int = Field(1, ge=1, le=64, description="Model instances per device.")
    tensorrt_fp16: bool = Field(
        False, description="onnxruntime backend only: enable the TensorRT execution accelerator with FP16."
    )
    warmup: bool = Field(True, description="Add a model_warmup entry built from a sample input.")


class TensorSpec(Spec):
    """One input or output tensor; used when the model does not carry this information."""

    name: str = Field(..., min_length=1, description="Tensor name.")
    dtype: TensorDtype = Field("float32", description="Element type.")
    shape: list[int] = Field(
        default_factory=list,
        description="Shape of ONE sample, without the batch dimension (always dim 0 and dynamic); "
        "-1 marks a dynamic axis.",
    )


class Io(Spec):
    """Optional tensor specs. Inputs are required for TorchScript and torch.export sources."""

    inputs: list[TensorSpec] = Field(default_factory=list, description="Model inputs, in call order.")
    outputs: list[TensorSpec] = Field(
        default_factory=list,
        description="Model outputs, in return order (names; dtypes are read from the model).",
    )


class Validation(Spec):
    """Data used to compare the original and the compressed model."""

    data_path: str | None = Field(
        None,
        description=".npz with one array per input name (batch first) and optional 'labels'; "
        "else inputs are generated.",
    )
    samples: int = Field(32, ge=1, le=100_000, description="Number of samples to generate or use.")
    seed: int = Field(0, ge=0, description="Seed for generated inputs.")
    batch_size: int = Field(8, ge=1, le=4096, description="Batch size used when running the models.")
    int_high: int = Field(100, ge=1, description="Generated integer inputs are drawn from [0, intHigh).")


class Gate(Spec):
    """Accuracy thresholds; a metric left unset is reported but not enforced."""

    max_abs_error: float | None = Field(
        None, ge=0.0, description="Largest allowed max |a-b| over all outputs."
    )
    mean_abs_error: float | None = Field(None, ge=0.0, description="Largest allowed mean |a-b|.")
    min_cosine: float | None = Field(
        0.99, ge=0.0, le=1.0, description="Smallest allowed mean per-sample cosine similarity."
    )
    min_top1_agreement: float | None = Field(
        None, ge=0.0, le=1.0, description="Smallest allowed fraction of samples with the same argmax."
    )
    max_accuracy_drop: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Largest allowed top-1 accuracy drop (fraction) when labels are given.",
    )
    max_perplexity_ratio: float | None = Field(
        None,
        ge=1.0,
        description=f"{_GENERATE}: largest allowed perplexity of the built model over the original's on "
        "held-out text (default 1.10).",
    )
    min_greedy_agreement: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=f"{_GENERATE}: smallest allowed share of the first greedy tokens equal to the "
        "original's over the prompt set (default 0.80).",
    )


class Text(Spec):
    """A Hugging Face text model served as text in, embeddings or labels out (a Triton ensemble).

    The source is a model directory (config.json, weights, tokenizer files) or a .tar.gz of one.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": recipe_rules.TEXT})

    task: RecipeTextTask = Field(
        ...,
        description=f"{_EMBED}: sentence embeddings (pooled, optionally L2-normalised); "
        f"{_CLASSIFY}: softmax scores and label names from the checkpoint's id2label; "
        f"{_GENERATE}: a causal language model (a directory or a .gguf file), prompt or chat in, "
        "tokens streamed out.",
    )
    pooling: Pooling | None = Field(
        None, description=f"{_EMBED} only: mean over tokens (default) or the [CLS] token."
    )
    normalize: bool | None = Field(
        None, description=f"{_EMBED} only: L2-normalise embeddings (default true)."
    )
    max_length: int = Field(
        TEXT_MAX_LENGTH,
        ge=8,
        le=8192,
        description=f"Longest token sequence an encoder sees (not {_GENERATE}'s); left at {TEXT_MAX_LENGTH}, "
        "capped to the model's own max_position_embeddings.",
    )
    context_length: int | None = Field(
        None,
        ge=16,
        le=1_048_576,
        description=f"{_GENERATE} only: the longest prompt plus completion served, in tokens (unset: the "
        "model's own context length; longer is refused).",
    )
    truncation: bool = Field(
        True,
        description="Cut texts longer than maxLength tokens (true) or reject them per request (false).",
    )

    @model_validator(mode="after")
    def _task_settings(self) -> Text:
        if self.task != _GENERATE and self.context_length is not None:
            raise ValueError(f"text.contextLength applies to task '{_GENERATE}' only")
        if self.task != tasknames.FEATURE_EXTRACTION:
            for name, value in (("pooling", self.pooling), ("normalize", self.normalize)):
                if value is not None:
                    raise ValueError(f"text.{name} applies to task '{tasknames.FEATURE_EXTRACTION}' only")
        return self

    def effective_pooling(self) -> Pooling:
        """Pooling in effect (mean unless set)."""
        return self.pooling or "mean"

    def effective_normalize(self) -> bool:
        """L2 normalisation in effect (on unless set)."""
        return True if self.normalize is None else self.normalize


class Distill(Spec):
    """Knowledge distillation: the original model (teacher) trains the compressed one (student).

    The student is the pruned model, or for Hugging Face text models a shallower copy (keepLayers).
    Training data needs no labels; the gate must judge the student on other data than it learnt from.
    """

    data_path: str = Field(
        ...,
        min_length=1,
        description="Training inputs on the model store: .npz with one array per input name (batch first, "
        "optional 'labels') for tensor models; .txt (one text per line) or .jsonl ({text, label}) for text "
        "models. Must share no sample with the validation data.",
    )
    steps: int = Field(1000, ge=1, le=1_000_000, description="Optimizer steps.")
    batch_size: int = Field(32, ge=1, le=4096, description="Samples per step.")
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="AdamW learning rate (warm-up, then cosine decay); default 3e-3 for tensor models, "
        "5e-4 for text models (transformers).",
    )
    temperature: float = Field(
        2.0, gt=0.0, le=100.0, description="Softens both models' logits for the KL loss (classifiers)."
    )
    loss: DistillLoss = Field(
        "auto",
        description="kl: KL divergence on temperature-softened logits; mse or cosine: on outputs/embeddings; "
        f"auto: kl for classifiers ({_CLASSIFY}; tensor models with [N, C] outputs and labels in the "
        "data or a top-1/accuracy gate), cosine for text embeddings, mse otherwise.",
    )
    hard_label_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Weight of cross-entropy on the data's labels (used only when the data has labels).",
    )
    keep_layers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Text models only: the student keeps this many of the teacher's encoder layers, "
        "evenly spaced from the first to the last (initialised from them, as DistilBERT is).",
    )
    holdout: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Fraction of the data (its last rows/lines) held out of training and used as the "
        "gate's validation data; needs validation.dataPath unset.",
    )
    mixup: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="Tensor models with float inputs: train on mixtures of two samples (weight drawn from "
        "Beta(mixup, mixup)) that the teacher answers during training, so the student sees more than the "
        "file's inputs (the data's labels are then not used); 0 turns it off.",
    )
    seed: int = Field(0, ge=0, description="Seed for batch order: the same seed gives the same model.")
    log_every: int = Field(50, ge=1, le=1_000_000, description="Log step, loss and seconds every N steps.")

    def rate(self, text: bool) -> float:
        """The learning rate in effect: the recipe's, else the default for the model kind."""
        if self.learning_rate is not None:
            return self.learning_rate
        return TEXT_LEARNING_RATE if text else TENSOR_LEARNING_RATE
