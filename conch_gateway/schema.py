"""OpenAI request bodies as pydantic models, and the one error type the gateway answers with.

Every client mistake becomes a `GatewayError` with OpenAI's error body (message, type, param, code)
and an HTTP status: 400 for a bad request, 404 for an unknown model; nothing a client sends gets 500.
Fields are strict, as OpenAI's API is: "10" is not a number and "yes" is not a boolean. The sampling
fields map one to one onto the Triton model's `sampling_parameters`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Role = Literal["system", "user", "assistant", "tool", "developer"]
MAX_STOP = 4


class GatewayError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def model_not_found(name: str, served: str) -> GatewayError:
    """OpenAI's answer for a model it does not have (404, code model_not_found)."""
    message = f"The model {name!r} does not exist (this endpoint serves {served!r})"
    return GatewayError(404, message, "model", code="model_not_found")


class _Strict(BaseModel):
    # unknown fields are ignored: OpenAI's clients send some (user, metadata) that change nothing here
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    """A content part; only text (an image or audio part is a 400, the model reads text)."""

    type: Literal["text"]
    text: str

    @field_validator("type", mode="before")
    @classmethod
    def _text_only(cls, kind: Any) -> Any:
        if kind != "text":
            raise ValueError(f"only text content parts are served, not {kind!r}")
        return kind


class Message(_Strict):
    """One chat message; content as a string or as OpenAI's list of text parts."""

    role: Role
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """What chat and completion requests share."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None  # a string or up to MAX_STOP strings (OpenAI's limit)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if stop == "" or (isinstance(stop, list) and "" in stop):
            raise ValueError("a stop sequence must not be empty")
        return stop

    def limit(self) -> tuple[int | None, str]:
        """The completion's token limit and the field that set it."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def check_context(self, context_length: int | None) -> None:
        """A limit over the model's whole context can never be met: a 400 before Triton is asked."""
        limit, param = self.limit()
        if limit is not None and context_length is not None and limit > context_length:
            raise GatewayError(
                400, f"{param}: {limit} is more than the model's context ({context_length} tokens)", param
            )

    def param_for(self, model_field: str | None) -> str | None:
        """The request field behind a field the Triton model's error names (its max_tokens, text_input)."""
        if model_field == "max_tokens":
            return self.limit()[1]
        return model_field

    def sampling_parameters(self) -> str:
        """The Triton model's sampling_parameters JSON."""
        params: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p}
        limit = self.limit()[0]
        if limit is not None:
            params["max_tokens"] = limit
        if self.top_k is not None:
            params["top_k"] = self.top_k
        if self.seed is not None:
            params["seed"] = self.seed
        if self.stop:
            params["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return json.dumps(params)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(..., min_length=1)

    def chat_json(self) -> str:
        return json.dumps([{"role": m.role, "content": m.text()} for m in self.messages])

    def param_for(self, model_field: str | None) -> str | None:
        return "messages" if model_field == "prompt" else super().param_for(model_field)


class CompletionRequest(_Sampling):
    """POST /v1/completions: one prompt, a string or (as OpenAI's clients send it) a list of one string."""

    prompt: str = Field(..., min_length=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        if not isinstance(prompt, list):
            return prompt
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        raise ValueError(
            "give one prompt, a string or a list of one string (several prompts or token ids are not "
            "served: n=1)"
        )


def parse(kind: type[_Sampling], raw: bytes) -> Any:
    """The request body as `kind`, or a GatewayError naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GatewayError(400, f"the request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        # of a union's failed members, the one that got furthest says most ([{"type": "image_url"}])
        error = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
        param = param_path(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise GatewayError(400, f"{param}: {message}" if param else message, param or None) from exc


def param_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the request's field path, without union member tags:
    ("messages", 0, "content", "list[TextPart]", 0, "type") -> "messages.0.content"."""
    parts: list[str] = []
    for part in loc:
        if not isinstance(part, int) and part not in _FIELDS:
            break
        parts.append(str(part))
    return ".".join(parts)


_FIELDS = frozenset(
    name
    for kind in (ChatRequest, CompletionRequest, Message, TextPart, StreamOptions)
    for name in kind.model_fields
)
