"""The timestamps the operator writes and reads, in one place.

Kubernetes stores two shapes: a Time (RFC 3339 in UTC, to the second: conditions' lastTransitionTime,
Events, the canary's timers in status) and a MicroTime (the same with microseconds: a Lease's
renewTime). Status is compared byte for byte to decide whether to write, so every writer must spell
a time exactly alike; this module is that spelling.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime

SECONDS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MICRO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(epoch: float) -> str:
    """Epoch seconds as a Kubernetes Time (status timestamps, Events)."""
    return time.strftime(SECONDS_FORMAT, time.gmtime(epoch))


def parse_time(stamp: str | None) -> float | None:
    """A Kubernetes Time (as `format_time` writes it) as epoch seconds; None for none."""
    if not stamp:
        return None
    return float(calendar.timegm(time.strptime(stamp, SECONDS_FORMAT)))


def now() -> str:
    """The current time as a Kubernetes Time."""
    return datetime.now(UTC).strftime(SECONDS_FORMAT)


def micro_time(epoch: float) -> str:
    """Epoch seconds as a Kubernetes MicroTime (a Lease's acquire and renew times)."""
    return datetime.fromtimestamp(epoch, UTC).strftime(MICRO_FORMAT)
