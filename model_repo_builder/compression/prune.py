"""Pruning: global unstructured magnitude pruning and structured channel pruning.

Magnitude pruning runs ``torch.nn.utils.prune.global_unstructured`` (L1) over every weight of
rank >= 2 and makes it permanent with ``prune.remove``; it works on ONNX initializers and on
TorchScript parameters alike, by lending the tensors to small holder modules. Channel pruning
needs real ``nn.Conv2d``/``nn.Linear`` modules: the ONNX graph is converted with onnx2torch and
torch-pruning removes channels, so the layers really shrink. The layer producing each model
output is never channel-pruned (its width is the output contract).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import prune

from ..errors import BadInput

_WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


class _Holder(nn.Module):
    """Owns one weight so torch.nn.utils.prune can act on it."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float(), requires_grad=False)


def magnitude_prune_tensors(tensors: list[torch.Tensor], amount: float) -> list[torch.Tensor]:
    """Global L1 unstructured pruning over ``tensors``; returns the pruned copies."""
    holders = [_Holder(t) for t in tensors]
    params = [(h, "weight") for h in holders]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for h in holders:
        prune.remove(h, "weight")  # type: ignore[no-untyped-call]
    return [h.weight.detach().to(t.dtype) for h, t in zip(holders, tensors, strict=True)]


def _weight_inits(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """float32 weight initializers (rank >= 2) of Conv/Gemm/MatMul nodes: what magnitude pruning prunes."""
    weight_names = {n.input[1] for n in model.graph.node if n.op_type in _WEIGHT_OPS and len(n.input) > 1}
    weight_names |= {n.input[0] for n in model.graph.node if n.op_type == "MatMul"}
    return [
        i for i in model.graph.initializer if i.name in weight_names and len(i.dims) >= 2 and i.data_type == 1
    ]


def onnx_sparsity(model: onnx.ModelProto) -> dict[str, Any]:
    """Zero fraction of the prunable weights: what magnitude pruning left (stored dense, so no bytes)."""
    arrays = [numpy_helper.to_array(i) for i in _weight_inits(model)]
    total = sum(a.size for a in arrays)
    zeros = sum(int((a == 0).sum()) for a in arrays)
    return {"tensors": len(arrays), "zeroFraction": round(zeros / total, 6) if total else 0.0}


def magnitude_prune_onnx(model: onnx.ModelProto, amount: float) -> int:
    """Prune the weight initializers (rank >= 2) of Conv/Gemm/MatMul nodes in place; returns count."""
    inits = _weight_inits(model)
    if not inits:
        return 0
    arrays = [torch.from_numpy(numpy_helper.to_array(i).copy()) for i in inits]
    for init, pruned in zip(inits, magnitude_prune_tensors(arrays, amount), strict=True):
        init.CopyFrom(numpy_helper.from_array(pruned.numpy().astype(np.float32), init.name))
    return len(inits)


def magnitude_prune_module(module: Any, amount: float) -> int:
    """Prune a torch (or TorchScript) module's float weights of rank >= 2 in place; returns count."""
    params = [
        p
        for n, p in module.named_parameters()
        if n.endswith("weight") and p.dim() >= 2 and p.is_floating_point()
    ]
    if not params:
        return 0
    with torch.no_grad():
        for p, pruned in zip(params, magnitude_prune_tensors(list(params), amount), strict=True):
            p.copy_(pruned)
    return len(params)


def onnx_to_torch(model: onnx.ModelProto) -> nn.Module:
    """Convert an ONNX graph to an eager fx module with real nn layers (onnx2torch)."""
    from onnx2torch import convert  # type: ignore[import-untyped]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert(model)  # type: ignore[no-any-return]
    except NotImplementedError as exc:
        raise BadInput(f"unsupported op for channel pruning: {str(exc).strip().splitlines()[0]}") from exc


def _output_layers(module: nn.Module) -> list[nn.Module]:
    """For an fx module: the nearest Conv/Linear upstream of each graph output."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return []
    found: list[nn.Module] = []
    for node in graph.nodes:
        if node.op == "output":
            stack, seen = list(node.all_input_nodes), set()
            while stack:
                cur = stack.pop()
                if cur in seen:
                    continue
                seen.add(cur)
                target = module.get_submodule(cur.target) if cur.op == "call_module" else None
                if isinstance(target, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                    found.append(target)
                else:
                    stack.extend(cur.all_input_nodes)
    return found


def channel_prune(
    module: nn.Module, example: tuple[torch.Tensor, ...], amount: float, ignore: list[str]
) -> nn.Module:
    """Remove ``amount`` of the channels of conv/linear layers with torch-pruning (L1 importance)."""
    import torch_pruning as tp

    ignored = _output_layers(module)
    for name in ignore:
        try:
            ignored.append(module.get_submodule(name))
        except AttributeError as exc:
            raise BadInput(f"prune.ignoreLayers: no module named {name!r}") from exc
    module.eval()
    pruner = tp.pruner.MagnitudePruner(
        module,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=ignored,
    )
    pruner.step()
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements of a module."""
    return sum(p.numel() for p in module.parameters())
