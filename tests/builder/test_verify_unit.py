"""`conch-verify` (model_repo_builder/store/verify.py): the check every serving pod runs before Triton
loads its repository, as the serving image runs it (the file alone, standard library only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model_repo_builder.store import repository, verify

pytestmark = pytest.mark.unit
SCRIPT = Path(verify.__file__)


def published(tmp_path: Path) -> Path:
    repo = tmp_path / "store" / "k1"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\n')
    (repo / "m" / "1" / "model.onnx").write_bytes(b"weights" * 1000)
    repository.write_build_json(repo, {"buildKey": "k1"})
    return repo


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The file as the image runs it: `python3 -I` (no site-packages, no PYTHONPATH), outside its package."""
    cmd = [sys.executable, "-I", str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_an_intact_repository_passes(tmp_path: Path) -> None:
    repo, message = published(tmp_path), tmp_path / "termination-log"
    done = run(repo, "--message-file", message)
    assert done.returncode == 0, done.stderr
    assert message.read_text() == f"repository {repo} verified"


def test_a_modified_file_fails_naming_it(tmp_path: Path) -> None:
    repo, message = published(tmp_path), tmp_path / "termination-log"
    with (repo / "m" / "1" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    (repo / "m" / "1" / "extra.py").write_text("import os\n")
    done = run(repo, "--message-file", message)
    assert done.returncode == verify.TAMPERED_EXIT
    assert message.read_text() == (
        f"repository {repo} failed verification: unexpected: m/1/extra.py; modified: m/1/model.onnx"
    )
    assert "error: modified: m/1/model.onnx" in done.stderr.splitlines()


def test_a_missing_build_json_or_file_fails(tmp_path: Path) -> None:
    repo = published(tmp_path)
    (repo / "m" / "config.pbtxt").unlink()
    assert verify.verify_repository(repo) == ["missing: m/config.pbtxt"]
    (repo / "build.json").unlink()
    done = run(repo)
    assert done.returncode == verify.TAMPERED_EXIT
    assert "build.json: missing or has no file hashes" in done.stderr
    assert run(tmp_path / "nowhere").returncode == verify.TAMPERED_EXIT


def test_the_summary_names_the_first_problems_and_counts_the_rest() -> None:
    problems = [f"modified: f{i}" for i in range(8)]
    line = verify.summary(Path("/store/r/k"), problems)
    assert line.endswith("modified: f3; modified: f4; and 3 more") and "f5" not in line


def test_the_builder_and_the_image_share_one_implementation() -> None:
    assert repository.verify_repository is verify.verify_repository
    assert repository.hash_tree is verify.hash_tree
