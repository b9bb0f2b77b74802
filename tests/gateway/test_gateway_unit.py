"""The gateway's request handling without a server: OpenAI bodies validated (each mistake names its
parameter) and translated into the Triton model's inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conch_gateway import schema, triton

pytestmark = pytest.mark.unit
CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"n": 3}, "n"),
        ({"stop": 7}, "stop"),
        ({"model": None}, "model"),
    ],
)
def test_a_bad_chat_request_is_400_naming_the_parameter(change: dict[str, Any], param: str) -> None:
    with pytest.raises(schema.GatewayError) as caught:
        schema.parse(schema.ChatRequest, json.dumps({**CHAT, **change}).encode())
    assert caught.value.status == 400 and caught.value.param is not None
    assert caught.value.param.startswith(param)
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


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
