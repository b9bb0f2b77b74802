"""Orchestrates a build: fetch, build key, then a cache hit or a fresh build by the recipe's task.

Each step is timed and reported on stderr. Nothing is written to the store before the gate
passed; the repository is staged inside the store and renamed into place atomically. The build
itself belongs to the recipe's task entry (`tasks.registry`): this module never names a task.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from . import BUILDER_VERSION
from .errors import BadInput, Internal
from .request import BuildRequest, BuildResult, Steps
from .sources.fetch import FetchedSource, fetch
from .store.repository import build_key, read_build_json, verify_repository
from .tasks import registry

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def build(req: BuildRequest, steps: Steps | None = None) -> BuildResult:
    """Run the whole build; raises BuilderError subclasses on failure."""
    steps = steps or Steps()
    if not _NAME.match(req.model_name):
        raise BadInput(f"invalid model name {req.model_name!r}")
    with tempfile.TemporaryDirectory(prefix="conch-build-") as work_dir:
        work = Path(work_dir)
        with steps.step("fetch"):
            src = fetch(req.source, work, req.sha256, req.limits)
        key = build_key(src.digest, req.recipe, BUILDER_VERSION, req.model_name)
        final = req.store / key
        steps.info.update(buildKey=key, sourceDigest=src.digest, repository=str(final))
        if final.exists() and _touch(final):
            return _cached(key, final)
        return _fresh(req, src, key, final, work=work, steps=steps)


def _touch(final: Path) -> bool:
    """Mark a reused repository as young for the store's garbage collector (store.gc's grace period);
    False when it vanished meanwhile (collected), so the build runs afresh."""
    try:
        os.utime(final)
    except FileNotFoundError:
        return False
    except OSError:  # a read-only store: reuse still works, the grace period just counts from publish
        pass
    return True


def _cached(key: str, final: Path) -> BuildResult:
    problems = verify_repository(final)
    if problems:
        raise Internal(f"repository {final} exists but fails verification: {problems[0]}")
    return BuildResult(key, final, read_build_json(final), cached=True)


def _fresh(
    req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
) -> BuildResult:
    task = registry.for_recipe(req.recipe)
    return task.fresh(req, src, key, final, work=work, steps=steps)
