"""`model-repo-builder gc`: remove repositories from the model store that nothing references any more.

Build keys are content addresses, so every new version, recipe or builder release leaves a repository
behind, and the operator prunes ModelDeployment history to revisionHistoryLimit: without collection
the store only grows. The operator decides what is referenced (every history entry and every serving
pod of every ModelDeployment sharing the store) and runs this as a Job with `--keep`; this module
decides what on disk may go:
- only names that are build keys (64 hex digits) and not kept; anything else a user put there stays;
- only what has been untouched for the grace period: a build that just published, or a cache hit
  (the builder touches a reused repository), is young even if the operator's keep list predates it;
- staging directories of crashed builds after max(grace, MAX_BUILD_SECONDS) (a live build may run
  that long);
- removal renames first (one atomic step: a concurrent cache-hit check then misses and rebuilds
  instead of serving a half-deleted tree), then deletes; leftovers of an interrupted run go next time.
The report (one JSON line, also the Job's termination message) lists what went and what it freed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .repository import STAGING_PREFIX, tree_size

KEY = re.compile(r"^[0-9a-f]{64}$")
TRASH_PREFIX = ".trash-"
MAX_BUILD_SECONDS = 86400.0  # the builder Job's largest activeDeadlineSeconds
EXIT_BAD_INPUT = 2
MESSAGE_KEYS = 40  # keys listed in the termination message (Kubernetes keeps 4096 bytes of it)


@dataclass
class Report:
    """What one collection did (JSON field names are the operator's contract: see conch.render.storegc)."""

    ok: bool = True
    store: str = ""
    removed: list[str] = field(default_factory=list)
    removedCount: int = 0  # noqa: N815 (JSON contract; `removed` may be cut short in a termination message)
    freedBytes: int = 0  # noqa: N815 (JSON contract)
    kept: int = 0
    young: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)
    error: str | None = None


def _age(path: Path, now: float) -> float:
    return now - path.stat().st_mtime


def _remove(path: Path) -> int:
    """Rename out of the way, then delete; returns the bytes freed."""
    size = tree_size(path) if path.is_dir() else 0
    trash = path.with_name(f"{TRASH_PREFIX}{path.name[:16]}-{uuid.uuid4().hex[:8]}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return size


def collect(store: Path, keep: set[str], grace_seconds: float, now: float | None = None) -> Report:
    """Remove unreferenced, old repositories and stale staging dirs under `store`."""
    now = time.time() if now is None else now
    report = Report(store=str(store))
    for leftover in sorted(store.glob(f"{TRASH_PREFIX}*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for entry in sorted(store.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        name = entry.name
        if name.startswith(STAGING_PREFIX):
            if _age(entry, now) >= max(grace_seconds, MAX_BUILD_SECONDS):
                report.freedBytes += _remove(entry)
                report.staging.append(name)
            continue
        if not KEY.match(name):
            continue
        if name in keep:
            report.kept += 1
        elif _age(entry, now) < grace_seconds:
            report.young.append(name)
        else:
            report.freedBytes += _remove(entry)
            report.removed.append(name)
    report.removedCount = len(report.removed)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `model-repo-builder gc`."""
    parser.add_argument("store", type=Path, help="the repositories folder of the model store")
    parser.add_argument(
        "--keep", default="", metavar="KEY,KEY", help="build keys still referenced (comma-separated)"
    )
    parser.add_argument("--grace-seconds", type=float, default=86400.0, help="leave younger repositories")
    parser.add_argument("--summary-file", help="also write the JSON report here (/dev/termination-log)")


def run(args: argparse.Namespace) -> int:
    """Collect and report; exit 2 (bad input) names the flag or folder."""
    keep = {k.strip() for k in args.keep.split(",") if k.strip()}
    bad = sorted(k for k in keep if not KEY.match(k))
    if bad:
        report = Report(ok=False, store=str(args.store), error=f"--keep: not a build key: {bad[0]!r}")
    elif args.grace_seconds < 0:
        report = Report(ok=False, store=str(args.store), error="--grace-seconds: must be >= 0")
    elif not args.store.is_dir():
        report = Report(ok=False, store=str(args.store), error=f"{args.store}: not a directory")
    else:
        report = collect(args.store, keep, args.grace_seconds)
    sys.stdout.write(json.dumps(asdict(report), separators=(",", ":")) + "\n")
    if args.summary_file:
        short = asdict(report) | {
            "removed": report.removed[:MESSAGE_KEYS],
            "young": report.young[:MESSAGE_KEYS],
        }
        Path(args.summary_file).write_text(json.dumps(short, separators=(",", ":")), encoding="utf-8")
    if not report.ok:
        sys.stderr.write(f"error: {report.error}\n")
        return EXIT_BAD_INPUT
    mib = report.freedBytes / 2**20
    sys.stderr.write(f"[gc] removed {len(report.removed)} repositories ({mib:.1f} MiB), kept {report.kept}\n")
    return 0
