"""Unit tests of the API models, the generated CRD and the spec key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conch import errors
from conch.api import crdgen, keys, types
from model_repo_builder import recipe

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
    """Each example's spec parses and its recipe JSON carries what the spec says, and round-trips."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == types.KIND]
    for doc in docs:
        raw = doc["spec"]
        spec = types.ModelDeploymentSpec.model_validate(raw)
        data = json.loads(keys.recipe_json(spec))
        assert recipe.Recipe.model_validate(data) == keys.effective_recipe(spec), "recipe JSON round-trips"
        serving = raw.get("serving", {})
        triton = data["triton"]
        assert triton["instanceKind"] == ("KIND_GPU" if serving.get("gpus", 1) > 0 else "KIND_CPU")
        assert triton["maxBatchSize"] == serving.get("maxBatchSize", 8)
        quantize = raw.get("compression", {}).get("quantize", {})
        task = raw["model"].get("task")
        text_default = "int8-dynamic" if task else "none"
        assert data["quantize"]["mode"] == quantize.get("mode", text_default)
        assert data.get("text", {}).get("task") == task
        assert ("inputs" in raw["model"]) == bool(data["io"]["inputs"])
    assert path.name == "model-store-pvc.yaml" or docs, "an example without a ModelDeployment"


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


def text_spec(model: dict[str, object] | None = None, **over: object) -> types.ModelDeploymentSpec:
    ref: dict[str, object] = {"name": "m", "source": {"path": "models/minilm"}, "task": "feature-extraction"}
    ref.update(model or {})
    return types.ModelDeploymentSpec.model_validate(base_spec(model=ref, **over))


def test_task_makes_a_text_recipe_with_the_transformer_default() -> None:
    r = keys.effective_recipe(text_spec())
    assert r.text is not None and r.text.task == "feature-extraction"
    assert (r.text.max_length, r.text.truncation) == (128, True)
    assert (r.quantize.mode, r.quantize.smooth_alpha) == ("int8-dynamic", recipe.TRANSFORMER_SMOOTH_ALPHA)


def test_a_given_quantize_is_kept_for_text_models() -> None:
    fp16 = keys.effective_recipe(text_spec(compression={"quantize": {"mode": "fp16"}}))
    assert (fp16.quantize.mode, fp16.quantize.smooth_alpha) == ("fp16", None)
    plain = keys.effective_recipe(text_spec(compression={"quantize": {}}))
    assert plain.quantize.mode == "none", "an explicit (empty) quantize section is the user's choice"


def test_model_text_wins_over_compression_text() -> None:
    spec = text_spec(
        {"task": "feature-extraction", "text": {"pooling": "cls", "maxLength": 256}},
        compression={"text": {"task": "text-classification", "maxLength": 64, "truncation": False}},
    )
    text = keys.effective_recipe(spec).text
    assert text is not None
    assert (text.task, text.pooling, text.max_length) == ("feature-extraction", "cls", 256)
    assert text.truncation is False, "a setting only compression.text makes is kept"


def test_compression_text_alone_is_a_text_model() -> None:
    spec = types.ModelDeploymentSpec.model_validate(
        base_spec(
            model={"name": "m", "source": {"path": "models/minilm"}},
            compression={"text": {"task": "text-classification"}},
        )
    )
    r = keys.effective_recipe(spec)
    assert r.text is not None and r.text.task == "text-classification" and r.quantize.mode == "int8-dynamic"


def test_text_settings_change_the_spec_key_and_tensor_models_keep_theirs() -> None:
    a, b = text_spec(), text_spec({"text": {"maxLength": 256}})
    assert keys.spec_key(a) != keys.spec_key(b)
    assert '"text"' not in keys.recipe_json(types.ModelDeploymentSpec.model_validate(base_spec()))


def test_text_model_with_inputs_names_the_field() -> None:
    spec = text_spec({"inputs": [{"name": "input_ids", "dtype": "int64", "shape": [128]}]})
    with pytest.raises(errors.InvalidSpecError, match=r"spec\.compression"):
        keys.effective_recipe(spec)
