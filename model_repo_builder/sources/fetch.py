"""Fetch a model source into a local file or directory and compute its sha256 digest.

Sources are resolved through a small scheme registry (``file``/bare paths, ``http``, ``https``)
so another scheme such as ``s3`` only needs one ``register_scheme`` call. Remote sources must
come with a sha256, which is checked before the file is used. A Hugging Face model is a directory
on the store (digest: sha256 over its files' relative paths and digests) or a ``.tar.gz`` of one,
unpacked into the work directory after its sha256 matched (`archive`: no links, no paths outside it).
A download streams to disk and stops at the byte cap (`limits`), and so does an archive's unpacking.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import BadInput
from .archive import unpack_tar_gz
from .limits import SourceLimits

CHUNK = 1 << 20
Fetcher = Callable[[str, Path, SourceLimits], Path]
"""A fetcher copies or downloads ``uri`` into the work directory (at most the limits' bytes) and
returns the local path."""


@dataclass(frozen=True)
class FetchedSource:
    """A source available as a local file."""

    uri: str
    path: Path
    digest: str  # "sha256:<hex>"
    suffix: str


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (hashlib's own chunked reader; the store's verify.py keeps its own copy
    because it must run alone in the serving image, and importing it here made sources -> store ->
    request -> sources a circle)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_directory(root: Path) -> str:
    """Hex sha256 over every file's relative POSIX path and sha256, in sorted order."""
    listing = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    # json's default separators, not `canonical`'s: this form is fixed by every digest already recorded
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def _fetch_local(uri: str, workdir: Path, limits: SourceLimits) -> Path:
    """A file or folder on the store (or any local path), read in place: not copied, so not capped."""
    path = Path(urllib.parse.urlparse(uri).path) if uri.startswith("file://") else Path(uri)
    if not path.is_file() and not path.is_dir():
        raise BadInput(f"source not found: {path}")
    return path


def source_suffix(name: str) -> str:
    """'.tar.gz' for archives, else the lower-case suffix ('' for a directory or no suffix)."""
    lower = name.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return ".tar.gz"
    return Path(lower).suffix


def unpack_model_archive(archive: Path, workdir: Path, limits: SourceLimits) -> Path:
    """Unpack a .tar.gz into workdir and return the folder holding config.json."""
    dest = workdir / "unpacked"
    unpack_tar_gz(archive, dest, limits)
    configs = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise BadInput(f"{archive.name}: no config.json inside (not a Hugging Face model archive)")
    return configs[0].parent


def _fetch_http(uri: str, workdir: Path, limits: SourceLimits) -> Path:
    name = Path(urllib.parse.urlparse(uri).path).name or "model"
    dest = workdir / f"download-{name}"
    try:
        with urllib.request.urlopen(uri, timeout=60) as resp:
            announced = str(resp.headers.get("Content-Length", "")).strip()
            if announced.isdigit() and int(announced) > limits.max_bytes:
                raise BadInput(limits.over(f"download {uri}", f"Content-Length {announced}"))
            with dest.open("wb") as out:
                _copy_capped(resp, out, uri, limits)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BadInput(f"cannot download {uri}: {exc}") from exc
    except BadInput:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _copy_capped(resp: IO[bytes], out: IO[bytes], uri: str, limits: SourceLimits) -> None:
    """Stream the body to `out` a chunk at a time; stop once it passes the cap (whatever was announced)."""
    total = 0
    while chunk := resp.read(CHUNK):
        total += len(chunk)
        if total > limits.max_bytes:
            raise BadInput(limits.over(f"download {uri}", f"at least {total}"))
        out.write(chunk)


_SCHEMES: dict[str, Fetcher] = {
    "": _fetch_local,
    "file": _fetch_local,
    "http": _fetch_http,
    "https": _fetch_http,
}
_NEEDS_SHA = {"http", "https"}


def register_scheme(scheme: str, fetcher: Fetcher, needs_sha256: bool = True) -> None:
    """Add a source scheme (e.g. ``s3``)."""
    _SCHEMES[scheme] = fetcher
    if needs_sha256:
        _NEEDS_SHA.add(scheme)


def scheme_of(uri: str) -> str:
    """URL scheme of a source, '' for a plain path."""
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme if len(scheme) > 1 else ""  # a Windows drive letter is not a scheme


def fetch(
    uri: str, workdir: Path, expected_sha256: str | None = None, limits: SourceLimits | None = None
) -> FetchedSource:
    """Resolve ``uri`` to a local file, verify the sha256 when given (mandatory for remote); a download
    and an archive's contents stay within `limits` (default: `limits.DEFAULT_MAX_SOURCE_BYTES`)."""
    limits = limits or SourceLimits()
    scheme = scheme_of(uri)
    fetcher = _SCHEMES.get(scheme)
    if fetcher is None:
        raise BadInput(
            f"unsupported source scheme {scheme!r} (supported: {sorted(s for s in _SCHEMES if s)})"
        )
    expected = expected_sha256.lower().removeprefix("sha256:") if expected_sha256 else None
    if scheme in _NEEDS_SHA and not expected:
        raise BadInput(f"a sha256 is required for {scheme}:// sources (--sha256)")
    path = fetcher(uri, workdir, limits)
    digest = sha256_directory(path) if path.is_dir() else sha256_file(path)
    if expected and digest != expected:
        raise BadInput(f"sha256 mismatch for {uri}: expected {expected}, got {digest}")
    suffix = "" if path.is_dir() else source_suffix(urllib.parse.urlparse(uri).path if scheme else uri)
    if suffix == ".tar.gz":
        path = unpack_model_archive(path, workdir, limits)
    return FetchedSource(uri=uri, path=path, digest=f"sha256:{digest}", suffix=suffix)
