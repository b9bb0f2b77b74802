"""Unpack a model archive (.tar.gz) into the work directory, refusing anything that could leave it.

The archive is untrusted even when its sha256 matched (the digest pins what was published, not that
it is harmless), so every member is checked before a byte of it is written and the checks do not
lean on tarfile's extraction filters: a member is a regular file or a directory (no symlink, hard
link, device or fifo: a checkpoint needs none, and a link is how a later member escapes), its name
is relative with no ``..`` part, the member count is bounded, and the unpacked bytes are bounded
twice: by the sum of the sizes the headers declare (a gzip bomb is refused before it inflates) and
by the bytes actually written (whatever a header claims). Files are created exclusively and never
follow a link, so a name already taken is refused too. Each refusal is one BadInput line naming the
archive and the member.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from ..errors import BadInput
from .limits import SourceLimits

CHUNK = 1 << 20
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


def unpack_tar_gz(archive: Path, dest: Path, limits: SourceLimits) -> None:
    """Unpack `archive` into the (new, empty) folder `dest` under `limits`; BadInput names the member."""
    dest.mkdir()
    state = _Budget(archive.name, limits)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                state.admit(member)
                _write(tar, member, dest, state)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadInput(f"cannot unpack {archive.name}: {_first_line(exc)}") from exc


class _Budget:
    """Counts members and bytes of one archive against its limits."""

    def __init__(self, name: str, limits: SourceLimits) -> None:
        self.name, self.limits = name, limits
        self.members = self.declared = self.written = 0

    def admit(self, member: tarfile.TarInfo) -> None:
        """Refuse `member` unless it is a safe file or directory within the limits."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise BadInput(
                f"{self.name}: more than {self.limits.max_members} members (at {member.name!r}): not a "
                "model archive"
            )
        where = f"{self.name}: member {member.name!r}"
        kind = _KINDS.get(member.type)
        if kind is not None:
            raise BadInput(f"{where} is {kind}; a model archive holds files and folders only")
        if not (member.isfile() or member.isdir()):
            raise BadInput(f"{where} has tar type {member.type!r}; a model archive holds files and folders")
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise BadInput(f"{where} points outside the archive's folder (absolute or '..')")
        if member.isfile() and not path.parts:
            raise BadInput(f"{where} is a file without a name")
        self.declared += member.size
        if self.declared > self.limits.max_bytes:
            raise BadInput(self.limits.over(self._unpacked(member.name), self.declared))

    def wrote(self, count: int, member: str) -> None:
        """Count `count` bytes written for `member`; refuse once the archive's total passes the cap."""
        self.written += count
        if self.written > self.limits.max_bytes:
            raise BadInput(self.limits.over(self._unpacked(member), self.written))

    def _unpacked(self, member: str) -> str:
        return f"{self.name} unpacked (at member {member!r})"


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, budget: _Budget) -> None:
    target = dest.joinpath(*PurePosixPath(member.name).parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:  # a regular file always has a reader; anything else was refused already
        raise BadInput(f"{budget.name}: member {member.name!r} has no data")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError as exc:
        raise BadInput(f"{budget.name}: member {member.name!r} appears twice in the archive") from exc
    with os.fdopen(fd, "wb") as out:
        _copy(source, out, member.name, budget)


def _copy(source: IO[bytes], out: IO[bytes], name: str, budget: _Budget) -> None:
    while chunk := source.read(CHUNK):
        budget.wrote(len(chunk), name)
        out.write(chunk)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
