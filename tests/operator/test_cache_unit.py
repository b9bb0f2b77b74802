"""The watch-fed cache's pure parts: which paths it answers, label selectors, the store."""

from __future__ import annotations

from typing import Any

import pytest

from conch import cache

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("/apis/apps/v1/namespaces/ns/deployments/d", ("apps/v1", "deployments", "ns", "d")),
        ("/api/v1/namespaces/ns/pods", ("v1", "pods", "ns", None)),
        ("/api/v1/namespaces/ns/pods?labelSelector=a%3Db", ("v1", "pods", "ns", None)),
        ("/apis/serving.conch.dev/v1alpha1/namespaces/ns/modeldeployments/m",
         ("serving.conch.dev/v1alpha1", "modeldeployments", "ns", "m")),
        ("/api/v1/namespaces/ns/secrets/s", None),  # not watched: straight to the apiserver
        ("/apis/monitoring.coreos.com/v1/namespaces/ns/servicemonitors/m", None),
        ("/apis/serving.conch.dev/v1alpha1/namespaces/ns/modeldeployments/m/status", None),
        ("/api/v1/nodes/n", None),
    ],
)  # fmt: skip
def test_only_watched_kinds_are_answered_from_the_cache(url: str, parsed: tuple[str, ...] | None) -> None:
    assert cache.parse_path(url) == parsed


@pytest.mark.parametrize(
    ("selector", "match"),
    [
        (None, True),
        ("a=1", True),
        ("a==1,b=2", True),
        ("a=2", False),
        ("a!=2", True),
        ("a!=1", False),
        ("b", True),
        ("c", False),
        ("!c", True),
        ("!a", False),
    ],
)
def test_label_selectors(selector: str | None, match: bool) -> None:
    assert cache.selector_matches(selector, {"a": "1", "b": "2"}) is match


def pod(name: str, ns: str = "ns", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels}}


def test_store_tracks_adds_updates_and_deletes_per_namespace() -> None:
    store = cache.Store()
    store.observe(pod("a", md="x"))
    store.observe(pod("b", md="y"))
    store.observe(pod("a", ns="other", md="x"))
    store.observe({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}})
    assert len(store) == 3  # the Secret is not a watched kind
    assert [p["metadata"]["name"] for p in store.list("v1", "pods", "ns", "md=x")] == ["a"]
    store.observe(pod("a", md="z"))  # relabelled
    assert store.list("v1", "pods", "ns", "md=x") == []
    assert store.get("v1", "pods", "ns", "a") == pod("a", md="z")
    store.observe(pod("a", md="z"), deleted=True)
    assert store.get("v1", "pods", "ns", "a") is None and len(store) == 2


def test_store_drops_managed_fields() -> None:
    store = cache.Store()
    p = pod("a", md="x")
    p["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}]
    store.observe(p)
    assert "managedFields" not in store.get("v1", "pods", "ns", "a")["metadata"]  # type: ignore[index]
    assert "managedFields" in p["metadata"]  # the caller's object is left as it was


def test_sweep_drops_what_a_listing_lacks_in_its_scope_only() -> None:
    store = cache.Store()
    for name, ns in (("kept", "ns"), ("ghost", "ns"), ("elsewhere", "other")):
        store.observe(pod(name, ns=ns))
    store.observe({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ghost", "namespace": "ns"}})
    mark = store.mark()
    store.observe(pod("written-during-the-listing"))  # our own write's answer, newer than the listing
    assert store.sweep("v1", "pods", "ns", {("ns", "kept")}, mark) == 1
    assert store.get("v1", "pods", "ns", "ghost") is None
    assert store.get("v1", "pods", "ns", "written-during-the-listing") is not None
    assert store.get("v1", "pods", "other", "elsewhere") is not None  # another namespace's watch
    assert store.get("batch/v1", "jobs", "ns", "ghost") is not None  # another kind
    assert store.counts() == {"pods": 3, "jobs": 1}
    assert store.sweep("v1", "pods", None, set(), store.mark()) == 3  # a cluster-wide listing of none
    assert store.counts() == {"jobs": 1}


def test_store_keeps_of_a_pods_spec_only_its_node_and_what_it_serves() -> None:
    store = cache.Store()
    p = pod("a", md="x")
    p["spec"] = {
        "nodeName": "n1",
        "containers": [
            {"name": "triton", "image": "t", "args": ["--model-repository=/m"], "env": [{"name": "E"}]}
        ],
        "volumes": [
            {"name": "store", "persistentVolumeClaim": {"claimName": "c"}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "tolerations": [{"key": "nvidia.com/gpu"}],
    }
    p["status"] = {"podIP": "127.64.0.9", "conditions": [{"type": "Ready", "status": "True"}]}
    store.observe(p)
    kept = store.get("v1", "pods", "ns", "a")
    assert kept == {
        **p,
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "triton", "args": ["--model-repository=/m"]}],
            "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": "c"}}],
        },
    }
    assert p["spec"]["tolerations"]  # the caller's object is left as it was


MD = "serving.conch.dev/modeldeployment"


def test_listing_by_modeldeployment_label_follows_relabels_deletes_and_sweeps() -> None:
    store = cache.Store()
    for name, owner in (("a-1", "a"), ("a-2", "a"), ("b-1", "b")):
        store.observe(pod(name, **{MD: owner, "component": "triton"}))
    store.observe(pod("a-1", ns="other", **{MD: "a"}))

    def names(selector: str) -> list[str]:
        return [p["metadata"]["name"] for p in store.list("v1", "pods", "ns", selector)]

    assert names(f"{MD}=a") == ["a-1", "a-2"]
    assert names(f"{MD}==a,component=triton") == ["a-1", "a-2"]
    assert names(f"{MD}=a,component!=triton") == []
    assert names(f"{MD}!=a") == ["b-1"]  # an inequality is not an index lookup
    assert names(MD) == ["a-1", "a-2", "b-1"]
    store.observe(pod("a-2", **{MD: "b"}))
    assert names(f"{MD}=a") == ["a-1"] and names(f"{MD}=b") == ["a-2", "b-1"]
    store.observe(pod("a-1", **{MD: "a"}), deleted=True)
    assert names(f"{MD}=a") == []
    store.sweep("v1", "pods", "ns", {("ns", "b-1")}, store.mark())
    assert names(f"{MD}=b") == ["b-1"] and len(store) == 2


def test_every_read_is_its_own_copy() -> None:
    store = cache.Store()
    store.observe(pod("a", md="x"))
    first = store.get("v1", "pods", "ns", "a")
    assert first is not None
    first["metadata"]["labels"]["md"] = "changed by a careless reader"
    assert store.get("v1", "pods", "ns", "a") == pod("a", md="x")
    assert store.list("v1", "pods", "ns", None) == [pod("a", md="x")]


def serving_pod(i: int) -> dict[str, Any]:
    p = pod(f"m{i}-7c9d-{i:05d}", md=f"m{i}", component="server")
    p["metadata"]["uid"] = f"0f6c1a52-{i:04d}-4e1b-9d5e-5b8a2d3c{i:04d}"
    p["spec"] = {"nodeName": "n1", "containers": [{"name": "triton", "command": ["tritonserver"],
                 "args": [f"--model-repository=/models/m{i}/v1", "--model-control-mode=none"]}]}  # fmt: skip
    p["status"] = {"phase": "Running", "podIP": f"127.64.0.{i % 250}", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T16:00:00Z"}]}  # fmt: skip
    return p


def test_store_deflates_objects_of_a_kind_against_the_first_and_reads_them_back_whole() -> None:
    store = cache.Store()
    pods = [serving_pod(i) for i in range(100)]
    for p in pods:
        store.observe(p)
    assert [store.get("v1", "pods", "ns", p["metadata"]["name"]) for p in pods] == pods
    assert store.list("v1", "pods", "ns", "md=m42") == [pods[42]]
    plain = sum(len(cache._dumps(p)) for p in pods)
    assert store.sizes()["pods"] * 4 < plain  # the preset dictionary, not plain zlib's ~2x
    for p in pods:
        store.observe(p, deleted=True)
    assert store.sizes() == {} and store.counts() == {}
