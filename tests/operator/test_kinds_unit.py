"""The registry of kinds (conch.kinds) feeds the REST paths, the cache and the watches alike."""

from __future__ import annotations

import pytest

from conch import cache, handlers, kinds, kube

pytestmark = pytest.mark.unit


def test_paths() -> None:
    assert kube.path("v1", "Pod", "ns") == "/api/v1/namespaces/ns/pods"
    assert kinds.DEPLOYMENT.path("ns", "a b") == "/apis/apps/v1/namespaces/ns/deployments/a%20b"
    assert kinds.MODEL_DEPLOYMENT.path("ns", "m") == (
        "/apis/serving.conch.dev/v1alpha1/namespaces/ns/modeldeployments/m"
    )
    assert kube.path_of({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                         "metadata": {"namespace": "n", "name": "x"}}) == (
        "/apis/policy/v1/namespaces/n/poddisruptionbudgets/x"
    )  # fmt: skip


def test_every_watched_kind_is_cached_and_every_watched_child_has_a_watch() -> None:
    watched = {(k.api_version, k.plural) for k in kinds.ALL if k.watched}
    assert watched == cache.CACHED_KINDS
    assert {(k.group, k.version, k.plural) for k in kinds.ALL if k.watched and k.child} == set(
        handlers.CHILD_RESOURCES
    )
    assert kinds.POD.group == "" and kinds.HPA.group == "autoscaling" and kinds.HPA.version == "v2"


def test_each_kind_is_listed_once() -> None:
    assert len({(k.api_version, k.kind) for k in kinds.ALL}) == len(kinds.ALL) == len(kube.PLURALS)
    assert all(cache.parse_path(k.path("ns", "x")) is not None for k in kinds.ALL if k.watched)
    assert all(cache.parse_path(k.path("ns", "x")) is None for k in kinds.ALL if not k.watched)
