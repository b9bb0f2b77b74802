"""A reconcile pass reads ModelDeployments and their children from the watch-fed cache: the
apiserver's audit log shows no GET or LIST by the operator while it reconciles a serving
ModelDeployment three times (the admin-key Secret and the optional ServiceMonitor, which are not
watched, are remembered from the last read or write for a few minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opharness import Kube, Operator, kube_fixture, md_object, operator_fixture, serving, wait_for  # noqa: F401

from conch import cache
from tests.support import audit

pytestmark = pytest.mark.cluster


def operator_reads(audit_log: Path, namespace: str, offset: int) -> list[str]:
    reads = []
    for e in audit.events_since(audit_log, offset):
        ref = e.get("objectRef", {})
        if (
            e.get("userAgent", "").startswith("conch-operator")
            and e["verb"] in {"get", "list"}
            and ref.get("namespace") == namespace
            and e.get("stage") == "ResponseComplete"
        ):
            group = ref.get("apiGroup", "")
            reads.append(
                f"{e['verb']} {(group + '/') if group else ''}{ref.get('resource')}/{ref.get('name', '')}"
            )
    return reads


def test_op_cache_a_pass_reads_no_watched_kind_from_the_apiserver(
    kube: Kube, cluster: Any, operator: Operator
) -> None:
    k = kube
    k.apply(md_object("cached", replicas=2, monitoring={"serviceMonitor": {"enabled": True}}))
    k.finish_build("cached", "v1")
    wait_for("v1 serving", lambda: serving(k, "cached", "v1"), 90)
    offset = cluster.audit_log.stat().st_size
    passes = operator.metric("conch_reconciles_total") or 0
    for i in range(3):  # three passes: a metadata edit is an event, not a spec change
        k.k("annotate", "--overwrite", "md", "cached", f"poke={i}")
        wait_for(
            f"pass {i + 1}",
            lambda i=i: (operator.metric("conch_reconciles_total") or 0) >= passes + i + 1,
            30,
        )
    reads = operator_reads(cluster.audit_log, k.ns, offset)
    watched = {plural for _, plural in cache.CACHED_KINDS}
    from_cache = [r for r in reads if r.split(" ")[1].rsplit("/", 2)[-2] in watched]
    assert from_cache == [], reads
    assert reads == [], reads
