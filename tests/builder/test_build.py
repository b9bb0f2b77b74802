"""Builds of tiny real models: formats, compression steps, layout, build.json, cache, verify, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from model_repo_builder.errors import Internal
from model_repo_builder.store import repository
from model_repo_builder.triton.config import parse

from .conftest import Run, listing

pytestmark = pytest.mark.unit
CPU = ["--instance-kind", "KIND_CPU"]


def _repo(summary: dict[str, object]) -> Path:
    return Path(str(summary["repository"]))


def test_torchscript_mlp_to_python_backend(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    r = run_cli("build", mlp_pt, "--out", tmp_path, "--input", "x:float32:16", "--backend", "python", *CPU)
    assert r.code == 0, r.stderr
    s = r.summary
    assert s["ok"] and not s["cached"] and s["error"] is None
    repo = _repo(s)
    assert repo == tmp_path / s["buildKey"]
    assert {p.name for p in (repo / "model" / "1").iterdir()} == {"model.onnx", "model.py"}
    cfg = parse((repo / "model" / "config.pbtxt").read_text())
    assert cfg.backend == "python" and cfg.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [16])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("output_0", [8])]
    build = json.loads((repo / "build.json").read_text())
    assert build["sourceDigest"] == s["sourceDigest"]
    assert set(build["files"]) == {
        "model/config.pbtxt",
        "model/1/model.onnx",
        "model/1/model.py",
        "model/warmup/x.bin",
        "probes.npz",  # the canary analysis's probe set, outside the model folder (gate.probes)
    }
    assert {"fetch", "load", "export", "quantize", "gate"} <= set(build["timings"])
    assert build["gate"]["cosine"] > 0.9999
    assert len(r.stdout.strip().splitlines()[-1].encode()) <= 4096
    assert "compression" in r.stderr  # the summary table


def test_dynamic_batch_dimension_is_kept(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    r = run_cli("build", cnn_onnx, "--out", tmp_path)
    assert r.code == 0, r.stderr
    model = onnx.load(str(_repo(r.summary) / "model" / "1" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert model.opset_import[0].version >= 17


def test_int8_dynamic_shrinks_model(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    r = run_cli("build", mlp_pt, "--out", tmp_path, "--input", "x:float32:16", "--quantize", "int8-dynamic")
    assert r.code == 0, r.stderr
    assert r.summary["sizeAfter"] < r.summary["sizeBefore"]
    assert r.summary["gate"]["passed"] is True


@pytest.mark.parametrize("mode", ["fp16", "int8-static"])
def test_quantization_modes_pass_gate(run_cli: Run, cnn_onnx: Path, tmp_path: Path, mode: str) -> None:
    r = run_cli("build", cnn_onnx, "--out", tmp_path, "--quantize", mode, "--min-cosine", "0.98")
    assert r.code == 0, r.stderr
    model = onnx.load(str(_repo(r.summary) / "model" / "1" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    if mode == "int8-static":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_magnitude_pruning_zeroes_weights(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    r = run_cli(
        "build",
        cnn_onnx,
        "--out",
        tmp_path,
        "--prune-method",
        "magnitude",
        "--prune-amount",
        "0.5",
        "--min-cosine",
        "0",
    )
    assert r.code == 0, r.stderr
    model = onnx.load(str(_repo(r.summary) / "model" / "1" / "model.onnx"))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) >= 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert 0.45 <= zeros <= 0.55


def test_channel_pruning_really_shrinks_layers(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    r = run_cli(
        "build",
        cnn_onnx,
        "--out",
        tmp_path,
        "--prune-method",
        "channel",
        "--prune-amount",
        "0.5",
        "--min-cosine",
        "0",
    )
    assert r.code == 0, r.stderr
    model = onnx.load(str(_repo(r.summary) / "model" / "1" / "model.onnx"))
    conv_out = [numpy_helper.to_array(i).shape[0] for i in model.graph.initializer if len(i.dims) == 4]
    assert conv_out and max(conv_out) == 8  # 16 channels -> 8
    assert r.summary["sizeAfter"] < 0.5 * r.summary["sizeBefore"]
    assert r.summary["gate"]["maxAbsError"] > 0  # it really changed the model


def test_torch_export_program_source(run_cli: Run, cnn_pt2: Path, tmp_path: Path) -> None:
    r = run_cli("build", cnn_pt2, "--out", tmp_path, "--quantize", "int8-dynamic", "--min-cosine", "0.98")
    assert r.code == 0, r.stderr
    cfg = parse((_repo(r.summary) / "model" / "config.pbtxt").read_text())
    assert list(cfg.input[0].dims) == [1, 8, 8]


def test_torchscript_export_for_pytorch_backend(run_cli: Run, cnn_onnx: Path, tmp_path: Path) -> None:
    r = run_cli(
        "build",
        cnn_onnx,
        "--out",
        tmp_path,
        "--export-format",
        "torchscript",
        "--backend",
        "pytorch",
        "--prune-method",
        "magnitude",
        "--prune-amount",
        "0.2",
        "--min-cosine",
        "0.9",
    )
    assert r.code == 0, r.stderr
    repo = _repo(r.summary)
    assert (repo / "model" / "1" / "model.pt").is_file()
    cfg = parse((repo / "model" / "config.pbtxt").read_text())
    assert cfg.backend == "pytorch" and cfg.input[0].name == "INPUT__0" and cfg.output[0].name == "OUTPUT__0"


def test_rebuild_is_cached_and_idempotent(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    args = ("build", mlp_pt, "--out", tmp_path, "--input", "x:float32:16")
    first = run_cli(*args)
    stamp = (_repo(first.summary) / "build.json").stat().st_mtime_ns
    second = run_cli(*args)
    assert second.code == 0 and second.summary["cached"] is True
    assert second.summary["buildKey"] == first.summary["buildKey"]
    assert (_repo(second.summary) / "build.json").stat().st_mtime_ns == stamp
    assert second.summary["gate"] == first.summary["gate"]
    other = run_cli(*args, "--quantize", "fp16")
    assert other.summary["buildKey"] != first.summary["buildKey"]
    assert len([p for p in tmp_path.iterdir()]) == 2


def test_verify_detects_tampering(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    r = run_cli("build", mlp_pt, "--out", tmp_path, "--input", "x:float32:16")
    repo = _repo(r.summary)
    assert run_cli("verify", repo).code == 0
    (repo / "model" / "config.pbtxt").write_text("max_batch_size: 1\n")
    bad = run_cli("verify", repo)
    assert bad.code == 2 and bad.summary["problems"] == ["modified: model/config.pbtxt"]
    (repo / "model" / "extra.txt").write_text("x")
    assert "unexpected: model/extra.txt" in run_cli("verify", repo).summary["problems"]
    # a cached build refuses to reuse a repository that no longer verifies
    again = run_cli("build", mlp_pt, "--out", tmp_path, "--input", "x:float32:16")
    assert again.code == 1 and again.summary["error"]["kind"] == "internal"


def test_crash_during_publish_leaves_nothing(
    run_cli: Run, mlp_pt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"

    def crash(tmp: Path, record: dict[str, object]) -> dict[str, object]:
        assert any(tmp.rglob("model.onnx"))  # the repository was half staged
        raise Internal("simulated crash while writing build.json")

    monkeypatch.setattr("model_repo_builder.store.repository.write_build_json", crash)
    r = run_cli("build", mlp_pt, "--out", store, "--input", "x:float32:16")
    assert r.code == 1 and r.summary["ok"] is False
    assert listing(store) == []


def test_staged_repository_is_invisible_until_renamed(tmp_path: Path) -> None:
    with repository.staging(tmp_path, "k" * 64) as tmp:
        (tmp / "m").mkdir()
        (tmp / "m" / "f").write_text("x")
        repository.write_build_json(tmp, {})
        assert not (tmp_path / ("k" * 64)).exists()
        assert repository.publish(tmp, tmp_path / ("k" * 64))
    assert listing(tmp_path) == [("k" * 64), f"{'k' * 64}/build.json", f"{'k' * 64}/m", f"{'k' * 64}/m/f"]


def test_python_dash_m_entry_point(mlp_pt: Path, tmp_path: Path) -> None:
    summary_file = tmp_path / "termination-log"
    cmd = [
        sys.executable,
        "-m",
        "model_repo_builder",
        "build",
        str(mlp_pt),
        "--out",
        str(tmp_path / "s"),
        "--input",
        "x:float32:16",
        "--summary-file",
        str(summary_file),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert json.loads(line)["ok"] is True
    assert summary_file.read_text() == line
    assert "[builder] gate" in proc.stderr


def test_recipe_file_and_flags_combine(run_cli: Run, mlp_pt: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("io:\n  inputs: [{name: x, dtype: float32, shape: [16]}]\nquantize: {mode: fp16}\n")
    r = run_cli("build", mlp_pt, "--out", tmp_path / "s", "--recipe", recipe, "--max-batch-size", "4")
    assert r.code == 0, r.stderr
    build = json.loads((_repo(r.summary) / "build.json").read_text())
    assert build["recipe"]["quantize"]["mode"] == "fp16" and build["recipe"]["triton"]["maxBatchSize"] == 4
    assert np.isclose(build["compressionRatio"], build["sizeBefore"] / build["sizeAfter"], rtol=1e-3)
