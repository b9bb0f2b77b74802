"""The OpenAI-compatible gateway (conch_gateway) in front of a real tritonserver serving SmolLM2, called
with the real `openai` client: models (listed and retrieved), chat and completions (a prompt string or
a list of one), streaming with usage, bad requests as 400s naming the parameter, and a client that
disconnects mid-stream while the gateway keeps serving. The model runs with small scheduler limits (2
sequences, 1 waiting): a request over them is 429 with Retry-After, closing streams frees their slots
for the queued one, and the model's LLM metrics on Triton's metrics port follow the traffic. An error
after a stream started (an event, then [DONE]) needs a failing model: tests/gateway has it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.processes import free_port, stop_process
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
MODEL = "smol"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
READY_S = 60.0
LIMITS = {"CONCH_LLM_MAX_SEQUENCES": "2", "CONCH_LLM_MAX_QUEUE": "1"}
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
"""A prompt the model continues for hundreds of tokens (greedy), so its stream outlasts the test's steps."""


@pytest.fixture(scope="module")
def served(serving_dir: Path, smollm2_repository: tuple[Path, Any]) -> Iterator[tuple[str, Triton]]:
    """The gateway's base URL (http://127.0.0.1:PORT) and the tritonserver serving MODEL behind it."""
    work = serving_dir / "gateway"
    work.mkdir()
    with run_triton(smollm2_repository[0], work, env=LIMITS) as triton:
        port = free_port()
        log = (work / "gateway.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conch_gateway", "--triton-grpc", triton.grpc_url, "--model", MODEL,
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            yield url, triton
        finally:
            stop_process(proc, 10)
            log.close()


@pytest.fixture(scope="module")
def gateway(served: tuple[str, Triton]) -> str:
    return served[0]


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)  # polling interval, bounded by the deadline
    pytest.fail(f"the gateway did not become ready (rc={proc.poll()})")


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    (card,) = client.models.list().data
    assert card.id == MODEL and card.owned_by == "conch"


def test_retrieve_model_and_another_name_404(client: openai.OpenAI) -> None:
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-nope")
    assert caught.value.param == "model" and caught.value.code == "model_not_found"


def test_a_greedy_chat_answers_with_usage(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    choice = answer.choices[0]
    assert "Paris" in (choice.message.content or "") and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens > 10
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streamed_chat_adds_up_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices]) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )


def test_a_completion_and_its_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="The sky is", temperature=0, max_tokens=8)
    assert whole.choices[0].finish_reason == "length" and whole.usage is not None
    assert whole.usage.completion_tokens == 8
    streamed = client.completions.create(
        model=MODEL, prompt="The sky is", temperature=0, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_a_prompt_list_of_one_is_that_prompt_and_of_several_400(client: openai.OpenAI) -> None:
    text = client.completions.create(model=MODEL, prompt="The sky is", temperature=0, max_tokens=8)
    listed = client.completions.create(model=MODEL, prompt=["The sky is"], temperature=0, max_tokens=8)
    assert listed.choices[0].text == text.choices[0].text
    for prompt in (["The sky is", "Grass is"], [[464, 6766, 318]]):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=MODEL, prompt=prompt, max_tokens=8)
        assert caught.value.param == "prompt"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n"),
    ],
)
def test_bad_requests_are_400_naming_the_parameter(
    client: openai.OpenAI, change: dict[str, Any], param: str
) -> None:
    request = {"model": MODEL, "messages": FRANCE, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert param in str(caught.value)


def test_an_unknown_model_is_404_and_an_over_long_prompt_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=FRANCE)
    with pytest.raises(openai.BadRequestError, match="context") as caught:
        client.completions.create(model=MODEL, prompt="word " * 3000, max_tokens=4)
    assert caught.value.param == "prompt"  # the model's refusal, named as the request names it
    with pytest.raises(openai.BadRequestError, match="context") as caught:
        client.chat.completions.create(model=MODEL, messages=FRANCE, max_completion_tokens=10**6)
    assert caught.value.param == "max_completion_tokens"  # the gateway's own check


def test_ready_means_a_real_token_and_live_answers(gateway: str) -> None:
    for path, key in (("/health/ready", "ready"), ("/health/live", "live"), ("/health", "live")):
        with urllib.request.urlopen(f"{gateway}{path}", timeout=60) as resp:
            assert resp.status == 200 and json.loads(resp.read())[key] is True


def test_a_body_that_is_not_json_is_400(gateway: str) -> None:
    request = urllib.request.Request(f"{gateway}/v1/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "not JSON" in json.loads(caught.value.read())["error"]["message"]


def test_a_client_that_disconnects_mid_stream_leaves_the_gateway_serving(client: openai.OpenAI) -> None:
    story = [{"role": "user", "content": "Tell me a long story."}]
    stream = client.chat.completions.create(model=MODEL, messages=story, max_tokens=200, stream=True)
    for index, _ in enumerate(stream):
        if index == 2:
            break
    stream.close()
    again = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    assert "Paris" in (again.choices[0].message.content or "")


def _metrics(triton: Triton) -> dict[str, float]:
    """The model's conch_llm_* samples on Triton's metrics port, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    samples = (line.rsplit(" ", 1) for line in lines if line.startswith("conch_llm_"))
    return {name: float(value) for name, value in samples}


def _sample(triton: Triton, name: str, **labels: str) -> float:
    wanted = {f'{key}="{value}"' for key, value in {"model": MODEL, **labels}.items()}
    found = [v for k, v in _metrics(triton).items() if k.split("{")[0] == name and wanted <= _labels(k)]
    assert len(found) == 1, (name, labels, _metrics(triton))
    return found[0]


def _load(triton: Triton) -> tuple[float, float]:
    """Running and waiting sequences, from one scrape."""
    samples = _metrics(triton)
    running, waiting = (
        next(v for k, v in samples.items() if k.startswith(f"conch_llm_{name}_sequences{{"))
        for name in ("running", "waiting")
    )
    return running, waiting


def _labels(sample: str) -> set[str]:
    return set(sample.split("{", 1)[1].rstrip("}").split(",")) if "{" in sample else set()


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + READY_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in {READY_S} s"
        time.sleep(0.05)  # polling interval, bounded by the deadline


def test_over_the_limits_is_429_with_retry_after_and_closed_streams_free_their_slots(
    served: tuple[str, Triton], client: openai.OpenAI
) -> None:
    _, triton = served
    before = {
        name: _sample(triton, f"conch_llm_{name}")
        for name in ("rejected_requests_total", "time_to_first_token_seconds_count")
    }
    cancelled = _sample(triton, "conch_llm_requests_total", finish_reason="cancelled")
    streams = [
        client.completions.create(model=MODEL, prompt=COUNTING, temperature=0, max_tokens=600, stream=True)
        for _ in range(2)
    ]
    for stream in streams:
        next(iter(stream))  # both sequences run: the two slots are taken
    queued: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: queued.update(answer=client.chat.completions.create(
            model=MODEL, messages=FRANCE, temperature=0, max_tokens=24
        )),
        daemon=True,
    )  # fmt: skip
    waiter.start()
    _until(lambda: _load(triton) == (2, 1), "two running and the third request waiting")
    assert _sample(triton, "conch_llm_kv_cache_tokens") > 0
    with urllib.request.urlopen(f"{served[0]}/health/ready", timeout=10) as ready:  # busy, not unready
        assert ready.status == 200
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=4)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.code == "queue_full" and "queue full" in caught.value.message
    for stream in streams:
        stream.close()  # the gateway cancels their Triton calls: the slots free up
    waiter.join(timeout=READY_S)
    assert "Paris" in (queued["answer"].choices[0].message.content or "")
    assert _sample(triton, "conch_llm_rejected_requests_total") == before["rejected_requests_total"] + 1
    _until(
        lambda: _sample(triton, "conch_llm_requests_total", finish_reason="cancelled") == cancelled + 2,
        "two cancelled sequences counted",
    )
    assert _sample(triton, "conch_llm_time_to_first_token_seconds_count") >= (
        before["time_to_first_token_seconds_count"] + 3
    )
    assert _sample(triton, "conch_llm_kv_cache_budget_tokens") == 16384
    _until(lambda: _sample(triton, "conch_llm_running_sequences") == 0, "the model idle again")
