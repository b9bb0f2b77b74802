"""The PodDisruptionBudget: with several serving pods, at most one is voluntarily disrupted at a time."""

from __future__ import annotations

from conch.render import common
from conch.render.common import Obj, Owner


def render_pdb(owner: Owner) -> Obj | None:
    """A PDB when the spec asks for more than one pod (fixed or as the autoscaler's minimum), else None."""
    if owner.spec.min_replicas() <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": common.metadata(owner, owner.name, "triton"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": common.selector(owner)}},
    }
