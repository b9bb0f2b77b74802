"""Fixtures of the serving tests; their tritonserver runner is tests/support/triton.py (the benchmarks
use it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repo_builder.sources import causal
from tests.support import llm


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="session")
def smollm2_repository(
    serving_dir: Path, smollm2_model: causal.CausalModel
) -> tuple[Path, causal.CausalModel]:
    """SmolLM2 (the session's original fp32 model) and its fp32 repository serving model "smol"."""
    work = serving_dir / "smollm2"
    work.mkdir()
    return llm.serve_repository(smollm2_model, work, "smol"), smollm2_model
