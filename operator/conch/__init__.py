"""Conch: a Kubernetes operator that turns PyTorch models into compressed, verified Triton repositories.

The package is layered: `api` (typed spec, the single source of truth for the CRD), `render` (pure
child-object renderers), `apply` (the one server-side-apply layer), `build` / `rollout` / `status`
(pure state machines), `controller` (one level-based reconcile pass), `handlers` (thin kopf wiring).
"""

from __future__ import annotations

__version__ = "0.1.0"
USER_AGENT = f"conch-operator/{__version__}"
FIELD_MANAGER = "conch-operator"
