"""A bounded inference load generator for one Triton address (tests and bench/bench_batching.py).

Fixed concurrency (one thread and one HTTP connection each, closed loop: a thread sends its next
request when the previous one is answered); stops by itself at the first of `duration` seconds,
`max_requests` requests, or `stop` being set. Refuses any address outside 127.0.0.0/8: load goes
only to a pod's own loopback address.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.http as triton_http


@dataclass
class Result:
    """What one run measured (latencies in milliseconds)."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
        }


def check_loopback(host: str) -> None:
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/8"):
        raise ValueError(f"load goes only to loopback addresses, not {host}")


def run(
    host: str,
    model: str,
    input_name: str,
    batch: np.ndarray[Any, Any],
    *,
    concurrency: int,
    duration: float,
    max_requests: int = 1_000_000,
    port: int = 8000,
    stop: threading.Event | None = None,
    headers: dict[str, str] | None = None,
) -> Result:
    """Send `batch` (FP32) to `model` at host:port from `concurrency` threads until a bound is hit
    (`headers` go with every request: an inference token)."""
    check_loopback(host)
    stop = stop or threading.Event()
    result = Result()
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker() -> None:
        client = triton_http.InferenceServerClient(
            f"{host}:{port}", connection_timeout=10, network_timeout=30
        )
        request = triton_http.InferInput(input_name, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if result.requests >= max_requests:
                        return
                    result.requests += 1
                t0 = time.perf_counter()
                try:
                    client.infer(model, [request], headers=headers)
                except Exception as exc:
                    with lock:
                        result.errors += 1
                        result.first_error = result.first_error or repr(exc)
                    continue
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    result.latencies_ms.append(elapsed)
        finally:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    result.seconds = time.monotonic() - started
    return result
