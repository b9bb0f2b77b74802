"""The operator streams only its own children: every list and watch of a child kind carries
`labelSelector=serving.conch.dev/modeldeployment`, so unrelated pods in a watched namespace cost it
nothing. Proven from the apiserver's audit log (the operator's user agents), with the operator's RSS
reported before and after N unrelated pods appear (a measurement printed, not a timed assertion).

Unrelated pods carry a scheduling gate: they are real Pod objects in the namespace (what a watch
would stream) that no scheduler or kwok node ever works on, so thousands fit on any cluster.
CONCH_UNRELATED_PODS sets N (default 300; the issue's scale is 10,000).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from opharness import ROOT, Operator, wait_for

from tests.support import audit

pytestmark = pytest.mark.cluster
LABEL = "serving.conch.dev/modeldeployment"
CHILD_PLURALS = {
    "pods",
    "jobs",
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
}


def operator_reads(audit_log: Path, namespace: str, offset: int) -> list[dict[str, Any]]:
    """The operator's list/watch requests for child kinds in `namespace` since `offset`."""
    reads = []
    for e in audit.events_since(audit_log, offset):
        agent = e.get("userAgent", "")
        ref = e.get("objectRef", {})
        if (
            (agent.startswith("kopf") or agent.startswith("conch-operator"))
            and e["verb"] in {"list", "watch"}
            and ref.get("resource") in CHILD_PLURALS
            and ref.get("namespace") == namespace
        ):
            reads.append(e)
    return reads


def selected(uri: str) -> bool:
    """Whether the request asks the apiserver for objects carrying our label (and only those)."""
    return parse_qs(urlsplit(uri).query).get("labelSelector") == [LABEL]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def unrelated_pods(n: int) -> dict[str, Any]:
    pod = lambda i: {  # noqa: E731
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"other-{i}", "labels": {"app": "not-conch", "conch.dev/test": "true"},
                     "annotations": {"note": "x" * 512}},
        "spec": {
            "schedulingGates": [{"name": "conch.dev/never"}],
            "containers": [{"name": "c", "image": "registry.invalid/other:1", "args": ["--serve"] * 8}],
        },
    }  # fmt: skip
    return {"apiVersion": "v1", "kind": "List", "items": [pod(i) for i in range(n)]}


def test_op_watches_only_labelled_children(
    cluster: Any, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = int(os.environ.get("CONCH_UNRELATED_PODS", "300"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    offset = cluster.audit_log.stat().st_size
    op = Operator(cluster.kubeconfig, tmp_path)
    op.start()
    try:
        pid = op.proc.pid if op.proc else 0
        wait_for(
            "the operator's pod watch in the namespace",
            lambda: any(e["verb"] == "watch" and e["objectRef"]["resource"] == "pods"
                        for e in operator_reads(cluster.audit_log, namespace, offset)),
            60,
        )  # fmt: skip
        before = rss_kib(pid)
        started = time.monotonic()
        for first in range(0, n, 500):  # kubectl create in chunks keeps each request body moderate
            chunk = unrelated_pods(min(500, n - first))
            for item in chunk["items"]:
                item["metadata"]["name"] = f"other-{first}-{item['metadata']['name']}"
            cluster.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(chunk), timeout=600)
        created = time.monotonic() - started
        count = cluster.kubectl("-n", namespace, "get", "pods", "-l", "app=not-conch", "-o", "name").stdout
        assert len(count.split()) == n
        # An unselected watch would have streamed them while they were created (it delivers within
        # milliseconds); a selected one never sees them.
        after = rss_kib(pid)
        reads = operator_reads(cluster.audit_log, namespace, offset)
        n_selected = sum(selected(e["requestURI"]) for e in reads)
        with capsys.disabled():
            print(
                f"\n[watch scope] {n} unrelated pods created in {created:.1f}s; operator RSS "
                f"{before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
                f"({(after - before) / 1024:+.1f} MiB); {len(reads)} child list/watch requests, "
                f"{n_selected} selected"
            )
        kinds = {e["objectRef"]["resource"] for e in reads}
        assert kinds == CHILD_PLURALS, f"operator never listed/watched {CHILD_PLURALS - kinds}"
        unselected = [e["requestURI"] for e in reads if not selected(e["requestURI"])]
        assert unselected == [], f"list/watch without our label selector: {unselected[:5]}"
    finally:
        op.stop()
