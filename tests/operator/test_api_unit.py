"""Unit tests of the API models, the generated CRD and the spec key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conch import errors
from conch.api import crdgen, keys, types

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def base_spec(**over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "version": "v1",
        "model": {"name": "m", "source": {"path": "models/m.pt2"}},
        "storage": {"claimName": "store"},
    }
    spec.update(over)
    return spec


def test_crds_match_the_models() -> None:
    path = ROOT / "crds" / crdgen.CRD_FILE
    assert path.read_text() == crdgen.render_yaml(), "crds/ drifted: run python -m conch.api.crdgen"


def test_crd_is_structural() -> None:
    text = crdgen.render_yaml()
    for forbidden in ("$ref", "anyOf", "nullable", "additionalProperties: false", "title:", "default:"):
        assert forbidden not in text
    version = crdgen.crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == [
        "Version",
        "Serving",
        "Phase",
        "Ready",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == types.KIND:
            spec = types.ModelDeploymentSpec.model_validate(doc["spec"])
            assert keys.recipe_json(spec).startswith("{")


def test_spec_key_depends_on_build_inputs_only() -> None:
    a = types.ModelDeploymentSpec.model_validate(base_spec())
    same = types.ModelDeploymentSpec.model_validate(base_spec(version="v2", replicas=3))
    other = types.ModelDeploymentSpec.model_validate(base_spec(compression={"quantize": {"mode": "fp16"}}))
    batch = types.ModelDeploymentSpec.model_validate(base_spec(serving={"maxBatchSize": 4}))
    assert keys.spec_key(a) == keys.spec_key(same)
    assert len({keys.spec_key(a), keys.spec_key(other), keys.spec_key(batch)}) == 3
    assert len(keys.job_name("x" * 45, keys.spec_key(a))) <= 63


def test_serving_overrides_reach_the_recipe() -> None:
    spec = types.ModelDeploymentSpec.model_validate(
        base_spec(serving={"gpus": 0, "maxBatchSize": 16, "instances": 2, "backend": "python"})
    )
    recipe = keys.effective_recipe(spec)
    assert recipe.triton.instance_kind == "KIND_CPU"
    assert (recipe.triton.max_batch_size, recipe.triton.instance_count) == (16, 2)
    assert recipe.export.backend == "python"


def test_inconsistent_recipe_names_the_field() -> None:
    spec = types.ModelDeploymentSpec.model_validate(base_spec(serving={"backend": "pytorch"}))
    with pytest.raises(errors.InvalidSpecError, match="compression"):
        keys.effective_recipe(spec)


def test_replicas_follow_autoscaling() -> None:
    fixed = types.ModelDeploymentSpec.model_validate(base_spec(replicas=3))
    scaled = types.ModelDeploymentSpec.model_validate(
        base_spec(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70})
    )
    assert (fixed.effective_replicas(), fixed.min_replicas()) == (3, 3)
    assert (scaled.effective_replicas(), scaled.min_replicas()) == (None, 2)
