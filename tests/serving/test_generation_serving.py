"""A generative model on the real tritonserver: SmolLM2-135M-Instruct (fp32 export, so greedy tokens must
equal the original `transformers` model's) streamed over Triton's generate / generate_stream endpoints
and gRPC streaming; concurrent requests are served together; each bad request gets a clear error
naming the field and the server keeps serving."""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc

from model_repo_builder.gate import generation as gengate
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
MODEL = "smol"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = ["Write a haiku about the sea.", "Name three colours of the rainbow.", "What is two plus two?"]


@pytest.fixture(scope="module")
def served(serving_dir: Path, smollm2_repository: tuple[Path, Any]) -> Iterator[tuple[Triton, Any]]:
    repo, model = smollm2_repository
    work = serving_dir / "generation"
    work.mkdir()
    with run_triton(repo, work) as triton:
        yield triton, model


def _post(triton: Triton, path: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{triton.http_url}/v2/models/{MODEL}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _generate(triton: Triton, **body: Any) -> dict[str, Any]:
    status, text = _post(triton, "generate", body)
    assert status == 200, text
    return dict(json.loads(text))


def _events(triton: Triton, **body: Any) -> list[dict[str, Any]]:
    status, text = _post(triton, "generate_stream", body)
    assert status == 200, text
    return [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]


def _greedy(tokens: int) -> str:
    return json.dumps({"max_tokens": tokens, "temperature": 0})


def _reference(model: Any, messages: list[dict[str, str]], tokens: int) -> str:
    """The original fp32 model's greedy answer (transformers), decoded."""
    ids = gengate.chat_ids(model.tokenizer, messages)
    with torch.no_grad():
        out = model.module.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
            max_new_tokens=tokens, pad_token_id=model.tokenizer.eos_token_id,
        )  # fmt: skip
    return str(model.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


def _grpc_stream(
    triton: Triton, messages: list[dict[str, str]], tokens: int
) -> tuple[list[str], list[float]]:
    """Pieces of a gRPC streaming generation and the seconds at which each arrived."""
    results: queue.Queue[Any] = queue.Queue()
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    inputs = []
    for name, dtype, value in (
        ("messages", "BYTES", json.dumps(messages)), ("sampling_parameters", "BYTES", _greedy(tokens)),
        ("stream", "BOOL", True),
    ):  # fmt: skip
        tensor = triton_grpc.InferInput(name, [1], dtype)
        tensor.set_data_from_numpy(np.array([value], dtype=object if dtype == "BYTES" else bool))
        inputs.append(tensor)
    pieces: list[str] = []
    stamps: list[float] = []
    start = time.monotonic()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
        while True:
            result, error = results.get(timeout=120)
            assert error is None, error
            text = result.as_numpy("text_output")
            if text is not None and text[0]:
                pieces.append(text[0].decode())
                stamps.append(time.monotonic() - start)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces, stamps
    finally:
        client.stop_stream()
        client.close()


def test_a_chat_gets_the_original_models_greedy_answer(served: tuple[Triton, Any]) -> None:
    triton, model = served
    answer = _generate(triton, messages=json.dumps(FRANCE), sampling_parameters=_greedy(24))
    assert "Paris" in answer["text_output"]
    assert answer["text_output"] == _reference(model, FRANCE, 24)
    assert answer["finish_reason"] == "stop" and answer["completion_tokens"] < 24
    assert answer["prompt_tokens"] > 10


def test_generate_stream_sends_pieces_that_add_up_to_the_answer(served: tuple[Triton, Any]) -> None:
    triton, _ = served
    whole = _generate(triton, messages=json.dumps(FRANCE), sampling_parameters=_greedy(24))["text_output"]
    events = _events(triton, messages=json.dumps(FRANCE), sampling_parameters=_greedy(24), stream=True)
    assert len(events) > 3
    assert "".join(e["text_output"] for e in events) == whole
    assert events[-1]["finish_reason"] == "stop"


def test_grpc_streams_equal_the_original_model_for_a_prompt_set(served: tuple[Triton, Any]) -> None:
    triton, model = served
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        pieces, _ = _grpc_stream(triton, messages, 16)
        assert "".join(pieces) == _reference(model, messages, 16), prompt


def test_concurrent_streams_are_served_together_and_change_no_token(served: tuple[Triton, Any]) -> None:
    triton, _ = served
    chats = [[{"role": "user", "content": p}] for p in [*PROMPTS, "Describe a cat in one sentence."]]
    alone = ["".join(_grpc_stream(triton, chat, 24)[0]) for chat in chats]
    together: list[tuple[list[str], list[float]] | None] = [None] * len(chats)
    started = [0.0] * len(chats)
    origin = time.monotonic()

    def run(i: int) -> None:
        started[i] = time.monotonic() - origin
        together[i] = _grpc_stream(triton, chats[i], 24)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(chats))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(t is not None for t in together)
    assert ["".join(t[0]) for t in together if t is not None] == alone
    first_token = [started[i] + t[1][0] for i, t in enumerate(together) if t is not None]
    last_token = [started[i] + t[1][-1] for i, t in enumerate(together) if t is not None]
    assert max(first_token) < min(last_token)  # every stream had begun before any had finished


def test_stop_sequences_and_max_tokens_end_the_answer(served: tuple[Triton, Any]) -> None:
    triton, _ = served
    whole = _generate(triton, messages=json.dumps(FRANCE), sampling_parameters=_greedy(24))["text_output"]
    stop_word = whole.split()[2]
    stopped = _generate(
        triton, messages=json.dumps(FRANCE),
        sampling_parameters=json.dumps({"max_tokens": 24, "temperature": 0, "stop": [stop_word]}),
    )  # fmt: skip
    assert stopped["text_output"] == whole[: whole.index(stop_word)]
    assert stopped["finish_reason"] == "stop"
    short = _generate(triton, text_input="Once upon a time", sampling_parameters=_greedy(3))
    assert short["finish_reason"] == "length" and short["completion_tokens"] == 3


def test_sampling_with_a_seed_is_repeatable(served: tuple[Triton, Any]) -> None:
    triton, _ = served
    params = json.dumps({"max_tokens": 12, "temperature": 0.9, "top_p": 0.9, "top_k": 40, "seed": 7})
    first = _generate(triton, text_input="My favourite food is", sampling_parameters=params)
    again = _generate(triton, text_input="My favourite food is", sampling_parameters=params)
    assert first["text_output"] == again["text_output"] and first["completion_tokens"] >= 1


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "text_input"),
        ({"text_input": "hi", "messages": json.dumps(FRANCE)}, "exactly one of text_input"),
        ({"messages": "[not json"}, "messages is not JSON"),
        ({"messages": "[]"}, "non-empty list"),
        ({"messages": json.dumps([{"role": "wizard", "content": "x"}])}, "messages[0].role 'wizard'"),
        ({"text_input": "hi", "sampling_parameters": json.dumps({"max_tokens": 0})}, "max_tokens"),
        ({"text_input": "hi", "sampling_parameters": json.dumps({"max_tokens": 10**6})}, "max_tokens"),
        ({"text_input": "hi", "sampling_parameters": json.dumps({"temperature": -1})}, "temperature"),
        ({"text_input": "hi", "sampling_parameters": json.dumps({"top_p": 0})}, "top_p"),
        ({"text_input": "hi", "sampling_parameters": json.dumps({"beams": 2})}, "sampling_parameters.beams"),
        ({"text_input": "word " * 3000}, "the context is 2048 tokens"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(
    served: tuple[Triton, Any], body: dict[str, Any], names: str
) -> None:
    triton, _ = served
    status, text = _post(triton, "generate", body)
    assert status == 400, (status, text)
    assert names in json.loads(text)["error"]
    assert _generate(triton, text_input="Hello", sampling_parameters=_greedy(2))["completion_tokens"] == 2


def test_non_utf8_text_is_refused_per_request(served: tuple[Triton, Any]) -> None:
    triton, _ = served
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    results: queue.Queue[Any] = queue.Queue()
    tensor = triton_grpc.InferInput("text_input", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"caf\xe9 au lait"], dtype=object))
    client.start_stream(callback=lambda result, error: results.put(error))
    try:
        client.async_stream_infer(MODEL, [tensor])
        error = results.get(timeout=60)
    finally:
        client.stop_stream()
        client.close()
    assert error is not None and "text_input is not valid UTF-8" in str(error)


def test_sigterm_lets_a_running_stream_finish_before_triton_exits(
    serving_dir: Path, smollm2_repository: tuple[Path, Any]
) -> None:
    """What a rollout does to the pod it replaces: the stream in flight ends whole, then Triton exits."""
    work = serving_dir / "sigterm"
    work.mkdir()
    story = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    with run_triton(smollm2_repository[0], work) as triton:
        alone = "".join(_grpc_stream(triton, story, 96)[0])
        done: dict[str, Any] = {}
        stream = threading.Thread(target=lambda: done.update(pieces=_grpc_stream(triton, story, 96)[0]))
        stream.start()
        deadline = time.monotonic() + 60
        while _running_sequences(triton) < 1:
            assert time.monotonic() < deadline, "the stream never started"
            time.sleep(0.05)  # polling interval, bounded by the deadline
        os.kill(triton.pid, signal.SIGTERM)
        stream.join(timeout=120)
        assert "".join(done["pieces"]) == alone  # not cut: every token of the answer
        deadline = time.monotonic() + 60
        while _alive(triton.pid):
            assert time.monotonic() < deadline, "tritonserver did not exit after SIGTERM"
            time.sleep(0.1)  # polling interval, bounded by the deadline


def _running_sequences(triton: Triton) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics}/metrics", timeout=5) as resp:
            lines = resp.read().decode().splitlines()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("conch_llm_running_sequences{")
    )


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (an exited child stays a zombie until run_triton reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
