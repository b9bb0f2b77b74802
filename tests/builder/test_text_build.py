"""Text models in the builder: a real checkpoint builds into an ensemble; each bad checkpoint, archive
or text file is refused with one line naming the file, and nothing is published."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_repo_builder import recipe as recipe_mod
from model_repo_builder.triton.config import parse
from model_repo_builder.triton.python_backend import textproc

from . import textmodels
from .conftest import Run, listing

pytestmark = pytest.mark.unit
CPU = {"triton": {"instanceKind": "KIND_CPU"}, "export": {"backend": "python"}}
CLASSIFY = {**CPU, "text": {"task": "text-classification"}}


def _recipe(extra: dict[str, object] | None = None) -> str:
    return json.dumps({**CLASSIFY, **(extra or {})})


def _copy(checkpoint: Path, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(checkpoint, dest)
    for name in drop:
        (dest / name).unlink()
    return dest


def test_classifier_builds_into_an_ensemble(run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path) -> None:
    data = textmodels.write_jsonl(tmp_path / "val.jsonl", list(textmodels.HELD_OUT))
    recipe = _recipe({"validation": {"dataPath": str(data)}, "gate": {"maxAccuracyDrop": 0.0}})
    result = run_cli("build", sentiment_checkpoint, "--out", tmp_path / "store", "--recipe-json", recipe)
    assert result.code == 0, result.stderr
    repo = Path(result.summary["repository"])
    models = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert models == ["model", "model_model", "model_post", "model_tokenizer"]
    ensemble = parse((repo / "model" / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble"
    assert [o.name for o in ensemble.output] == ["label", "score"]
    assert json.loads((repo / "model_post/1/labels.json").read_text()) == ["negative", "positive"]
    record = json.loads((repo / "build.json").read_text())
    assert record["gate"]["accuracyDrop"] == 0.0 and record["text"]["labels"] == ["negative", "positive"]
    assert [p["name"] for p in record["passes"]] == ["export", "transformer-fusion", "quantize"]
    assert record["passes"][-1] == {**record["passes"][-1], "mode": "int8-dynamic", "smoothAlpha": 0.7}
    # like for like: the fp32 export against the served model file, not the checkpoint folder
    assert record["sizeBefore"] < record["sourceBytes"]
    assert record["compressionRatio"] == pytest.approx(record["sizeBefore"] / record["sizeAfter"], rel=1e-3)
    again = run_cli("build", sentiment_checkpoint, "--out", tmp_path / "store", "--recipe-json", recipe)
    assert again.summary["cached"] and again.summary["buildKey"] == result.summary["buildKey"]


def test_tar_gz_source_builds_and_is_pinned_by_its_digest(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "sentiment.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sentiment_checkpoint, arcname="sentiment")
    wrong = run_cli(
        "build", archive, "--out", tmp_path / "s", "--recipe-json", _recipe(), "--sha256", "0" * 64
    )
    assert wrong.code == 2 and "sha256 mismatch" in wrong.summary["error"]["message"]
    ok = run_cli("build", archive, "--out", tmp_path / "s", "--recipe-json", _recipe())
    assert ok.code == 0, ok.stderr


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("config.json",), "config.json: missing"),
        (("model.safetensors",), "no weights"),
        (("tokenizer.json", "vocab.txt"), "no tokenizer"),
    ],
)
def test_incomplete_checkpoint_is_refused_naming_the_file(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path, drop: tuple[str, ...], message: str
) -> None:
    source = _copy(sentiment_checkpoint, tmp_path / "ckpt", drop)
    result = run_cli("build", source, "--out", tmp_path / "store", "--recipe-json", _recipe())
    assert result.code == 2
    assert message in result.summary["error"]["message"]
    assert listing(tmp_path / "store") == []


def _edit_config(directory: Path, **changes: object) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "model_type 'gpt2' cannot be served"),
        ({"vocab_size": 1000}, "tokenizer and weights do not match"),
        (
            {"max_position_embeddings": 64},
            "text.maxLength 100 is over the model's max_position_embeddings 64",
        ),
    ],
)
def test_checkpoint_the_builder_cannot_serve_is_refused(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    source = _copy(sentiment_checkpoint, tmp_path / "ckpt")
    _edit_config(source, **changes)
    text = {"task": "text-classification", "maxLength": 100}  # set by hand: over 64 is refused, not capped
    result = run_cli("build", source, "--out", tmp_path / "store", "--recipe-json", _recipe({"text": text}))
    assert result.code == 2
    assert "config.json" in result.summary["error"]["message"] or "tokenizer.json" in str(result.summary)
    assert message in result.summary["error"]["message"]


def test_a_checkpoint_shorter_than_the_default_max_length_builds_at_its_own_limit(
    run_cli: Run, tmp_path: Path
) -> None:
    source = textmodels.tiny_classifier(tmp_path / "short", steps=2, max_positions=64)
    result = run_cli("build", source, "--out", tmp_path / "store", "--recipe-json", _recipe())
    assert result.code == 0, result.stderr[-2000:]
    (repo,) = [p for p in (tmp_path / "store").iterdir() if p.is_dir()]
    assert json.loads((repo / "build.json").read_text())["text"]["maxLength"] == 64
    tokenizer_config = parse((repo / "model_tokenizer" / "config.pbtxt").read_text())
    assert tokenizer_config.parameters["max_length"].string_value == "64"


@pytest.mark.parametrize(
    "case",
    [
        ('{"text": "fine", "label": "neutral"}\n', "v.jsonl", "v.jsonl line 1: unknown label 'neutral'"),
        ('{"text": "fine"}\nnot json\n', "v.jsonl", "v.jsonl line 2: not JSON"),
        ("\n\n", "v.txt", "v.txt holds no text"),
        ("a,b\n", "v.csv", "expected a .txt or .jsonl file"),
    ],
)
def test_bad_validation_text_is_refused_naming_file_and_line(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path, case: tuple[str, str, str]
) -> None:
    content, name, message = case
    (tmp_path / name).write_text(content)
    recipe = _recipe({"validation": {"dataPath": str(tmp_path / name)}})
    result = run_cli("build", sentiment_checkpoint, "--out", tmp_path / "store", "--recipe-json", recipe)
    assert result.code == 2 and message in result.summary["error"]["message"]


def test_model_directory_without_a_task_is_refused(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "build", sentiment_checkpoint, "--out", tmp_path / "store", "--recipe-json", json.dumps(CPU)
    )
    assert result.code == 2 and "set a text task" in result.summary["error"]["message"]


def test_recipe_text_rules() -> None:
    r = recipe_mod.Recipe.model_validate({"text": {"task": "feature-extraction"}})
    assert (r.quantize.mode, r.quantize.per_channel, r.quantize.smooth_alpha) == ("int8-dynamic", True, 0.7)
    explicit = recipe_mod.Recipe.model_validate({"text": {"task": "feature-extraction"}, "quantize": {}})
    assert explicit.quantize.mode == "none"
    assert recipe_mod.Recipe.model_validate(json.loads(recipe_mod.canonical_json(r))) == r
    assert "text" not in json.loads(recipe_mod.canonical_json(recipe_mod.Recipe()))
    bad = [
        ({"task": "text-classification", "pooling": "cls"}, {}, "pooling applies to task"),
        ({"task": "feature-extraction"}, {"export": {"format": "torchscript", "backend": "pytorch"}}, "ONNX"),
        ({"task": "feature-extraction"}, {"triton": {"maxBatchSize": 0}}, "maxBatchSize must be >= 1"),
        ({"task": "feature-extraction"}, {"io": {"inputs": [{"name": "x"}]}}, "io.inputs"),
    ]
    for text, extra, message in bad:
        with pytest.raises(ValueError, match=message):
            recipe_mod.Recipe.model_validate({"text": text, **extra})


def test_textproc_pooling_truncation_and_utf8(tmp_path: Path) -> None:
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert np.allclose(textproc.pool(hidden, mask, "mean", False), [[1, 2], [6, 7]])
    assert np.allclose(textproc.pool(hidden, mask, "cls", False), [[0, 1], [6, 7]])
    assert np.allclose(np.linalg.norm(textproc.pool(hidden, mask, "mean", True), axis=1), 1.0)
    with pytest.raises(textproc.TextError, match="text item 1 is not valid UTF-8"):
        textproc.decode_texts(np.array([[b"ok"], [b"\xc3\x28"]], dtype=object))
    tokenizer_file = textmodels.minilm_dir() / "tokenizer.json"
    strict = textproc.TextTokenizer(str(tokenizer_file), textproc.TokenizerSettings(8, False, 0, "[PAD]"))
    with pytest.raises(textproc.TextError, match=r"text item 1 has \d+ tokens, over maxLength 8"):
        strict(["short", "this sentence is certainly longer than eight tokens"])
    cut = textproc.TextTokenizer(str(tokenizer_file), textproc.TokenizerSettings(8, True, 0, "[PAD]"))
    ids, mask = cut(["short", "this sentence is certainly longer than eight tokens"])
    assert ids.shape == (2, 8) and mask[1].sum() == 8 and ids[1, -1] == 102  # [SEP] kept at the end


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An https file server on 127.0.0.1 with a self-signed certificate the process trusts."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_https_tar_gz_is_downloaded_checked_and_unpacked(
    run_cli: Run, sentiment_checkpoint: Path, tmp_path: Path, https_server: tuple[str, Path]
) -> None:
    url, root = https_server
    archive = root / "sentiment.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sentiment_checkpoint, arcname="sentiment")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    store = tmp_path / "store"
    unpinned = run_cli("build", f"{url}/sentiment.tar.gz", "--out", store, "--recipe-json", _recipe())
    assert unpinned.code == 2 and "sha256 is required" in unpinned.summary["error"]["message"]
    ok = run_cli(
        "build", f"{url}/sentiment.tar.gz", "--out", store, "--recipe-json", _recipe(), "--sha256", digest
    )
    assert ok.code == 0, ok.stderr
    assert ok.summary["sourceDigest"] == f"sha256:{digest}"
