"""Fixtures of the real-node tests (testenv/realnode.sh): a cluster whose one node runs pods in containers.

These tests talk to the apiserver and to pod addresses that exist only inside the real node's network
namespace, so they run only inside it: `make test-realnode` (= `testenv/realnode.sh exec python -m pytest
tests/realnode`). Anywhere else they are deselected, never run against the host's network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import CACHE, Cluster

HERE = Path(__file__).resolve().parent
KUBECONFIG = os.environ.get("CONCH_REALNODE_KUBECONFIG")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realnode: needs testenv/realnode.sh's node (run inside its namespace)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside the real node's namespace, deselect its tests (make test-realnode runs them)."""
    if KUBECONFIG:
        return
    ours = [i for i in items if HERE in Path(str(i.fspath)).parents]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [i for i in items if i not in ours]


@pytest.fixture(scope="session")
def realnode() -> Cluster:
    """The real node's cluster, as the `Cluster` handle the other tests use."""
    assert KUBECONFIG, "run inside the real node's namespace: testenv/realnode.sh exec ..."
    kubeconfig = Path(KUBECONFIG)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    return Cluster(kubeconfig=kubeconfig, audit_log=kubeconfig.parent / "audit.log", bin_dir=CACHE / "bin")
