"""The shapes every build step passes along: a loaded source model, its tensors, feeds and runners.

They sit below every step group (sources load them, compression and export transform them, the gate
runs them, triton describes them), so that no group imports another only for a type. Light on
purpose: numpy only; onnx appears in annotations, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx

ModelKind = Literal["onnx", "torchscript", "exported"]
"""How a tensor source model is stored: ONNX, TorchScript (.pt) or torch.export (.pt2)."""
Arrays = dict[str, NDArray[Any]]
"""A feed or a result: tensor name to a batch of values."""
Runner = Callable[[Arrays], list[NDArray[Any]]]
"""Runs a model on a feed and returns its outputs in order."""


@dataclass
class TensorInfo:
    """Name, numpy dtype and per-sample shape (batch dimension excluded, -1 = dynamic)."""

    name: str
    dtype: str
    shape: list[int]


@dataclass
class LoadedModel:
    """A source model ready for compression."""

    kind: ModelKind
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo] = field(default_factory=list)
    onnx_model: onnx.ModelProto | None = None
    module: Any = None  # torch.jit.ScriptModule or the torch.export GraphModule
    program: Any = None  # torch.export.ExportedProgram for .pt2
