"""Every pod Conch creates is admitted under the `restricted` Pod Security Standard, on the real apiserver.

The renderers' build Job, Deployment and canary Deployment for each example, a canary's quality-analysis
Job and the store GC Job are created in a namespace labelled `pod-security.kubernetes.io/enforce:
restricted`; the Job and ReplicaSet controllers then create the
pods, which PodSecurity admission enforces on (a Job or Deployment itself only draws warnings). A
plain pod is refused there, so the namespace really enforces.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from opharness import wait_for
from test_render_unit import EXAMPLES, children, owner

from conch.render import analysis, storegc

pytestmark = pytest.mark.cluster


def _unowned(obj: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """The rendered child in the test namespace, without the owner reference (its owner does not exist)."""
    meta = {**obj["metadata"], "namespace": namespace, "name": name}
    meta.pop("ownerReferences", None)
    return {**obj, "metadata": meta}


def one_shot_jobs() -> dict[str, dict[str, Any]]:
    """The operator's other pods: a canary step's quality-analysis Job and the store GC Job."""
    canary = owner("canary-digits")
    request = analysis.AnalysisRequest(
        canary_version="v2", step=1, canary_addresses=("127.65.0.7",), stable_addresses=("127.65.0.3",),
        stable_build_key="bk-0123456789abcdef", model_name="digits",
        thresholds=analysis.QualityThresholds(0.99, None, None),
    )  # fmt: skip
    store = storegc.Store.of("ns", "model-store", "repositories")
    return {
        "analysis": analysis.render_analysis_job(canary, request),
        "gc": storegc.render_gc_job(store, {"bk-0123456789abcdef"}, 3600, canary.spec, run=1),
    }


def test_pods_are_admitted_under_restricted(cluster: Any, namespace: str) -> None:
    ns = ["-n", namespace]
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    plain = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
    }  # fmt: skip
    refused = cluster.kubectl(*ns, "create", "-f", "-", input=json.dumps(plain), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    expected = []
    rendered = {
        f"{example}-{kind}": obj for example in EXAMPLES for kind, obj in children(owner(example)).items()
    }
    rendered |= {f"canary-digits-{kind}": job for kind, job in one_shot_jobs().items()}
    assert {"canary-digits-canary", "canary-digits-analysis", "canary-digits-gc"} <= rendered.keys()
    for name, obj in rendered.items():
        kind = {"Job": "job", "Deployment": "deployment"}.get(obj["kind"]) if obj else None
        if kind is None:
            continue
        cluster.kubectl(*ns, "create", "-f", "-", input=json.dumps(_unowned(obj, namespace, name)))
        expected.append((kind, name))

    def pods_of(kind: str, name: str) -> list[str]:
        selector = f"batch.kubernetes.io/job-name={name}" if kind == "job" else None
        if selector is None:
            dep = json.loads(cluster.kubectl(*ns, "get", "deployment", name, "-o", "json").stdout)
            labels = dep["spec"]["selector"]["matchLabels"]
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        out = cluster.kubectl(*ns, "get", "pods", "-l", selector, "-o", "name").stdout
        return out.split()

    for kind, name in expected:
        wait_for(f"a pod of {kind} {name}", lambda: pods_of(kind, name), 60)  # noqa: B023
    events = cluster.kubectl(*ns, "get", "events", "-o", "json").stdout
    refusals = [e["message"] for e in json.loads(events)["items"] if "PodSecurity" in e.get("message", "")]
    assert refusals == []
