"""Distillation of tensor models and the precision ladder, through the CLI with real models.

The digits CNN pruned 30% by channels fails a 0.5-point accuracy gate; distilled from the original
on the training inputs (no labels) and quantized int8-static, it passes against the held-out digits.
Distillation is deterministic for a seed; magnitude-pruned zeros stay zero; the ladder publishes the
first precision that passes and says why the others failed; bad inputs are refused with exit 2 and
leave nothing in the store. About 60 s on 2 cores, most of it the shared digits CNN training.
"""

# ruff: noqa: E501
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from .conftest import Digits, Run, listing

pytestmark = pytest.mark.unit

HALF_POINT = "0.005"
PRUNE30 = ("--prune-method", "channel", "--prune-amount", "0.3")


def _record(summary: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(summary["repository"]) / "build.json").read_text())
    return data


def _digits_build(run_cli: Run, d: Digits, store: Path, *extra: str) -> Any:
    return run_cli(
        "build", d.onnx, "--out", store, "--validation-data", d.validation, "--validation-samples", "1000",
        "--min-cosine", "0", "--max-accuracy-drop", HALF_POINT, *PRUNE30, *extra,
    )  # fmt: skip


def test_channel_pruned_digits_recover_their_accuracy_by_distillation(
    run_cli: Run, digits_cnn: Digits, tmp_path: Path
) -> None:
    alone = _digits_build(run_cli, digits_cnn, tmp_path / "alone")
    assert alone.code == 3, alone.stderr
    assert "accuracyDrop" in alone.summary["error"]["message"]

    recipe = {
        "quantize": {"mode": "int8-static", "perChannel": True},
        "distill": {"dataPath": str(digits_cnn.train)},
    }
    r = _digits_build(run_cli, digits_cnn, tmp_path / "distilled", "--recipe-json", json.dumps(recipe))
    assert r.code == 0, r.stderr
    gate = r.summary["gate"]
    assert gate["accuracyOriginal"] > 0.9 and gate["accuracyDrop"] <= float(HALF_POINT)
    record = _record(r.summary)
    d = record["distill"]
    assert d["steps"] == 1000 and d["loss"] == "kl" and d["data"]["labels"] is False
    assert d["lossCurve"]["last"] < d["lossCurve"]["first"] / 5
    assert d["student"]["parametersAfter"] < 0.6 * d["student"]["parametersBefore"]
    assert record["quantize"]["published"] == "int8-static"
    assert r.summary["sizeAfter"] < r.summary["sizeBefore"] / 1.8
    assert r.summary["distill"]["steps"] == 1000
    progress = [line for line in r.stderr.splitlines() if "distill step" in line]
    assert len(progress) == 20 and progress[-1].startswith("[builder] distill step 1000/1000 loss")
    assert set(record["timings"]) >= {"prune", "distill", "quantize", "gate"}


def test_distillation_with_mixup_is_deterministic_and_magnitude_zeros_stay_zero(
    run_cli: Run, digits_cnn: Digits, tmp_path: Path
) -> None:
    recipe = {
        "prune": {"method": "magnitude", "amount": 0.5},
        "distill": {"dataPath": str(digits_cnn.train), "steps": 60, "mixup": 0.4},
    }
    files = []
    for store in ("a", "b"):
        r = run_cli("build", digits_cnn.onnx, "--out", tmp_path / store, "--min-cosine", "0",
                    "--validation-data", digits_cnn.validation, "--recipe-json", json.dumps(recipe))  # fmt: skip
        assert r.code == 0, r.stderr
        files.append(_record(r.summary)["files"])
    assert files[0] == files[1]  # same seed, same machine: the same model bytes
    record = _record(r.summary)
    assert record["distill"]["mixup"] == 0.4
    sparsity = record["sparsity"]
    assert sparsity["storedDense"] is True and sparsity["zeroFraction"] >= 0.5
    model = onnx.load(str(Path(r.summary["repository"]) / "model" / "1" / "model.onnx"))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) >= 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros >= 0.5  # still pruned after training: the masks held
    assert record["sizeAfter"] >= 0.95 * record["sizeBefore"]  # and no byte is claimed for the zeros


def test_holdout_split_is_the_validation_data(
    run_cli: Run, digits_cnn: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCH_BUILD_THREADS", "1")
    recipe = {"distill": {"dataPath": str(digits_cnn.validation), "holdout": 0.25, "steps": 20}}
    r = run_cli("build", digits_cnn.onnx, "--out", tmp_path, *PRUNE30, "--min-cosine", "0",
                "--validation-samples", "1000", "--recipe-json", json.dumps(recipe))  # fmt: skip
    assert r.code == 0, r.stderr
    record = _record(r.summary)
    assert record["validationData"] == "val.npz rows 338..449 (held out of distillation)"
    assert record["distill"]["data"] == {"origin": "val.npz rows 0..337", "samples": 338, "labels": True}
    assert record["distill"]["hardLabelWeight"] == 0.5
    assert record["distill"]["threads"] == {"count": 1, "from": "CONCH_BUILD_THREADS"}


def test_ladder_publishes_the_first_precision_that_passes(
    run_cli: Run, cnn_onnx: Path, tmp_path: Path
) -> None:
    args = ("build", cnn_onnx, "--out", tmp_path, "--quantize", "int8-dynamic", "--fallback", "fp16,none",
            "--max-abs-error", "1e-5")  # fmt: skip
    r = run_cli(*args)
    assert r.code == 0, r.stderr
    record = _record(r.summary)
    assert record["quantize"]["ladder"] == ["int8-dynamic", "fp16", "none"]
    assert record["quantize"]["published"] == "none"
    failed, passed = record["quantize"]["attempts"][:2], record["quantize"]["attempts"][2]
    assert [a["mode"] for a in failed] == ["int8-dynamic", "fp16"] and passed == {
        "mode": "none",
        "passed": True,
    }
    for attempt in failed:
        assert attempt["metric"] == "maxAbsError" and attempt["value"] > attempt["threshold"] == 1e-5
    assert [a["mode"] for a in r.summary["quantize"]["failed"]] == ["int8-dynamic", "fp16"]
    assert {"quantize", "gate", "quantize:fp16", "gate:none"} <= set(record["timings"])
    again = run_cli(*args)  # the key covers the ladder, not the outcome: a cache hit
    assert again.code == 0 and again.summary["cached"] and again.summary["buildKey"] == r.summary["buildKey"]


def test_ladder_that_never_passes_says_why_each_rung_failed(
    run_cli: Run, cnn_onnx: Path, tmp_path: Path
) -> None:
    r = run_cli("build", cnn_onnx, "--out", tmp_path, "--quantize", "int8-dynamic", "--fallback", "fp16",
                "--max-abs-error", "0")  # fmt: skip
    assert r.code == 3
    message = r.summary["error"]["message"]
    assert message.startswith("no precision passed the gate: int8-dynamic: maxAbsError ")
    assert "; fp16: maxAbsError " in message and "> maxAbsError 0" in message
    assert listing(tmp_path) == []


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(7)  # not seed 0: that is what generated validation inputs use
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    np.savez(d / "train.npz", x=x[:32])
    np.savez(d / "val.npz", x=x[24:])  # rows 24..31 are in both
    np.savez(d / "wrong_key.npz", image=x[:32])
    np.savez(d / "wrong_shape.npz", x=x[:32, :, :4])
    return d


DISTILL_DATA = "distill data (distill.dataPath)"
BAD = {
    "missing": ({"dataPath": "missing.npz"}, (), f"{DISTILL_DATA} not found: missing.npz"),
    "wrong-keys": ({"dataPath": "wrong_key.npz"}, (), f"{DISTILL_DATA} wrong_key.npz has no array 'x' (has ['image'])"),
    "shape-mismatch": (
        {"dataPath": "wrong_shape.npz"}, (), f"input 'x' expects [N, [1, 8, 8]], {DISTILL_DATA} has [32, 1, 4, 8]"
    ),
    "overlap": (
        {"dataPath": "train.npz"}, ("--validation-data", "val.npz"),
        f"{DISTILL_DATA} overlaps the validation data (val.npz): 8 validation samples are also training samples "
        "(e.g. validation row 0 = distill row 24)",
    ),
    "same-file": (
        {"dataPath": "val.npz"}, ("--validation-data", "val.npz"),
        "distill.dataPath is validation.dataPath: the gate must not judge the model on its own training data",
    ),
    "zero-steps": ({"dataPath": "train.npz", "steps": 0}, (), "distill.steps: Input should be greater than or equal to 1"),
    "holdout-and-file": (
        {"dataPath": "train.npz", "holdout": 0.2}, ("--validation-data", "val.npz"),
        "distill.holdout needs validation.dataPath unset",
    ),
    "keep-layers-tensor": (
        {"dataPath": "train.npz", "keepLayers": 2}, (), "distill.keepLayers applies to Hugging Face text models"
    ),
    "deadline": (
        {"dataPath": "train.npz", "steps": 1_000_000}, ("--deadline-seconds", "1"),
        "distillation would not finish before the Job's deadline: 1000000 steps at",
    ),
    "text-file": ({"dataPath": "train.txt"}, (), "tensor models distill on an .npz of inputs"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_distillation_inputs_are_refused(
    *,
    run_cli: Run,
    cnn_onnx: Path,
    bad_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    distill, flags, message = BAD[case]
    monkeypatch.chdir(bad_data)
    store = tmp_path / "store"
    recipe = {"prune": {"method": "channel", "amount": 0.3}, "distill": distill}
    r = run_cli("build", cnn_onnx, "--out", store, "--recipe-json", json.dumps(recipe), *flags)
    assert r.code == 2, r.stderr
    assert r.summary["error"]["kind"] == "bad-input"
    assert message in r.summary["error"]["message"]
    assert listing(store) == []
