"""How big a source may get: the byte cap on a download and on an archive's unpacked contents.

One home for the default, shared with the operator: spec.build.maxSourceSize defaults to
``DEFAULT_MAX_SOURCE_GIB`` Gi (conch.api.types reads it from here) and ``--max-source-bytes``
to the same number of bytes, so a ModelDeployment that leaves the field unset and a CLI run without
the flag refuse the same sources.

50 GiB holds the largest sources the builder serves with room to spare (an 8B-parameter causal LM
in fp32 is about 32 GiB, in bf16 16 GiB) while a download or an archive that would fill the node's
disk stops at a bounded size. A source on the model store (a file or directory the store's admin put
there) is not copied and not capped; an archive from it is capped while it unpacks.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
DEFAULT_MAX_SOURCE_GIB = 50
DEFAULT_MAX_SOURCE_BYTES = DEFAULT_MAX_SOURCE_GIB * GIB
MAX_ARCHIVE_MEMBERS = 100_000
"""A Hugging Face checkpoint is tens of files; a sharded one a few hundred. More is a file bomb."""
FLAG = "--max-source-bytes"
ENV = "CONCH_MAX_SOURCE_BYTES"
"""The flag's default when set: the operator's build Job passes spec.build.maxSourceSize here (an
environment variable, not the flag, so a Job running an older builder image that has no such flag
still starts: like CONCH_BUILD_DEADLINE_SECONDS)."""


@dataclass(frozen=True)
class SourceLimits:
    """The caps one build applies to its source."""

    max_bytes: int = DEFAULT_MAX_SOURCE_BYTES
    max_members: int = MAX_ARCHIVE_MEMBERS

    def over(self, what: str, size: int | str) -> str:
        """The refusal line for `what` growing past the byte cap (`size`: how far it got)."""
        return (
            f"{what} is over the source size limit: {size} > {self.max_bytes} bytes "
            f"({FLAG}, spec.build.maxSourceSize)"
        )
