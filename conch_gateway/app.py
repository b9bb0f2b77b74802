"""The OpenAI-compatible routes: requests validated, sent to Triton, answered as OpenAI answers them.

Non-streamed requests collect the pieces into one response with `usage`; `stream: true` answers with
Server-Sent Events: chat chunks carry `delta` (the first one the assistant role), completion chunks
`text`, the last chunk the finish reason (and a usage chunk when stream_options.include_usage), then
`data: [DONE]`. The model's first response is read before answering, so a refused request is still an
HTTP error; one that fails after the 200 went out (Triton gone, the generation failed) can only be an
event: `data: {"error": {...}}` (OpenAI's error body, which the openai client raises as APIError),
then `data: [DONE]`, as vLLM does. A client that disconnects mid-stream ends the generator, which
cancels the Triton call.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import schema
from .schema import GatewayError
from .triton import Piece, Triton

log = logging.getLogger("conch_gateway")


def create_app(triton: Triton) -> Starlette:
    """The ASGI app serving `triton.model` through `triton`."""

    async def card() -> dict[str, Any]:
        entry: dict[str, Any] = {"id": triton.model, "object": "model", "created": 0, "owned_by": "conch"}
        context = await triton.context()
        if context is not None:
            entry["context_length"] = context
        return entry

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [await card()]})

    async def model(request: Request) -> Response:  # OpenAI's retrieve model
        name = request.path_params["model"]
        if name != triton.model:
            raise schema.model_not_found(name, triton.model)
        return JSONResponse(await card())

    async def chat(request: Request) -> Response:
        body = schema.parse(schema.ChatRequest, await request.body())
        return await _answer(triton, body, chat=body.chat_json(), prompt=None)

    async def completions(request: Request) -> Response:
        body = schema.parse(schema.CompletionRequest, await request.body())
        return await _answer(triton, body, chat=None, prompt=body.prompt)

    async def ready(_: Request) -> Response:  # the pod's readiness probe: one real token
        ok = await triton.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def http_error(_: Request, exc: Exception) -> Response:  # Starlette's own: no route, a method
        assert isinstance(exc, HTTPException)
        error = GatewayError(exc.status_code, exc.detail)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await triton.close()

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health", live, methods=["GET"]),  # vLLM's path, which OpenAI-style load tools check
    ]
    handlers = {GatewayError: gateway_error, HTTPException: http_error}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def _answer(triton: Triton, body: Any, *, chat: str | None, prompt: str | None) -> Response:
    if body.model != triton.model:
        raise schema.model_not_found(body.model, triton.model)
    body.check_context(await triton.context())
    pieces = triton.generate(prompt=prompt, chat=chat, sampling=body.sampling_parameters())
    try:
        first = await anext(pieces)  # a refused request fails here, before any byte is sent
    except GatewayError as exc:
        exc.param = body.param_for(exc.param)  # the model's field as the request named it
        raise
    meta = _Meta(kind="chat.completion" if chat is not None else "text_completion", model=triton.model)
    if body.stream:
        return StreamingResponse(
            _events(meta, first, pieces, body.include_usage()), media_type="text/event-stream"
        )
    text, last = "", first
    async for piece in _chain(first, pieces):
        text, last = text + piece.text, piece
    return JSONResponse(meta.whole(text, last))


async def _chain(first: Piece, pieces: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    """The answer's pieces: the first (already read, to refuse a bad request early), then the rest."""
    yield first
    if first.finish_reason is None:
        async for piece in pieces:
            yield piece


class _Meta:
    """The id, timestamps and object names shared by one answer's chunks."""

    def __init__(self, kind: str, model: str) -> None:
        self.kind, self.model = kind, model
        self.id = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, last: Piece) -> dict[str, Any]:
        if self.kind == "chat.completion":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = last.finish_reason
        return {**self._head(self.kind), "choices": [choice], "usage": _usage(last)}

    def chunk(self, text: str | None, finish: str | None, first: bool) -> dict[str, Any]:
        if self.kind == "chat.completion":
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            obj = "chat.completion.chunk"
        else:
            choice, obj = {"index": 0, "text": text or "", "logprobs": None}, "text_completion"
        choice["finish_reason"] = finish
        return {**self._head(obj), "choices": [choice]}

    def usage_chunk(self, last: Piece) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat.completion" else "text_completion"
        return {**self._head(obj), "choices": [], "usage": _usage(last)}


async def _events(meta: _Meta, first: Piece, pieces: AsyncIterator[Piece], usage: bool) -> AsyncIterator[str]:
    last, opening = first, True
    try:
        async for piece in _chain(first, pieces):
            yield _sse(meta.chunk(piece.text, piece.finish_reason, opening))
            last, opening = piece, False
        if usage:
            yield _sse(meta.usage_chunk(last))
    except GatewayError as exc:  # the 200 has gone out: the error can only be an event
        log.warning("stream %s failed: %s", meta.id, exc.message)
        yield _sse(exc.body())
    except Exception:  # a bug of ours: the client still gets an error, not a cut connection
        log.exception("stream %s failed", meta.id)
        yield _sse(GatewayError(500, "internal error", kind="server_error").body())
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _usage(last: Piece) -> dict[str, int]:
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": last.prompt_tokens + last.completion_tokens,
    }
