"""Batching and autoscaling benchmark (issue #11): writes bench/results/batching.json.

A. Triton dynamic batching vs none on the digits model at concurrency 16. Two repositories built by
   the real builder CLI from the same model (onnx through the python backend, CPU, maxBatchSize 64),
   one with dynamic_batching (max queue delay 500 us), one without; each served by the real
   tritonserver on 127.0.0.1; tests/support/loadgen.py sends single-sample requests from 16 closed-loop
   clients (bounded by time). Rounds alternate between the two servers so that the machine's other
   load hits both alike; the JSON keeps every round and the median of the rounds.
B. Time from load start to the HPA's scale-up decision: the e2e test
   tests/monitoring/test_metrics_e2e.py::test_hpa_scales_on_triton_queue_time_and_back run as it is
   (real Prometheus, prometheus-adapter, HPA, node agent), with CONCH_HPA_TIMINGS pointing at a file
   where it writes what it measured. It needs a cluster whose apiserver has testenv/cluster.sh's
   front-proxy flags (CONCH_CLUSTER_DIR and the port variables select one, as for the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import digits_model, loadgen

ROOT = Path(__file__).resolve().parent

MODEL = "digits"
KEYS = ("throughput_rps", "p50_ms", "p99_ms")
HPA_RUNS = 3
CONCURRENCY, ROUND_S, ROUNDS, WARMUP_S = 16, 10.0, 3, 2.0
BASE = {"quantize": {"mode": "none"}, "export": {"format": "onnx", "backend": "python"}}
VARIANTS: dict[str, dict[str, Any]] = {
    "dynamic-batching": {"instanceKind": "KIND_CPU", "maxBatchSize": 64,
                         "dynamicBatching": {"enabled": True, "maxQueueDelayMicroseconds": 500}},
    "no-batching": {"instanceKind": "KIND_CPU", "maxBatchSize": 64, "dynamicBatching": {"enabled": False}},
}  # fmt: skip


def build(variant: str, source: Path, store: Path) -> Path:
    recipe = BASE | {"triton": VARIANTS[variant]}
    cmd = [sys.executable, "-m", "model_repo_builder", "build", str(source), "--out", str(store),
           "--recipe-json", json.dumps(recipe), "--model-name", MODEL,
           "--input", f"{digits_model.INPUT}:float32:64"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} build failed (rc={proc.returncode}): {proc.stderr[-3000:]}")
    repo = Path(json.loads(proc.stdout.strip().splitlines()[-1])["repository"])
    config = (repo / MODEL / "config.pbtxt").read_text()
    assert ("dynamic_batching" in config) == (variant == "dynamic-batching"), config
    return repo


def batching(work: Path) -> dict[str, Any]:
    from tests.support.triton import run_triton

    model, _ = digits_model.train()
    source = digits_model.save(model, work / "models" / "digits.pt2")
    sample = digits_model.dataset()[0][:1].numpy()
    repos = {v: build(v, source, work / "store") for v in VARIANTS}
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with contextlib.ExitStack() as stack:
        hosts = {v: stack.enter_context(run_triton(repo, work / f"triton-{v}")) for v, repo in repos.items()}
        for _ in range(ROUNDS):
            for v, server in hosts.items():
                for seconds in (WARMUP_S, ROUND_S):  # the warm-up round is not kept
                    result = loadgen.run(
                        "127.0.0.1", MODEL, digits_model.INPUT, sample,
                        concurrency=CONCURRENCY, duration=seconds, port=server.http,
                    )  # fmt: skip
                if result.errors:
                    raise RuntimeError(f"{v}: {result.errors} errors, first {result.first_error}")
                rounds[v].append(result.summary())
                print(v, result.summary(), flush=True)
    out: dict[str, Any] = {}
    for v, rs in rounds.items():
        out[v] = {
            "config": VARIANTS[v],
            "median": {
                k: statistics.median(r[k] for r in rs) for k in ("throughput_rps", "p50_ms", "p99_ms")
            },
            "rounds": rs,
        }
    dyn, none = out["dynamic-batching"]["median"], out["no-batching"]["median"]
    out["throughputRatio"] = round(dyn["throughput_rps"] / none["throughput_rps"], 2)
    return out


def hpa(work: Path) -> dict[str, Any]:
    """The e2e HPA test HPA_RUNS times (each a fresh namespace, build and Triton); every run's timings."""
    test = "tests/monitoring/test_metrics_e2e.py::test_hpa_scales_on_triton_queue_time_and_back"
    runs: list[dict[str, Any]] = []
    for i in range(HPA_RUNS):
        timings = work / f"hpa-{i}.json"
        env = {**os.environ, "CONCH_HPA_TIMINGS": str(timings)}
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-q", "-x", "-p", "no:cacheprovider"],
            cwd=ROOT.parent, env=env, capture_output=True, text=True, check=False, timeout=1200,
        )  # fmt: skip
        if proc.returncode != 0 or not timings.exists():
            failed = {"error": f"the HPA test failed (rc={proc.returncode})", "output": proc.stdout[-3000:]}
            runs.append(failed)
            continue
        run: dict[str, Any] = json.loads(timings.read_text())
        run["testWallSeconds"] = round(time.monotonic() - start, 1)
        runs.append(run)
        print("hpa", run, flush=True)
    ok = [r for r in runs if "error" not in r]
    keys = ("loadStartToScaleUpDecisionSeconds", "loadStartToTwoReadySeconds", "loadStopToOneReplicaSeconds")
    median = {k: statistics.median(r[k] for r in ok) for k in keys} if ok else {}
    return {"median": median, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("batching", "hpa"), help="one part; the other's last result stays")
    args = parser.parse_args()
    path = ROOT / "results" / "batching.json"
    report: dict[str, Any] = json.loads(path.read_text()) if args.only and path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        work = Path(tmp)
        report |= {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg1": round(os.getloadavg()[0], 2)},
            "load": {"concurrency": CONCURRENCY, "roundSeconds": ROUND_S, "rounds": ROUNDS,
                     "samplesPerRequest": 1, "address": "127.0.0.1"},
        }  # fmt: skip
        if args.only in (None, "batching"):
            report["batching"] = batching(work)
        if args.only in (None, "hpa"):
            report["hpaScaleUp"] = hpa(work)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report.get(k) for k in ("batching", "hpaScaleUp")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
