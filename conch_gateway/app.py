"""The OpenAI-compatible routes: requests validated, sent to Triton, answered as OpenAI answers them.

Non-streamed requests collect the pieces into one response with `usage`; `stream: true` answers with
Server-Sent Events: chat chunks carry `delta` (the first one the assistant role), completion chunks
`text`, the last chunk the finish reason (and a usage chunk when stream_options.include_usage), then
`data: [DONE]`. A client that disconnects mid-stream ends the generator, which cancels the Triton call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import schema
from .schema import GatewayError
from .triton import Piece, Triton


def create_app(triton: Triton) -> Starlette:
    """The ASGI app serving `triton.model` through `triton`."""

    async def models(_: Request) -> Response:
        card = {"id": triton.model, "object": "model", "created": 0, "owned_by": "conch"}
        context = await triton.context()
        if context is not None:
            card["context_length"] = context
        return JSONResponse({"object": "list", "data": [card]})

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
        return JSONResponse(exc.body(), status_code=exc.status)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await triton.close()

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={GatewayError: gateway_error}, lifespan=lifespan)


async def _answer(triton: Triton, body: Any, *, chat: str | None, prompt: str | None) -> Response:
    if body.model != triton.model:
        raise GatewayError(
            404, f"model {body.model!r} is not served here (this endpoint serves {triton.model!r})", "model"
        )
    pieces = triton.generate(prompt=prompt, chat=chat, sampling=body.sampling_parameters())
    first = await anext(pieces)  # a refused request fails here, before any byte is sent
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
    async for piece in _chain(first, pieces):
        yield _sse(meta.chunk(piece.text, piece.finish_reason, opening))
        last, opening = piece, False
    if usage:
        yield _sse(meta.usage_chunk(last))
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _usage(last: Piece) -> dict[str, int]:
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": last.prompt_tokens + last.completion_tokens,
    }
