"""Distillation of a Hugging Face encoder into a shallower copy (keepLayers), on generated text.

A 4-layer BERT-config encoder (hidden 32, seeded weights large enough that every layer matters) is
distilled into 2 of its layers on generated sentences, then quantized (the int8 + SmoothQuant text
default) and gated on the built-in English validation sentences through the served path. The
shallow copy alone is far from the teacher (cosine about 0.25); distilled it passes a 0.85 gate.
About 40 s on 2 cores (two builds, one of 300 steps).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from . import textmodels
from .conftest import Run, listing

pytestmark = pytest.mark.unit

WORDS = (
    "the a model server request queue batch token layer network data file user system cloud node "
    "fast slow new old big small red green quiet busy runs stops sends reads writes builds loads "
    "waits under over into from with after before today again often never"
)


@pytest.fixture(scope="module")
def encoder4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 4-layer BERT-config encoder with MiniLM's tokenizer, saved with save_pretrained."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    dest = tmp_path_factory.mktemp("encoder4")
    textmodels.copy_tokenizer(dest)
    tokenizer = AutoTokenizer.from_pretrained(str(dest), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, initializer_range=0.2,
    )  # fmt: skip
    BertModel(config).eval().save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 generated sentences (seeded), one per line."""
    rng, words = random.Random(0), WORDS.split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(600)]
    path = tmp_path_factory.mktemp("text") / "generated.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _build(run_cli: Run, source: Path, store: Path, distill: dict[str, Any]) -> Any:
    recipe = {"text": {"task": "feature-extraction"}, "distill": distill, "gate": {"minCosine": 0.85}}
    return run_cli("build", source, "--out", store, "--recipe-json", json.dumps(recipe))


def test_four_layers_distilled_into_two(
    run_cli: Run, encoder4: Path, generated: Path, tmp_path: Path
) -> None:
    shallow = _build(
        run_cli, encoder4, tmp_path / "one-step", {"dataPath": str(generated), "keepLayers": 2, "steps": 1}
    )
    assert shallow.code == 3, shallow.stderr
    assert shallow.summary["gate"]["cosine"] < 0.6

    r = _build(
        run_cli, encoder4, tmp_path / "distilled", {"dataPath": str(generated), "keepLayers": 2, "steps": 300}
    )
    assert r.code == 0, r.stderr
    assert r.summary["gate"]["cosine"] >= 0.85
    record = json.loads((Path(r.summary["repository"]) / "build.json").read_text())
    d = record["distill"]
    assert d["student"]["kind"] == "keep 2 of 4 layers [0, 3]" and d["student"]["frozen"] == "word embeddings"
    assert d["loss"] == "cosine" and d["learningRate"] == 5e-4
    assert d["lossCurve"]["last"] < d["lossCurve"]["first"] / 3
    assert d["data"] == {"origin": "generated.txt texts 1..600", "samples": 600, "labels": False}
    assert [p["name"] for p in record["passes"]][:2] == ["distill", "export"]
    assert record["quantize"]["published"] == "int8-dynamic"
    assert record["text"]["calibrationData"].startswith("generated.txt texts 1..600 (first 64)")
    # the served tensor model really has 2 layers: about half the teacher's encoder weights are gone
    assert (
        d["student"]["parametersBefore"] - d["student"]["parametersAfter"] == 2 * 8_544
    )  # hidden 32, intermediate 64
    assert r.summary["distill"]["student"] == "keep 2 of 4 layers [0, 3]"


def test_text_distillation_refuses_overlap_and_a_student_as_deep_as_the_teacher(
    run_cli: Run, encoder4: Path, tmp_path: Path
) -> None:
    from model_repo_builder.data.texts import VALIDATION_SENTENCES

    leaky = tmp_path / "leaky.txt"
    leaky.write_text("some words of our own\n" + VALIDATION_SENTENCES[3] + "\n")
    r = _build(run_cli, encoder4, tmp_path / "a", {"dataPath": str(leaky), "keepLayers": 2})
    assert r.code == 2
    assert (
        "overlaps the validation data (built-in validation sentences): 1 validation texts"
        in r.summary["error"]["message"]
    )
    deep = _build(
        run_cli,
        encoder4,
        tmp_path / "b",
        {"dataPath": str(tmp_path / "leaky.txt"), "keepLayers": 4, "holdout": 0.5},
    )
    assert deep.code == 2
    assert "distill.keepLayers 4 must be below the model's 4 layers" in deep.summary["error"]["message"]
    assert listing(tmp_path / "a") == [] and listing(tmp_path / "b") == []
