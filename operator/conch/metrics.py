"""Operator metrics on /metrics (prometheus-client): reconciles, errors, durations, builds, rollouts.

`spec_to_serving_seconds` measures what a user waits for: from the moment a new spec.version is
first seen to the moment the Deployment fully serves it.
"""

from __future__ import annotations

import prometheus_client

RECONCILES = prometheus_client.Counter("conch_reconciles_total", "Reconcile passes", ["result"])
RECONCILE_ERRORS = prometheus_client.Counter(
    "conch_reconcile_errors_total", "Reconcile passes that raised", ["kind"]
)
RECONCILE_SECONDS = prometheus_client.Histogram(
    "conch_reconcile_duration_seconds", "Wall time of one reconcile pass"
)
OWNERSHIP_CONFLICTS = prometheus_client.Counter(
    "conch_ownership_conflicts_total",
    "Children not applied: their name is held by an object another owner has",
)
CLIENT_THROTTLED = prometheus_client.Counter(
    "conch_client_throttled_seconds_total",
    "Seconds requests waited for the client-side rate limit (--kube-api-qps, --kube-api-burst)",
)
CLIENT_RETRIES = prometheus_client.Counter(
    "conch_client_retries_total",
    "Requests sent again after a 429, a 5xx or a dropped connection, by status (or 'connection')",
    ["status"],
)
WRITES = prometheus_client.Counter("conch_writes_total", "Writes sent to the apiserver", ["kind"])
BUILDS = prometheus_client.Counter(
    "conch_builds_total", "Builds by outcome (started, succeeded, failed, reused)", ["outcome"]
)
ROLLOUTS = prometheus_client.Counter(
    "conch_rollouts_total",
    "Rollouts by outcome (started, completed, failed; canaries: promoted, aborted)",
    ["outcome"],
)
CANARY_ANALYSES = prometheus_client.Counter(
    "conch_canary_analysis_total",
    "Canary analyses by result (passed, failed, inconclusive, unavailable) and kind (metrics, quality)",
    ["result", "kind"],
)
CANARY_STEPS = prometheus_client.Counter("conch_canary_steps_total", "Canary steps reached")
ROLLBACKS = prometheus_client.Counter("conch_rollbacks_total", "Automatic rollbacks after a failed rollout")
SPEC_TO_SERVING = prometheus_client.Histogram(
    "conch_spec_to_serving_seconds",
    "Time from a new spec.version being seen to it serving",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)

# The outcomes the alerts watch exist at 0 from the start: a series born at 1 has no increase() in
# Prometheus, so ConchBuildFailed/ConchRolloutFailed would miss the first failure after a restart.
for _outcome in ("started", "succeeded", "failed"):
    BUILDS.labels(_outcome)
for _outcome in ("started", "completed", "failed"):
    ROLLOUTS.labels(_outcome)


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Start the /metrics HTTP server in a background thread (loopback unless told otherwise)."""
    prometheus_client.start_http_server(port, addr=address)
