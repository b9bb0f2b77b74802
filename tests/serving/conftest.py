"""Fixtures of the serving tests; their tritonserver runner is tests/support/triton.py (the benchmarks
use it too)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")
