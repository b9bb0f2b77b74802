"""Shared fixtures: tiny model files and an in-process CLI runner."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_repo_builder.cli import main

from . import models


@dataclass
class CliResult:
    code: int
    summary: dict[str, Any]
    stdout: str
    stderr: str


Run = Callable[..., CliResult]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        last = out.out.strip().splitlines()[-1]
        return CliResult(code, json.loads(last), out.out, out.err)

    return run


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mlp_pt(model_dir: Path) -> Path:
    return models.save_torchscript(models.mlp(), model_dir / "mlp.pt")


@pytest.fixture(scope="session")
def cnn_onnx(model_dir: Path) -> Path:
    return models.save_onnx(models.cnn(), torch.randn(2, 1, 8, 8), model_dir / "cnn.onnx")


@pytest.fixture(scope="session")
def cnn_pt2(model_dir: Path) -> Path:
    return models.save_exported(models.cnn(), torch.randn(2, 1, 8, 8), model_dir / "cnn.pt2")


@dataclass(frozen=True)
class Digits:
    """The digits CNN (seed 0, float64 training) as ONNX, and its data as .npz files."""

    onnx: Path
    validation: Path  # the held-out split with labels
    calibration: Path  # 128 training inputs
    train: Path  # every training input, no labels (distillation data)


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """Trained once per session (about 20 s on 2 cores): test_digits and test_distill share it."""
    d = tmp_path_factory.mktemp("digits")
    model, x_train, _, x_test, y_test = models.train_digits_cnn()
    onnx_path = models.save_onnx(model, torch.from_numpy(x_test[:2]), d / "digits.onnx")
    np.savez(d / "val.npz", x=x_test, labels=y_test)
    np.savez(d / "calib.npz", x=x_train[:128])
    np.savez(d / "train.npz", x=x_train)
    return Digits(onnx_path, d / "val.npz", d / "calib.npz", d / "train.npz")


def listing(store: Path) -> list[str]:
    """Everything under a store (to assert that a failed build left nothing behind)."""
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) if store.exists() else []


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain http file server on 127.0.0.1 serving a fresh folder: (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
