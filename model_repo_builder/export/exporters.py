"""Export to the serving formats: ONNX (opset >= 17, dynamic batch) and TorchScript.

Torch sources are exported with the TorchScript-based ONNX exporter (fast, stable at opset 17)
and torch.export programs with the dynamo exporter. The batch dimension of every graph input and
output is made dynamic so Triton can batch requests.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..errors import BadInput
from ..model import TensorInfo

BATCH = "batch"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings and its progress prints (they are not errors)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _dynamic_axes(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for spec in [*inputs, *outputs]:
        axes[spec.name] = {0: BATCH} | {
            i + 1: f"{spec.name}_d{i + 1}" for i, d in enumerate(spec.shape) if d < 0
        }
    return axes


def module_to_onnx(
    module: Any,
    example: tuple[torch.Tensor, ...],
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    opset: int,
) -> onnx.ModelProto:
    """Export an eager or TorchScript module to ONNX with named, batch-dynamic tensors."""
    buf = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(
                module,
                example,
                buf,  # type: ignore[arg-type]
                dynamo=False,
                opset_version=opset,
                input_names=[i.name for i in inputs],
                output_names=[o.name for o in outputs],
                dynamic_axes=_dynamic_axes(inputs, outputs),
                do_constant_folding=True,
            )
    except Exception as exc:  # torch.onnx.errors.UnsupportedOperatorError, SymbolicValueError, ...
        raise BadInput(
            f"cannot export to ONNX (unsupported op?): {str(exc).strip().splitlines()[0]}"
        ) from exc
    return make_batch_dynamic(onnx.load_from_string(buf.getvalue()))


def program_to_onnx(
    program: Any, inputs: list[TensorInfo], outputs: list[TensorInfo], opset: int
) -> onnx.ModelProto:
    """Export a torch.export ExportedProgram with the dynamo exporter."""
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                opset_version=opset,
                input_names=[i.name for i in inputs],
                output_names=[o.name for o in outputs],
                verbose=False,
            )
    except Exception as exc:  # the dynamo exporter raises its own error types
        raise BadInput(
            f"cannot export to ONNX (unsupported op?): {str(exc).strip().splitlines()[0]}"
        ) from exc
    if onnx_program is None:
        raise BadInput("the ONNX exporter produced no program")
    model: onnx.ModelProto = onnx_program.model_proto
    return make_batch_dynamic(model)


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make dim 0 of every graph input and output symbolic ('batch')."""
    inits = {i.name for i in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name not in inits and dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH
    return model


def upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert an ONNX model to at least ``opset`` (newer opsets are kept)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises RuntimeError/ConvertError for unsupported ops
        raise BadInput(f"cannot convert ONNX opset {current} to {opset}: {exc}") from exc


class _Fp16(nn.Module):
    """Runs a module in float16 but takes and returns float32 tensors."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, *args: torch.Tensor) -> Any:
        cast = [a.half() if a.is_floating_point() else a for a in args]
        out = self.inner(*cast)
        if isinstance(out, (tuple, list)):
            return tuple(o.float() if o.is_floating_point() else o for o in out)
        return out.float() if out.is_floating_point() else out


def to_torchscript(module: Any, example: tuple[torch.Tensor, ...], fp16: bool) -> torch.jit.ScriptModule:
    """TorchScript for the pytorch backend (traced unless it already is TorchScript)."""
    with _quiet():
        if fp16:
            module = _Fp16(module)
        elif isinstance(module, torch.jit.ScriptModule):
            return module
        try:
            traced: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
                module.eval(), example, check_trace=False
            )
        except Exception as exc:  # tracing failures come as RuntimeError/TypeError
            raise BadInput(f"cannot export to TorchScript: {str(exc).strip().splitlines()[0]}") from exc
    return traced


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save an ONNX model as one self-contained file."""
    onnx.save_model(model, str(path))
