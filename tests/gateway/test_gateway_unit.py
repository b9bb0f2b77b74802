"""The gateway's request handling without a server: OpenAI bodies validated (each mistake names its
parameter) and translated into the Triton model's inputs; the app's routes called as ASGI in front of
a stand-in Triton (retrieve model, a prompt list, an error after the stream started)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conch_gateway import schema, triton
from conch_gateway.app import create_app
from conch_gateway.triton import Piece

pytestmark = pytest.mark.unit
CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [IMAGE]}]}, "messages.0.content"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),  # strict, as OpenAI: a string is not a number
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.2}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": "x"}, "seed"),
        ({"n": 3}, "n"),
        ({"stop": 7}, "stop"),
        ({"stop": ""}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"model": None}, "model"),
    ],
)  # fmt: skip
def test_a_bad_chat_request_is_400_naming_the_parameter(change: dict[str, Any], param: str) -> None:
    with pytest.raises(schema.GatewayError) as caught:
        schema.parse(schema.ChatRequest, json.dumps({**CHAT, **change}).encode())
    assert caught.value.status == 400 and caught.value.param is not None
    assert caught.value.param == param and caught.value.message.startswith(param)
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("prompt", [None, "", [], [""], ["a", "b"], [1, 2], [[1, 2]], 3])
def test_a_bad_prompt_is_400_naming_prompt(prompt: Any) -> None:
    body = {"model": "m"} if prompt is None else {"model": "m", "prompt": prompt}
    with pytest.raises(schema.GatewayError) as caught:
        schema.parse(schema.CompletionRequest, json.dumps(body).encode())
    assert caught.value.status == 400 and caught.value.param == "prompt"


def test_a_prompt_may_be_a_list_of_one_string() -> None:  # what OpenAI's clients send
    body = schema.parse(schema.CompletionRequest, b'{"model": "m", "prompt": ["The sky is"]}')
    assert body.prompt == "The sky is"


def test_a_limit_over_the_models_context_is_400_naming_its_field() -> None:
    body = schema.parse(schema.ChatRequest, json.dumps({**CHAT, "max_completion_tokens": 4097}).encode())
    with pytest.raises(schema.GatewayError) as caught:
        body.check_context(4096)
    assert caught.value.status == 400 and caught.value.param == "max_completion_tokens"
    body.check_context(None)  # a model without a context_length: the model itself decides


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_400(raw: bytes) -> None:
    with pytest.raises(schema.GatewayError) as caught:
        schema.parse(schema.CompletionRequest, raw)
    assert caught.value.status == 400


def test_sampling_maps_onto_the_triton_models_parameters() -> None:
    body = schema.parse(
        schema.ChatRequest,
        json.dumps({**CHAT, "max_tokens": 9, "max_completion_tokens": 5, "temperature": 0, "stop": "END",
                    "seed": 3, "top_k": 4}).encode(),
    )  # fmt: skip
    assert json.loads(body.sampling_parameters()) == {
        "max_tokens": 5, "temperature": 0.0, "top_p": 1.0, "top_k": 4, "seed": 3, "stop": ["END"],
    }  # fmt: skip
    parts = {
        **CHAT,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ],
    }
    assert json.loads(schema.parse(schema.ChatRequest, json.dumps(parts).encode()).chat_json()) == [
        {"role": "user", "content": "ab"}
    ]
    defaults = json.loads(
        schema.parse(schema.CompletionRequest, b'{"model": "m", "prompt": "p"}').sampling_parameters()
    )
    assert defaults == {"temperature": 1.0, "top_p": 1.0}  # OpenAI's defaults; max_tokens is the model's


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("[StatusCode.INVALID_ARGUMENT] sampling_parameters.top_p must be in (0, 1]", 400),
        ("Request for unknown model: 'x' is not found", 404),
        ("generation failed: out of memory", 500),
    ],
)
def test_triton_refusals_map_to_http_statuses(message: str, status: int) -> None:
    assert triton._refusal(message).status == status


@pytest.mark.parametrize(
    ("message", "code", "retry"),
    [
        ("[StatusCode.UNAVAILABLE] queue full: 3 requests waiting (maxQueue 3); retry after 4 s",
         "queue_full", "4"),
        ("memory full: 2801 MiB in use of the pod's 3072 MiB memory limit (over 90%); retry after 2 s",
         "memory_full", "2"),
    ],
)  # fmt: skip
def test_a_busy_model_is_http_429_with_retry_after(message: str, code: str, retry: str) -> None:
    refusal = triton._refusal(message)
    assert (refusal.status, refusal.code, refusal.headers) == (429, code, {"Retry-After": retry})


@pytest.mark.parametrize(
    ("message", "chat_param", "completion_param"),
    [
        ("sampling_parameters.top_k must be an integer >= 0, got -3", "top_k", "top_k"),
        ("sampling_parameters.max_tokens must be from 1 to 7", "max_completion_tokens", "max_tokens"),
        ("the prompt has 9000 tokens; the context is 2048 tokens", "messages", "prompt"),
        ("messages[1].role 'robot' is not one of system, user", "messages", "messages"),
        ("text_input is empty", "messages", "prompt"),
        ("something else went wrong", None, None),
    ],
)  # fmt: skip
def test_the_models_refusal_names_the_request_field(
    message: str, chat_param: str | None, completion_param: str | None
) -> None:
    field = triton._refusal(message).param
    chat = schema.parse(schema.ChatRequest, json.dumps({**CHAT, "max_completion_tokens": 7}).encode())
    completion = schema.parse(schema.CompletionRequest, b'{"model": "m", "prompt": "p"}')
    assert (chat.param_for(field), completion.param_for(field)) == (chat_param, completion_param)


# --- Triton.generate over a stand-in gRPC stream --------------------------------------------------


class _Result:
    def __init__(self, text: str, finish: str | None = None) -> None:
        self.outputs = {"text_output": np.array([text.encode()], dtype=np.object_)}
        if finish is not None:
            self.outputs |= {
                "finish_reason": np.array([finish.encode()], dtype=np.object_),
                "prompt_tokens": np.array([3], dtype=np.int32),
                "completion_tokens": np.array([2], dtype=np.int32),
            }

    def as_numpy(self, name: str) -> Any:
        return self.outputs.get(name)


class _Call:
    """tritonclient's stream iterator: (result, error) pairs, or a gRPC failure raised unwrapped."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.cancelled = iter(items), False

    def __aiter__(self) -> _Call:
        return self

    async def __anext__(self) -> Any:
        item = next(self.items, None)
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class _Client:
    def __init__(self, items: list[Any]) -> None:
        self.call = _Call(items)

    def stream_infer(self, inputs_iterator: Any) -> _Call:
        return self.call


def _generate(items: list[Any]) -> tuple[list[Piece], BaseException | None, _Call]:
    backend = triton.Triton("unused:1", "smol")
    client = _Client(items)
    backend._client = client
    pieces: list[Piece] = []

    async def run() -> BaseException | None:
        try:
            async for piece in backend.generate(prompt="p", chat=None, sampling="{}"):
                pieces.append(piece)
        except schema.GatewayError as exc:
            return exc
        return None

    return pieces, asyncio.run(run()), client.call


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="socket closed")


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        ((None, InferenceServerException("generation failed: out of memory")), 500),  # the model's error
        (_rpc_error(grpc.StatusCode.UNAVAILABLE), 503),  # Triton went away
        (_rpc_error(grpc.StatusCode.INTERNAL), 502),
        (None, 502),  # the stream ended before the final response
    ],
)
def test_a_failure_mid_generation_is_a_gateway_error(failure: Any, status: int) -> None:
    pieces, error, call = _generate([(_Result("Par"), None)] + ([failure] if failure is not None else []))
    assert [p.text for p in pieces] == ["Par"]
    assert isinstance(error, schema.GatewayError) and error.status == status
    assert call.cancelled


def test_a_whole_generation_ends_at_the_final_response() -> None:
    pieces, error, _ = _generate(
        [(_Result("Par"), None), (_Result("is", "stop"), None), (_Result("x"), None)]
    )
    assert error is None and [(p.text, p.finish_reason) for p in pieces] == [("Par", None), ("is", "stop")]


# --- the app, called as ASGI in front of a stand-in Triton ----------------------------------------


class _Triton(triton.Triton):
    """Answers every generation with `script`: pieces, then maybe an error (raised where it stands)."""

    def __init__(self, script: list[Piece | schema.GatewayError]) -> None:
        super().__init__("unused:1", "smol")
        self.script, self.prompts = script, list[str | None]()

    async def context(self) -> int | None:
        return 2048

    async def generate(self, *, prompt: str | None, chat: str | None, sampling: str) -> AsyncIterator[Piece]:
        self.prompts.append(prompt)
        for step in self.script:
            if isinstance(step, schema.GatewayError):
                raise step
            yield step


def _call(backend: _Triton, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    """One HTTP request through the ASGI app: the status and the whole body."""
    app = create_app(backend)
    raw = b"" if body is None else json.dumps(body).encode()
    inbox: Iterator[dict[str, Any]] = iter([{"type": "http.request", "body": raw, "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = next(inbox, None)
        if message is None:  # no disconnect: wait until the response is done (and this is cancelled)
            await asyncio.Event().wait()
        assert message is not None
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json")], "server": ("test", 80), "client": ("test", 1),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


ANSWER: list[Piece | schema.GatewayError] = [Piece("Par"), Piece("is", "stop", 3, 2)]


def test_retrieve_model_answers_its_card_and_404_for_another_name() -> None:
    status, body = _call(_Triton(ANSWER), "GET", "/v1/models/smol")
    assert status == 200 and json.loads(body) == {
        "id": "smol", "object": "model", "created": 0, "owned_by": "conch", "context_length": 2048,
    }  # fmt: skip
    status, body = _call(_Triton(ANSWER), "GET", "/v1/models/gpt-4o")
    error = json.loads(body)["error"]
    assert status == 404 and error["param"] == "model" and error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error" and "gpt-4o" in error["message"]


def test_an_unknown_route_or_method_has_openais_error_body() -> None:
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        got, body = _call(_Triton(ANSWER), method, path)
        assert got == status and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_a_completion_of_a_one_prompt_list() -> None:
    backend = _Triton(ANSWER)
    status, body = _call(backend, "POST", "/v1/completions", {"model": "smol", "prompt": ["The sky"]})
    assert status == 200 and json.loads(body)["choices"][0]["text"] == "Paris"
    assert backend.prompts == ["The sky"]
    status, body = _call(backend, "POST", "/v1/completions", {"model": "smol", "prompt": ["a", "b"]})
    assert status == 400 and json.loads(body)["error"]["param"] == "prompt"


def _events(body: bytes) -> list[Any]:
    chunks = body.decode().split("\n\n")
    assert chunks[-1] == "" and all(c.startswith("data: ") for c in chunks[:-1])
    return [
        c[len("data: ") :] if c == "data: [DONE]" else json.loads(c[len("data: ") :]) for c in chunks[:-1]
    ]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_an_error_after_the_stream_started_is_an_error_event_then_done(path: str) -> None:
    failure = schema.GatewayError(500, "generation failed: out of memory", kind="server_error")
    request = {
        "model": "smol",
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
        "prompt": "Hi",
    }
    status, body = _call(_Triton([Piece("Par"), failure]), "POST", path, request)
    events = _events(body)
    assert status == 200 and events[-1] == "[DONE]"
    assert events[-2] == {"error": failure.body()["error"]}
    assert events[-2]["error"]["message"] == "generation failed: out of memory"
    assert all("choices" in event for event in events[:-2])  # the text before it came through


def test_a_refusal_before_the_stream_started_is_an_http_error_naming_the_field() -> None:
    refusal = triton._refusal("sampling_parameters.max_tokens must be an integer from 1 to 7, got 9")
    request = {**CHAT, "stream": True, "max_completion_tokens": 9}
    status, body = _call(_Triton([refusal]), "POST", "/v1/chat/completions", request)
    assert status == 400 and json.loads(body)["error"]["param"] == "max_completion_tokens"


def test_a_limit_over_the_context_is_400_before_triton() -> None:
    backend = _Triton(ANSWER)
    status, body = _call(
        backend, "POST", "/v1/completions", {"model": "smol", "prompt": "p", "max_tokens": 4096}
    )
    assert status == 400 and json.loads(body)["error"]["param"] == "max_tokens" and backend.prompts == []
