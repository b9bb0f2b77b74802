"""The inference tokens a serving pod accepts, and how a request presents one.

The tokens are the files of one directory: a Kubernetes Secret mounted as a volume, one file per data
key, every value a valid token. The kubelet swaps the files when the Secret changes (an atomic rename
of its `..data` link), so a rotation is: add a second key to the Secret, move the clients to it, remove
the first. `TokenSet.refresh` re-reads the directory (the proxy calls it every couple of seconds), so
both tokens are valid during the rollover and no pod restarts. An empty or missing directory accepts
nothing (fail closed).

A request presents a token as OpenAI's clients do, `Authorization: Bearer <token>`, or in the header
(gRPC: metadata) `conch-api-key`. Comparisons are constant-time (`hmac.compare_digest`, against every
token), and no token is ever logged or put in an error: refusals say only "missing" or "invalid".
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from pathlib import Path

API_KEY_HEADER = "conch-api-key"
AUTHORIZATION = "authorization"
MISSING, INVALID = "missing", "invalid"
"""The reasons of a refusal (a label of the refusal counter)."""
CREDENTIAL_HEADERS = frozenset({API_KEY_HEADER, AUTHORIZATION})
"""Headers that carry a token: checked here and never passed on to Triton or the gateway."""

log = logging.getLogger("conch_gateway.tokens")


def presented(headers: Iterable[tuple[str, str]]) -> str | None:
    """The token a request presents (`Authorization: Bearer` first, then `conch-api-key`), or None."""
    bearer = key = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == AUTHORIZATION and bearer is None:
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                bearer = rest.strip()
        elif lowered == API_KEY_HEADER and key is None and value.strip():
            key = value.strip()
    return bearer if bearer is not None else key


class TokenSet:
    """The valid tokens: the non-empty files of `directory` (dotfiles, the kubelet's own, skipped)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tokens: tuple[bytes, ...] = ()
        self.refresh()

    def __len__(self) -> int:
        return len(self._tokens)

    def refresh(self) -> bool:
        """Re-read the directory; True when the set changed (the count is logged, never a token)."""
        tokens = tuple(sorted(read(self.directory)))
        if tokens == self._tokens:
            return False
        self._tokens = tokens
        log.warning("inference tokens loaded: %d valid", len(tokens))
        return True

    def check(self, token: str | None) -> str | None:
        """None when `token` is valid, else the refusal's reason (MISSING or INVALID)."""
        if token is None:
            return MISSING
        candidate = token.encode()
        valid = False
        for known in self._tokens:  # no early exit: the time taken does not say which one matched
            valid |= hmac.compare_digest(candidate, known)
        return None if valid else INVALID


def read(directory: Path) -> set[bytes]:
    """The tokens in `directory` (empty when it is missing or unreadable: fail closed)."""
    out: set[bytes] = set()
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            value = entry.read_bytes().strip()
        except OSError:  # a directory, or a file swapped away mid-read: the next refresh sees it
            continue
        if value:
            out.add(value)
    return out
