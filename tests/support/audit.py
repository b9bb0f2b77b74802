"""Reads the test apiserver's audit log (JSON lines) while the apiserver is still writing it.

The last line of the file can be half written when a test reads it, so only complete lines (those
ending in a newline) are parsed; a partial tail is left for the next read. Every test that proves
what the operator did or did not ask for reads the log through this one function.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def events_since(audit_log: Path, offset: int) -> Iterator[dict[str, Any]]:
    """The audit events written after byte `offset`, skipping a line the apiserver has not finished."""
    with audit_log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            event: dict[str, Any] = json.loads(raw)
            yield event
