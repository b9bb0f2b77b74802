"""The store janitor's pure parts: what is referenced, when a store is due, the Job, the report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from conch import storegc
from conch.render import common
from conch.render import storegc as render
from model_repo_builder.store import gc as builder_gc

pytestmark = pytest.mark.unit
A, B, C, D, E, F = (f"{c * 64}" for c in "abcdef")


def md(name: str, keys: list[str], claim: str = "model-store", path: str = "repositories") -> dict[str, Any]:
    return {
        "apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ns", "uid": "u"},
        "spec": {"version": "v1", "model": {"name": name, "source": {"path": "m.onnx"}},
                 "storage": {"claimName": claim, "repositoryPath": path}, "replicas": 1},
        "status": {"history": [{"version": f"v{i}", "buildKey": k, "modelName": name, "result": "Succeeded",
                                "startedAt": "2026-01-01T00:00:00Z"} for i, k in enumerate(keys)]},
    }  # fmt: skip


def pod(key: str, claim: str = "model-store", folder: str = "repositories") -> dict[str, Any]:
    return {
        "spec": {
            "containers": [
                {"name": "triton", "args": ["tritonserver", f"--model-repository=/store/{folder}/{key}"]}
            ],
            "volumes": [
                {"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            ],
        }
    }


def test_referenced_is_the_union_over_a_store_and_what_its_pods_serve() -> None:
    mds = [
        md("b", [B]),
        md("a", [A]),
        md("other", [C], claim="team-b"),
        {"metadata": {"name": "bad"}, "spec": {}},
    ]
    got = storegc.referenced("ns", mds, [pod(D), pod(C, claim="team-b")])
    main = render.Store("ns", "model-store", "repositories")
    assert set(got) == {main, render.Store("ns", "team-b", "repositories")}
    keys, users = got[main]
    assert keys == {A, B, D}  # D: history dropped it, a pod still serves it
    assert [m["metadata"]["name"] for m in users] == ["a", "b"]  # the Job runs with a's build settings
    assert got[render.Store("ns", "team-b", "repositories")][0] == {C}


def test_spellings_of_one_folder_are_one_store_that_keeps_what_any_of_them_serves_or_rolls_back_to(
    tmp_path: Path,
) -> None:
    """`repositories` and `repositories/` are both admitted (a trailing slash is the one alias the
    CEL rule leaves: stripping it changes no folder) and name one folder; `x/../repositories` is
    refused now but may be stored from before the rule, so its spec no longer parses while its
    Deployment still serves. All three are one store. Keyed by the raw string they were three, each
    Job keeping only its own keys and deleting the others' served and rollback repositories. Here the
    plan's Job runs the builder's real collection on a folder holding all of them (old enough to go):
    only the orphan F goes."""
    mds = [md("a", [A]), md("b", [B], path="repositories/"), md("legacy", [C], path="x/../repositories")]
    assert storegc.parse_spec(mds[2]) is None  # refused by the rule it predates
    pods = [pod(D), pod(E, folder="x/../repositories")]  # versions their histories dropped, still served
    plan = storegc.referenced("ns", mds, pods)
    store = render.Store("ns", "model-store", "repositories")
    assert list(plan) == [store]
    keep, users = plan[store]
    assert keep == {A, B, C, D, E}
    assert [m["metadata"]["name"] for m in users] == ["a", "b", "legacy"]

    spec = storegc.parse_spec(users[0])
    assert spec is not None
    job = render.render_gc_job(store, keep, 3600, spec, run=1)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[2] == "/store/repositories"
    folder = tmp_path / "repositories"
    for key in (A, B, C, D, E, F):
        (folder / key).mkdir(parents=True)
        (folder / key / "build.json").write_text("{}")
    later = time.time() + 7200  # every folder is past the grace period
    report = builder_gc.collect(folder, set(command[4].split(",")), grace_seconds=3600, now=later)
    assert report.removed == [F]
    assert sorted(p.name for p in folder.iterdir()) == [A, B, C, D, E]


def test_a_store_at_the_root_or_outside_it_is_never_collected() -> None:
    """Only specs admitted before the rule spell these; the store's root holds the model sources."""
    for path in ("x/..", "../elsewhere", "x/../../y"):
        assert storegc.store_of("ns", md("old", [A], path=path)) is None
    assert storegc.store_of("ns", md("new", [A], path="team/repos/")) == render.Store(
        "ns", "model-store", "team/repos"
    )
    assert storegc.store_of("ns", {"metadata": {"name": "bad"}, "spec": {}}) is None


@pytest.mark.parametrize(
    ("arg", "normal"),
    [
        ("--model-repository=/store/x/../repositories/k", "--model-repository=/store/repositories/k"),
        ("/store/repositories//k/", "/store/repositories/k"),
        ("--model-repository=/store/repositories/k", "--model-repository=/store/repositories/k"),
        ("--log-verbose=1", "--log-verbose=1"),
        ("tritonserver", "tritonserver"),
    ],
)
def test_pod_arguments_are_read_with_their_paths_normalised(arg: str, normal: str) -> None:
    assert storegc.normal_arg(arg) == normal


class Applied:
    """A client that records what is applied (the Janitor's _start writes only this)."""

    def __init__(self) -> None:
        self.objs: list[dict[str, Any]] = []

    def apply(self, path: str, obj: dict[str, Any]) -> None:
        self.objs.append(obj)


def test_the_job_takes_its_settings_from_the_first_spec_that_parses() -> None:
    client = Applied()
    janitor = storegc.Janitor(client=client, grace_seconds=60)  # type: ignore[arg-type]  # apply only
    store = render.Store("ns", "model-store", "repositories")
    legacy, good = md("legacy", [A], path="x/../repositories"), md("good", [B])
    good["spec"]["build"] = {"image": "registry.example/builder:1"}
    memory = storegc.Memory(pending={C})
    janitor._start(store, memory, {A, B}, [legacy, good], now=100.0)
    assert [o["spec"]["template"]["spec"]["containers"][0]["image"] for o in client.objs] == [
        "registry.example/builder:1"
    ]
    assert memory.job is not None and memory.pending == set()
    alone = storegc.Memory(pending={C})
    janitor._start(store, alone, {A}, [legacy], now=100.0)
    assert len(client.objs) == 1  # no spec to run a Job with: none, and a later look (no busy loop)
    assert alone.job is None and alone.young_until == 100.0 + 300


@pytest.mark.parametrize(
    ("memory", "keep", "now", "due"),
    [
        (storegc.Memory(), {A}, 0.0, False),  # nothing lost
        (storegc.Memory(pending={B}), {A, B}, 0.0, False),  # lost one reference, has another
        (storegc.Memory(pending={B}), {A}, 0.0, True),  # B lost its last reference
        (storegc.Memory(pending={B}, job="j"), set(), 0.0, False),  # one Job at a time
        (storegc.Memory(young_until=10.0), {A}, 9.0, False),
        (storegc.Memory(young_until=10.0), {A}, 10.0, True),  # young keys (or the catch-up) came of age
    ],
)
def test_a_store_is_due_only_when_something_may_have_become_garbage(
    memory: storegc.Memory, keep: set[str], now: float, due: bool
) -> None:
    assert storegc.due(memory, keep, now) is due


def test_janitor_records_keys_that_lost_a_reference() -> None:
    janitor = storegc.Janitor(client=None, grace_seconds=0)  # type: ignore[arg-type]  # no I/O here
    janitor.observe("ns", "x", md("x", []), deleted=False)
    assert janitor.dirty == {"ns"} and janitor.lost == {}  # first sight: evaluate (catch-up scheduling)
    janitor.dirty.clear()
    janitor.observe("ns", "x", md("x", [A, B]), deleted=False)
    assert janitor.dirty == set()  # gained keys: nothing can be garbage
    janitor.observe("ns", "x", md("x", [B]), deleted=False)
    assert janitor.dirty == {"ns"} and janitor.lost == {"ns": {A}}  # history dropped A
    janitor.pod_deleted("ns", pod(C))
    assert janitor.lost == {"ns": {A, C}}  # the last pod naming C is gone
    janitor.observe("ns", "x", {}, deleted=True)
    assert janitor.lost == {"ns": {A, B, C}} and ("ns", "x") not in janitor.md_keys


def test_gc_job_mounts_the_store_runs_restricted_and_is_no_child_of_a_deployment() -> None:
    spec = storegc.parse_spec(md("a", [A]))
    assert spec is not None
    store = render.Store("ns", "model-store", "repositories")
    job = render.render_gc_job(store, {B, A}, 3600, spec, run=7)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "model-repo-builder", "gc", "/store/repositories", "--keep", f"{A},{B}", "--grace-seconds", "3600",
        "--summary-file", "/dev/termination-log",
    ]  # fmt: skip
    assert container["image"] == spec.build.image
    assert pod["volumes"] == [{"name": "model-store", "persistentVolumeClaim": {"claimName": "model-store"}}]
    assert container["securityContext"] == common.restricted_container_security()
    assert common.LABEL_MD not in job["metadata"]["labels"]  # its events must not queue reconciles
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["metadata"]["name"] == f"conch-store-gc-{store.digest}-7"


def finished(kind: str = "Complete") -> dict[str, Any]:
    return {
        "metadata": {"name": "j"},
        "status": {"conditions": [{"type": kind, "status": "True", "reason": "R"}]},
    }


def test_reports_are_read_from_the_termination_message() -> None:
    assert render.parse_report({"metadata": {"name": "j"}, "status": {}}, None) is None  # still running
    line = json.dumps(
        {"ok": True, "removed": [A], "removedCount": 41, "freedBytes": 2**21, "kept": 2, "young": []}
    )
    report = render.parse_report(finished(), line)
    assert report == render.GcReport(ok=True, removed=[A], removed_count=41, freed_bytes=2**21, kept=2)
    message = storegc.describe(render.Store("ns", "model-store", "repositories"), report)
    assert message == (
        f"model store model-store: removed 41 unreferenced repositories (2.0 MiB): {A[:12]} and 40 more; "
        "2 referenced kept"
    )
    failed = render.parse_report(finished("Failed"), None)
    assert failed is not None and not failed.ok and "wrote no report" in (failed.error or "")
    garbled = render.parse_report(finished(), "Traceback ...")
    assert garbled is not None and not garbled.ok and "not valid JSON" in (garbled.error or "")
