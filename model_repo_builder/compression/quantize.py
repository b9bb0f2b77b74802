"""Quantization of the exported ONNX model: fp16, int8 dynamic and int8 static (QDQ).

fp16 converts weights and compute to float16 but keeps float32 inputs/outputs so clients and the
Triton config do not change. int8 uses onnxruntime.quantization: dynamic (weights only, activations
quantized at run time, optionally after the SmoothQuant pre-pass in `smooth`) or static QDQ
calibrated with sample inputs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx
from numpy.typing import NDArray

from ..data.arrays import batches
from ..errors import BadInput
from ..model import Arrays
from ..recipe import Quantize
from . import smooth

UNTYPED_AS_FLOAT = {"DefaultTensorType": onnx.TensorProto.FLOAT}
"""Fused transformer ops (Attention, SkipLayerNormalization) defeat ONNX shape inference; their
outputs are float32, which is what the quantizer must assume for tensors it cannot type."""


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and compute, float32 graph inputs/outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)  # type: ignore[no-any-return]


class _Calibration:
    """onnxruntime CalibrationDataReader over in-memory batches."""

    def __init__(self, feed: Arrays) -> None:
        self._batches = iter(batches(feed, 1))

    def get_next(self) -> dict[str, NDArray[Any]] | None:
        return next(self._batches, None)


def quantize_file(src: Path, dst: Path, spec: Quantize, calibration: Arrays | None) -> None:
    """Quantize ``src`` into ``dst`` according to ``spec.mode`` (fp16/int8-*)."""
    from onnxruntime import quantization as q

    logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization logs through root
    if spec.mode == "fp16":
        onnx.save(to_fp16(onnx.load(str(src))), str(dst))
    elif spec.mode == "int8-dynamic":
        _dynamic(q, src, dst, spec, calibration)
    elif spec.mode == "int8-static":
        if calibration is None:
            raise BadInput("int8-static needs calibration samples")
        _static(q, src, dst, spec, calibration)
    else:
        raise ValueError(f"not a quantization mode: {spec.mode}")


def _dynamic(q: Any, src: Path, dst: Path, spec: Quantize, calibration: Arrays | None) -> None:
    """int8 weights, activations quantized at run time; with smoothAlpha, outliers moved first."""
    with tempfile.TemporaryDirectory() as tmp:
        if spec.smooth_alpha is not None:
            if calibration is None:
                raise BadInput("quantize.smoothAlpha needs calibration samples")
            smoothed = Path(tmp) / "smoothed.onnx"
            onnx.save(
                smooth.smooth_activations(onnx.load(str(src)), calibration, spec.smooth_alpha), str(smoothed)
            )
            src = smoothed
        q.quantize_dynamic(
            str(src),
            str(dst),
            weight_type=q.QuantType.QInt8,
            per_channel=spec.per_channel,
            extra_options=UNTYPED_AS_FLOAT,
        )


def _static(q: Any, src: Path, dst: Path, spec: Quantize, calibration: Arrays) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            q.shape_inference.quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the original if it fails
            prepared = src
        q.quantize_static(
            str(prepared),
            str(dst),
            _Calibration(calibration),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=spec.per_channel,
            calibrate_method=q.CalibrationMethod.MinMax,
            extra_options=UNTYPED_AS_FLOAT,
        )
