"""Talks to the decoupled Triton model over gRPC streaming: one request in, text pieces out.

The model's final response carries finish_reason and the token counts; its errors are the client's
mistakes (INVALID_ARG, answered 400 naming the field the model's message names) unless they say the
generation itself failed (500) or the model's queue is full (429 with the model's Retry-After). A gRPC
failure (Triton gone, the stream broken) or a stream that ends before the final response is a
GatewayError too, whenever it happens, so app.py can answer it even mid-stream. Closing the iterator
(a client that went away) cancels the gRPC call, so Triton stops the sequence.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferInput
from tritonclient.grpc import aio as grpc_aio
from tritonclient.utils import InferenceServerException

from .schema import GatewayError

MODEL_FAILURE = "generation failed"
QUEUE_FULL = re.compile(r"(queue|memory) full: .*retry after (\d+) s")
"""The model's refusal when its queue is full (llmsched.QueueFullError), with its retry estimate."""
READY_PROMPT = "Hello"
READY_SAMPLING = '{"max_tokens": 1, "temperature": 0}'
"""The readiness check's request: one greedy token."""
PROBE_PARAMETER = "conch_probe"
"""The request parameter that makes it a probe (genai_model.PROBE_PARAMETER): served ahead of the queue."""
_FIELD = re.compile(r"sampling_parameters\.(\w+)|\b(messages|text_input)\b|^(the prompt)\b")
"""A field the model's error names: a sampling key, its chat or its prompt input."""


@dataclass
class Piece:
    """A piece of generated text; the last one has the finish reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Triton:
    """One gRPC channel to the local tritonserver, shared by every HTTP request."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self._client: grpc_aio.InferenceServerClient | None = None
        self.context_length: int | None = None

    @property
    def client(self) -> grpc_aio.InferenceServerClient:
        """The gRPC client, made on first use inside the server's event loop (a channel is bound to it)."""
        if self._client is None:
            self._client = grpc_aio.InferenceServerClient(self.url)
        return self._client

    async def ready(self) -> bool:
        """The model is loaded and answers a real one-token generation (not only an open port)."""
        try:
            if not await self.client.is_model_ready(self.model):
                return False
        except InferenceServerException:
            return False
        try:
            pieces = self.generate(prompt=READY_PROMPT, chat=None, sampling=READY_SAMPLING, probe=True)
            async for piece in pieces:
                if piece.finish_reason is not None:
                    return piece.completion_tokens == 1
        except GatewayError as exc:
            return exc.status == 429  # loaded, only busy: out of the Service it would help no one
        return False

    async def context(self) -> int | None:
        """The model's context_length parameter (read once)."""
        if self.context_length is None:
            try:
                config = await self.client.get_model_config(self.model, as_json=True)
            except InferenceServerException:
                return None
            value = config.get("config", {}).get("parameters", {}).get("context_length", {})
            self.context_length = int(value.get("string_value", "0")) or None
        return self.context_length

    async def generate(
        self, *, prompt: str | None, chat: str | None, sampling: str, probe: bool = False
    ) -> AsyncIterator[Piece]:
        """Stream one generation; raises GatewayError for a refused request or an unreachable Triton.
        A probe (the readiness check) is one token that the model serves ahead of its queue."""
        inputs = [_bytes("sampling_parameters", sampling), _bool("stream", True)]
        inputs.append(_bytes("messages", chat) if chat is not None else _bytes("text_input", prompt or ""))
        request: dict[str, Any] = {"model_name": self.model, "inputs": inputs}
        if probe:
            request["parameters"] = {PROBE_PARAMETER: True}

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield request

        try:
            call = self.client.stream_infer(inputs_iterator=one())
        except InferenceServerException as exc:
            raise GatewayError(503, f"Triton is not reachable: {exc}", kind="service_unavailable") from exc
        try:
            async for result, error in call:
                if error is not None:
                    raise _refusal(str(error))
                piece = _piece(result)
                yield piece
                if piece.finish_reason is not None:
                    return
            raise GatewayError(
                502, "Triton ended the stream before the model's final response", kind="server_error"
            )
        except (grpc.RpcError, InferenceServerException) as exc:  # tritonclient passes the first unwrapped
            raise _broken(exc) from exc
        finally:
            call.cancel()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _refusal(message: str) -> GatewayError:
    """The model's error response: a failed generation (500) or the request's mistake (400, its field)."""
    text = message.split("] ", 1)[-1] if message.startswith("[") else message
    busy = QUEUE_FULL.search(text)
    if busy:  # OpenAI's answer to too many requests, which its clients retry after Retry-After
        headers = {"Retry-After": busy.group(2)}
        code = f"{busy.group(1)}_full"  # queue_full, or memory_full: the pod is near its memory limit
        return GatewayError(429, text, kind="rate_limit_exceeded", code=code, headers=headers)
    if MODEL_FAILURE in text:
        return GatewayError(500, text, kind="server_error")
    if "unknown model" in text.lower():
        return GatewayError(404, text, param="model", code="model_not_found")
    found = _FIELD.search(text)
    field: str | None = next(name for name in found.groups() if name) if found else None
    if field in ("text_input", "the prompt"):
        field = "prompt"
    return GatewayError(400, text, param=field)


def _broken(exc: Exception) -> GatewayError:
    """A gRPC failure: Triton unreachable (503) or the call broken under a running generation (502)."""
    code = exc.code() if hasattr(exc, "code") else None  # grpc.aio.AioRpcError's
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (None, grpc.StatusCode.UNAVAILABLE):
        return GatewayError(503, f"Triton is not reachable: {details}", kind="service_unavailable")
    return GatewayError(502, f"Triton failed: {details}", kind="server_error")


def _piece(result: Any) -> Piece:
    text = result.as_numpy("text_output")
    finish = result.as_numpy("finish_reason")
    piece = Piece(text[0].decode("utf-8") if text is not None and len(text) else "")
    if finish is not None and len(finish):
        piece.finish_reason = finish[0].decode()
        piece.prompt_tokens = int(result.as_numpy("prompt_tokens")[0])
        piece.completion_tokens = int(result.as_numpy("completion_tokens")[0])
    return piece


def _bytes(name: str, value: str) -> InferInput:
    tensor = InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode("utf-8")], dtype=np.object_))
    return tensor


def _bool(name: str, value: bool) -> InferInput:
    tensor = InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor
