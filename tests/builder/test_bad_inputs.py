"""Every bad input gives one clear error line, the right exit code, and leaves no output behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from . import models
from .conftest import Run, listing

pytestmark = pytest.mark.unit


def _assert_failed(r: object, code: int, kind: str, words: str, store: Path) -> None:
    from .conftest import CliResult

    assert isinstance(r, CliResult)
    assert r.code == code, r.stderr
    assert r.summary["ok"] is False and r.summary["error"]["kind"] == kind
    assert words in r.summary["error"]["message"], r.summary["error"]["message"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0]
    assert listing(store) == []


def test_missing_file(run_cli: Run, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _assert_failed(
        run_cli("build", tmp_path / "nope.onnx", "--out", store), 2, "bad-input", "not found", store
    )


def test_corrupt_onnx(run_cli: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    store = tmp_path / "store"
    _assert_failed(run_cli("build", bad, "--out", store), 2, "bad-input", "cannot read ONNX", store)


def test_truncated_onnx(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(cnn_onnx.read_bytes()[: cnn_onnx.stat().st_size // 2])
    store = tmp_path / "store"
    _assert_failed(run_cli("build", cut, "--out", store), 2, "bad-input", "cannot read ONNX", store)


def test_truncated_torchscript(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(mlp_pt.read_bytes()[:1000])
    store = tmp_path / "store"
    r = run_cli("build", cut, "--out", store, "--input", "x:float32:16")
    _assert_failed(r, 2, "bad-input", "cannot read model", store)


def test_unsupported_format(run_cli: Run, tmp_path: Path) -> None:
    f = tmp_path / "model.h5"
    f.write_bytes(b"x")
    store = tmp_path / "store"
    _assert_failed(run_cli("build", f, "--out", store), 2, "bad-input", "unsupported model format", store)


def test_sha_mismatch(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("build", cnn_onnx, "--out", store, "--sha256", "0" * 64)
    _assert_failed(r, 2, "bad-input", "sha256 mismatch", store)


def test_unsupported_op(run_cli: Run, tmp_path: Path) -> None:
    node = helper.make_node("FancyMagic", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    path = tmp_path / "magic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    store = tmp_path / "store"
    _assert_failed(run_cli("build", path, "--out", store), 2, "bad-input", "unsupported op", store)


def test_nan_outputs(run_cli: Run, tmp_path: Path) -> None:
    path = models.save_onnx(models.NaNModel(), torch.ones(2, 4), tmp_path / "nan.onnx")
    store = tmp_path / "store"
    _assert_failed(run_cli("build", path, "--out", store), 3, "gate-failed", "non-finite", store)


def test_validation_shape_mismatch(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    data = tmp_path / "val.npz"
    np.savez(data, x=np.zeros((4, 1, 9, 9), np.float32))
    store = tmp_path / "store"
    r = run_cli("build", cnn_onnx, "--out", store, "--validation-data", data)
    _assert_failed(r, 2, "bad-input", "shape mismatch", store)


def test_recipe_input_shape_mismatch(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("build", mlp_pt, "--out", store, "--input", "x:float32:17")
    _assert_failed(r, 2, "bad-input", "model failed on validation inputs", store)


def test_gate_failure_names_metric_value_and_threshold(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("build", cnn_onnx, "--out", store, "--quantize", "fp16", "--max-abs-error", "1e-9")
    _assert_failed(r, 3, "gate-failed", "maxAbsError", store)
    assert "> maxAbsError 1e-09" in r.summary["error"]["message"]
    assert r.summary["gate"]["passed"] is False and r.summary["gate"]["maxAbsError"] > 1e-9


def test_invalid_recipe(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("build", cnn_onnx, "--out", store, "--recipe-json", '{"prune": {"amount": 2}}')
    _assert_failed(r, 2, "bad-input", "prune.amount", store)


def test_url_without_sha_is_refused(run_cli: Run, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("build", "http://127.0.0.1:9/m.onnx", "--out", store)
    _assert_failed(r, 2, "bad-input", "sha256 is required", store)


def test_unknown_scheme(run_cli: Run, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("build", "s3://bucket/m.onnx", "--out", store)
    _assert_failed(r, 2, "bad-input", "unsupported source scheme", store)


def test_http_source_verified_by_sha(
    run_cli: Run, cnn_onnx: Path, tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, root = http_root
    (root / "cnn.onnx").write_bytes(cnn_onnx.read_bytes())
    digest = hashlib.sha256(cnn_onnx.read_bytes()).hexdigest()
    ok = run_cli("build", f"{base}/cnn.onnx", "--out", tmp_path / "s1", "--sha256", digest)
    assert ok.code == 0, ok.stderr
    assert ok.summary["sourceDigest"] == f"sha256:{digest}"
    store = tmp_path / "s2"
    bad = run_cli("build", f"{base}/cnn.onnx", "--out", store, "--sha256", "f" * 64)
    _assert_failed(bad, 2, "bad-input", "sha256 mismatch", store)
    missing = run_cli("build", f"{base}/gone.onnx", "--out", store, "--sha256", digest)
    _assert_failed(missing, 2, "bad-input", "cannot download", store)
