"""The SmoothQuant pre-pass: exact in fp32, and it rescues int8-dynamic from activation outliers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from model_repo_builder import recipe
from model_repo_builder.compression import quantize, smooth

from . import models

pytestmark = pytest.mark.unit


class TokenMLP(nn.Module):
    """[N, T, 32] -> [N, T, 8] (exported as MatMul + Add, as transformer projections are)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def outlier_inputs(n: int, seed: int) -> np.ndarray:
    """Gaussian tokens with two channels ~40x larger (what LayerNorm outputs in transformers look like)."""
    x = np.random.default_rng(seed).normal(size=(n, 4, 32)).astype(np.float32)
    x[..., :2] *= 40
    return x


@pytest.fixture(scope="module")
def token_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("smooth") / "mlp.onnx"
    return models.save_onnx(TokenMLP().eval(), torch.from_numpy(outlier_inputs(2, 0)), path)


def run(path: Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    data = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    out: np.ndarray = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def test_smoothing_is_exact_in_fp32_and_touches_every_matmul(token_mlp: Path) -> None:
    model = onnx.load(str(token_mlp))
    smoothed = smooth.smooth_activations(model, {"x": outlier_inputs(16, 1)}, alpha=0.7)
    assert len(smooth.matmul_groups(model)) == 2
    assert sum(n.op_type == "Mul" for n in smoothed.graph.node) == 2
    x = outlier_inputs(32, 2)
    np.testing.assert_allclose(run(smoothed, x), run(token_mlp, x), rtol=1e-4, atol=1e-4)


def test_smoothing_rescues_int8_dynamic_from_outlier_channels(token_mlp: Path, tmp_path: Path) -> None:
    x, calibration = outlier_inputs(64, 3), {"x": outlier_inputs(16, 4)}
    plain, smoothed = tmp_path / "plain.onnx", tmp_path / "smoothed.onnx"
    quantize.quantize_file(token_mlp, plain, recipe.Quantize(mode="int8-dynamic", per_channel=True), None)
    spec = recipe.Quantize(mode="int8-dynamic", per_channel=True, smooth_alpha=0.7)
    quantize.quantize_file(token_mlp, smoothed, spec, calibration)
    reference = run(token_mlp, x)
    before, after = cosine(run(plain, x), reference), cosine(run(smoothed, x), reference)
    print(f"int8-dynamic cosine: plain {before:.5f}, smoothed {after:.5f}")
    assert after > before and 1 - after < (1 - before) / 2, (before, after)


def test_smooth_alpha_is_only_for_int8_dynamic() -> None:
    with pytest.raises(ValueError, match=r"smoothAlpha applies to quantize\.mode 'int8-dynamic' only"):
        recipe.Recipe.model_validate({"quantize": {"mode": "int8-static", "smoothAlpha": 0.7}})


def test_an_unset_smooth_alpha_changes_no_existing_key() -> None:
    text = recipe.canonical_json(recipe.Recipe())
    assert "smoothAlpha" not in text
    assert "smoothAlpha" in recipe.canonical_json(recipe.Recipe.model_validate(
        {"quantize": {"mode": "int8-dynamic", "smoothAlpha": 0.7}}
    ))  # fmt: skip
