"""Invalid ModelDeployments are rejected by the apiserver itself (schema + CEL), naming the field.

Cases are generated from one valid spec by one mutation each; a server-side dry run is enough
(no operator needed). The valid base must be accepted, so a rule that rejects everything fails too.
The generated suite (specgen: valid bases x mutations, over a thousand cases, each a refusal the
operator makes) goes to the apiserver in four concurrent kubectl calls and takes about ten seconds.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import specgen

from conch.api import quantity

pytestmark = pytest.mark.cluster

BASE: dict[str, Any] = {
    "apiVersion": "serving.conch.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "valid"},
    "spec": {
        "version": "v1",
        "model": {"name": "m", "source": {"path": "models/m.pt2"}},
        "serving": {"gpus": 1, "maxBatchSize": 8},
        "replicas": 1,
        "storage": {"claimName": "store"},
    },
}

# (id, path to set (None value deletes), value, text the error must contain)
# ruff: noqa: E501
CASES: list[tuple[str, str, Any, str]] = [
    ("replicas-and-autoscaling", "spec.autoscaling", {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
     "spec.replicas"),
    ("min-over-max", "spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2, "queueTime": {"averageMicroseconds": 9}},
     "spec.autoscaling.minReplicas"),
    ("no-target", "spec.autoscaling", {"maxReplicas": 2}, "targetCPUUtilizationPercentage"),
    ("url-without-sha", "spec.model.source", {"url": "https://x.example/m.pt2"}, "spec.model.source.sha256"),
    ("path-and-url", "spec.model.source", {"path": "a", "url": "https://x/m", "sha256": "0" * 64}, "exactly one"),
    ("no-source", "spec.model.source", {}, "exactly one"),
    ("http-url", "spec.model.source", {"url": "http://x/m", "sha256": "0" * 64}, "spec.model.source.url"),
    ("dotdot", "spec.model.source.path", "../etc/passwd", "spec.model.source.path"),
    ("absolute-path", "spec.model.source.path", "/etc/passwd", "spec.model.source.path"),
    ("bad-sha", "spec.model.source", {"url": "https://x/m", "sha256": "xyz"}, "spec.model.source.sha256"),
    ("negative-gpus", "spec.serving.gpus", -1, "spec.serving.gpus"),
    ("too-many-gpus", "spec.serving.gpus", 17, "spec.serving.gpus"),
    ("bad-version", "spec.version", "v1/../x", "spec.version"),
    ("long-version", "spec.version", "v" * 64, "spec.version"),
    ("no-version", "spec.version", None, "spec.version"),
    ("no-storage", "spec.storage", None, "spec.storage"),
    ("zero-surge", "spec.rollout", {"maxSurge": 0}, "spec.rollout.maxSurge"),
    ("short-deadline", "spec.rollout", {"progressDeadlineSeconds": 1}, "spec.rollout.progressDeadlineSeconds"),
    ("bad-interval", "spec.monitoring", {"serviceMonitor": {"interval": "soon"}},
     "spec.monitoring.serviceMonitor.interval"),
    ("batching-without-batch", "spec.serving.maxBatchSize", 0, "spec.serving.maxBatchSize"),
    ("preferred-over-max", "spec.serving.dynamicBatching", {"preferredBatchSizes": [4, 64]},
     "spec.serving.dynamicBatching.preferredBatchSizes"),
    ("pytorch-onnx", "spec.serving.backend", "pytorch", "spec.serving.backend"),
    ("bad-quantize", "spec.compression", {"quantize": {"mode": "int4"}}, "spec.compression.quantize.mode"),
    ("smooth-without-int8-dynamic", "spec.compression", {"quantize": {"mode": "fp16", "smoothAlpha": 0.7}},
     "spec.compression.quantize.smoothAlpha"),
    ("smooth-over-one", "spec.compression", {"quantize": {"mode": "int8-dynamic", "smoothAlpha": 1.5}},
     "spec.compression.quantize.smoothAlpha"),
    ("prune-too-much", "spec.compression", {"prune": {"method": "channel", "amount": 0.99}},
     "spec.compression.prune.amount"),
    ("negative-replicas", "spec.replicas", -1, "spec.replicas"),
    ("history-zero", "spec.revisionHistoryLimit", 0, "spec.revisionHistoryLimit"),
    ("long-name", "metadata.name", "x" * 46, "45 characters"),
    ("bad-claim", "spec.storage", {"claimName": "Bad_Name"}, "spec.storage.claimName"),
]  # fmt: skip


# A text model: a Hugging Face directory on the store, served as text in, embeddings out.
TEXT_BASE: dict[str, Any] = copy.deepcopy(BASE)
TEXT_BASE["metadata"]["name"] = "text"
TEXT_BASE["spec"]["model"] = {
    "name": "minilm",
    "source": {"path": "models/all-MiniLM-L6-v2"},
    "task": "feature-extraction",
    "text": {"pooling": "mean", "normalize": True, "maxLength": 256, "truncation": True},
}
TENSOR = [{"name": "input_ids", "dtype": "int64", "shape": [128]}]
SHA = "0" * 64

# (id, base, {path: value} changes, text the error must contain): each rule's own message where another
# rule could reject the same change, else the field path it blames.
TEXT_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("text-without-task", BASE, {"spec.model.text": {"maxLength": 64}}, "spec.model.text: Invalid value"),
    ("pooling-for-classification", TEXT_BASE, {"spec.model.task": "text-classification"},
     "model.text.pooling and model.text.normalize apply to task 'feature-extraction' only"),
    ("task-with-inputs", TEXT_BASE, {"spec.model.inputs": TENSOR}, "spec.model.inputs: Invalid value"),
    ("task-with-outputs", TEXT_BASE, {"spec.model.outputs": TENSOR}, "spec.model.outputs: Invalid value"),
    ("task-with-recipe-io", TEXT_BASE, {"spec.compression": {"io": {"inputs": TENSOR}}},
     "spec.compression.io: Invalid value"),
    ("task-pt2-path", TEXT_BASE, {"spec.model.source": {"path": "models/m.pt2"}}, "spec.model.source: Invalid value"),
    ("task-pt-path", TEXT_BASE, {"spec.model.source": {"path": "models/m.pt"}}, "spec.model.source: Invalid value"),
    ("task-onnx-url", TEXT_BASE, {"spec.model.source": {"url": "https://x.example/m.onnx", "sha256": SHA}},
     "spec.model.source: Invalid value"),
    ("recipe-text-pt2", BASE, {"spec.compression": {"text": {"task": "feature-extraction"}}},
     "spec.model.source: Invalid value"),
    ("tarball-without-task", BASE, {"spec.model.source": {"url": "https://x.example/m.tar.gz", "sha256": SHA}},
     "spec.model.task: Invalid value"),
    ("tgz-without-task", BASE, {"spec.model.source": {"path": "models/m.tgz"}}, "spec.model.task: Invalid value"),
    ("task-torchscript", TEXT_BASE, {"spec.compression": {"export": {"format": "torchscript", "backend": "pytorch"}}},
     "spec.compression.export.format: Invalid value"),
    ("task-unbatched", TEXT_BASE, {"spec.serving": {"maxBatchSize": 0, "dynamicBatching": {"enabled": False}}},
     "serving.maxBatchSize must be >= 1"),
    ("task-unbatched-recipe", TEXT_BASE,
     {"spec.serving.maxBatchSize": None,
      "spec.compression": {"triton": {"maxBatchSize": 0, "dynamicBatching": {"enabled": False}}}},
     "compression.triton.maxBatchSize >= 1"),
    ("task-bad-max-length", TEXT_BASE, {"spec.model.text": {"maxLength": 4}}, "spec.model.text.maxLength"),
]  # fmt: skip

TEXT_ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("directory", TEXT_BASE, {}),
    ("tarball-url", TEXT_BASE, {"spec.model.source": {"url": "https://x.example/minilm.tar.gz", "sha256": SHA}}),
    ("classification", TEXT_BASE, {"spec.model.task": "text-classification", "spec.model.text": {"maxLength": 64}}),
    ("recipe-text", BASE, {"spec.model.source": {"path": "models/minilm"},
                           "spec.compression": {"text": {"task": "feature-extraction", "maxLength": 64}}}),
]  # fmt: skip


def mutate(path: str, value: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    return mutate_all({path: value}, base)


def mutate_all(changes: dict[str, Any], base: dict[str, Any] = BASE) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    for path, value in changes.items():
        _set(obj, path, value)
    return obj


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def named(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object under a unique name (cases go to the apiserver together); a too-long name stays."""
    if len(obj["metadata"]["name"]) > 45:
        return obj
    return {**obj, "metadata": {**obj["metadata"], "name": name}}


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    from pathlib import Path

    crds = Path(__file__).resolve().parents[2] / "crds"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    cluster.wait_established("modeldeployments.serving.conch.dev")


def test_valid_bases_are_accepted(cluster: Any, namespace: str, crd: None) -> None:
    objs = [named("base", BASE)] + [
        named(f"text-{i}", mutate_all(changes, base)) for i, (_, base, changes) in enumerate(TEXT_ACCEPTED)
    ]
    objs += [{**specgen.API, "metadata": {"name": f"gen-{b}"}, "spec": s} for b, s in specgen.BASES.items()]
    errors = specgen.dry_run_all(cluster.kubectl, namespace, objs, workers=2)
    assert errors == {o["metadata"]["name"]: "" for o in objs}


def test_hand_written_invalid_specs_are_rejected(cluster: Any, namespace: str, crd: None) -> None:
    """CASES and TEXT_CASES: each rejected, its error text containing the expected field or message."""
    table = [(i, mutate(p, v), needle) for i, p, v, needle in CASES]
    table += [(i, mutate_all(changes, base), needle) for i, base, changes, needle in TEXT_CASES]
    objs = [named(f"case-{n}", obj) for n, (_, obj, _) in enumerate(table)]
    errors = specgen.dry_run_all(cluster.kubectl, namespace, objs, workers=2)
    wrong = [
        f"{case_id}: wanted {needle!r}, got {errors[o['metadata']['name']].strip()[:300] or 'admitted'}"
        for (case_id, _, needle), o in zip(table, objs, strict=True)
        if needle not in errors[o["metadata"]["name"]]
    ]
    assert wrong == [], "\n".join(wrong)


def test_generated_invalid_specs_are_rejected_naming_their_path(
    cluster: Any, namespace: str, crd: None
) -> None:
    """Every refusal the operator makes (and every admission-only rule) is the apiserver's too, with its path."""
    cases = specgen.cases()
    assert len(cases) >= 500
    errors = specgen.dry_run_all(cluster.kubectl, namespace, [c.obj for c in cases])
    wrong = [
        f"{c.id}: wanted {c.path}, got {errors[c.obj['metadata']['name']].strip()[:300] or 'admitted'}"
        for c in cases
        if not specgen.rejection_names_path(errors[c.obj["metadata"]["name"]], c.path)
    ]
    assert wrong == [], "\n".join(wrong[:40])


QUANTITIES = ["500m", "2Gi", "1.", "+1", ".5", "1e3", "1E3", "1E", "1Ki", "1Ei", "1.5Gi", "1e-3", "+.5", ".",
              "m", "e3", "0", "-0", "100n", "1u", "12345678901234567890", "lots", "1.2.3", "-1", "-1m", "1x", "",
              "1 Gi", "0x10", "1ki", "--1", "+", "1e", "1e-", "1EI", "1m5", "Gi"]  # fmt: skip


def test_quantities_agree_with_the_apiserver(cluster: Any, namespace: str, crd: None) -> None:
    """The operator's quantity check (conch.api.quantity) admits exactly what the apiserver admits."""
    spec = specgen.BASES["minimal"]
    objs = [
        {
            **specgen.API,
            "metadata": {"name": f"q{i}"},
            "spec": {**spec, "serving": {"resources": {"limits": {"cpu": q}}}},
        }
        for i, q in enumerate(QUANTITIES)
    ]
    errors = specgen.dry_run_all(cluster.kubectl, namespace, objs, workers=1)

    def operator_admits(q: str) -> bool:
        try:
            quantity.check(q)
        except ValueError:
            return False
        return True

    apiserver = {q: errors[f"q{i}"] == "" for i, q in enumerate(QUANTITIES)}
    assert apiserver == {q: operator_admits(q) for q in QUANTITIES}
    assert not apiserver["lots"] and apiserver["500m"]


def test_source_sizes_agree_with_the_apiserver(cluster: Any, namespace: str, crd: None) -> None:
    """spec.build.maxSourceSize's bounds (1Mi..1Ti, int or string) read the same to the apiserver's CEL
    as to the operator's twin (quantity.between); the refusals also run in the generated suite."""
    spec = specgen.BASES["minimal"]
    sizes = specgen.SOURCE_SIZES + specgen.BAD_SOURCE_SIZES
    objs = [
        {**specgen.API, "metadata": {"name": f"s{i}"}, "spec": {**spec, "build": {"maxSourceSize": v}}}
        for i, v in enumerate(sizes)
    ]
    errors = specgen.dry_run_all(cluster.kubectl, namespace, objs, workers=1)
    apiserver = {repr(v): errors[f"s{i}"] == "" for i, v in enumerate(sizes)}
    assert apiserver == {
        repr(v): specgen.operator_refuses(o["spec"]) is None for v, o in zip(sizes, objs, strict=True)
    }
    assert [v for v in specgen.SOURCE_SIZES if not apiserver[repr(v)]] == []
    refusals = [errors[f"s{i + len(specgen.SOURCE_SIZES)}"] for i in range(len(specgen.BAD_SOURCE_SIZES))]
    assert all("spec.build.maxSourceSize" in e for e in refusals), refusals


def test_image_references_agree_with_the_apiserver(cluster: Any, namespace: str, crd: None) -> None:
    """The CRD's image pattern (conch.api.imageref) reads the same in Go's RE2 as in pydantic: every
    reference of specgen's tables is admitted or refused by the apiserver as the operator does, in both
    spec.serving.image and spec.build.image, a refusal naming the field."""
    refs = specgen.IMAGE_REFERENCES + specgen.BAD_IMAGE_REFERENCES
    table = [(f"i{i}-{where}", where, ref) for i, ref in enumerate(refs) for where in ("serving", "build")]
    spec = specgen.BASES["minimal"]
    objs = [{**specgen.API, "metadata": {"name": n}, "spec": {**spec, w: {"image": r}}} for n, w, r in table]
    errors = specgen.dry_run_all(cluster.kubectl, namespace, objs, workers=2)
    wrong = [
        f"{where}.image {ref!r}: {errors[name].strip()[:300] or 'admitted'}"
        for name, where, ref in table
        if (errors[name] == "") != (ref in specgen.IMAGE_REFERENCES)
        or (errors[name] and f"spec.{where}.image:" not in errors[name])
    ]
    assert wrong == [], "\n".join(wrong)
