"""Load TorchScript (.pt), torch.export (.pt2) and ONNX (.onnx) models and describe their tensors.

Every later step works from a ``LoadedModel``: the ONNX graph or torch module, the input/output
specs (taken from the model where it carries them, else from the recipe) and a reference runner
that produces the original model's outputs for the accuracy gate.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from ..data.arrays import batches
from ..errors import BadInput
from ..model import Arrays, LoadedModel, ModelKind, Runner, TensorInfo
from ..recipe import Recipe, TensorSpec

_SUFFIXES: dict[str, ModelKind] = {".onnx": "onnx", ".pt": "torchscript", ".pt2": "exported"}


def load_model(path: Path, suffix: str, recipe: Recipe) -> LoadedModel:
    """Load a model file by suffix; corrupt or unsupported files raise BadInput."""
    kind = _SUFFIXES.get(suffix)
    if kind is None:
        raise BadInput(f"unsupported model format {suffix or '(no suffix)'!r}: expected .pt, .pt2 or .onnx")
    if kind == "onnx":
        return _load_onnx(path)
    if kind == "torchscript":
        return _load_torchscript(path, recipe)
    return _load_exported(path, recipe)


def _load_onnx(path: Path) -> LoadedModel:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except (DecodeError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError, OSError) as exc:
        raise BadInput(f"cannot read ONNX model {path.name}: {_unsupported(str(exc))}") from exc
    if not model.graph.node:
        raise BadInput(f"cannot read ONNX model {path.name}: empty graph")
    return LoadedModel(
        "onnx", path, onnx_tensors(model, inputs=True), onnx_tensors(model, inputs=False), model
    )


def _unsupported(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "invalid file"
    return (
        f"unsupported op ({first})"
        if "No Op registered" in message or "not a registered" in message
        else first
    )


def onnx_tensors(model: onnx.ModelProto, inputs: bool) -> list[TensorInfo]:
    """Graph inputs (minus initializers) or outputs as TensorInfo, batch dimension dropped."""
    inits = {i.name for i in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in inits] if inputs else list(model.graph.output)
    out = []
    for v in values:
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        out.append(TensorInfo(v.name, dtype, dims[1:]))
    return out


def _torch_load_error(path: Path, exc: Exception) -> BadInput:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BadInput(f"cannot read model {path.name}: {first}")


def _specs_from_recipe(recipe: Recipe, path: Path) -> list[TensorInfo]:
    if not recipe.io.inputs:
        raise BadInput(
            f"{path.name}: TorchScript carries no input shapes; give io.inputs in the recipe (--input)"
        )
    return [_info(s) for s in recipe.io.inputs]


def _info(spec: TensorSpec) -> TensorInfo:
    return TensorInfo(spec.name, spec.dtype, list(spec.shape))


def _load_torchscript(path: Path, recipe: Recipe) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:  # torch raises RuntimeError/ValueError/zip errors for bad files
        raise _torch_load_error(path, exc) from exc
    module.eval()
    loaded = LoadedModel("torchscript", path, _specs_from_recipe(recipe, path), module=module)
    loaded.outputs = _probe_outputs(loaded, recipe)
    return loaded


def _load_exported(path: Path, recipe: Recipe) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as exc:  # torch raises many types for a bad archive
        raise _torch_load_error(path, exc) from exc
    inputs = [_info(s) for s in recipe.io.inputs] or _exported_inputs(program, path)
    loaded = LoadedModel("exported", path, inputs, module=program.module(), program=program)
    loaded.outputs = _probe_outputs(loaded, recipe)
    return loaded


def _exported_inputs(program: Any, path: Path) -> list[TensorInfo]:
    args, kwargs = program.example_inputs or ((), {})
    names = list(program.graph_signature.user_inputs)
    tensors = list(args) + list(kwargs.values())
    if not tensors or len(tensors) != len(names):
        raise BadInput(f"{path.name}: no example inputs in the program; give io.inputs in the recipe")
    return [
        TensorInfo(n, str(t.dtype).removeprefix("torch."), list(t.shape[1:]))
        for n, t in zip(names, tensors, strict=True)
    ]


def _probe_outputs(loaded: LoadedModel, recipe: Recipe) -> list[TensorInfo]:
    from ..data.arrays import generate_inputs

    outs = torch_runner(loaded.module, loaded.inputs)(generate_inputs(loaded.inputs, 2, recipe.validation))
    names = [s.name for s in recipe.io.outputs]
    if names and len(names) != len(outs):
        raise BadInput(f"recipe io.outputs names {len(names)} tensors, the model returns {len(outs)}")
    names = names or [f"output_{i}" for i in range(len(outs))]
    return [TensorInfo(n, o.dtype.name, list(o.shape[1:])) for n, o in zip(names, outs, strict=True)]


def torch_runner(module: Any, inputs: list[TensorInfo]) -> Runner:
    """Runner that calls a torch module on numpy inputs (in spec order) and returns numpy outputs."""

    def run(feed: Arrays) -> list[NDArray[Any]]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[i.name])) for i in inputs]
        try:
            with torch.no_grad():
                result = module(*args)
        except Exception as exc:  # the model rejected the inputs: a shape/dtype mismatch
            raise BadInput(f"model failed on validation inputs: {str(exc).strip().splitlines()[0]}") from exc
        flat = result if isinstance(result, (tuple, list)) else [result]
        return [t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy() for t in flat]

    return run


def onnx_runner(path: Path) -> Runner:
    """Runner over an ONNX file on the CPU execution provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(feed: Arrays) -> list[NDArray[Any]]:
        return [np.asarray(o) for o in session.run(None, feed)]

    return run


def run_all(runner: Runner, feed: Arrays, batch_size: int) -> list[NDArray[Any]]:
    """Run in batches and concatenate each output along the batch axis."""
    parts = [runner(b) for b in batches(feed, batch_size)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
