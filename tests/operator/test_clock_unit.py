"""The operator's timestamps (conch.clock): the exact bytes Kubernetes stores, and the round trip."""

from __future__ import annotations

import re

import pytest

from conch import clock

pytestmark = pytest.mark.unit
T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z


def test_time_is_rfc3339_utc_to_the_second() -> None:
    assert clock.format_time(T0) == "2023-11-14T22:13:20Z"
    assert clock.format_time(0) == "1970-01-01T00:00:00Z"


def test_micro_time_keeps_microseconds() -> None:
    assert clock.micro_time(T0) == "2023-11-14T22:13:20.250000Z"


def test_parse_inverts_format_to_the_second() -> None:
    assert clock.parse_time("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert clock.parse_time(clock.format_time(T0)) == float(int(T0))
    assert clock.parse_time(None) is None and clock.parse_time("") is None


def test_now_has_the_time_shape() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", clock.now())
