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

import pydantic

from conch import errors
from conch.api import types
from model_repo_builder import recipe

JOB_KEY_CHARS = 10


def effective_recipe(spec: types.ModelDeploymentSpec) -> recipe.Recipe:
    """spec.compression with the serving overrides and the model's I/O and text settings merged in.

    Triton settings end up in the repository's config.pbtxt, so they are part of the build; the
    instance kind follows from whether the pods get GPUs. spec.model wins over the recipe, as for I/O.
    """
    data = spec.compression.model_dump(mode="json", by_alias=True)
    serving = spec.serving
    triton = data["triton"]
    if serving.backend is not None:
        data["export"]["backend"] = serving.backend
    if serving.max_batch_size is not None:
        triton["maxBatchSize"] = serving.max_batch_size
    if serving.dynamic_batching is not None:
        triton["dynamicBatching"] = serving.dynamic_batching.model_dump(mode="json", by_alias=True)
    if serving.instances is not None:
        triton["instanceCount"] = serving.instances
    triton["instanceKind"] = "KIND_GPU" if serving.gpus > 0 else "KIND_CPU"
    for side in ("inputs", "outputs"):
        tensors = getattr(spec.model, side)
        if tensors is not None:
            data["io"][side] = [t.model_dump(mode="json", by_alias=True) for t in tensors]
    _merge_text(spec, data)
    try:
        effective = recipe.Recipe.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "compression"
        raise errors.InvalidSpecError(f"compression.{where}".rstrip("."), first["msg"]) from exc
    problem = recipe.tensor_modes_problem(effective)
    if problem is not None:
        raise errors.InvalidSpecError("compression.quantize.mode", problem)
    return effective


def _merge_text(spec: types.ModelDeploymentSpec, data: dict[str, Any]) -> None:
    """spec.model.task/text over compression.text; an unset compression.quantize takes the text default.

    The recipe quantizes text models to int8 with SmoothQuant unless `quantize` was given, so the
    quantize section that compression filled in with its own defaults is replaced by that default
    (`recipe.text_quantize_default`, the builder's one home of it).
    """
    model = spec.model
    if model.task is None and model.text is None:
        return
    text = dict(data.get("text") or {})
    if model.text is not None:
        text.update(model.text.model_dump(mode="json", by_alias=True, exclude_none=True))
    if model.task is not None:
        text["task"] = model.task
    data["text"] = text
    if "quantize" not in spec.compression.model_fields_set:
        data["quantize"] = recipe.text_quantize_default(text.get("task", "")).model_dump(
            mode="json", by_alias=True
        )


def recipe_json(spec: types.ModelDeploymentSpec) -> str:
    """The effective recipe as canonical JSON (what the builder receives and what is hashed)."""
    return recipe.canonical_json(effective_recipe(spec))


def canonical(value: Any) -> str:
    """Canonical JSON text of a JSON-able value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_key(spec: types.ModelDeploymentSpec) -> str:
    """sha256 hex of what decides the build's output."""
    payload = {
        "modelName": spec.model.name,
        "source": spec.model.source.model_dump(mode="json", by_alias=True, exclude_none=True),
        "recipe": json.loads(recipe_json(spec)),
        "builderImage": spec.build.image,
    }
    return hashlib.sha256(canonical(payload).encode()).hexdigest()


def job_name(md_name: str, key: str) -> str:
    """The build Job of (ModelDeployment, spec key); at most 45 + 7 + 10 = 62 characters."""
    return f"{md_name}-build-{key[:JOB_KEY_CHARS]}"
