"""Auth overhead benchmark (issue 22): writes bench/results/auth.json.

What spec.auth costs a served request: the same tritonserver (a python-backend model, Y = 2X, batch
of 1 x 4 FP32, tests/support/authproxy.py) asked over HTTP directly and through the auth proxy
(`conch-gateway auth-proxy`, the token checked on every request), at concurrency 8 from closed-loop
clients (tests/support/loadgen.py), side by side in one run: rounds alternate between the two paths
so the machine's other load hits both alike; the JSON keeps every round and the median of the rounds.
The proxy's cost is the relay hop plus the check (the check alone is a constant-time compare against
each valid token; the hop dominates). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import secrets
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import loadgen
from tests.support.authproxy import DOUBLE_MODEL, double_repository, run_auth_proxy
from tests.support.triton import run_triton

ROOT = Path(__file__).resolve().parent
KEYS = ("throughput_rps", "p50_ms", "p99_ms")
CONCURRENCY, ROUND_S, ROUNDS, WARMUP_S = 8, 8.0, 3, 2.0
BATCH = np.ones((1, 4), np.float32)


def one_round(port: int, headers: dict[str, str] | None, seconds: float) -> dict[str, float | int]:
    result = loadgen.run(
        "127.0.0.1", DOUBLE_MODEL, "X", BATCH, concurrency=CONCURRENCY, duration=seconds, port=port,
        headers=headers,
    )  # fmt: skip
    if result.errors:
        raise SystemExit(f"bench_auth: {result.errors} failed requests on port {port}: {result.first_error}")
    return result.summary()


def measure(work: Path) -> dict[str, Any]:
    token = secrets.token_urlsafe(32)
    tokens = work / "tokens"
    tokens.mkdir()
    (tokens / "token").write_text(token)
    repo = double_repository(work / "repo")
    with run_triton(repo, work) as triton, run_auth_proxy(triton, tokens, work) as proxy:
        paths = {
            "direct": (triton.http, None),
            "auth-proxy": (proxy.http, {"Authorization": f"Bearer {token}"}),
        }
        for port, headers in paths.values():
            one_round(port, headers, WARMUP_S)
        runs: dict[str, list[dict[str, float | int]]] = {name: [] for name in paths}
        for _ in range(ROUNDS):
            for name, (port, headers) in paths.items():
                runs[name].append(one_round(port, headers, ROUND_S))
        refused = proxy.metric_lines("conch_auth_refusals_total")
    median = {
        name: {k: statistics.median(float(r[k]) for r in rs) for k in KEYS} for name, rs in runs.items()
    }
    overhead = {
        "p50_ms": round(median["auth-proxy"]["p50_ms"] - median["direct"]["p50_ms"], 2),
        "p99_ms": round(median["auth-proxy"]["p99_ms"] - median["direct"]["p99_ms"], 2),
    }
    return {"median": median, "overhead": overhead, "runs": runs, "refusals": refused}


def main() -> None:
    path = ROOT / "results" / "auth.json"
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        report = {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg1": round(os.getloadavg()[0], 2)},
            "load": {"concurrency": CONCURRENCY, "roundSeconds": ROUND_S, "rounds": ROUNDS,
                     "request": "HTTP/JSON infer, 1 x 4 FP32", "address": "127.0.0.1"},
            **measure(Path(tmp)),
        }  # fmt: skip
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("median", "overhead")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
