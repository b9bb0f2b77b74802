"""config.pbtxt is rendered from Triton's ModelConfig protobuf; compared with a golden file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_repo_builder.model import TensorInfo
from model_repo_builder.recipe import Recipe
from model_repo_builder.triton.config import Warmup, build_config, parse, render

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).with_name("golden") / "config_onnxruntime_gpu.pbtxt"


def _config_text() -> str:
    recipe = Recipe.model_validate(
        {
            "triton": {
                "maxBatchSize": 16,
                "dynamicBatching": {"maxQueueDelayMicroseconds": 250, "preferredBatchSizes": [4, 8]},
                "instanceKind": "KIND_GPU",
                "instanceCount": 2,
                "tensorrtFp16": True,
            }
        }
    )
    inputs = [TensorInfo("input_ids", "int64", [-1]), TensorInfo("pixels", "float32", [3, 32, 32])]
    outputs = [TensorInfo("logits", "float32", [10])]
    warmup = Warmup(
        {"input_ids": "input_ids.bin", "pixels": "pixels.bin"}, {"input_ids": [8], "pixels": [3, 32, 32]}
    )
    return render(build_config("resnet", recipe, inputs, outputs, warmup))


def test_golden_config() -> None:
    text = _config_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    cfg = parse(text)
    assert (
        cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"]
        == "FP16"
    )


def test_cpu_python_without_batching() -> None:
    recipe = Recipe.model_validate(
        {
            "export": {"backend": "python"},
            "triton": {"maxBatchSize": 0, "instanceKind": "KIND_CPU", "warmup": False},
        }
    )
    cfg = build_config(
        "m", recipe, [TensorInfo("x", "float32", [4])], [TensorInfo("y", "float32", [2])], None
    )
    assert cfg.backend == "python" and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [-1, 4]
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU
    assert not cfg.model_warmup and not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    text = render(cfg)
    assert text.splitlines()[:2] == ['name: "m"', "max_batch_size: 0"]  # explicit: Triton must not guess
    assert parse(text) == cfg
