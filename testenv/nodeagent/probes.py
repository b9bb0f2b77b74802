"""Container probes as a kubelet runs them: startup gates liveness and readiness; thresholds count.

Only httpGet and tcpSocket probes exist here (exec would need the image's filesystem). Probe traffic
goes only to the pod's own 127.x address.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass
class Probe:
    """One probe of one container, with its counters and schedule (times are time.monotonic())."""

    kind: str  # startupProbe | readinessProbe | livenessProbe
    spec: Obj
    port: int
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    passing: bool | None = None  # None until its threshold first decides

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def arm(self, now: float) -> None:
        """(Re)start after the container (re)starts: initial delay, counters cleared."""
        self.next_at = now + float(self.spec.get("initialDelaySeconds", 0))
        self.successes = self.failures = 0
        self.passing = None

    def record(self, ok: bool, now: float) -> bool | None:
        """Count one result; returns the new verdict when a threshold flips it, else None."""
        self.next_at = now + self.period
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.passing is not True and self.successes >= int(self.spec.get("successThreshold", 1)):
                self.passing = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.passing is not False and self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.passing = False
                return False
        return None

    def check(self, host: str) -> bool:
        """Run the probe once against `host` (the pod IP)."""
        timeout = float(self.spec.get("timeoutSeconds", 1))
        if "httpGet" in self.spec:
            return http_ok(host, self.port, str(self.spec["httpGet"].get("path", "/")), timeout)
        return tcp_ok(host, self.port, timeout)


def http_ok(host: str, port: int, path: str, timeout: float) -> bool:
    """A kubelet httpGet: success is a status in [200, 400)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "conch-node-agent/probe"})
        return 200 <= conn.getresponse().status < 400
    except OSError:
        return False
    finally:
        conn.close()


def tcp_ok(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
