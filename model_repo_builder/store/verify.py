"""Verify a published repository against its build.json: the one implementation of the check.

The builder uses it (`model-repo-builder verify`, and before reusing a cached repository), and so does
every serving pod: its init container runs `conch-verify` on the repository Triton is about to load
(conch.render.verify). The serving image gets this file alone (images/triton.Dockerfile copies it to
/opt/conch/conch_verify.py, with a `conch-verify` launcher), so it imports only the standard library and
nothing of its package: it also runs as a plain script (`python3 verify.py REPOSITORY`).

`conch-verify REPOSITORY [--message-file PATH]` exits 0 when the repository is intact, TAMPERED_EXIT
when a file is missing, modified or unexpected (or build.json has no hashes), and 1 when a file cannot
be read; the problems go to stderr one a line, a one-line summary naming the files to --message-file
(the pod's /dev/termination-log, which the operator reads into the ModelDeployment's Degraded condition).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

BUILD_JSON = "build.json"
CHUNK = 1 << 20
TAMPERED_EXIT = 2
UNREADABLE_EXIT = 1
MESSAGE_PROBLEMS = 5  # problems the one-line summary names; the rest are counted
MESSAGE_HEAD = "failed verification"  # the operator recognises a verify failure by its exit code, not this


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root except build.json, keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != BUILD_JSON
    }


def read_build_json(repo: Path) -> dict[str, Any]:
    """build.json of a repository, or an empty dict when missing/unreadable."""
    try:
        data = json.loads((repo / BUILD_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def verify_repository(repo: Path) -> list[str]:
    """Re-hash a repository against build.json; returns the list of problems (empty = intact).
    OSError when a file cannot be read (permissions, I/O): that is not evidence of tampering."""
    if not repo.is_dir():
        return [f"{repo}: not a directory"]
    recorded = read_build_json(repo).get("files")
    if not isinstance(recorded, dict) or not recorded:
        return [f"{repo / BUILD_JSON}: missing or has no file hashes"]
    actual = hash_tree(repo)
    problems = [f"missing: {p}" for p in sorted(set(recorded) - set(actual))]
    problems += [f"unexpected: {p}" for p in sorted(set(actual) - set(recorded))]
    problems += [f"modified: {p}" for p in sorted(set(recorded) & set(actual)) if recorded[p] != actual[p]]
    return problems


def summary(repo: Path, problems: list[str]) -> str:
    """One line naming the repository and its first problems (a termination message, a condition)."""
    shown = "; ".join(problems[:MESSAGE_PROBLEMS])
    more = f"; and {len(problems) - MESSAGE_PROBLEMS} more" if len(problems) > MESSAGE_PROBLEMS else ""
    return f"repository {repo} {MESSAGE_HEAD}: {shown}{more}"


def main(argv: list[str] | None = None) -> int:
    """`conch-verify`: exit 0 intact, TAMPERED_EXIT tampered, UNREADABLE_EXIT a file cannot be read."""
    parser = argparse.ArgumentParser(
        prog="conch-verify", description="re-hash a repository against its build.json"
    )
    parser.add_argument("repository", type=Path)
    parser.add_argument(
        "--message-file", type=Path, help="write the one-line result here (/dev/termination-log)"
    )
    args = parser.parse_args(argv)
    try:
        problems = verify_repository(args.repository)
    except OSError as exc:
        return _report(args, f"repository {args.repository} could not be verified: {exc}", UNREADABLE_EXIT)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    if problems:
        return _report(args, summary(args.repository, problems), TAMPERED_EXIT)
    return _report(args, f"repository {args.repository} verified", 0)


def _report(args: argparse.Namespace, line: str, code: int) -> int:
    sys.stderr.write(line + "\n")
    if args.message_file is not None:
        try:
            args.message_file.write_text(line, encoding="utf-8")
        except OSError as exc:
            sys.stderr.write(f"warning: cannot write {args.message_file}: {exc}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
