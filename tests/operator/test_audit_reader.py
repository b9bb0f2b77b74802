"""The audit-log reader the cluster tests share never parses a line the apiserver is still writing
(the watch-scope test once failed in CI on a half-written last line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import audit

pytestmark = pytest.mark.unit


def test_a_half_written_last_line_is_left_for_the_next_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    first = json.dumps({"verb": "list", "auditID": "a"}) + "\n"
    second = json.dumps({"verb": "watch", "auditID": "b"})
    log.write_text(first + second[:17])
    assert [e["auditID"] for e in audit.events_since(log, 0)] == ["a"]
    log.write_text(first + second + "\n")
    assert [e["auditID"] for e in audit.events_since(log, 0)] == ["a", "b"]
    assert [e["auditID"] for e in audit.events_since(log, len(first))] == ["b"]
