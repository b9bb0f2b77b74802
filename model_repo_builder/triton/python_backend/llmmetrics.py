"""The generative model's Prometheus metrics, as LLM servers report them, on Triton's metrics port.

Copied beside genai_model.py into the version folder. Triton's python backend exports custom metric
families (pb_utils.MetricFamily) on the same /metrics endpoint as Triton's own, so the chart's
ServiceMonitor scrapes them with no new port. Labels follow Triton's own: model and version.
This is the scheduler's Observer (llmsched.Observer).
"""

from __future__ import annotations

from typing import Any

import llmsched  # type: ignore[import-not-found]  # next to this file in the version folder
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

PREFIX = "conch_llm_"
LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
TOKEN_GAP_BUCKETS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5]
REQUEST_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]


def _family(name: str, description: str, kind: Any) -> Any:
    return pb_utils.MetricFamily(name=PREFIX + name, description=description, kind=kind)


class LlmMetrics:
    """Histograms, counters and gauges of one served generative model."""

    def __init__(self, model: str, version: str) -> None:
        labels = {"model": model, "version": version}
        histogram, counter, gauge = (
            pb_utils.MetricFamily.HISTOGRAM,
            pb_utils.MetricFamily.COUNTER,
            pb_utils.MetricFamily.GAUGE,
        )
        self._families = [
            _family("time_to_first_token_seconds", "Arrival to the first generated token.", histogram),
            _family("inter_token_latency_seconds", "Time between two tokens of one sequence.", histogram),
            _family("e2e_request_latency_seconds", "Time from arrival to the last token.", histogram),
            _family("queue_time_seconds", "Time a request waited before its prefill started.", histogram),
            _family("prompt_tokens_total", "Prompt tokens of finished requests.", counter),
            _family("generation_tokens_total", "Generated tokens of finished requests.", counter),
            _family("requests_total", "Finished requests by finish reason.", counter),
            _family("rejected_requests_total", "Requests refused because the queue was full.", counter),
            _family("running_sequences", "Sequences being generated now.", gauge),
            _family("waiting_sequences", "Requests waiting for a sequence slot.", gauge),
            _family("kv_cache_tokens", "KV-cache tokens held by running sequences.", gauge),
            _family("kv_cache_budget_tokens", "KV-cache tokens the model may hold.", gauge),
        ]
        ttft, itl, e2e, queue, prompt, generated, requests, rejected, running, waiting, kv, budget = (
            self._families
        )
        self.ttft = ttft.Metric(labels=labels, buckets=LATENCY_BUCKETS)
        self.itl = itl.Metric(labels=labels, buckets=TOKEN_GAP_BUCKETS)
        self.e2e = e2e.Metric(labels=labels, buckets=REQUEST_BUCKETS)
        self.queue = queue.Metric(labels=labels, buckets=LATENCY_BUCKETS)
        self.prompt, self.generated = prompt.Metric(labels=labels), generated.Metric(labels=labels)
        self.requests = {
            reason: requests.Metric(labels={**labels, "finish_reason": reason})
            for reason in llmsched.FINISH_REASONS
        }
        self.rejected = rejected.Metric(labels=labels)
        self.running, self.waiting = running.Metric(labels=labels), waiting.Metric(labels=labels)
        self.kv, self.budget = kv.Metric(labels=labels), budget.Metric(labels=labels)

    # llmsched.Observer
    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def token_gap(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def finished(self, reason: str, prompt_tokens: int, tokens: int, seconds: float, queued: float) -> None:
        self.requests[reason].increment(1)
        self.prompt.increment(prompt_tokens)
        self.generated.increment(tokens)
        self.e2e.observe(seconds)
        self.queue.observe(queued)

    def rejected_request(self) -> None:
        self.rejected.increment(1)

    def load(self, running: int, waiting: int, kv_tokens: int, kv_budget: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv.set(kv_tokens)
        self.budget.set(kv_budget)
