"""A distilled version through the operator (kwok nodes): rolled out, rolled back and forward again.

The builder's part is played with the real builder's own summary: the test runs `model-repo-builder
build` in-process (a small CNN, 30% channel pruning distilled for a few steps, a precision ladder)
and completes the Job's pod with that line, so the contract from build.json to the Built condition
and the history entry is the real one. Also: admission lets spec.model.task models use keepLayers.
About 20 s with a running control plane.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opharness import Kube, kube_fixture, md_object, operator_fixture, serving, wait_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.cluster
DISTILL = {
    "prune": {"method": "channel", "amount": 0.3},
    "distill": {"dataPath": "data/train.npz", "steps": 40},
    "quantize": {"mode": "int8-dynamic"},
    "fallback": ["fp16"],
    "gate": {"minCosine": 0.5},
}


def small_cnn(path: Path) -> Path:
    """A seeded two-conv CNN as ONNX (batch-dynamic), [N, 1, 8, 8] -> [N, 4]."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    ).eval()  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (torch.randn(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})  # fmt: skip
    return path


def real_summary(tmp: Path, recipe_json: str) -> str:
    """Run the real builder on a small CNN with the Job's own recipe; its last stdout line."""
    from model_repo_builder.cli import main

    source = small_cnn(tmp / "cnn.onnx")
    (tmp / "data").mkdir()
    np.savez(
        tmp / "data" / "train.npz", x=np.random.default_rng(3).standard_normal((64, 1, 8, 8)).astype("f4")
    )
    out = io.StringIO()
    with contextlib.chdir(tmp), contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["build", str(source), "--out", str(tmp / "store"), "--recipe-json", recipe_json])
    assert code == 0, out.getvalue()
    return out.getvalue().strip().splitlines()[-1]


def test_op_distilled_version_rolls_out_and_back(kube: Kube, tmp_path: Path) -> None:
    k = kube
    k.apply(md_object("dist"))
    k.finish_build("dist", "v1")
    wait_for("v1 serving", lambda: serving(k, "dist", "v1"), 90)

    k.apply(md_object("dist", version="v2", compression=DISTILL))
    job = wait_for(
        "v2 job", lambda: [j for j in k.jobs("dist") if "v2" in json.dumps(j["spec"]["template"])], 30
    )[0]
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    recipe = json.loads(cmd[cmd.index("--recipe-json") + 1])
    assert recipe["distill"]["dataPath"] == "data/train.npz" and recipe["fallback"] == ["fp16"]
    line = real_summary(tmp_path, cmd[cmd.index("--recipe-json") + 1])
    pod = k.items("pods", f"batch.kubernetes.io/job-name={job['metadata']['name']}")[0]["metadata"]["name"]
    k.cluster.complete_pod(k.ns, pod, 0, line)
    wait_for("v2 serving", lambda: serving(k, "dist", "v2"), 90)

    built = k.condition("dist", "Built")["message"]
    assert built.startswith(f"built {json.loads(line)['buildKey']}; distilled 40 steps in ")
    assert ", student channel-pruned" in built and "published " in built
    entry = next(h for h in k.status("dist")["history"] if h["version"] == "v2")
    assert entry["summary"]["distill"]["steps"] == 40
    assert entry["summary"]["quantize"]["published"] in ("int8-dynamic", "fp16")

    k.k("patch", "md", "dist", "--type=merge", "-p", '{"spec":{"version":"v1"}}')
    wait_for("back to v1", lambda: serving(k, "dist", "v1"), 60)
    k.apply(md_object("dist", version="v2", compression=DISTILL))
    wait_for("forward to v2", lambda: serving(k, "dist", "v2"), 60)
    assert len(k.jobs("dist")) == 2, "rolling between built versions must not start a Job"
    assert "distilled 40 steps" in k.condition("dist", "Built")["message"]


def test_op_keep_layers_is_admitted_for_text_models_only(kube: Kube) -> None:
    k = kube
    model = {"name": "txt", "task": "feature-extraction", "source": {"path": "models/minilm"}}
    text = md_object(
        "txt", model=model, compression={"distill": {"dataPath": "data/train.txt", "keepLayers": 3}}
    )
    assert k.k("create", "--dry-run=server", "-f", "-", input=json.dumps(text), check=False).returncode == 0
    tensor = md_object("ten", compression={"distill": {"dataPath": "data/train.npz", "keepLayers": 3}})
    refused = k.k("create", "--dry-run=server", "-f", "-", input=json.dumps(tensor), check=False)
    assert refused.returncode != 0
    assert "spec.compression.distill.keepLayers: Invalid value" in refused.stderr
    assert "applies to Hugging Face text models" in refused.stderr
