"""Unit tests of the pure state machines: build results, rollout decisions, conditions, apply's diff."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from conch import apply, build, rollout, status
from conch.api import types

pytestmark = pytest.mark.unit


def summary(ok: bool = True, **over: Any) -> str:
    data: dict[str, Any] = {
        "ok": ok, "buildKey": "abc123", "repository": "/store/repositories/abc123", "modelName": "m",
        "cached": False, "builderVersion": "0.1.0", "sourceDigest": "sha256:00", "sizeBefore": 100,
        "sizeAfter": 40, "compressionRatio": 2.5, "gate": {"passed": ok, "cosine": 0.999},
        "error": None if ok else {"kind": "gate-failed", "message": "cosine 0.9 < 0.99"},
    }  # fmt: skip
    data.update(over)
    return json.dumps(data)


def job(condition: str | None) -> dict[str, Any]:
    conds = [{"type": condition, "status": "True", "reason": "R", "message": "m"}] if condition else []
    return {"metadata": {"name": "j"}, "status": {"conditions": conds}}


def builder_pod(message: str | None) -> dict[str, Any]:
    term = {"exitCode": 0, "finishedAt": "2026-01-01T00:00:00Z", "message": message}
    return {"status": {"containerStatuses": [{"name": "builder", "state": {"terminated": term}}]}}


def waiting_pod(reason: str, message: str) -> dict[str, Any]:
    waiting = {"reason": reason, "message": message}
    return {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "builder", "state": {"waiting": waiting}}]},
    }


def oom_pod() -> dict[str, Any]:
    term = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "message": "last log lines",
        "finishedAt": "2026-01-01T00:00:00Z",
    }
    return {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "builder", "state": {"terminated": term}}]},
    }


SCRATCH_FULL = 'Usage of EmptyDir volume "tmp" exceeds the limit "200Gi". '


def evicted_pod(message: str = SCRATCH_FULL) -> dict[str, Any]:
    """A builder pod the kubelet evicted: its container killed (its message: the last log lines)."""
    pod = builder_pod("[builder] fetch ...")
    pod["metadata"] = {"name": "p"}
    pod["status"]["containerStatuses"][0]["state"]["terminated"].update(
        exitCode=137, finishedAt="2025-12-31T00:00:00Z"
    )
    pod["status"].update({"phase": "Failed", "reason": "Evicted", "message": message})
    return pod


@pytest.mark.parametrize(
    ("job_obj", "pods", "result", "message"),
    [
        (None, [], "Building", None),
        (job(None), [], "Building", None),
        (job("Complete"), [builder_pod(summary())], "Succeeded", None),
        (job("Failed"), [builder_pod(summary(False))], "Failed", "gate-failed: cosine 0.9 < 0.99"),
        (job("Failed"), [], "Failed", "R: m"),
        (job("Complete"), [builder_pod("not json")], "Failed", "termination message is not JSON"),
        (job("Complete"), [builder_pod('{"no": 1}')], "Failed", "no boolean 'ok'"),
        (job("Complete"), [builder_pod(summary(buildKey=""))], "Failed", "no buildKey"),
        # a builder that cannot start says why while the Job waits; one killed for memory says so
        (
            job(None),
            [waiting_pod("ImagePullBackOff", 'Back-off pulling image "x:1"')],
            "Building",
            'builder pod p cannot start: ImagePullBackOff: Back-off pulling image "x:1"',
        ),
        (job(None), [waiting_pod("ContainerCreating", "")], "Building", None),
        (
            job("Failed"),
            [oom_pod()],
            "Failed",
            "OOMKilled: builder pod p went over its memory limit (exit code 137)",
        ),
        # evicted: its scratch volume outgrew the sizeLimit (the hint names the field), or the node's disk
        (
            job("Failed"),
            [evicted_pod()],
            "Failed",
            'Evicted: builder pod p: Usage of EmptyDir volume "tmp" exceeds the limit "200Gi"; '
            "/tmp holds 4 x spec.build.maxSourceSize: raise it",
        ),
        (
            job("Failed"),
            [evicted_pod("The node was low on resource: ephemeral-storage.")],
            "Failed",
            "low on",
        ),
        (job("Failed"), [evicted_pod(), builder_pod(summary(False))], "Failed", "gate-failed: cosine 0.9"),
    ],
)
def test_build_outcomes(job_obj: Any, pods: list[Any], result: str, message: str | None) -> None:
    outcome = build.observe(job_obj, pods)
    assert outcome.result == result
    if message is not None:
        assert outcome.message is not None and message in outcome.message
    else:
        assert outcome.message is None or result == "Failed"
    if result == "Succeeded":
        assert outcome.summary is not None and outcome.summary.build_key == "abc123"


def entry(version: str, result: str = "Succeeded") -> types.HistoryEntry:
    return types.HistoryEntry(
        version=version, spec_key="k" + version, job_name=f"j-{version}", result=result,  # type: ignore[arg-type]
        build_key=f"bk-{version}" if result == "Succeeded" else None, model_name="m", started_at="t",
    )  # fmt: skip


def dep(version: str, done: bool = True, deadline: bool = False) -> rollout.DeploymentState:
    return rollout.DeploymentState(
        exists=True, version=version, observed=True, desired=2, replicas=2 if done else 3,
        updated=2 if done else 1, available=2, ready=2, deadline_exceeded=deadline, message="timed out",
    )  # fmt: skip


def st(current: str | None = None, failed: str | None = None) -> types.ModelDeploymentStatus:
    return types.ModelDeploymentStatus(current_version=current, failed_version=failed)


def test_first_rollout_moves_current_only_when_complete() -> None:
    hist = [entry("v1")]
    assert rollout.decide("v1", hist, st(), rollout.DeploymentState(), True).current is None
    progressing = rollout.decide("v1", hist, st(), dep("v1", done=False), True)
    assert progressing.serve is not None and progressing.serve.build_key == "bk-v1"
    assert progressing.current is None
    assert rollout.decide("v1", hist, st(), dep("v1"), True).current == "v1"


def test_building_version_keeps_serving_current() -> None:
    d = rollout.decide("v2", [entry("v1"), entry("v2", "Building")], st("v1"), dep("v1"), True)
    assert d.serve is not None and d.serve.version == "v1" and d.current == "v1"
    assert d.keep_template  # v2's spec changes (e.g. a GPU) must not re-roll v1's pods while v2 builds
    served = rollout.decide("v2", [entry("v1"), entry("v2")], st("v1"), dep("v1"), True)
    assert not served.keep_template  # v2 is built: its template rolls out
    same = rollout.decide("v1", [entry("v1")], st("v1"), dep("v1"), True)
    assert not same.keep_template  # a serving-only edit of the served version rolls its pods


def test_deadline_rolls_back_then_new_version_is_fresh() -> None:
    hist = [entry("v1"), entry("v2"), entry("v3")]
    d = rollout.decide("v2", hist, st("v1"), dep("v2", done=False, deadline=True), True)
    assert d.rolled_back and d.failed == "v2" and d.serve is not None and d.serve.version == "v1"
    assert not d.keep_template  # the live pods run v2: v1 is rendered again
    again = rollout.decide("v2", hist, st("v1", failed="v2"), dep("v1"), True)
    assert again.serve is not None and again.serve.version == "v1" and not again.rolled_back
    fresh = rollout.decide("v3", hist, st("v1", failed="v2"), dep("v1"), True)
    assert fresh.serve is not None and fresh.serve.version == "v3" and fresh.failed is None


def test_deadline_without_rollback_is_stuck_not_moved() -> None:
    d = rollout.decide(
        "v2", [entry("v1"), entry("v2")], st("v1"), dep("v2", done=False, deadline=True), False
    )
    assert d.stuck and d.serve is not None and d.serve.version == "v2" and d.current == "v1"


def test_conditions_keep_transition_time() -> None:
    first = status.merge([], [status.Cond("Ready", True, "Serving")], 1, "t1")
    same = status.merge(first, [status.Cond("Ready", True, "Serving", "other")], 2, "t2")
    flipped = status.merge(first, [status.Cond("Ready", False, "Unavailable")], 2, "t3")
    assert same[0].last_transition_time == "t1" and flipped[0].last_transition_time == "t3"


def test_phase_table() -> None:
    assert status.phase(True, False, None, False, False) == "Building"
    assert status.phase(False, True, None, False, False) == "Failed"
    assert status.phase(False, True, "v1", False, False) == "Degraded"
    assert status.phase(False, False, "v1", True, False) == "RollingOut"
    assert status.phase(False, False, "v1", False, False) == "Serving"


@pytest.mark.parametrize(
    ("want", "have", "same"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"cpu": "500m"}, {"cpu": "0.5"}, True),
        ({"gpu": 1}, {"gpu": "1"}, True),
        ({"mem": "1Gi"}, {"mem": "1073741824"}, True),
        ({"l": [1, 2]}, {"l": [1]}, False),
        ({"flag": True}, {"flag": 1}, False),
        ({"x": {"y": "z"}}, {}, False),
    ],
)
def test_apply_match(want: Any, have: Any, same: bool) -> None:
    assert apply.matches(want, have) is same


def test_up_to_date_needs_our_hash() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {"a": 1},
    }
    live = apply.with_hash(desired)
    assert apply.up_to_date(desired, live)
    removed = {**desired, "spec": {}}  # a field we stopped wanting must still cause a write
    assert not apply.up_to_date(removed, live)
    drifted = {**live, "spec": {"a": 2}}
    assert not apply.up_to_date(desired, drifted)


def test_transitions_post_events() -> None:
    old = st()
    new = types.ModelDeploymentStatus(
        current_version="v1", history=[entry("v1")],
        conditions=status.merge([], [status.Cond("Degraded", True, "BuildFailed")], 1, "t"),
    )  # fmt: skip
    events = {e.reason: (e.type, e.message) for e in status.transitions(old, new)}
    assert events == {
        "BuildFailed": ("Warning", "Degraded=True: "),
        "Serving": ("Normal", "now serving version v1"),
        "BuildSucceeded": ("Normal", "built version v1: bk-v1"),
    }
    assert status.transitions(new, new) == [], "nothing changed: no events"


def with_conditions(
    base: types.ModelDeploymentStatus, *conds: status.Cond, history: list[types.HistoryEntry] | None = None
) -> types.ModelDeploymentStatus:
    return base.model_copy(
        update={
            "conditions": status.merge(base.conditions, list(conds), 1, "t"),
            "history": base.history if history is None else history,
        }
    )


def test_a_new_modeldeployments_life_is_three_events_one_per_reason() -> None:
    """Conditions starting where they should say nothing; a condition flipping with the reason of a
    build or version Event, or one it implies, is that Event."""
    born = with_conditions(
        st(),
        status.Cond("Progressing", True, "Building", "building version v1"),
        status.Cond("Built", False, "Building", "Job j-v1 is building version v1"),
        status.Cond("Ready", False, "NotServing", "no version is serving yet"),
        status.Cond("Degraded", False, "AsExpected"),
        history=[entry("v1", "Building")],
    )
    assert [e.reason for e in status.transitions(st(), born)] == ["BuildStarted"]
    built = with_conditions(
        born,
        status.Cond("Progressing", True, "RollingOut", "rolling out version v1"),
        status.Cond("Built", True, "BuildSucceeded", "built bk-v1"),
        status.Cond("Ready", False, "NotServing", "no version is serving yet"),
        status.Cond("Degraded", False, "AsExpected"),
        history=[entry("v1")],
    )
    assert [(e.reason, e.message) for e in status.transitions(born, built)] == [
        ("BuildSucceeded", "built version v1: bk-v1"),  # and its rollout starts: no RollingOut Event
    ]
    serving = with_conditions(
        built.model_copy(update={"current_version": "v1"}),
        status.Cond("Progressing", False, "RolloutComplete"),
        status.Cond("Built", True, "BuildSucceeded", "built bk-v1"),
        status.Cond("Ready", True, "Serving", "version v1: 1/1 pods ready"),
        status.Cond("Degraded", False, "AsExpected"),
    )
    assert [e.reason for e in status.transitions(built, serving)] == ["Serving"]


def test_a_rollback_to_a_built_version_still_says_its_rollout_starts() -> None:
    serving_v2 = with_conditions(
        st().model_copy(update={"current_version": "v2"}),
        status.Cond("Progressing", False, "RolloutComplete"),
        status.Cond("Ready", True, "Serving", "version v2: 1/1 pods ready"),
        history=[entry("v1"), entry("v2")],
    )
    rolling_back = with_conditions(
        serving_v2,
        status.Cond("Progressing", True, "RollingOut", "rolling out version v1"),
        status.Cond("Ready", True, "Serving", "version v2: 1/1 pods ready"),
        history=[entry("v1"), entry("v2")],
    )
    assert [(e.reason, e.message) for e in status.transitions(serving_v2, rolling_back)] == [
        ("RollingOut", "Progressing=True: rolling out version v1")
    ]


def test_conditions_flipping_with_one_reason_are_one_warning() -> None:
    old = with_conditions(
        st(), status.Cond("Ready", True, "Serving"), status.Cond("Degraded", False, "AsExpected")
    )
    new = with_conditions(
        old,
        status.Cond("Ready", False, "InvalidSpec", "bad"),
        status.Cond("Degraded", True, "InvalidSpec", "bad"),
    )
    assert [(e.type, e.reason, e.message) for e in status.transitions(old, new)] == [
        ("Warning", "InvalidSpec", "Ready=False: bad; Degraded=True: bad")
    ]
    born_bad = with_conditions(st(), status.Cond("Degraded", True, "InvalidSpec", "spec.x: nope"))
    assert [e.reason for e in status.transitions(st(), born_bad)] == ["InvalidSpec"]


def triton_pod(
    restarts: int, ready: bool = False, waiting: str = "CrashLoopBackOff", deleting: bool = False
) -> Any:
    meta: dict[str, Any] = {"name": "p-1", **({"deletionTimestamp": "t"} if deleting else {})}
    last = {"terminated": {"exitCode": 1, "message": "E1123 model_lifecycle.cc] failed to load 'm'"}}
    status = {"name": "triton", "ready": ready, "restartCount": restarts,
              "state": {"waiting": {"reason": waiting}}, "lastState": last if restarts else {}}  # fmt: skip
    return {"metadata": meta, "status": {"containerStatuses": [status]}}


def oom_killed(pod: Any) -> Any:
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"].update(exitCode=137, reason="OOMKilled")
    return pod


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([], ""),
        ([triton_pod(1)], ""),  # one restart may be a slow start: the deadline still decides
        (
            [triton_pod(2)],
            "pod p-1: container triton restarted 2 times (last exit code 1): E1123 model_lifecycle.cc]",
        ),
        ([triton_pod(5, ready=True)], ""),  # it recovered
        ([triton_pod(5, deleting=True)], ""),  # an old pod on its way out
        ([triton_pod(0, waiting="InvalidImageName")], "pod p-1: InvalidImageName"),
        ([triton_pod(0, waiting="ImagePullBackOff")], ""),  # a registry hiccup can heal
        (
            [oom_killed(triton_pod(2))],
            "pod p-1: container triton restarted 2 times (last exit code 137, OOMKilled",
        ),
    ],
)
def test_crash_reason(pods: list[Any], expected: str) -> None:
    got = rollout.crash_reason(pods)
    assert got.startswith(expected) and bool(got) == bool(expected), got


def verify_pod(state: dict[str, Any], last: dict[str, Any] | None = None, restarts: int = 0) -> Any:
    init = {"name": "verify", "ready": False, "restartCount": restarts, "state": state,
            **({"lastState": {"terminated": last}} if last else {})}  # fmt: skip
    triton = {
        "name": "triton",
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": "PodInitializing"}},
    }
    return {
        "metadata": {"name": "p-1"},
        "status": {"initContainerStatuses": [init], "containerStatuses": [triton]},
    }


BAD = {
    "exitCode": 2,
    "reason": "Error",
    "message": "repository /store/r/k failed verification: modified: m/1/w",
}
UNREADABLE = {"exitCode": 1, "reason": "Error", "message": "repository /store/r/k could not be verified: EIO"}


@pytest.mark.parametrize(
    ("pod", "tampered", "crash"),
    [
        (verify_pod({"terminated": BAD}), True, True),  # at the first failure: hashes do not change
        (verify_pod({"waiting": {"reason": "CrashLoopBackOff"}}, BAD, 1), True, True),
        (verify_pod({"running": {}}, BAD, 1), False, False),  # verifying again (the file may be back)
        (verify_pod({"terminated": {"exitCode": 0}}, BAD, 1), False, False),  # it was: passed
        (verify_pod({"terminated": UNREADABLE}), False, False),  # an I/O error may heal: restarts decide
        (verify_pod({"waiting": {"reason": "CrashLoopBackOff"}}, UNREADABLE, 2), False, True),
    ],
)
def test_a_failed_verification_is_read_from_the_init_container(pod: Any, tampered: bool, crash: bool) -> None:
    found = rollout.tampered([pod])
    assert bool(found) == tampered
    if tampered:
        assert found == f"pod p-1: init container verify: {BAD['message']}"
    reason = rollout.crash_reason([pod])
    assert bool(reason) == crash, reason
    if crash and not tampered:
        assert reason.startswith("pod p-1: init container verify restarted 2 times (last exit code 1)"), (
            reason
        )
    pod["metadata"]["deletionTimestamp"] = "t"
    assert rollout.tampered([pod]) == rollout.crash_reason([pod]) == "", "a pod on its way out"


def test_waiting_reason_names_the_image_the_kubelet_cannot_pull() -> None:
    pod = triton_pod(0, waiting="ImagePullBackOff")
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = 'Back-off pulling image "x:1"'
    assert rollout.waiting_reason([pod]) == 'pod p-1: ImagePullBackOff: Back-off pulling image "x:1"'
    assert rollout.waiting_reason([triton_pod(0)]) == ""  # CrashLoopBackOff: crash_reason's business
    assert rollout.waiting_reason([triton_pod(0, waiting="ErrImagePull", deleting=True)]) == ""
    initializing = verify_pod({"waiting": {"reason": "ErrImagePull", "message": 'pulling image "x:1"'}})
    assert rollout.waiting_reason([initializing]) == 'pod p-1: ErrImagePull: pulling image "x:1"', (
        "the init container pulls the serving image first"
    )
    bad_name = rollout.crash_reason([verify_pod({"waiting": {"reason": "InvalidImageName"}})])
    assert bad_name.startswith("pod p-1: InvalidImageName"), bad_name


def test_crash_loop_rolls_back_before_the_deadline_with_the_containers_words() -> None:
    crashing = dataclasses.replace(
        dep("v2", done=False), crash="pod p: container triton restarted 2 times: boom"
    )
    d = rollout.decide("v2", [entry("v1"), entry("v2")], st("v1"), crashing, True)
    assert d.rolled_back and d.failed == "v2" and d.serve is not None and d.serve.version == "v1"
    assert "boom" in d.reason
