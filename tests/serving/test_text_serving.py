"""Text models on a real tritonserver: text in over HTTP and gRPC, embeddings or labels out.

all-MiniLM-L6-v2 is built twice (the default int8 + SmoothQuant, and fp32) and a tiny BERT
sentiment classifier is trained and built; one tritonserver serves the three ensembles. Answers
are compared with the original `transformers` models on sentences outside the validation set, and
each kind of bad input gets a clear per-request error (or a right answer) while the server keeps
serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from builder import textmodels
from tritonclient.utils import InferenceServerException

from model_repo_builder.cli import main
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
SENTENCES = [
    "A large language model answered the customer's question in French.",
    "The bridge was closed for repairs over the holiday weekend.",
    "Tea is best brewed with water just below the boiling point.",
    "The goalkeeper saved a penalty in the final minute.",
    "Autumn leaves covered the path through the forest.",
    "Our cluster autoscaler added two GPU nodes overnight.",
    "She signed the lease for a small flat near the river.",
    "The algorithm sorts a million integers in under a second.",
]
MAX_BATCH = 8


def _build(source: Path, store: Path, name: str, recipe: dict[str, Any], work: Path) -> Path:
    summary = work / f"{name}.summary.json"
    args = ["build", str(source), "--out", str(store), "--model-name", name, "--summary-file", str(summary)]
    assert main([*args, "--recipe-json", json.dumps(recipe)]) == 0
    return Path(json.loads(summary.read_text())["repository"])


@pytest.fixture(scope="module")
def repositories(serving_dir: Path, sentiment_checkpoint: Path) -> dict[str, Path]:
    store, work = serving_dir / "text-store", serving_dir / "text-work"
    work.mkdir()
    cpu = {"triton": {"instanceKind": "KIND_CPU", "maxBatchSize": MAX_BATCH}, "export": {"backend": "python"}}
    minilm = textmodels.minilm_dir()
    tiny = sentiment_checkpoint
    labelled = textmodels.write_jsonl(work / "sentiment.jsonl", list(textmodels.HELD_OUT))
    return {
        "minilm": _build(minilm, store, "minilm", {**cpu, "text": {"task": "feature-extraction"}}, work),
        "minilm_fp32": _build(
            minilm,
            store,
            "minilm_fp32",
            {**cpu, "text": {"task": "feature-extraction"}, "quantize": {"mode": "none"}},
            work,
        ),
        "sentiment": _build(
            tiny,
            store,
            "sentiment",
            {
                **cpu,
                "text": {"task": "text-classification"},
                "validation": {"dataPath": str(labelled)},
                "gate": {"minTop1Agreement": 1.0, "maxAccuracyDrop": 0.0},
            },
            work,
        ),
    }


@pytest.fixture(scope="module")
def triton(repositories: dict[str, Path], serving_dir: Path) -> Iterator[Triton]:
    workdir = serving_dir / "text-triton"
    workdir.mkdir()
    with run_triton(list(repositories.values()), workdir) as server:
        yield server


def _text_array(texts: list[str] | list[bytes]) -> np.ndarray:
    rows = [t.encode() if isinstance(t, str) else t for t in texts]
    return np.array(rows, dtype=object).reshape(-1, 1)


def embed_http(server: Triton, model: str, texts: list[str] | list[bytes]) -> np.ndarray:
    client = triton_http.InferenceServerClient(server.http_url)
    data = _text_array(texts)
    inp = triton_http.InferInput("text", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return np.asarray(client.infer(model, [inp]).as_numpy("embedding"))


def embed_grpc(server: Triton, model: str, texts: list[str]) -> np.ndarray:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    data = _text_array(texts)
    inp = triton_grpc.InferInput("text", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return np.asarray(client.infer(model, [inp]).as_numpy("embedding"))


@pytest.mark.parametrize(("model", "floor"), [("minilm", 0.995), ("minilm_fp32", 0.999)])
def test_embeddings_match_the_original_over_http_and_grpc(triton: Triton, model: str, floor: float) -> None:
    reference = textmodels.reference_embeddings(SENTENCES)
    over_http = embed_http(triton, model, SENTENCES)
    over_grpc = embed_grpc(triton, model, SENTENCES)
    assert over_http.shape == (len(SENTENCES), 384)
    assert over_http.dtype == np.float32
    assert textmodels.mean_cosine(over_http, reference) >= floor
    assert textmodels.mean_cosine(over_grpc, reference) >= floor
    assert np.allclose(np.linalg.norm(over_http, axis=1), 1.0, atol=1e-4)  # normalised by the post step


def test_labels_through_triton_equal_the_original_models(triton: Triton, sentiment_checkpoint: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    checkpoint = sentiment_checkpoint
    texts = [t for t, _ in textmodels.HELD_OUT] + SENTENCES[:2]
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint), local_files_only=True).eval()
    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits, -1)
    expected = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    client = triton_http.InferenceServerClient(triton.http_url)
    inp = triton_http.InferInput("text", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(_text_array(texts))
    result = client.infer("sentiment", [inp])
    labels = [x.decode() for x in result.as_numpy("label").reshape(-1)]
    assert labels == expected
    assert labels[:4] == [label for _, label in textmodels.HELD_OUT]
    assert np.allclose(result.as_numpy("score").reshape(-1), probs.max(-1).values.numpy(), atol=1e-3)


def test_the_tensor_model_stays_addressable(triton: Triton) -> None:
    client = triton_http.InferenceServerClient(triton.http_url)
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids))):
        inp = triton_http.InferInput(name, list(value.shape), "INT64")
        inp.set_data_from_numpy(value)
        inputs.append(inp)
    states = client.infer("minilm_model", inputs).as_numpy("last_hidden_state")
    assert states is not None and states.shape == (1, 4, 384)


def test_bad_inputs_get_clear_answers_and_the_server_keeps_serving(triton: Triton) -> None:
    empty = embed_http(triton, "minilm_fp32", ["", "hello"])
    assert np.isfinite(empty).all() and empty.shape == (2, 384)

    with pytest.raises(InferenceServerException, match="not valid UTF-8") as refused:
        embed_http(triton, "minilm", [b"fine", b"\xff\xfe broken"])
    assert refused.value.status() == "400", refused.value.status()  # the client's fault, not a 500

    huge = "word " * 20_000  # 100k characters: truncated to maxLength tokens, not an error
    long_answer = embed_http(triton, "minilm_fp32", [huge])
    assert textmodels.mean_cosine(long_answer, textmodels.reference_embeddings([huge])) >= 0.999

    mixed = [SENTENCES[0], "ok", SENTENCES[1] * 5]
    together = embed_http(triton, "minilm_fp32", mixed)
    one_by_one = np.concatenate([embed_http(triton, "minilm_fp32", [t]) for t in mixed])
    assert textmodels.mean_cosine(together, one_by_one) >= 0.9999  # padding does not change an answer

    with pytest.raises(InferenceServerException, match=r"batch-size must be <= 8"):
        embed_http(triton, "minilm", [*SENTENCES, "one too many"])

    assert (
        textmodels.mean_cosine(
            embed_http(triton, "minilm", SENTENCES), textmodels.reference_embeddings(SENTENCES)
        )
        >= 0.995
    )
