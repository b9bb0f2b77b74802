"""The distillation summary and the precision ladder's outcome, from the builder's summary to status."""

from __future__ import annotations

import json

import pytest

from conch import build, status
from conch.api import keys, types
from model_repo_builder import summary

pytestmark = pytest.mark.unit

RECORD = {
    "buildKey": "k" * 64,
    "distill": {
        "steps": 1000,
        "wallSeconds": 12.5,
        "lossCurve": {"first": 2.1, "last": 0.07, "min": 0.05, "points": [[50, 2.1]]},
        "student": {"kind": "channel-pruned", "parametersBefore": 4970, "parametersAfter": 2430},
    },
    "quantize": {
        "published": "fp16",
        "ladder": ["int8-static", "fp16"],
        "attempts": [
            {"mode": "int8-static", "passed": False, "metric": "cosine", "value": 0.93, "threshold": 0.99,
             "field": "minCosine"},
            {"mode": "fp16", "passed": True},
        ],
    },
}  # fmt: skip


def test_summary_carries_distillation_and_ladder_to_the_built_condition() -> None:
    line = summary.dumps(summary.make_summary({}, RECORD, False, None))
    ok, parsed, error = build.parse_summary(line)
    assert ok and error is None
    note = status.outcome_note(parsed)
    assert note == (
        "distilled 1000 steps in 12.5s, loss 2.1 -> 0.07, student channel-pruned; "
        "published fp16 (int8-static failed: cosine 0.93 < minCosine 0.99)"
    )
    entry = types.HistoryEntry.model_validate(
        {"version": "v2", "specKey": "s", "jobName": "j", "result": "Succeeded", "modelName": "m",
         "summary": parsed.model_dump(by_alias=True), "startedAt": "2026-01-01T00:00:00Z"}
    )  # fmt: skip
    assert entry.summary is not None and entry.summary.distill == json.loads(line)["distill"]


def test_no_ladder_no_distill_adds_nothing() -> None:
    plain = {"buildKey": "k" * 64, "quantize": {"published": "fp16", "ladder": ["fp16"], "attempts": []}}
    s = summary.make_summary({}, plain, False, None)
    assert "distill" not in s and "quantize" not in s
    assert status.outcome_note(build.parse_summary(summary.dumps(s))[1]) == ""


def test_long_rung_errors_still_fit_the_termination_message() -> None:
    record = json.loads(json.dumps(RECORD))
    record["quantize"]["attempts"][0] = {"mode": "int8-static", "passed": False, "error": "x" * 10_000}
    line = summary.dumps(summary.make_summary({}, record, False, None))
    assert len(line.encode()) <= 4096
    assert len(json.loads(line)["quantize"]["failed"][0]["error"]) == summary.ERROR_CHARS


def test_distill_and_fallback_change_the_spec_key_only_when_set() -> None:
    base = {
        "version": "v1",
        "model": {"name": "m", "source": {"path": "m.onnx"}},
        "storage": {"claimName": "s"},
    }
    plain = keys.spec_key(types.ModelDeploymentSpec.model_validate(base))
    unset = {**base, "compression": {"prune": {"method": "channel", "amount": 0.3}}}
    compression = {"prune": {"method": "channel", "amount": 0.3}, "distill": {"dataPath": "d/train.npz"}}
    with_distill = {**base, "compression": {**compression, "fallback": ["fp16"]}}
    key_unset = keys.spec_key(types.ModelDeploymentSpec.model_validate(unset))
    key_distill = keys.spec_key(types.ModelDeploymentSpec.model_validate(with_distill))
    assert len({plain, key_unset, key_distill}) == 3
    assert '"distill"' not in keys.recipe_json(types.ModelDeploymentSpec.model_validate(unset))
    assert '"fallback":["fp16"]' in keys.recipe_json(types.ModelDeploymentSpec.model_validate(with_distill))
