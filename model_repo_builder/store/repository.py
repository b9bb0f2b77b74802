"""The published repository: content-addressed key, file hashes, atomic publish and verify.

A repository lives at ``STORE/<build_key>/`` (the Triton --model-repository) with
``<model>/config.pbtxt``, ``<model>/1/<files>`` and ``build.json``. It is assembled in a hidden
staging directory inside STORE and renamed into place in one step, so a crashed build never
leaves a half repository under a build key. The check of a published repository against build.json
lives in `store.verify` (stdlib only: the serving image runs it too); its names are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import canonical
from ..errors import Internal
from ..recipe import Recipe, canonical_json
from .verify import BUILD_JSON, hash_tree, read_build_json, verify_repository

__all__ = [
    "BUILD_JSON", "build_key", "hash_tree", "publish", "read_build_json", "staging", "tree_size",
    "verify_repository", "write_build_json",
]  # fmt: skip
STAGING_PREFIX = ".staging-"


def build_key(source_digest: str, recipe: Recipe, builder_version: str, model_name: str) -> str:
    """sha256 over the source digest, canonical recipe, builder version and model name."""
    return canonical.sha256(
        {
            "source": source_digest,
            "recipe": canonical_json(recipe),
            "builder": builder_version,
            "model": model_name,
        }
    )


def tree_size(root: Path) -> int:
    """Total bytes of the files under root."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@contextlib.contextmanager
def staging(store: Path, key: str) -> Iterator[Path]:
    """A staging directory inside STORE (same filesystem as the final rename), removed on exit.

    STORE itself is created here if needed and removed again if the build leaves it empty.
    """
    created = not store.exists()
    try:
        store.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{key[:12]}-", dir=store))
    except OSError as exc:
        raise Internal(f"cannot write to store {store}: {exc}") from exc
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                store.rmdir()  # only succeeds when nothing was published


def write_build_json(tmp: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Hash every staged file into record['files'] and write build.json."""
    record = {**record, "files": hash_tree(tmp)}
    (tmp / BUILD_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def publish(tmp: Path, final: Path) -> bool:
    """Atomically rename the staged repository to ``final``; False when another build won the race."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    try:
        tmp.rename(final)
    except OSError:
        if final.exists() and not verify_repository(final):
            return False
        raise
    return True
