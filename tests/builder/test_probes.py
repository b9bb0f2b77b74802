"""The probe set a build keeps for canary quality analysis: where it lies, how big it gets, and that
its reference answers are the original model's."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from model_repo_builder.data.texts import VALIDATION_SENTENCES
from model_repo_builder.errors import BadInput
from model_repo_builder.gate import probes
from model_repo_builder.store.repository import verify_repository
from tests.support import digits_model

from .conftest import Run

pytestmark = pytest.mark.unit
DIGITS_RECIPE = {
    "quantize": {"mode": "fp16"},
    "export": {"backend": "python"},
    "triton": {"instanceKind": "KIND_CPU", "maxBatchSize": 16},
    "gate": {"minCosine": 0.99},
}


def test_a_build_keeps_the_first_validation_inputs_and_the_original_answers(
    run_cli: Run, tmp_path: Path
) -> None:
    model, _ = digits_model.train(epochs=20)
    source = digits_model.save(model, tmp_path / "digits.pt2")
    x, y = digits_model.dataset()
    np.savez(tmp_path / "val.npz", pixels=x[:200].numpy(), labels=y[:200].numpy())
    r = run_cli("build", source, "--out", tmp_path / "store", "--model-name", "digits",
                "--input", "pixels:float32:64", "--validation-data", tmp_path / "val.npz",
                "--validation-samples", 100,
                "--recipe-json", json.dumps(DIGITS_RECIPE))  # fmt: skip
    assert r.code == 0, r.stderr
    repo = Path(r.summary["repository"])
    assert [p.name for p in repo.iterdir() if p.is_dir()] == ["digits"]  # Triton sees one model, no probes
    record = json.loads((repo / "build.json").read_text())
    assert record["probes"] == {**record["probes"], "file": "probes.npz", "count": 64, "origin": "val.npz"}
    assert "probes.npz" in record["files"] and verify_repository(repo) == []
    probe_set = probes.read(repo)
    assert (probe_set.model, probe_set.kind, probe_set.max_batch_size) == ("digits", "tensor", 16)
    np.testing.assert_array_equal(probe_set.inputs["pixels"], x[:64].numpy())
    (name,) = probe_set.reference
    with torch.no_grad():
        original = model(x[:64]).numpy()
    np.testing.assert_allclose(probe_set.reference[name], original, rtol=1e-5, atol=1e-6)


def test_a_text_build_keeps_its_sentences_and_the_original_labels(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    recipe = {"export": {"backend": "python"}, "triton": {"instanceKind": "KIND_CPU"},
              "text": {"task": "text-classification"}, "quantize": {"mode": "none"}}  # fmt: skip
    r = run_cli("build", sentiment_checkpoint, "--out", tmp_path, "--model-name", "sentiment",
                "--recipe-json", json.dumps(recipe))  # fmt: skip
    assert r.code == 0, r.stderr
    probe_set = probes.read(Path(r.summary["repository"]) / "probes.npz")
    texts = list(VALIDATION_SENTENCES)
    assert probe_set.kind == "text" and probe_set.inputs["text"].reshape(-1).tolist() == texts
    tokenizer = AutoTokenizer.from_pretrained(str(sentiment_checkpoint), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(sentiment_checkpoint), local_files_only=True
    )
    with torch.no_grad():
        probs = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    names = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert probe_set.reference["label"].reshape(-1).tolist() == names
    np.testing.assert_allclose(probe_set.reference["score"].reshape(-1), probs.max(-1), atol=1e-5)


@pytest.mark.parametrize(
    ("items", "item_bytes", "expected"),
    [
        (200, 256, probes.MAX_PROBES),  # small items: the count bound
        (10, 256, 10),  # fewer than the bound: all of them
        (100, 512 * 1024, probes.MAX_BYTES // (512 * 1024)),  # large items: the byte bound
        (5, probes.MAX_BYTES * 2, 1),  # one item over the byte bound: still one probe
    ],
)
def test_the_probe_set_is_bounded(items: int, item_bytes: int, expected: int) -> None:
    arrays = {"x": np.zeros((items, item_bytes), dtype=np.uint8)}
    assert probes.bounded_count(arrays) == expected
    assert probes.tensor_probes("m", arrays, {}, "test", 8).count == expected


def test_equal_probes_give_equal_bytes(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        inputs, answers = {"x": np.arange(12.0).reshape(6, 2)}, {"y": np.ones((6, 3))}
        probes.write(folder, probes.tensor_probes("m", inputs, answers, "o", 4))
        digests.append(hashlib.sha256((folder / probes.PROBES_FILE).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_user_probe_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", pixels=np.ones((3, 64), np.float32), labels=np.arange(3))
    plain = probes.read(tmp_path / "plain.npz")
    assert (plain.model, list(plain.inputs), plain.count, plain.reference) == ("", ["pixels"], 3, {})
    (tmp_path / "p.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "label": "x"}\n')
    assert probes.read(tmp_path / "p.jsonl").inputs["text"].reshape(-1).tolist() == ["one", "two"]
    (tmp_path / "p.txt").write_text("first\nsecond\n")
    assert probes.read(tmp_path / "p.txt").count == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npz", None, "probe file not found: {path}"),
        ("probes.csv", "a,b\n", "probe file {path}: expected .npz, .txt or .jsonl"),
        ("broken.npz", "not a zip", "cannot read probe file {path}"),
        ("bad.jsonl", '{"text": "ok"}\n\n[1]\n', "probe file {path} line 3: expected an object"),
        ("empty.txt", "\n\n", "probe file {path} holds no text"),
    ],
)
def test_bad_probe_files_are_named(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=re.escape(message.format(path=path))):
        probes.read(path)


def test_a_build_without_probes_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=rf"{tmp_path} has no probes\.npz"):
        probes.read(tmp_path)


def test_a_generators_probes_are_prompts_and_greedy_answers(tmp_path: Path) -> None:
    prompts = ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>user\nHi"]
    probes.write(tmp_path, probes.generation_probes("smol", prompts, ["4", "Hello!"], "gate chat prompts"))
    back = probes.read(tmp_path)
    assert (back.model, back.kind, back.count) == ("smol", probes.GENERATION_KIND, 2)
    assert back.inputs[probes.PROMPT_INPUT].reshape(-1).tolist() == prompts
    assert back.reference[probes.ANSWER_OUTPUT].reshape(-1).tolist() == ["4", "Hello!"]
