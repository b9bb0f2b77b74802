"""A reconcile pass works its facts out once: one spec parse and one spec-key hash per pass.

The controller asks `decide.analysis_query` and then `decide.decide` about the same pass; both read
the one context `decide.prepare` gathered (conch.passctx), so neither parses the spec nor hashes it
again, for a rolling pass and for a canary pass whose analysis is due alike. The passes here go
through `controller.reconcile` itself, with its reads (the snapshot, Prometheus) and its act step
stood in for, on the worlds of the decide table tests.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import test_decide_unit as tables

from conch import canary, controller, decide, plan, rollout, snapshot
from conch.api import keys, types

pytestmark = pytest.mark.unit

PASSED = canary.Measurement("Passed", (), "successRate 1 >= 0.99")


def _counted(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Count spec parses, spec-key hashes and history walks for the ready versions."""
    calls: collections.Counter[str] = collections.Counter()
    parse, spec_key, built = types.ModelDeploymentSpec.model_validate, keys.spec_key, rollout.built

    def counting_parse(obj: Any, *args: Any, **kwargs: Any) -> types.ModelDeploymentSpec:
        calls["parse"] += 1
        return parse(obj, *args, **kwargs)

    def counting_key(spec: types.ModelDeploymentSpec) -> str:
        calls["key"] += 1
        return spec_key(spec)

    def counting_built(history: Any) -> Any:
        calls["built"] += 1
        return built(history)

    monkeypatch.setattr(types.ModelDeploymentSpec, "model_validate", counting_parse)
    monkeypatch.setattr(keys, "spec_key", counting_key)
    monkeypatch.setattr(rollout, "built", counting_built)
    return calls


def _reconcile(monkeypatch: pytest.MonkeyPatch, w: tables.World) -> tuple[plan.Plan, list[snapshot.Query]]:
    """One controller pass over the world's snapshot; Prometheus answers PASSED."""
    asked: list[snapshot.Query] = []
    acted: list[plan.Plan] = []

    def measure(query: snapshot.Query) -> canary.Measurement:
        asked.append(query)
        return PASSED

    def act(client: Any, md: Any, decided: plan.Plan) -> list[Any]:
        acted.append(decided)
        return []

    monkeypatch.setattr(snapshot, "observe", lambda client, namespace, name, now, recheck=(): w.snap())
    monkeypatch.setattr(snapshot, "measure", measure)
    monkeypatch.setattr(controller, "act", act)
    controller.reconcile(None, tables.NS, tables.NAME)  # type: ignore[arg-type]  # never read: observe is the world
    assert len(acted) == 1
    return acted[0], asked


def test_a_rolling_pass_parses_and_hashes_the_spec_once(monkeypatch: pytest.MonkeyPatch) -> None:
    w = tables.World(tables.md_obj())
    w.serve("v1")
    w.edit(version="v2", model={"name": "digits", "source": {"path": "m2.pt2"}})
    w.run()
    w.finish_build()
    calls = _counted(monkeypatch)
    p, asked = _reconcile(monkeypatch, w)
    assert asked == [], "a rolling update asks Prometheus nothing"
    assert p.new_status is not None and p.new_status.phase == "RollingOut"
    assert calls == {"parse": 1, "key": 1, "built": 1}


def test_a_canary_pass_with_a_due_analysis_parses_and_hashes_the_spec_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = tables.canary_world()
    for _ in range(6):  # until the first step's pods are ready, then the analysis interval
        w.run()
        st = types.ModelDeploymentStatus.model_validate(w.md["status"]).canary
        if st is not None and st.step_started_at is not None:
            break
    w.now += 30
    assert decide.analysis_query(w.snap()) is not None, "the analysis is due"
    calls = _counted(monkeypatch)
    p, asked = _reconcile(monkeypatch, w)
    assert len(asked) == 1 and 'serving_conch_dev_version="v2"' in asked[0].queries["canary_success"]
    assert tables.metric(p, "CANARY_ANALYSES", "passed", "metrics") == 1, "decide read the answer"
    assert calls == {"parse": 1, "key": 1, "built": 1}
