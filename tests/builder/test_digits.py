"""Accuracy gate with real labels: a CNN trained on sklearn's digits (float64, so the weights do not depend on
the CPU's instruction set), int8-static + 10% pruning within 2 points; the 30% case is a bench number."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Digits, Run, listing

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def digits(digits_cnn: Digits) -> tuple[Path, Path, Path]:
    return digits_cnn.onnx, digits_cnn.validation, digits_cnn.calibration


def test_trained_cnn_is_accurate_and_survives_compression(
    run_cli: Run, digits: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    onnx_path, val, calib = digits
    r = run_cli(
        "build",
        onnx_path,
        "--out",
        tmp_path,
        "--validation-data",
        val,
        "--validation-samples",
        "1000",
        "--prune-method",
        "magnitude",
        "--prune-amount",
        "0.1",
        "--quantize",
        "int8-static",
        "--calibration-data",
        calib,
        "--calibration-samples",
        "128",
        "--max-accuracy-drop",
        "0.02",
        "--min-top1-agreement",
        "0.8",
        "--min-cosine",
        "0.8",
        "--recipe-json",
        '{"quantize": {"perChannel": true}}',
    )
    assert r.code == 0, r.summary
    gate = r.summary["gate"]
    assert gate["accuracyOriginal"] > 0.9
    assert gate["accuracyDrop"] <= 0.02
    assert r.summary["sizeAfter"] < r.summary["sizeBefore"]


def test_accuracy_gate_can_fail(run_cli: Run, digits: tuple[Path, Path, Path], tmp_path: Path) -> None:
    onnx_path, val, _ = digits
    store = tmp_path / "store"
    r = run_cli(
        "build",
        onnx_path,
        "--out",
        store,
        "--validation-data",
        val,
        "--prune-method",
        "channel",
        "--prune-amount",
        "0.9",
        "--min-cosine",
        "0",
        "--max-accuracy-drop",
        "0.0",
    )
    assert r.code == 3, r.stderr
    assert "accuracyDrop" in r.summary["error"]["message"]
    assert listing(store) == []
