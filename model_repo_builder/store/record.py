"""build.json's common part: key, source, recipe, sizes, gate metrics and timings of a build.

Every build path starts its record here and adds its own entries (passes, probes, text settings)
before `repository.write_build_json` hashes the staged files into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import BUILDER_VERSION
from ..request import BuildRequest
from ..sources.fetch import FetchedSource


def make_record(  # noqa: PLR0917
    req: BuildRequest,
    src: FetchedSource,
    key: str,
    artifact: Path,
    metrics: dict[str, float],
    timings: dict[str, float],
    *,
    size_before: int,
    size_after: int | None = None,
) -> dict[str, Any]:
    """build.json: sizes compare the unpruned fp32 export with the served model (like for like): the
    artifact file's size, or `size_after` when the served model is more than that file (a folder)."""
    before = size_before
    after = artifact.stat().st_size if size_after is None else size_after
    return {
        "buildKey": key,
        "builderVersion": BUILDER_VERSION,
        "source": req.source,
        "sourceDigest": src.digest,
        "modelName": req.model_name,
        "recipe": req.recipe.model_dump(mode="json", by_alias=True),
        "sizeBefore": before,
        "sizeAfter": after,
        "sourceBytes": _source_bytes(src.path),
        "compressionRatio": round(before / after, 4) if after else 0.0,
        "gate": {"passed": True, **metrics},
        "timings": dict(timings),
    }


def _source_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
