"""The gateway's request handling without a server: OpenAI bodies validated (each mistake names its
parameter) and translated into the Triton model's inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conch_gateway import schema, triton

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
