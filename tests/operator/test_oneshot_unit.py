"""The one-shot Job reader (render/oneshot.py) that build, analysis and store GC share."""

from __future__ import annotations

from typing import Any

import pytest

from conch.render import oneshot

pytestmark = pytest.mark.unit


def job(*conds: tuple[str, str, str]) -> dict[str, Any]:
    true = [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conds]
    return {"status": {"conditions": true}}


def pod(name: str, *states: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"containerStatuses": list(states)}}


def test_condition_prefers_the_first_type_named() -> None:
    j = job(("FailureTarget", "BackoffLimitExceeded", "early"), ("Failed", "BackoffLimitExceeded", "final"))
    assert (oneshot.condition(j, *oneshot.FAILED) or {})["message"] == "final"
    assert oneshot.condition(j, *oneshot.COMPLETE) is None
    assert (oneshot.condition(job(("SuccessCriteriaMet", "r", "m")), *oneshot.COMPLETE) or {})["type"] == (
        "SuccessCriteriaMet"
    )
    assert oneshot.failure({"message": "why"}) == "Failed: why"


def test_termination_message_is_the_latest() -> None:
    def done(at: str, text: str) -> dict[str, Any]:
        return {"state": {"terminated": {"finishedAt": at, "message": text}}}

    pods = [pod("a", done("2026-01-01T00:00:02Z", "second")), pod("b", done("2026-01-01T00:00:01Z", "first"))]
    assert oneshot.termination_message(pods) == "second"
    assert oneshot.termination_message([pod("c", {"state": {"running": {}}})]) is None


def test_oom_killed_reads_state_and_last_state() -> None:
    killed = {"lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}, "state": {"waiting": {}}}
    assert oneshot.oom_killed([pod("p", killed)]) == ("p", {"reason": "OOMKilled", "exitCode": 137})
    assert oneshot.oom_killed([pod("p", {"state": {"terminated": {"reason": "Error"}}})]) is None


def test_clip() -> None:
    assert oneshot.clip("x" * oneshot.MAX_MESSAGE) == "x" * oneshot.MAX_MESSAGE
    clipped = oneshot.clip("x" * (oneshot.MAX_MESSAGE + 1))
    assert len(clipped) == oneshot.MAX_MESSAGE and clipped.endswith("...")
