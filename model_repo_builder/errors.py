"""Exception tree that maps build failures onto the CLI exit codes and summary error kinds.

BadInput (exit 2) is the user's fault: missing/corrupt file, sha mismatch, unsupported op, shape
mismatch. GateFailed (exit 3) means the compressed model lost accuracy or produced NaNs.
Internal (exit 1) is everything else, including bugs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal["bad-input", "gate-failed", "internal"]


class BuilderError(Exception):
    """Base of all builder errors; carries the summary kind and exit code."""

    kind: ClassVar[ErrorKind] = "internal"
    exit_code: ClassVar[int] = 1


class BadInput(BuilderError):  # noqa: N818 - name fixed by the operator contract
    """The source, recipe or data given by the user cannot be used."""

    kind: ClassVar[ErrorKind] = "bad-input"
    exit_code: ClassVar[int] = 2


class GateFailed(BuilderError):  # noqa: N818 - name fixed by the operator contract
    """The compressed model failed the accuracy gate (or produced non-finite outputs)."""

    kind: ClassVar[ErrorKind] = "gate-failed"
    exit_code: ClassVar[int] = 3


class Internal(BuilderError):  # noqa: N818 - name fixed by the operator contract
    """A failure inside the builder that the input does not explain."""

    kind: ClassVar[ErrorKind] = "internal"
    exit_code: ClassVar[int] = 1
