"""Deterministic identities derived from a spec: the spec key of a build and the names that follow from it.

The operator cannot hash a file on the model-store volume, so "is this version already built" is
answered by a spec key: sha256 over the canonical JSON of everything that decides the build's input
(model source and I/O, recipe, builder image, model name). The Job name follows from (name, spec
key), so a restarted operator finds the Job it already started instead of creating a second one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from conch.api import types

JOB_KEY_CHARS = 10


def recipe_json(spec: types.ModelDeploymentSpec) -> str:
    """The recipe as canonical JSON: sorted keys, no spaces (what the builder receives)."""
    return canonical(spec.compression)


def canonical(value: Any) -> str:
    """Canonical JSON text of a JSON-able value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_key(spec: types.ModelDeploymentSpec) -> str:
    """sha256 hex of what decides the build's output."""
    payload = {
        "model": spec.model.model_dump(mode="json", by_alias=True, exclude_none=True),
        "recipe": json.loads(recipe_json(spec)),
        "builderImage": spec.build.image,
    }
    return hashlib.sha256(canonical(payload).encode()).hexdigest()


def job_name(md_name: str, key: str) -> str:
    """The build Job of (ModelDeployment, spec key); at most 45 + 7 + 10 = 62 characters."""
    return f"{md_name}-build-{key[:JOB_KEY_CHARS]}"
