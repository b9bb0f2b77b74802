"""Fetch a model source into a local file or directory and compute its sha256 digest.

Sources are resolved through a small scheme registry (``file``/bare paths, ``http``, ``https``)
so another scheme such as ``s3`` only needs one ``register_scheme`` call. Remote sources must
come with a sha256, which is checked before the file is used. A Hugging Face model is a directory
on the store (digest: sha256 over its files' relative paths and digests) or a ``.tar.gz`` of one,
unpacked into the work directory after its sha256 matched (no links, no paths outside it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from ..store.verify import sha256_file

CHUNK = 1 << 20
Fetcher = Callable[[str, Path], Path]
"""A fetcher copies or downloads ``uri`` into the work directory and returns the local path."""


@dataclass(frozen=True)
class FetchedSource:
    """A source available as a local file."""

    uri: str
    path: Path
    digest: str  # "sha256:<hex>"
    suffix: str


def sha256_directory(root: Path) -> str:
    """Hex sha256 over every file's relative POSIX path and sha256, in sorted order."""
    listing = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    # json's default separators, not `canonical`'s: this form is fixed by every digest already recorded
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def _fetch_local(uri: str, workdir: Path) -> Path:
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


def unpack_model_archive(archive: Path, workdir: Path) -> Path:
    """Unpack a .tar.gz into workdir and return the folder holding config.json."""
    dest = workdir / "unpacked"
    dest.mkdir()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"cannot unpack {archive.name}: {exc}") from exc
    configs = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise BadInput(f"{archive.name}: no config.json inside (not a Hugging Face model archive)")
    return configs[0].parent


def _fetch_http(uri: str, workdir: Path) -> Path:
    name = Path(urllib.parse.urlparse(uri).path).name or "model"
    dest = workdir / f"download-{name}"
    try:
        with urllib.request.urlopen(uri, timeout=60) as resp, dest.open("wb") as out:
            shutil.copyfileobj(resp, out, CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BadInput(f"cannot download {uri}: {exc}") from exc
    return dest


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


def fetch(uri: str, workdir: Path, expected_sha256: str | None = None) -> FetchedSource:
    """Resolve ``uri`` to a local file, verify the sha256 when given (mandatory for remote)."""
    scheme = scheme_of(uri)
    fetcher = _SCHEMES.get(scheme)
    if fetcher is None:
        raise BadInput(
            f"unsupported source scheme {scheme!r} (supported: {sorted(s for s in _SCHEMES if s)})"
        )
    expected = expected_sha256.lower().removeprefix("sha256:") if expected_sha256 else None
    if scheme in _NEEDS_SHA and not expected:
        raise BadInput(f"a sha256 is required for {scheme}:// sources (--sha256)")
    path = fetcher(uri, workdir)
    digest = sha256_directory(path) if path.is_dir() else sha256_file(path)
    if expected and digest != expected:
        raise BadInput(f"sha256 mismatch for {uri}: expected {expected}, got {digest}")
    suffix = "" if path.is_dir() else source_suffix(urllib.parse.urlparse(uri).path if scheme else uri)
    if suffix == ".tar.gz":
        path = unpack_model_archive(path, workdir)
    return FetchedSource(uri=uri, path=path, digest=f"sha256:{digest}", suffix=suffix)
