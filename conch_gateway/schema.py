"""OpenAI request bodies as pydantic models, and the one error type the gateway answers with.

Every client mistake becomes a `GatewayError` with OpenAI's error body (message, type, param, code)
and an HTTP status: 400 for a bad request, 404 for an unknown model; nothing a client sends gets 500.
The sampling fields map one to one onto the Triton model's `sampling_parameters`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Role = Literal["system", "user", "assistant", "tool", "developer"]


class GatewayError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


class Message(BaseModel):
    """One chat message; content as a string or as OpenAI's list of text parts."""

    model_config = ConfigDict(extra="ignore")
    role: Role
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    """What chat and completion requests share."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def sampling_parameters(self) -> str:
        """The Triton model's sampling_parameters JSON."""
        params: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p}
        limit = self.max_completion_tokens or self.max_tokens
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


class CompletionRequest(_Sampling):
    """POST /v1/completions (one prompt string)."""

    prompt: str = Field(..., min_length=1)


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
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise GatewayError(400, f"{param}: {first['msg']}", param=param) from exc
