"""What every build path shares: the request, the result and the step timer.

The tensor and text paths (`tasks`) and the `pipeline` that dispatches to them all import this module;
it imports none of them, so the paths sit above it and the pipeline above the paths (no import circle).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .recipe import Recipe
from .sources.limits import SourceLimits


@dataclass
class BuildRequest:
    """What to build and where."""

    source: str
    store: Path
    recipe: Recipe
    model_name: str = "model"
    sha256: str | None = None
    limits: SourceLimits = field(default_factory=SourceLimits)


@dataclass
class BuildResult:
    """Outcome of a successful build (fresh or cached)."""

    key: str
    repository: Path
    record: dict[str, Any]
    cached: bool


@dataclass
class Steps:
    """Times steps and prints progress lines to a stream."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # buildKey, sourceDigest, ... known so far
    deadline: float | None = None  # seconds from `started` the Job may run (activeDeadlineSeconds)
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.stream.write(f"[builder] {name} ...\n")
        self.stream.flush()
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 4)
        self.stream.write(f"[builder] {name} done in {self.timings[name]:.2f}s\n")
        self.stream.flush()
