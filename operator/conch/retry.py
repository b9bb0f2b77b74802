"""How the operator's client rides out an apiserver storm: which failures it retries, which requests
are safe to send again, and how long it waits between attempts.

An apiserver under load answers 429 (priority and fairness) or 5xx with a Retry-After, or drops
connections. A client that retries at once multiplies the load that caused it; one that gives up at
once turns every blip into a failed pass. So a request is retried a few times, waiting what the
server asked (Retry-After, capped) or else an exponential backoff with full jitter (AWS's "full
jitter": a uniform draw in [0, min(cap, base x 2^attempt)], which spreads the retries of many clients
instead of synchronising them), within a total budget of waiting; then it fails with
errors.ApiUnavailableError, and the work queue runs the pass again no earlier than the server asked.

Only idempotent requests are sent twice: reads, server-side apply (the same patch gives the same
object; a status apply carries the resourceVersion it was computed from, so a repeat of one that did
land gets 409 and the pass reads again, never writing over newer history) and DELETE (a second one
finds nothing). A POST (an Event) or a PUT (the Lease, whose
resourceVersion makes a repeat a 409) is sent once: if the first one was applied and only its answer
lost, a repeat would duplicate an Event or look like a lost race.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
APPLY_PATCH = "application/apply-patch+yaml"


def idempotent(method: str, content_type: str) -> bool:
    """Whether sending this request twice leaves the same state as sending it once."""
    return method in ("GET", "HEAD", "DELETE") or (method == "PATCH" and content_type == APPLY_PATCH)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the apiserver sends an integer); None when absent or not a number
    (the HTTP-date form is not used by the apiserver and is treated as absent)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class Backoff:
    """At most `attempts` sends of one request, waiting at most `budget` seconds in all between them."""

    attempts: int = 5
    base: float = 0.25  # the first backoff's ceiling (seconds)
    cap: float = 8.0  # the largest backoff ceiling
    retry_after_cap: float = 30.0  # a server asking for longer is taken at this
    budget: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or min(self.base, self.cap, self.retry_after_cap, self.budget) < 0:
            raise ValueError(f"attempts must be >= 1 and the times >= 0: {self}")

    def delay(
        self, attempt: int, retry_after: float | None, draw: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 = the first send)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return draw() * min(self.cap, self.base * 2.0**attempt)


NONE = Backoff(attempts=1, budget=0.0)  # one send, no retry (the Lease client: its loop is the retry)
