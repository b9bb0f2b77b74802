"""`model-repo-builder gc` on a real store folder: what goes, what stays, and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_repo_builder import cli
from model_repo_builder.store import gc as storegc

pytestmark = pytest.mark.unit
DAY = 86400.0


def key(i: int) -> str:
    return f"{i:064x}"


def repo(store: Path, name: str, age: float, size: int = 1000) -> Path:
    path = store / name
    (path / "m" / "1").mkdir(parents=True)
    (path / "m" / "1" / "model.onnx").write_bytes(b"x" * size)
    (path / "build.json").write_text("{}")
    old = time.time() - age
    os.utime(path, (old, old))
    return path


def test_collects_only_unreferenced_old_build_keys(tmp_path: Path) -> None:
    kept, old, young = (
        repo(tmp_path, key(1), 3 * DAY),
        repo(tmp_path, key(2), 3 * DAY, 5000),
        repo(tmp_path, key(3), 60),
    )
    user = repo(tmp_path, "my-notes", 30 * DAY)  # not a build key: never ours to delete
    crashed = repo(tmp_path, f"{storegc.STAGING_PREFIX}abc-1", 2 * DAY)
    live = repo(tmp_path, f"{storegc.STAGING_PREFIX}def-2", 3600)  # a build still running
    report = storegc.collect(tmp_path, {key(1)}, grace_seconds=DAY)
    assert report.removed == [key(2)] and report.removedCount == 1
    assert report.young == [key(3)] and report.kept == 1
    assert report.staging == [crashed.name]
    assert report.freedBytes >= 5000 + 1000
    assert kept.is_dir() and young.is_dir() and user.is_dir() and live.is_dir()
    assert not old.exists() and not crashed.exists()
    assert not list(tmp_path.glob(f"{storegc.TRASH_PREFIX}*"))  # renamed, then deleted


def test_leftovers_of_an_interrupted_collection_go_next_time(tmp_path: Path) -> None:
    repo(tmp_path, f"{storegc.TRASH_PREFIX}0123-abcd", 10)
    storegc.collect(tmp_path, set(), grace_seconds=DAY)
    assert list(tmp_path.iterdir()) == []


def test_a_cache_hit_makes_a_repository_young_again(tmp_path: Path) -> None:
    from model_repo_builder import pipeline

    path = repo(tmp_path, key(7), 3 * DAY)
    assert pipeline._touch(path)
    assert storegc.collect(tmp_path, set(), grace_seconds=DAY).young == [key(7)]
    path.rename(tmp_path / "elsewhere")
    assert not pipeline._touch(path)  # collected meanwhile: the build runs afresh


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep", "v1,not-a-key"], "--keep: not a build key: 'not-a-key'"),
        (["--grace-seconds", "-1"], "--grace-seconds: must be >= 0"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "msg"
    assert cli.main(["gc", str(tmp_path), *args, "--summary-file", str(out)]) == storegc.EXIT_BAD_INPUT
    report = json.loads(out.read_text())
    assert report["ok"] is False and message in report["error"]


def test_cli_reports_in_one_json_line_and_keeps_the_message_short(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for i in range(60):
        repo(store, key(i), 2 * DAY, size=10)
    out = tmp_path / "msg"
    proc = subprocess.run(
        [sys.executable, "-m", "model_repo_builder", "gc", str(store), "--keep", key(0),
         "--grace-seconds", str(DAY), "--summary-file", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    full = json.loads(proc.stdout.strip().splitlines()[-1])
    short = json.loads(out.read_text())
    assert full["removedCount"] == short["removedCount"] == 59 and len(full["removed"]) == 59
    assert len(short["removed"]) == storegc.MESSAGE_KEYS and len(out.read_bytes()) < 4096
    assert sorted(p.name for p in store.iterdir()) == [key(0)]
