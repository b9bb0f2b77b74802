"""Logging policy: kopf's per-event handler lines are DEBUG, other kopf lines keep their level."""

from __future__ import annotations

import logging

import pytest

from conch.main import DemoteHandlerLines

pytestmark = pytest.mark.unit


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)


@pytest.mark.parametrize(("root", "kept"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_handler_succeeded_lines_are_debug(root: int, kept: bool) -> None:
    saved = logging.getLogger().level
    logging.getLogger().setLevel(root)
    try:
        record = _record(logging.INFO, "Handler 'child_event' succeeded.")
        assert DemoteHandlerLines().filter(record) is kept
        assert record.levelno == logging.DEBUG and record.levelname == "DEBUG"
    finally:
        logging.getLogger().setLevel(saved)


def test_other_kopf_lines_keep_their_level() -> None:
    record = _record(logging.ERROR, "Handler 'child_event' failed with an exception. Will retry.")
    assert DemoteHandlerLines().filter(record) is True
    assert record.levelno == logging.ERROR
    info = _record(logging.INFO, "Timer 'x' is invoked.")
    assert DemoteHandlerLines().filter(info) is True and info.levelno == logging.INFO
