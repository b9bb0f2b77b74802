"""Recipe schema: CRD-friendly shape, validation, canonical JSON, light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from model_repo_builder.recipe import (
    SUMMARY_MAX_BYTES,
    Recipe,
    canonical_json,
    load_recipe,
    parse_recipe_text,
)

pytestmark = pytest.mark.unit


def test_defaults_and_camel_case_aliases() -> None:
    r = parse_recipe_text("triton: {maxBatchSize: 4, dynamicBatching: {maxQueueDelayMicroseconds: 7}}")
    assert r.triton.max_batch_size == 4
    assert r.triton.dynamic_batching.max_queue_delay_microseconds == 7
    assert r.export.opset >= 17
    assert SUMMARY_MAX_BYTES == 4096


@pytest.mark.parametrize(
    "text",
    [
        "prune: {amount: 0.99}",
        "export: {opset: 16}",
        "quantize: {mode: int4}",
        "unknownField: 1",
        "triton: {instanceKind: KIND_TPU}",
        "export: {format: torchscript, backend: onnxruntime}",
        "export: {format: onnx, backend: pytorch}",
        "export: {format: torchscript, backend: pytorch}\nquantize: {mode: int8-dynamic}",
        "triton: {maxBatchSize: 4, dynamicBatching: {preferredBatchSizes: [8]}}",
        "- a list",
    ],
)
def test_invalid_recipes_are_rejected(text: str) -> None:
    with pytest.raises((ValidationError, ValueError)):
        parse_recipe_text(text)


def test_canonical_json_is_stable_and_by_alias(tmp_path: Any) -> None:
    a = Recipe.model_validate({"gate": {"minCosine": 0.9}, "prune": {"method": "magnitude", "amount": 0.3}})
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"prune": {"amount": 0.3, "method": "magnitude"}, "gate": {"minCosine": 0.9}}))
    b = load_recipe(path)
    assert canonical_json(a) == canonical_json(b)
    assert '"minCosine":0.9' in canonical_json(a)
    assert canonical_json(a) != canonical_json(Recipe())


def _walk(schema: dict[str, Any], defs: dict[str, Any], seen: set[str]) -> list[str]:
    problems: list[str] = []
    for name, prop in schema.get("properties", {}).items():
        if "description" not in prop:
            problems.append(f"{name}: no description")
        if prop.get("type") == "object" and "additionalProperties" in prop:
            problems.append(f"{name}: free-form map")
        refs = (
            [prop.get("$ref")]
            + [s.get("$ref") for s in prop.get("anyOf", [])]
            + [prop.get("items", {}).get("$ref")]
        )
        for ref in filter(None, refs):
            key = ref.split("/")[-1]
            if key not in seen:
                seen.add(key)
                problems += _walk(defs[key], defs, seen)
    return problems


def test_schema_is_structural() -> None:
    schema = Recipe.model_json_schema(by_alias=True)
    assert _walk(schema, schema.get("$defs", {}), set()) == []
    assert schema["$defs"]["Prune"]["additionalProperties"] is False
    assert "calibrationSamples" in schema["$defs"]["Quantize"]["properties"]


def test_recipe_module_imports_no_heavy_dependencies() -> None:
    code = (
        "import sys, model_repo_builder.recipe, model_repo_builder.errors;"
        "heavy = ('torch','numpy','onnx','onnxruntime','yaml');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
