"""Shared fixtures: tiny model files and an in-process CLI runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def listing(store: Path) -> list[str]:
    """Everything under a store (to assert that a failed build left nothing behind)."""
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) if store.exists() else []
