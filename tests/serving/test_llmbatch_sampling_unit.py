"""The batched decoder's sampling (llmbatch.Slot.sample), pure numpy: greedy is the argmax, top_k 1 and a
tiny top_p leave only the most likely token, top_k never draws outside the k best, and a seed repeats."""

from __future__ import annotations

import numpy as np
import pytest

from model_repo_builder.triton.python_backend import llmbatch

pytestmark = pytest.mark.unit
LOGITS = np.array([0.1, 2.0, 1.9, -3.0, 1.0, 0.5], dtype=np.float32)


def _slot(seed: int | None = 0) -> llmbatch.Slot:
    return llmbatch.Slot(row=0, length=1, logits=LOGITS.copy(), rng=np.random.default_rng(seed))


def test_greedy_and_filters_that_leave_one_token_give_the_argmax() -> None:
    assert _slot().sample(0.0, 1.0, 0) == 1
    assert {_slot(seed).sample(1.0, 1.0, 1) for seed in range(20)} == {1}
    assert {_slot(seed).sample(1.0, 1e-6, 0) for seed in range(20)} == {1}


def test_top_k_draws_only_among_the_k_best_and_top_p_keeps_the_head() -> None:
    assert {_slot(seed).sample(5.0, 1.0, 2) for seed in range(200)} == {1, 2}
    drawn = {_slot(seed).sample(5.0, 0.5, 0) for seed in range(200)}
    assert drawn <= {1, 2, 4} and 3 not in drawn  # the unlikely tail is cut at high temperature


def test_a_seed_repeats_its_draws_and_sampling_does_not_touch_the_logits() -> None:
    first, second = _slot(7), _slot(7)
    assert [first.sample(1.5, 0.95, 0) for _ in range(10)] == [second.sample(1.5, 0.95, 0) for _ in range(10)]
    assert np.array_equal(first.logits, LOGITS) and first.token is not None
