"""Quality analysis of a canary on real tritonservers: `model-repo-builder analyze` sends the stable
build's probe set to a canary and a stable Triton and judges the canary by the answers.

Three servers, each serving a digits MLP and a tiny BERT sentiment classifier under the same names,
as a canary and the stable version would: `stable` and `same` serve the same builds; `other` serves
models with other weights (the digits MLP trained 20 epochs instead of 40 and built with max batch 8
instead of 16, the classifier 15 steps from another seed instead of 80), each of which passed its own
build gate. The same builds agree on every probe; the other weights fail with the metric named; an
unreachable canary or a missing probe file cannot be analysed and says which address or file.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builder import textmodels

from conch.render import secret
from model_repo_builder.cli import main
from model_repo_builder.gate import analyze
from tests.support import digits_model
from tests.support.processes import free_port
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
DIGITS = {
    "quantize": {"mode": "fp16"},
    "export": {"backend": "python"},
    "triton": {"instanceKind": "KIND_CPU", "maxBatchSize": 16},
    "gate": {"minCosine": 0.99, "minTop1Agreement": 0.9},
}
SENTIMENT = {
    "quantize": {"mode": "none"},
    "export": {"backend": "python"},
    "triton": {"instanceKind": "KIND_CPU", "maxBatchSize": 8},
    "text": {"task": "text-classification"},
}


def _build(source: Path, store: Path, name: str, recipe: dict[str, Any], *extra: str) -> Path:
    summary = store.parent / f"{store.name}-{name}.json"
    args = ["build", str(source), "--out", str(store), "--model-name", name, "--summary-file", str(summary)]
    assert main([*args, "--recipe-json", json.dumps(recipe), *extra]) == 0
    return Path(json.loads(summary.read_text())["repository"])


@dataclass
class Fleet:
    stable: Triton
    same: Triton
    other: Triton
    digits: Path  # the stable digits build (its probes.npz)
    sentiment: Path


@pytest.fixture(scope="module")
def fleet(serving_dir: Path, sentiment_checkpoint: Path) -> Iterator[Fleet]:
    work = serving_dir / "quality"
    work.mkdir()
    x, y = digits_model.dataset()
    np.savez(work / "val.npz", pixels=x[:200].numpy(), labels=y[:200].numpy())
    repos: dict[str, list[Path]] = {}
    for kind, epochs, batch, checkpoint in (
        ("stable", 40, 16, sentiment_checkpoint),
        ("other", 20, 8, textmodels.tiny_classifier(work / "sentiment-b", steps=15, seed=1)),
    ):
        source = digits_model.save(digits_model.train(epochs)[0], work / f"digits-{epochs}.pt2")
        store = work / f"store-{kind}"
        recipe = {**DIGITS, "triton": {**DIGITS["triton"], "maxBatchSize": batch}}
        digits = _build(source, store, "digits", recipe, "--input", "pixels:float32:64",
                        "--validation-data", str(work / "val.npz"), "--validation-samples", "64")  # fmt: skip
        repos[kind] = [digits, _build(checkpoint, store, "sentiment", SENTIMENT)]
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, kind in (("stable", "stable"), ("same", "stable"), ("other", "other")):
            (work / name).mkdir()
            hardened = secret.hardening_args(secret.new_key())  # as the operator runs Triton
            servers[name] = stack.enter_context(run_triton(repos[kind], work / name, hardened))
        yield Fleet(servers["stable"], servers["same"], servers["other"], *repos["stable"])


def _analyze(
    probes: Path, canary: str, stable: str, tmp_path: Path, *flags: str
) -> tuple[int, dict[str, Any]]:
    summary = tmp_path / "termination-log"
    args = ["analyze", "--probes", str(probes), "--canary", canary, "--stable", stable]
    code = main([*args, "--summary-file", str(summary), "--deadline-seconds", "60", *flags])
    line = summary.read_text()
    assert len(line.encode()) <= analyze.MAX_LINE and "\n" not in line
    return code, json.loads(line)


def test_the_same_build_passes(fleet: Fleet, tmp_path: Path) -> None:
    code, result = _analyze(fleet.digits, fleet.same.http_url, fleet.stable.http_url, tmp_path)
    assert (code, result["result"], result["passed"], result["failing"]) == (0, "passed", True, None)
    metrics = result["metrics"]
    assert metrics["cosine"] == pytest.approx(1.0, abs=1e-6) and metrics["top1Agreement"] == 1.0
    assert metrics["maxAbsError"] == 0.0
    assert result["probes"]["count"] == 64 and result["requests"] == 8  # 64 probes in batches of 16, x 2
    assert result["bounds"] == {
        "minCosine": 0.99, "minTop1Agreement": 0.95, "maxAbsError": None, "minGreedyAgreement": None
    }  # fmt: skip
    # both answer like the original model did at build time (fp16 on a python backend: close, not equal)
    for side in ("canary", "stable"):
        assert (
            result["reference"][side]["cosine"] > 0.999 and result["reference"][side]["top1Agreement"] == 1.0
        )


@pytest.mark.parametrize(
    ("flags", "metric", "bound"),
    [
        ((), "cosine", "minCosine"),
        (("--min-cosine", "none"), "top1Agreement", "minTop1Agreement"),
        (
            ("--min-cosine", "0", "--min-top1-agreement", "0", "--max-abs-error", "1"),
            "maxAbsError",
            "maxAbsError",
        ),
    ],
)
def test_other_weights_fail_with_the_metric_named(
    fleet: Fleet, tmp_path: Path, flags: tuple[str, ...], metric: str, bound: str
) -> None:
    code, result = _analyze(fleet.digits, fleet.other.http_url, fleet.stable.http_url, tmp_path, *flags)
    assert (code, result["result"], result["passed"]) == (analyze.EXIT_QUALITY_FAILED, "failed", False)
    failing = result["failing"]
    assert (failing["metric"], failing["bound"]) == (metric, bound)
    assert failing["value"] == result["metrics"][metric]
    assert f"{metric} " in result["reason"] and bound in result["reason"]
    assert fleet.other.http_url in result["reason"]
    assert result["requests"] == 64 // 16 + 64 // 8  # each pod in batches of its own max batch size
    assert result["reference"]["stable"]["cosine"] > 0.999 > result["reference"]["canary"]["cosine"]


def test_text_labels_are_compared(fleet: Fleet, tmp_path: Path) -> None:
    code, same = _analyze(fleet.sentiment, fleet.same.http_url, fleet.stable.http_url, tmp_path)
    assert code == 0 and same["metrics"]["top1Agreement"] == 1.0 and same["metrics"]["maxAbsError"] == 0.0
    assert "cosine" not in same["metrics"] and same["probes"]["count"] == 32  # the built-in sentences
    code, other = _analyze(fleet.sentiment, fleet.other.http_url, fleet.stable.http_url, tmp_path)
    assert code == analyze.EXIT_QUALITY_FAILED, other
    assert other["failing"]["metric"] == "top1Agreement" and other["metrics"]["top1Agreement"] < 0.95
    assert "minCosine" in other["skipped"]  # one score per text: no cosine to judge


def test_a_user_probe_file(fleet: Fleet, tmp_path: Path) -> None:
    texts = tmp_path / "probes.txt"
    texts.write_text("I loved it.\nThis was terrible.\n")
    code, result = _analyze(
        texts, fleet.same.http_url, fleet.stable.http_url, tmp_path, "--model-name", "sentiment"
    )
    assert code == 0 and result["probes"] == {"count": 2, "file": str(texts), "origin": "probes.txt"}
    assert "reference" not in result  # a user's file has no original answers


def test_an_unreachable_canary_cannot_be_analysed(fleet: Fleet, tmp_path: Path) -> None:
    """Through the console script, as the analysis Job runs it: the exit code and the message line."""
    nobody = f"127.0.0.1:{free_port()}"
    script = Path(sys.executable).parent / "model-repo-builder"
    log = tmp_path / "termination-log"
    proc = subprocess.run(
        [str(script), "analyze", "--probes", str(fleet.digits), "--canary", nobody,
         "--stable", fleet.stable.http_url, "--timeout-seconds", "5", "--summary-file", str(log)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == analyze.EXIT_CANNOT_ANALYSE, proc.stderr
    result = json.loads(log.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    assert (result["result"], result["passed"]) == ("error", False)
    assert result["reason"].startswith(f"cannot analyse: cannot reach canary {nobody}")


def test_a_missing_probe_set_cannot_be_analysed(fleet: Fleet, tmp_path: Path) -> None:
    code, result = _analyze(tmp_path, fleet.same.http_url, fleet.stable.http_url, tmp_path)
    assert code == analyze.EXIT_CANNOT_ANALYSE and result["requests"] == 0
    assert f"{tmp_path} has no probes.npz" in result["reason"]


def test_a_gone_stable_pod_is_skipped_for_the_next(fleet: Fleet, tmp_path: Path) -> None:
    gone = f"127.0.0.1:{free_port()}"
    summary = tmp_path / "termination-log"
    args = ["analyze", "--probes", str(fleet.digits), "--canary", fleet.same.http_url,
            "--stable", gone, "--stable", fleet.stable.http_url, "--summary-file", str(summary)]  # fmt: skip
    assert main(args) == 0
    assert json.loads(summary.read_text())["stable"] == fleet.stable.http_url


def test_the_request_budget_holds(fleet: Fleet, tmp_path: Path) -> None:
    code, result = _analyze(
        fleet.digits, fleet.same.http_url, fleet.stable.http_url, tmp_path, "--max-requests", "5"
    )
    assert code == analyze.EXIT_CANNOT_ANALYSE and result["requests"] == 5  # 4 to the stable, 1 to the canary
    assert f"request budget spent (5) before {fleet.same.http_url} answered" in result["reason"]
