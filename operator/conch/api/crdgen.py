"""Generate the ModelDeployment CRD from the typed models: `python -m conch.api.crdgen [--check] [DIR]`.

Pydantic's JSON schema is turned into a Kubernetes structural schema: $refs inlined, Optional
(anyOf with null) collapsed to the plain type, titles and defaults dropped (defaults live in the
models), free-form objects marked x-kubernetes-preserve-unknown-fields, CEL rules kept. crds/ is
generated from this and a unit test fails when the two drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from conch.api import rules, types

CRD_FILE = f"{types.PLURAL}.{types.GROUP}.yaml"
DEFAULT_MAX_ITEMS = 128
_DROP = {"title", "default", "examples"}
# Lists whose items are keyed, so server-side apply merges them by key.
_MAP_LISTS = {"conditions": ["type"], "history": ["version"]}

Schema = dict[str, Any]


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    """Inline $refs recursively and normalise each schema node."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _resolve({**options[0], **rest}, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _resolve(value, defs)
    return _structural(out)


def _structural(node: Schema) -> Schema:
    """Fix the spots where JSON schema and Kubernetes' structural schema differ."""
    if node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    if node.get("additionalProperties") is False:  # extra="forbid": the apiserver prunes instead
        node.pop("additionalProperties")
    if node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "properties" in node or "additionalProperties" in node:
        node.setdefault("type", "object")
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)  # JSON schema: a number; OpenAPI v3.0 (Kubernetes): a bool on the limit
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            node[limit], node[bound] = value, True
    if node.get("type") == "array":  # bounded lists keep CEL cost estimates within the budget
        node.setdefault("maxItems", DEFAULT_MAX_ITEMS)
    for name, keys in _MAP_LISTS.items():
        sub = node.get("properties", {}).get(name)
        if sub is not None and sub.get("type") == "array":
            sub["x-kubernetes-list-type"] = "map"
            sub["x-kubernetes-list-map-keys"] = keys
            sub["items"]["required"] = sorted(set(sub["items"].get("required", [])) | set(keys))
    return node


def model_schema(model: type[types.Model]) -> Schema:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _resolve(raw, defs)
    schema.pop("description", None)
    return schema


def crd() -> Schema:
    """The CustomResourceDefinition object."""
    root: Schema = {
        "type": "object",
        "required": ["spec"],
        "x-kubernetes-validations": rules.ROOT,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(types.ModelDeploymentSpec),
            "status": model_schema(types.ModelDeploymentStatus),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{types.PLURAL}.{types.GROUP}"},
        "spec": {
            "group": types.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": types.KIND,
                "listKind": f"{types.KIND}List",
                "plural": types.PLURAL,
                "singular": types.SINGULAR,
                "shortNames": types.SHORT_NAMES,
                "categories": ["conch"],
            },
            "versions": [
                {
                    "name": types.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _columns(),
                }
            ],
        },
    }


def _columns() -> list[Schema]:
    ready = '.status.conditions[?(@.type=="Ready")].status'
    return [
        {"name": "Version", "type": "string", "jsonPath": ".spec.version", "description": "Wanted version"},
        {"name": "Serving", "type": "string", "jsonPath": ".status.currentVersion", "description": "Serving"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": ready},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def render_yaml() -> str:
    """The CRD as YAML text, with a header saying where it comes from."""
    header = "# Generated by `python -m conch.api.crdgen` from operator/conch/api/types.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) crds/<plural>.<group>.yaml."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("outdir", nargs="?", default="crds")
    parser.add_argument("--check", action="store_true", help="fail when the file differs")
    args = parser.parse_args(argv)
    path = Path(args.outdir) / CRD_FILE
    text = render_yaml()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is out of date: run python -m conch.api.crdgen", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
