"""The operator's one Prometheus client: instant queries over the HTTP API with short timeouts.

Used by the canary flow in the controller layer only (renderers and state machines stay pure). Any
failure to get an answer (connection refused, timeout, HTTP error, a query Prometheus refuses)
raises Unavailable with the URL and the reason: the canary pauses on it, it never promotes blind.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from urllib.parse import urlencode

from conch import errors

ENV_URL = "CONCH_PROMETHEUS_URL"
TIMEOUT = 3.0


class Unavailable(errors.ConchError):
    """Prometheus did not answer a query."""


def default_url() -> str | None:
    """The operator-wide Prometheus address (the chart sets it from its values)."""
    return os.environ.get(ENV_URL) or None


def query(base_url: str, promql: str, timeout: float = TIMEOUT) -> float | None:
    """The single value of an instant query; None when it returns no sample (or NaN)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise Unavailable(f"{base_url}: HTTP {exc.code}: {detail} (query {promql})") from exc
    except (OSError, ValueError) as exc:
        raise Unavailable(f"{base_url}: {exc}") from exc
    if body.get("status") != "success":
        raise Unavailable(f"{base_url}: {body.get('errorType')}: {body.get('error')} (query {promql})")
    result = body.get("data", {}).get("result", [])
    if isinstance(result, list) and len(result) > 1:
        raise Unavailable(f"{base_url}: query returned {len(result)} series, wanted one: {promql}")
    if not result:
        return None
    sample = result[0]["value"] if isinstance(result, list) else result
    value = float(sample[1])
    return None if math.isnan(value) or math.isinf(value) else value


def measure(base_url: str, queries: dict[str, str]) -> dict[str, float | None]:
    """Every query's value, by name."""
    return {name: query(base_url, promql) for name, promql in queries.items()}
