"""Generated invalid ModelDeployments: valid bases x one mutation each, every one with the path to blame.

The cluster suite (test_validation_cluster) sends all of them to the apiserver in a few server-side dry
runs and checks each is rejected naming its path; the unit suite (test_specgen_unit) checks the
generator itself. Which (base, mutation) pairs are cases is declared (a mutation's `only` prefix and
its `valid_on` bases), never decided by asking the operator: the unit suite then asserts that the
operator (the pydantic models plus keys.effective_recipe) refuses every case, so a lost refusal fails a
test instead of dropping its case; mutations marked admission-only are CEL rules without an operator twin.
The unit suite also finds every `raise ValueError` in the recipe's validators (recipe.py and
recipe_sections.py) and fails when no case is refused with that message: each refusal of the recipe
has a case here, so an apiserver twin.
"""

# ruff: noqa: E501
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pydantic

from conch import errors
from conch.api import keys, types

Obj = dict[str, Any]
API = {"apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment"}
SHA = "0" * 64
TENSOR = [{"name": "input__0", "dtype": "float32", "shape": [3, 32, 32]}]

BASES: dict[str, Obj] = {
    "tensor-gpu": {
        "version": "v1",
        "model": {"name": "m", "source": {"path": "models/m.pt2"}},
        "serving": {"gpus": 1, "maxBatchSize": 8},
        "replicas": 1,
        "storage": {"claimName": "store"},
    },
    "tensor-cpu-hpa": {
        "version": "v2",
        "model": {"name": "digits", "source": {"path": "models/digits.pt2"}},
        "compression": {"quantize": {"mode": "fp16"}, "prune": {"method": "magnitude", "amount": 0.3}},
        "serving": {"gpus": 0, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                             "limits": {"cpu": 2, "memory": "2Gi"}}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
        "storage": {"claimName": "store", "repositoryPath": "repos"},
    },
    "torchscript": {
        "version": "ts-1",
        "model": {"name": "ts", "source": {"path": "models/ts.pt"}, "inputs": TENSOR},
        "compression": {"export": {"format": "torchscript", "backend": "pytorch"}, "quantize": {"mode": "fp16"}},
        "serving": {"backend": "pytorch", "gpus": 1},
        "storage": {"claimName": "store"},
    },
    "onnx-url-int8": {
        "version": "v3",
        "model": {"name": "r", "source": {"url": "https://models.example/r.onnx", "sha256": SHA}},
        "compression": {"quantize": {"mode": "int8-dynamic", "smoothAlpha": 0.5, "perChannel": True},
                        "triton": {"dynamicBatching": {"preferredBatchSizes": [2, 4]}}},
        "serving": {"gpus": 0, "instances": 2},
        "replicas": 2,
        "storage": {"claimName": "store"},
    },
    "batching": {
        "version": "v4",
        "model": {"name": "b", "source": {"path": "models/b.pt2"}},
        "serving": {"gpus": 2, "maxBatchSize": 16, "dynamicBatching": {"preferredBatchSizes": [4, 8]}},
        "build": {"resources": {"limits": {"cpu": "4", "memory": "8Gi"}}, "backoffLimit": 2},
        "replicas": 1,
        "rollout": {"maxSurge": 2, "autoRollback": False},
        "monitoring": {"serviceMonitor": {"enabled": True, "interval": "15s"}},
        "storage": {"claimName": "store"},
    },
    "minimal": {
        "version": "v1",
        "model": {"name": "tiny", "source": {"path": "models/tiny.onnx"}},
        "storage": {"claimName": "store"},
    },
    "text-task": {
        "version": "v1",
        "model": {"name": "minilm", "source": {"path": "models/all-MiniLM-L6-v2"}, "task": "feature-extraction",
                  "text": {"pooling": "mean", "normalize": True, "maxLength": 256}},
        "serving": {"gpus": 1, "maxBatchSize": 8},
        "replicas": 1,
        "storage": {"claimName": "store"},
    },
    "text-recipe": {
        "version": "v1",
        "model": {"name": "clf", "source": {"url": "https://models.example/clf.tar.gz", "sha256": SHA}},
        "compression": {"text": {"task": "text-classification", "maxLength": 64}},
        "serving": {"gpus": 0, "maxBatchSize": 4},
        "replicas": 1,
        "storage": {"claimName": "store"},
    },
    "text-generation": {
        "version": "int4",
        "model": {"name": "smollm2", "source": {"path": "models/SmolLM2-135M-Instruct.Q4_1.gguf"},
                  "task": "text-generation", "text": {"contextLength": 2048}},
        "serving": {"gpus": 0},
        "replicas": 1,
        "rollout": {"strategy": "canary", "canary": {"steps": [{"weight": 50}],
                                                     "analysis": {"maxLatencyRatio": 2.0}}},
        "monitoring": {"serviceMonitor": {"enabled": True}},
        "storage": {"claimName": "store"},
    },
}  # fmt: skip


@dataclass(frozen=True)
class Mutation:
    """Changes (dotted path under the object -> value, None deletes) and the path the apiserver names."""

    id: str
    changes: dict[str, Any]
    path: str
    admission_only: bool = False  # a CEL rule the operator has no twin of (the builder or kubelet refuses)
    only: str = ""  # apply to the bases whose id starts with this (where the path to blame is this one)
    valid_on: tuple[str, ...] = ()  # bases on which this change is a valid spec (declared, and tested so)


def _m(
    id_: str, path: str, value: Any, blame: str | None = None, *, admission_only: bool = False,
    valid_on: tuple[str, ...] = (),
) -> Mutation:  # fmt: skip
    return Mutation(id_, {path: value}, blame or path, admission_only, valid_on=valid_on)


# Image references in and out of distribution/reference's grammar (conch.api.imageref), for
# spec.serving.image and spec.build.image; test_validation_cluster checks the apiserver agrees on each.
HEX64 = "0123456789abcdef" * 4

IMAGE_REFERENCES = [
    "ubuntu",
    "ubuntu:24.04",
    "library/ubuntu",
    "docker.io/library/ubuntu:latest",
    types.DEFAULT_TRITON_IMAGE,
    types.DEFAULT_BUILDER_IMAGE,
    "nvcr.io/nvidia/tritonserver:25.12-py3",
    "localhost/conch:dev",
    "localhost:5000/conch/builder:0.1.0",
    "registry.example.com:443/a/b/c/d:v1",
    "192.168.1.10:5000/img",
    "[::1]:5000/img:1",
    "[2001:db8::1]/team/img",
    "Registry.Example.com/img",  # the domain may hold capitals, the path may not
    "my-image_name.v2__x---y:1",
    "a:_",
    "a:" + "x" * 128,
    f"img@sha256:{HEX64}",
    f"ghcr.io/conch-dev/tritonserver:25.12-py3@sha256:{HEX64}",
    f"img@sha256+b64u.v2:{'a' * 32}",
    "conch.local/missing:0",
]
BAD_IMAGE_REFERENCES = [
    "",
    "my image:1",
    "Ubuntu",  # capitals outside the domain
    "ubuntu/Image",
    "ubuntu:",
    "ubuntu:-1",
    "ubuntu:.1",
    "a:" + "x" * 129,
    "ubuntu:tag:other",
    "-ubuntu",
    "ubuntu-",
    "a..b",
    "a___b",
    "a/",
    "/a",
    "a//b",
    "host:port/img",
    "exa_mple.com:5000/img",
    "img@sha256:abc",  # a digest has at least 32 hex digits
    f"img@sha256:{'g' * 64}",
    f"img@256:{HEX64}",
    f"img@{HEX64}",
    "img\n",
    "ubuntu:latest ",
    "ubuntu:tâg",
    "https://registry.example.com/img",
]

# spec.build.maxSourceSize: a quantity from 1Mi to 1Ti (types.SOURCE_SIZE_RANGE), as an int or a string;
# test_validation_cluster checks the apiserver admits and refuses each as the operator does.
SOURCE_SIZES = ["1Mi", "1Ti", 1048576, 1099511627776, "50Gi", "1.5Gi", "1048576", "2e9", "1024Gi", "0.5Ti"]
BAD_SOURCE_SIZES = [
    "1Ki",
    "1048575",
    1048575,
    1099511627777,
    "1025Gi",
    "2Ti",
    "50m",
    "50Pi",
    "lots",
    "",
    -1,
    0,
]

_QUANTITIES = ["lots", "1.2.3", "-1", "1x", "", "1 Gi", "0x10", "1ki", "--1", -2]
_QUANTITY_SPOTS = [("serving", "limits", "cpu"), ("serving", "requests", "memory"),
                   ("build", "limits", "memory"), ("build", "requests", "cpu")]  # fmt: skip

# fmt: off
MUTATIONS: list[Mutation] = [
    *[_m(f"version-{i}", "spec.version", v) for i, v in enumerate(["v1/x", "", "-v", "v" * 64, "v 1", ".v"])],
    Mutation("no-version", {"spec.version": None}, "spec.version"),
    *[_m(f"model-name-{i}", "spec.model.name", v) for i, v in enumerate(["", "a/b", "x" * 64, "-a", "a b"])],
    Mutation("no-storage", {"spec.storage": None}, "spec.storage"),
    # spec.auth: the mode is one of two, a secretName is a Secret's name and only with tokens
    *[_m(f"auth-mode-{i}", "spec.auth.mode", v) for i, v in enumerate(["basic", "", "TOKEN"])],
    *[_m(f"auth-secret-{i}", "spec.auth.secretName", v) for i, v in enumerate(["Bad_Name", "", "-x", "a" * 254])],
    Mutation("auth-secret-without-tokens", {"spec.auth": {"mode": "none", "secretName": "tokens"}}, "spec.auth.secretName"),
    *[_m(f"claim-{i}", "spec.storage.claimName", v) for i, v in enumerate(["Bad_Name", "", "-x", "a" * 254])],
    _m("repo-abs", "spec.storage.repositoryPath", "/abs"),
    # one folder, one spelling (the store GC tells stores apart by it): no '.'/'..' or empty segments
    *[_m(f"repo-alias-{i}", "spec.storage.repositoryPath", v)
      for i, v in enumerate(["..", "../outside", "x/../repositories", "repositories/..", ".", "./repositories",
                             "repositories/./v2", "a//b", "repositories//"])],
    *[_m(f"gpus-{v}", "spec.serving.gpus", v) for v in (-1, 17)],
    *[_m(f"instances-{v}", "spec.serving.instances", v) for v in (0, 65)],
    *[_m(f"startup-{v}", "spec.serving.startupTimeoutSeconds", v) for v in (9, 7201)],
    *[
        _m(f"{w}-image-{i}", f"spec.{w}.image", v)
        for w in ("serving", "build")
        for i, v in enumerate(["", "my image:1", "Ubuntu", "ubuntu:", "img@sha256:abc", "https://x.example/img"])
    ],
    *[_m(f"max-batch-{v}", "spec.serving.maxBatchSize", v) for v in (-1, 4097)],
    _m("backend-enum", "spec.serving.backend", "triton"),
    *[
        _m(f"quantity-{where}-{kind}-{i}", f"spec.{where}.resources.{kind}.{name}", v,
           f"spec.{where}.resources[{kind}][{name}]")
        for where, kind, name in _QUANTITY_SPOTS
        for i, v in enumerate(_QUANTITIES)
    ],
    *[
        Mutation(f"request-over-limit-{where}", {f"spec.{where}.resources": {"requests": {"cpu": "1500m"},
                                                                            "limits": {"cpu": 1}}},
                 f"spec.{where}.resources")
        for where in ("serving", "build")
    ],
    *[_m(f"resources-claims-{w}", f"spec.{w}.resources.claims", {"x": 1}, f"spec.{w}.resources") for w in ("serving", "build")],
    *[_m(f"replicas-{v}", "spec.replicas", v) for v in (-1, 1001)],
    *[_m(f"history-{v}", "spec.revisionHistoryLimit", v) for v in (0, 101)],
    *[_m(f"surge-{v}", "spec.rollout.maxSurge", v) for v in (0, 101)],
    *[_m(f"deadline-{v}", "spec.rollout.progressDeadlineSeconds", v) for v in (4, 86401)],
    *[_m(f"build-deadline-{v}", "spec.build.activeDeadlineSeconds", v) for v in (29, 86401)],
    *[_m(f"backoff-{v}", "spec.build.backoffLimit", v) for v in (-1, 11)],
    *[_m(f"source-size-{i}", "spec.build.maxSourceSize", v) for i, v in enumerate(BAD_SOURCE_SIZES)],
    *[_m(f"interval-{v}", "spec.monitoring.serviceMonitor.interval", v) for v in ("soon", "10", "1d")],
    *[
        Mutation(f"autoscaling-{i}", {"spec.replicas": None, "spec.autoscaling": a}, p, admission_only=i < 2)
        for i, (a, p) in enumerate([
            ({"maxReplicas": 2}, "spec.autoscaling"),  # admission-only: the HPA would have no metric
            ({"minReplicas": 5, "maxReplicas": 2, "queueTime": {"averageMicroseconds": 9}}, "spec.autoscaling.minReplicas"),
            ({"maxReplicas": 0, "targetCPUUtilizationPercentage": 50}, "spec.autoscaling.maxReplicas"),
            ({"maxReplicas": 2, "targetCPUUtilizationPercentage": 0}, "spec.autoscaling.targetCPUUtilizationPercentage"),
            ({"maxReplicas": 2, "targetCPUUtilizationPercentage": 101}, "spec.autoscaling.targetCPUUtilizationPercentage"),
            ({"maxReplicas": 2, "queueTime": {"averageMicroseconds": 0}}, "spec.autoscaling.queueTime.averageMicroseconds"),
        ])
    ],
    Mutation("llm-autoscaling-for-encoders",
             {"spec.replicas": None, "spec.autoscaling": {"maxReplicas": 2, "waitingSequences": {"average": 2},
                                                          "kvCache": {"averagePercent": 80}}},
             "spec.autoscaling", valid_on=("text-generation",)),  # a generator's own scheduler metrics
    *[
        Mutation(f"llm-autoscaling-{i}", {"spec.replicas": None, "spec.autoscaling": {"maxReplicas": 2, **a}}, p,
                 only="text-generation")
        for i, (a, p) in enumerate([
            ({"waitingSequences": {"average": 0}}, "spec.autoscaling.waitingSequences.average"),
            ({"kvCache": {"averagePercent": 101}}, "spec.autoscaling.kvCache.averagePercent"),
        ])
    ],
    Mutation("replicas-and-autoscaling",
             {"spec.replicas": 2, "spec.autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50}},
             "spec.replicas", admission_only=True),
    Mutation("long-name", {"metadata.name": None}, "metadata", admission_only=True),
    *[
        Mutation(f"source-{i}", {"spec.model.source": s}, p, admission_only=True)
        for i, (s, p) in enumerate([
            ({}, "spec.model.source"),
            ({"path": "models/a", "url": "https://x.example/a.tar.gz", "sha256": SHA}, "spec.model.source"),
            ({"url": "https://x.example/m.onnx"}, "spec.model.source.sha256"),
            ({"path": "models/../../etc"}, "spec.model.source.path"),
        ])
    ],
    *[
        _m(f"source-field-{i}", f"spec.model.source.{k}", v)
        for i, (k, v) in enumerate([("path", "/etc/m.pt2"), ("url", "http://x.example/m"), ("sha256", "xyz")])
    ],
    # recipe fields (spec.compression) and the recipe's cross-field rules
    *[
        _m(f"recipe-{i}", f"spec.compression.{p}", v)
        for i, (p, v) in enumerate([
            ("prune.amount", 0.99), ("prune.method", "random"), ("quantize.mode", "int4"),
            ("quantize.calibrationSamples", 0), ("export.opset", 16), ("export.opset", 24),
            ("validation.samples", 0), ("gate.minCosine", 1.5), ("triton.instanceKind", "KIND_TPU"),
            ("triton.maxBatchSize", 4097), ("triton.instanceCount", 0), ("export.format", "tflite"),
            ("gate.minCosine", -1), ("gate.minCosine", -0.01), ("gate.minTop1Agreement", -0.1),
            ("gate.minTop1Agreement", 1.01), ("gate.maxAccuracyDrop", -0.1), ("gate.maxAccuracyDrop", 1.5),
            ("gate.minGreedyAgreement", -0.1), ("gate.minGreedyAgreement", 1.5), ("gate.maxAbsError", -1),
            ("gate.meanAbsError", -1), ("gate.maxPerplexityRatio", 0.9),
        ])
    ],
    Mutation("smooth-over-one", {"spec.compression.quantize": {"mode": "int8-dynamic", "smoothAlpha": 1.5}},
             "spec.compression.quantize.smoothAlpha"),
    Mutation("smooth-fp16", {"spec.compression.quantize": {"mode": "fp16", "smoothAlpha": 0.5}},
             "spec.compression.quantize.smoothAlpha"),
    Mutation("torchscript-onnxruntime", {"spec.compression.export": {"format": "torchscript", "backend": "onnxruntime"}},
             "spec.compression.export.format"),
    Mutation("onnx-pytorch", {"spec.compression.export": {"format": "onnx", "backend": "pytorch"}},
             "spec.compression.export.format"),
    Mutation("torchscript-int8", {"spec.compression.export": {"format": "torchscript", "backend": "pytorch"},
                                  "spec.compression.quantize": {"mode": "int8-dynamic"}, "spec.serving.backend": "pytorch"},
             "spec.compression.quantize.mode"),
    Mutation("tensorrt-fp16-python", {"spec.compression.export": {"backend": "python"},
                                      "spec.compression.triton.tensorrtFp16": True},
             "spec.compression.triton.tensorrtFp16"),
    *[
        Mutation(f"recipe-preferred-{i}", {"spec.compression.triton": t},
                 "spec.compression.triton.dynamicBatching.preferredBatchSizes")
        for i, t in enumerate([
            {"maxBatchSize": 0, "dynamicBatching": {"preferredBatchSizes": [4]}},
            {"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSizes": [2, 8]}},
            {"dynamicBatching": {"preferredBatchSizes": [0]}},
            {"dynamicBatching": {"preferredBatchSizes": [16]}},
        ])
    ],
    # serving overrides merged into the recipe (keys.effective_recipe)
    Mutation("serving-unbatched-preferred",
             {"spec.serving.maxBatchSize": 0, "spec.serving.dynamicBatching": {"enabled": False, "preferredBatchSizes": [4]}},
             "spec.serving.dynamicBatching.preferredBatchSizes"),
    Mutation("serving-preferred-over-recipe-max",
             {"spec.serving.maxBatchSize": None, "spec.compression.triton.maxBatchSize": 8,
              "spec.serving.dynamicBatching": {"preferredBatchSizes": [16]}},
             "spec.serving.dynamicBatching.preferredBatchSizes"),
    Mutation("serving-preferred-over-default-max",
             {"spec.serving.maxBatchSize": None, "spec.compression.triton": None,
              "spec.serving.dynamicBatching": {"preferredBatchSizes": [4, 12]}},
             "spec.serving.dynamicBatching.preferredBatchSizes"),
    Mutation("serving-max-below-recipe-preferred",
             {"spec.serving.maxBatchSize": 4, "spec.serving.dynamicBatching": None,
              "spec.compression.triton": {"maxBatchSize": 8, "dynamicBatching": {"preferredBatchSizes": [8]}}},
             "spec.serving.maxBatchSize"),
    Mutation("serving-batching-without-batch", {"spec.serving.maxBatchSize": 0, "spec.serving.dynamicBatching": None},
             "spec.serving.maxBatchSize", admission_only=True),
    Mutation("serving-pytorch", {"spec.serving.backend": "pytorch"}, "spec.serving.backend"),
    Mutation("serving-onnxruntime-for-torchscript", {"spec.serving.backend": "onnxruntime"}, "spec.serving.backend",
             only="torchscript"),
    Mutation("serving-python-tensorrt-fp16", {"spec.serving.backend": "python", "spec.compression.triton.tensorrtFp16": True},
             "spec.serving.backend"),
    # the precision ladder and distillation
    Mutation("fallback-repeats-mode", {"spec.compression.quantize": {"mode": "fp16"}, "spec.compression.fallback": ["fp16", "none"]},
             "spec.compression.fallback"),
    Mutation("fallback-repeats-text-default", {"spec.compression.quantize": None,
                                               "spec.compression.fallback": ["int8-dynamic", "fp16"]},
             "spec.compression.fallback", only="text-"),
    Mutation("fallback-duplicate", {"spec.compression.fallback": ["fp16", "fp16"]}, "spec.compression.fallback[1]"),
    Mutation("fallback-int8-torchscript", {"spec.compression.export": {"format": "torchscript", "backend": "pytorch"},
                                           "spec.serving.backend": "pytorch", "spec.compression.quantize": {"mode": "none"},
                                           "spec.compression.fallback": ["int8-static"]},
             "spec.compression.fallback"),
    Mutation("distill-no-smaller-student", {"spec.compression.prune": None, "spec.compression.distill": {"dataPath": "d/train.npz"}},
             "spec.compression.distill"),
    Mutation("distill-keep-layers-tensor", {"spec.compression.text": None, "spec.model.task": None, "spec.model.text": None,
                                            "spec.compression.distill": {"dataPath": "d/train.npz", "keepLayers": 2}},
             "spec.compression.distill.keepLayers"),
    Mutation("distill-on-validation-data", {"spec.compression.prune": {"method": "magnitude", "amount": 0.3},
                                            "spec.compression.validation": {"dataPath": "d/v.npz"},
                                            "spec.compression.distill": {"dataPath": "d/v.npz"}},
             "spec.compression.distill"),
    Mutation("distill-holdout-with-validation", {"spec.compression.prune": {"method": "magnitude", "amount": 0.3},
                                                 "spec.compression.validation": {"dataPath": "d/v.npz"},
                                                 "spec.compression.distill": {"dataPath": "d/t.npz", "holdout": 0.2}},
             "spec.compression.distill"),
    # text models
    _m("weight-only-for-encoders", "spec.compression.quantize", {"mode": "int4-weight"}, "spec.compression.quantize.mode",
       valid_on=("text-generation",)),  # a generator's own default
    Mutation("context-length-for-encoder", {"spec.compression.text.contextLength": 1024},
             "spec.compression.text.contextLength", only="text-recipe"),
    Mutation("context-length-for-encoder-task", {"spec.model.text.contextLength": 512}, "spec.model.text.contextLength",
             only="text-task"),
    Mutation("max-length-for-generation", {"spec.model.text.maxLength": 256}, "spec.model.text", only="text-generation"),
    Mutation("truncation-for-generation", {"spec.model.text.truncation": False}, "spec.model.text",
             only="text-generation"),
    Mutation("encoder-quantize-for-generation", {"spec.compression.quantize": {"mode": "int8-dynamic"}},
             "spec.compression.quantize.mode", only="text-generation"),
    *[
        Mutation(f"quality-{k}-{v}", {"spec.rollout": {"strategy": "canary", "canary": {
            "steps": [{"weight": 50}], "analysis": {"quality": {k: v}}}}},
            f"spec.rollout.canary.analysis.quality.{k}")
        for k, v in [("minCosine", -1), ("minCosine", -0.5), ("minCosine", 1.5), ("minTop1Agreement", -0.1),
                     ("minTop1Agreement", 2), ("maxAbsError", -0.1), ("minGreedyAgreement", 1.5),
                     ("minGreedyAgreement", -0.1)]
    ],
    _m("generation-limits-for-encoders", "spec.serving.generation", {"maxSequences": 4},
       valid_on=("text-generation",)),  # a generator's scheduler
    *[
        Mutation(f"generation-{k}-{v}", {f"spec.serving.generation.{k}": v}, f"spec.serving.generation.{k}",
                 only="text-generation")
        for k, v in [("maxSequences", 0), ("maxTokensInFlight", 8), ("maxQueue", -1)]
    ],
    Mutation("quality-canary-for-generation", {"spec.rollout.canary.analysis": {"quality": {"minCosine": 0.99}}},
             "spec.rollout.canary.analysis.quality", only="text-generation"),
    Mutation("greedy-quality-with-a-probe-file", {"spec.rollout.canary.analysis": {"quality": {
        "minGreedyAgreement": 0.9, "probePath": "probes/chat.txt"}}}, "spec.rollout.canary.analysis.quality",
             only="text-generation"),  # a generator's probes are its build's prompts
    Mutation("greedy-quality-for-encoders", {"spec.rollout": {"strategy": "canary", "canary": {
        "steps": [{"weight": 50}], "analysis": {"quality": {"minGreedyAgreement": 0.9}}}}},
        "spec.rollout.canary.analysis.quality.minGreedyAgreement", valid_on=("text-generation",)),
    *[
        Mutation(f"llm-ratio-for-encoders-{k}", {"spec.rollout": {"strategy": "canary", "canary": {
            "steps": [{"weight": 50}], "analysis": {k: 1.5}}}, "spec.monitoring.serviceMonitor.enabled": True},
            f"spec.rollout.canary.analysis.{k}", valid_on=("text-generation",))  # a generator's own histograms
        for k in ("maxTimeToFirstTokenRatio", "maxInterTokenLatencyRatio")
    ],
    *[
        Mutation(f"llm-ratio-{k}-{v}", {f"spec.rollout.canary.analysis.{k}": v}, f"spec.rollout.canary.analysis.{k}",
                 only="text-generation")
        for k in ("maxTimeToFirstTokenRatio", "maxInterTokenLatencyRatio") for v in (0, -1)
    ],
    _m("text-without-task", "spec.model.text", {"maxLength": 64},
       valid_on=("text-task", "text-recipe")),  # these bases have a text task, so model.text is theirs
    _m("text-max-length", "spec.model.text.maxLength", 4),
    Mutation("pooling-for-classification", {"spec.model.task": "text-classification",
                                            "spec.model.text": {"pooling": "cls"}}, "spec.model.text", only="text-"),
    Mutation("recipe-pooling-for-classification", {"spec.model.task": "text-classification", "spec.model.text": None,
                                                   "spec.compression.text": {"task": "feature-extraction", "pooling": "cls"}},
             "spec.compression.text", only="text-"),
    Mutation("text-inputs", {"spec.model.inputs": TENSOR}, "spec.model.inputs", only="text-"),
    Mutation("text-outputs", {"spec.model.outputs": [{"name": "y"}]}, "spec.model.outputs", only="text-"),
    Mutation("text-recipe-io", {"spec.compression.io": {"inputs": TENSOR}}, "spec.compression.io", only="text-"),
    Mutation("text-torchscript", {"spec.compression.export": {"format": "torchscript", "backend": "pytorch"},
                                  "spec.serving.backend": "pytorch"}, "spec.compression.export.format", only="text-"),
    Mutation("text-unbatched", {"spec.serving.maxBatchSize": 0, "spec.serving.dynamicBatching": {"enabled": False}},
             "spec.serving.maxBatchSize", only="text-"),
    Mutation("text-unbatched-recipe", {"spec.serving.maxBatchSize": None,
                                       "spec.compression.triton": {"maxBatchSize": 0, "dynamicBatching": {"enabled": False}}},
             "spec.compression.triton.maxBatchSize", only="text-"),
    Mutation("text-tensor-source", {"spec.model.source": {"path": "models/m.pt2"}}, "spec.model.source", True, "text-"),
    Mutation("tarball-without-task", {"spec.model.task": None, "spec.model.text": None, "spec.compression.text": None,
                                      "spec.model.source": {"path": "models/m.tgz"}}, "spec.model.task", admission_only=True),
]
# fmt: on


@dataclass(frozen=True)
class Case:
    """One object to send and the path its rejection must name."""

    id: str
    obj: Obj
    path: str


def mutate(obj: Obj, changes: dict[str, Any]) -> Obj:
    """A deep copy of `obj` with the changes applied (None deletes the field)."""
    out = copy.deepcopy(obj)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def operator_refuses(spec: Obj) -> str | None:
    """Why the operator would park this spec as InvalidSpec (pydantic, then the merged recipe), or None."""
    try:
        keys.effective_recipe(types.ModelDeploymentSpec.model_validate(spec))
    except pydantic.ValidationError as exc:
        return str(exc)
    except errors.InvalidSpecError as exc:
        return str(exc)
    return None


def _object(name: str, spec: Obj) -> Obj:
    return {**API, "metadata": {"name": name}, "spec": spec}


def applies(mut: Mutation, base_id: str) -> bool:
    """Whether (base, mutation) is a case: chosen by the declarations alone, never by asking the
    operator, so an operator that stops refusing one fails the tests instead of losing the case."""
    return base_id.startswith(mut.only) and base_id not in mut.valid_on


def cases() -> list[Case]:
    """Every (base, mutation) declared invalid: each must be refused by the operator (unless
    admission-only) and by the apiserver, which the tests assert."""
    out: list[Case] = []
    for base_id, spec in BASES.items():
        for mut in MUTATIONS:
            if not applies(mut, base_id):
                continue
            name = f"g{len(out):04d}"
            if mut.id == "long-name":
                name = name + "-" + "n" * 40  # 46 characters
            obj = mutate(_object(name, spec), mut.changes)
            obj["metadata"]["name"] = name
            if obj["spec"] == spec and mut.id != "long-name":
                continue  # the mutation changes nothing on this base
            out.append(Case(f"{base_id}/{mut.id}", obj, mut.path))
    return out


def rejection_names_path(error: str, path: str) -> bool:
    """The apiserver's error text names `path` as a field (`path: ...`) or a key/index below it."""
    return f"{path}:" in error or f"{path}[" in error


def as_list(objs: list[Obj]) -> str:
    """A v1 List of the objects, as JSON (one kubectl call for many objects)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})


def dry_run_all(kubectl: Any, namespace: str, objs: list[Obj], workers: int = 4) -> dict[str, str]:
    """Server-side dry-run create of every object, `workers` kubectl calls at once: name -> error text.

    An object the apiserver admits maps to "".
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [objs[i::workers] for i in range(workers)]

    def run(chunk: list[Obj]) -> str:
        args = ("-n", namespace, "create", "--dry-run=server", "--validate=false", "-f", "-")
        proc = kubectl(*args, input=as_list(chunk), check=False, timeout=300)
        return str(proc.stderr)

    with ThreadPoolExecutor(workers) as pool:
        stderr = "\n".join(pool.map(run, chunks))
    errors_by_name = {o["metadata"]["name"]: "" for o in objs}
    for block in stderr.split("Error from server")[1:]:
        name = block.split('"', 3)[3].split('"', 1)[0] if block.count('"') >= 4 else ""
        if name in errors_by_name:
            errors_by_name[name] = block
    return errors_by_name
