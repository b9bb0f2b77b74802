"""Fetch a model source into a local file and compute its sha256 digest.

Sources are resolved through a small scheme registry (``file``/bare paths, ``http``, ``https``)
so another scheme such as ``s3`` only needs one ``register_scheme`` call. Remote sources must
come with a sha256, which is checked before the file is used.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch_local(uri: str, workdir: Path) -> Path:
    path = Path(urllib.parse.urlparse(uri).path) if uri.startswith("file://") else Path(uri)
    if not path.is_file():
        raise BadInput(f"source not found: {path}")
    return path


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
    digest = sha256_file(path)
    if expected and digest != expected:
        raise BadInput(f"sha256 mismatch for {uri}: expected {expected}, got {digest}")
    suffix = Path(urllib.parse.urlparse(uri).path if scheme else uri).suffix.lower()
    return FetchedSource(uri=uri, path=path, digest=f"sha256:{digest}", suffix=suffix)
