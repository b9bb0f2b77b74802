"""The pure half of canary quality analysis: comparing answers, the worst pod, the verdict, the line."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from model_repo_builder.gate import analyze, tritonhttp

pytestmark = pytest.mark.unit


def _logits(seed: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 10)).astype(np.float32)


def test_identical_answers_agree_fully() -> None:
    a = {"y": _logits(0)}
    metrics = analyze.compare_answers(a, {"y": a["y"].copy()})
    assert metrics == {"maxAbsError": 0.0, "meanAbsError": 0.0, "cosine": 1.0, "top1Agreement": 1.0}


def test_labels_agree_by_equality_and_one_score_has_no_cosine() -> None:
    stable = {
        "label": np.array([["pos"], ["neg"], ["pos"], ["neg"]]),
        "score": np.full((4, 1), 0.9, np.float32),
    }
    canary = {
        "label": np.array([["pos"], ["pos"], ["pos"], ["neg"]]),
        "score": np.full((4, 1), 0.7, np.float32),
    }
    metrics = analyze.compare_answers(stable, canary)
    assert metrics["top1Agreement"] == 0.75 and metrics["maxAbsError"] == pytest.approx(0.2)
    assert "cosine" not in metrics


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ({"z": _logits(0)}, "outputs differ"),
        ({"y": _logits(0, n=8)}, "shape mismatch"),
        ({"y": np.full((16, 10), np.nan, np.float32)}, "non-finite"),
        ({"y": np.array([["a"] * 10] * 16)}, "are not numbers like the stable's"),
    ],
)
def test_broken_answers_fail_outright(canary: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(analyze.QualityFailed, match=message):
        analyze.compare_answers({"y": _logits(0)}, canary)


def test_the_worst_pod_counts() -> None:
    pods = [
        {"cosine": 0.999, "top1Agreement": 1.0, "maxAbsError": 0.1, "meanAbsError": 0.01},
        {"cosine": 0.97, "top1Agreement": 0.99, "maxAbsError": 0.05, "meanAbsError": 0.02},
    ]
    assert analyze.worst(pods) == {
        "cosine": 0.97,
        "top1Agreement": 0.99,
        "maxAbsError": 0.1,
        "meanAbsError": 0.02,
    }


@pytest.mark.parametrize(
    ("thresholds", "failing", "skipped"),
    [
        (analyze.Thresholds(), None, []),
        (analyze.Thresholds(min_cosine=0.999), "cosine", []),
        (analyze.Thresholds(min_top1_agreement=1.0), "top1Agreement", []),
        (analyze.Thresholds(max_abs_error=0.1), "maxAbsError", []),
        (analyze.Thresholds(None, None, None), None, []),
    ],
)
def test_judge(thresholds: analyze.Thresholds, failing: str | None, skipped: list[str]) -> None:
    metrics = {"cosine": 0.995, "top1Agreement": 0.97, "maxAbsError": 0.3}
    verdict, missing = analyze.judge(metrics, thresholds)
    assert (verdict or {}).get("metric") == failing and missing == skipped


def test_a_bound_without_its_metric_is_skipped_not_failed() -> None:
    verdict, skipped = analyze.judge({"cosine": 0.999}, analyze.Thresholds(0.99, 0.95, None))
    assert verdict is None and skipped == ["minTop1Agreement"]


def test_the_line_fits_a_termination_message() -> None:
    result = {
        "result": "error",
        "passed": False,
        "reason": "x" * 10_000,
        "reference": {"a": 1},
        "canary": ["c"] * 9,
    }
    line = analyze.dumps(result)
    assert len(line.encode()) <= analyze.MAX_LINE
    assert (
        json.loads(line)["reason"].endswith("...")
        and analyze.exit_code(result) == analyze.EXIT_CANNOT_ANALYSE
    )
    assert analyze.exit_code({"result": "failed"}) == 4 and analyze.exit_code({"result": "passed"}) == 0


def test_the_budget_stops_at_its_count_and_its_deadline() -> None:
    budget = tritonhttp.Budget(tritonhttp.Limits(max_requests=2))
    budget.spend("a:1")
    budget.spend("a:1")
    with pytest.raises(tritonhttp.OutOfBudgetError, match=r"request budget spent \(2\) before a:1"):
        budget.spend("a:1")
    late = tritonhttp.Budget(tritonhttp.Limits(deadline=5.0), started=time.monotonic() - 6.0)
    with pytest.raises(tritonhttp.OutOfBudgetError, match="deadline of 5s passed before b:2"):
        late.spend("b:2")
    assert late.requests == 0


def test_greedy_answers_agree_position_by_position() -> None:
    from model_repo_builder.gate import generationprobes, probes

    def answers(*texts: str) -> dict[str, np.ndarray]:
        return {probes.ANSWER_OUTPUT: np.array(texts).reshape(-1, 1)}

    stable = answers("Paris is the capital", "two plus two is four")
    twin = answers("Paris is the capital", "two plus two is four")
    same = generationprobes.compare(stable, twin, str.split)
    assert same == {"greedyAgreement": 1.0, "identicalAnswers": 1.0}
    # 4 + 5 positions: the first answer agrees on "Paris" only ("was" differs, two words are missing)
    other = generationprobes.compare(stable, answers("Paris was", "two plus two is four"), str.split)
    assert other == {"greedyAgreement": round(6 / 9, 6), "identicalAnswers": 0.5}
    failing, skipped = analyze.judge(other, analyze.Thresholds(min_greedy_agreement=0.9))
    assert failing == {"metric": "greedyAgreement", "value": round(6 / 9, 6), "bound": "minGreedyAgreement",
                       "threshold": 0.9}  # fmt: skip
    assert skipped == ["minCosine", "minTop1Agreement"]  # a generator has no tensors to compare
