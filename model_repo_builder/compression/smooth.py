"""SmoothQuant pre-pass for int8 dynamic quantization: move activation outlier channels into weights.

Dynamic int8 quantizes each activation tensor with one scale, so a few outlier channels (transformer
FFN inputs run 7-10x above their 99.9th percentile) waste most of the 8 bits. For every activation X
feeding MatMuls with constant 2-D fp32 weights W[K, N], per input channel k:
    ax[k] = max |X[.., k]| over calibration samples, floored at the median over channels (so a
            channel that happened to be quiet in a small calibration set is never amplified),
    aw[k] = max_n |W[k, n]| over all MatMuls sharing X,
    s[k]  = ax[k]**alpha / aw[k]**(1 - alpha),
then X is replaced by Mul(X, 1/s) and W by W * s[:, None]. In fp32 the graph computes the same thing;
after quantization much less is lost (MiniLM: mean cosine 0.9934 -> 0.998 at the same size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from ..data.arrays import batches
from ..model import Arrays

SCALE_MIN, SCALE_MAX = 1e-3, 1e3
FLOOR_QUANTILE = 0.5


def matmul_groups(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Activation name -> the MatMuls that multiply it by a constant 2-D fp32 weight."""
    weights = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[0] in weights:
            continue
        weight = weights.get(node.input[1])
        if weight is not None and len(weight.dims) == 2 and weight.data_type == onnx.TensorProto.FLOAT:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_maxima(
    model: onnx.ModelProto, names: list[str], calibration: Arrays
) -> dict[str, NDArray[Any]]:
    """Per-channel max |X| of each named activation over the calibration samples."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inputs = {i.name for i in probe.graph.input}
    outputs = {o.name for o in probe.graph.output}
    fetch = [n for n in names if n not in inputs]
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in fetch if n not in outputs
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, NDArray[Any]] = {}
    for batch in batches(calibration, 8):
        values = dict(zip(fetch, session.run(fetch, batch), strict=True))
        values.update({n: batch[n] for n in names if n in inputs})
        for name, value in values.items():
            current = np.abs(value.reshape(-1, value.shape[-1])).max(0)
            maxima[name] = current if name not in maxima else np.maximum(maxima[name], current)
    return maxima


def channel_scales(ax: NDArray[Any], weights: list[NDArray[Any]], alpha: float) -> NDArray[Any]:
    """s = max(ax, median(ax))**alpha / aw**(1 - alpha), clipped to [1e-3, 1e3]."""
    ax = np.maximum(ax, np.quantile(ax, FLOOR_QUANTILE))
    aw = np.maximum(np.max([np.abs(w).max(1) for w in weights], 0), 1e-8)
    scales: NDArray[Any] = np.clip(ax**alpha / aw ** (1 - alpha), SCALE_MIN, SCALE_MAX).astype(np.float32)
    return scales


def smooth_activations(model: onnx.ModelProto, calibration: Arrays, alpha: float) -> onnx.ModelProto:
    """A copy of `model` with every MatMul activation smoothed (see the module docstring)."""
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    groups = matmul_groups(smoothed)
    if not groups:
        return smoothed
    maxima = activation_maxima(model, list(groups), calibration)
    weights = {i.name: i for i in smoothed.graph.initializer}
    position = {id(n): i for i, n in enumerate(smoothed.graph.node)}
    muls: list[tuple[int, onnx.NodeProto]] = []
    for x, nodes in groups.items():
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        scales = channel_scales(maxima[x], arrays, alpha)
        inverse = numpy_helper.from_array((1.0 / scales).astype(np.float32), f"{x}_smooth_inv")
        smoothed.graph.initializer.append(inverse)
        first = min(nodes, key=lambda n: position[id(n)])
        muls.append((position[id(first)], helper.make_node("Mul", [x, inverse.name], [f"{x}_smoothed"])))
        for node, w in zip(nodes, arrays, strict=True):
            node.input[0] = f"{x}_smoothed"
            weights[node.input[1]].CopyFrom(
                numpy_helper.from_array((w * scales[:, None]).astype(np.float32), node.input[1])
            )
    for index, mul in sorted(muls, key=lambda m: m[0], reverse=True):  # back to front: indices stay valid
        smoothed.graph.node.insert(index, mul)
    return smoothed
