"""config.pbtxt built from Triton's own protobuf ModelConfig (shipped in tritonclient).

Building the message instead of templating text means every field name and enum is checked by
protobuf, and text_format renders exactly what Triton parses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ..model import TensorInfo
from ..recipe import Recipe

MODEL_FILES = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.onnx",
    "python": "model.py",
    "pytorch": "model.pt",
}
_BACKENDS = {
    "onnxruntime": "onnxruntime",
    "tensorrt": "onnxruntime",
    "python": "python",
    "pytorch": "pytorch",
}
_DTYPES = {
    "float32": mc.TYPE_FP32,
    "float16": mc.TYPE_FP16,
    "float64": mc.TYPE_FP64,
    "int64": mc.TYPE_INT64,
    "int32": mc.TYPE_INT32,
    "int8": mc.TYPE_INT8,
    "uint8": mc.TYPE_UINT8,
    "bool": mc.TYPE_BOOL,
}


@dataclass
class Warmup:
    """One warmup sample: per-input file name (under <model>/warmup/) and concrete dims."""

    files: dict[str, str]
    dims: dict[str, list[int]]


def triton_dtype(dtype: str) -> int:
    """numpy dtype name -> Triton DataType enum."""
    try:
        return int(_DTYPES[np.dtype(dtype).name])
    except KeyError as exc:
        raise ValueError(f"no Triton data type for {dtype}") from exc


def _dims(spec: TensorInfo, batched: bool) -> list[int]:
    return list(spec.shape) if batched else [-1, *spec.shape]


def build_config(
    name: str, recipe: Recipe, inputs: list[TensorInfo], outputs: list[TensorInfo], warmup: Warmup | None
) -> mc.ModelConfig:
    """The ModelConfig message for a built model."""
    t = recipe.triton
    backend = recipe.export.backend
    batched = t.max_batch_size > 0
    cfg = mc.ModelConfig(name=name, backend=_BACKENDS[backend], max_batch_size=t.max_batch_size)
    if backend != "python":
        cfg.default_model_filename = MODEL_FILES[backend]
    for spec in inputs:
        cfg.input.add(name=spec.name, data_type=triton_dtype(spec.dtype), dims=_dims(spec, batched))
    for spec in outputs:
        cfg.output.add(name=spec.name, data_type=triton_dtype(spec.dtype), dims=_dims(spec, batched))
    if batched and t.dynamic_batching.enabled:
        cfg.dynamic_batching.max_queue_delay_microseconds = t.dynamic_batching.max_queue_delay_microseconds
        cfg.dynamic_batching.preferred_batch_size.extend(t.dynamic_batching.preferred_batch_sizes)
    kind = mc.ModelInstanceGroup.KIND_GPU if t.instance_kind == "KIND_GPU" else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(kind=kind, count=t.instance_count)
    if backend == "tensorrt" or (backend == "onnxruntime" and t.tensorrt_fp16):
        accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accel.parameters["precision_mode"] = "FP16" if t.tensorrt_fp16 else "FP32"
    if warmup is not None:
        _add_warmup(cfg, inputs, warmup, batched)
    return cfg


def _add_warmup(cfg: mc.ModelConfig, inputs: list[TensorInfo], warmup: Warmup, batched: bool) -> None:
    entry = cfg.model_warmup.add(name="sample", batch_size=1 if batched else 0, count=1)
    for spec in inputs:
        item = entry.inputs[spec.name]
        item.data_type = triton_dtype(spec.dtype)
        item.dims.extend(warmup.dims[spec.name])
        item.input_data_file = warmup.files[spec.name]


def render(cfg: mc.ModelConfig) -> str:
    """Text protobuf, as Triton reads config.pbtxt.

    proto3 text output leaves out scalars equal to zero, and Triton's auto-complete fills a missing
    max_batch_size with its own default batch size; so a zero max_batch_size (batching off) is
    written out explicitly, right after the name.
    """
    text = str(text_format.MessageToString(cfg))
    if cfg.max_batch_size != 0:
        return text
    head, sep, rest = text.partition("\n")
    return f"{head}{sep}max_batch_size: 0\n{rest}" if cfg.name else f"max_batch_size: 0\n{text}"


def parse(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text back into a ModelConfig (used by tests and verify)."""
    return text_format.Parse(text, mc.ModelConfig())
