"""`conch-gateway auth-proxy`: the serving pod's front door when spec.auth asks for tokens.

Triton cannot check inference tokens itself (its `--http-restricted-api` takes one key per API group,
so no two tokens could be valid during a rotation), and the OpenAI gateway should not check them
twice. So Triton and the gateway listen on the pod's loopback only, and this proxy listens on the
pod's ports in front of them: each HTTP listener relays to one upstream (aiohttp server and client,
bodies streamed both ways, so Triton's SSE generate_stream and large tensors pass as they are), the
gRPC listener relays every method as raw bytes (a grpc.aio generic handler: a stream-stream relay
carries unary and streaming RPCs alike, status, details and metadata included).

Every request needs a valid token (tokens.py), except the health checks a kubelet probes and that
KServe leaves open too: HTTP /v2/health/{live,ready}, /v2/models/<m>[/versions/<v>]/ready, the
gateway's /health/{live,ready}, and gRPC ServerLive, ServerReady, ModelReady. A refusal is HTTP 401
(`WWW-Authenticate: Bearer`) or gRPC UNAUTHENTICATED, and counts in conch_auth_refusals_total{api,
reason} on the metrics port, which the ServiceMonitor scrapes next to Triton's own (left open: Prometheus
scrapes without a token). The credential headers are removed before a request goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import prometheus_client
from aiohttp import web

from . import tokens

log = logging.getLogger("conch_gateway.authproxy")
REFRESH_SECONDS = 2.0
DRAIN_SECONDS = 5.0
"""After SIGTERM: keep answering this long (endpoint removal is not instant), then let requests in
flight finish for up to this long (within the pod's 30 s grace period)."""
"""How often the token files are re-read: a rotated Secret is honoured within the kubelet's sync
period plus this."""
OPEN_PATH = re.compile(
    r"/v2/health/(live|ready)|/v2/models/[^/]+(/versions/[^/]+)?/ready|/health/(live|ready)"
)
GRPC_SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset(GRPC_SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady"))
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host"}
)  # fmt: skip
GRPC_RESERVED = ("grpc-", ":")
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

REFUSALS = prometheus_client.Counter(
    "conch_auth_refusals", "Requests refused for a missing or invalid inference token", ["api", "reason"]
)
TOKENS = prometheus_client.Gauge("conch_auth_tokens", "Inference tokens currently valid")


@dataclass(frozen=True)
class Route:
    """One listener: a port of the pod and the loopback address it relays to."""

    api: str  # the refusal counter's `api` label: http, grpc, openai
    port: int
    upstream: str  # host:port

    @staticmethod
    def parse(api: str, text: str) -> Route:
        """`PORT=HOST:PORT`, e.g. `8000=127.0.0.1:18000`."""
        port, eq, upstream = text.partition("=")
        if not eq or not port.isdigit() or ":" not in upstream:
            raise argparse.ArgumentTypeError(f"--{api}: expected PORT=HOST:PORT, got {text!r}")
        return Route(api, int(port), upstream)


def refuse(api: str, reason: str, peer: str | None) -> None:
    REFUSALS.labels(api, reason).inc()
    log.warning("refused a %s request from %s: %s token", api, peer or "?", reason)


# ---- HTTP -------------------------------------------------------------------------------------------


def refusal_body(api: str, reason: str) -> dict[str, object]:
    """A 401's body as the listener's clients parse errors: OpenAI's error object on the openai port,
    Triton's `{"error": "<message>"}` (which tritonclient reads) on Triton's."""
    message = f"{reason} inference token"
    if api == "openai":
        return {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
    return {"error": message}


def http_app(route: Route, tokenset: tokens.TokenSet) -> web.Application:
    """The aiohttp app relaying `route` (the client session lives and dies with the app)."""
    app = web.Application(client_max_size=0)  # no body limit here: the upstream has its own
    base = f"http://{route.upstream}"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
        app["session"] = aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False)
        yield
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        if OPEN_PATH.fullmatch(request.path) is None:
            reason = tokenset.check(tokens.presented(request.headers.items()))
            if reason is not None:
                refuse(route.api, reason, request.remote)
                return web.json_response(
                    refusal_body(route.api, reason), status=401, headers={"WWW-Authenticate": "Bearer"}
                )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() not in tokens.CREDENTIAL_HEADERS
        }
        body = request.content if request.body_exists else None
        session: aiohttp.ClientSession = app["session"]
        try:
            upstream = await session.request(
                request.method, base + request.rel_url.raw_path_qs, headers=headers, data=body,
                allow_redirects=False,
            )  # fmt: skip
        except aiohttp.ClientError as exc:
            log.warning("%s upstream %s unreachable: %s", route.api, route.upstream, type(exc).__name__)
            return web.json_response({"error": "upstream unavailable"}, status=502)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    response.headers.add(k, v)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


# ---- gRPC -------------------------------------------------------------------------------------------


class GrpcRelay(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no stubs
    """Every method of the upstream, relayed as bytes after the token check."""

    def __init__(self, route: Route, tokenset: tokens.TokenSet, channel: grpc.aio.Channel) -> None:
        self.route, self.tokenset, self.channel = route, tokenset, channel

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method

        async def handle(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            metadata = [
                (str(k), str(v)) for k, v in context.invocation_metadata() or () if isinstance(v, str)
            ]
            if method not in OPEN_METHODS:
                reason = self.tokenset.check(tokens.presented(metadata))
                if reason is not None:
                    refuse(self.route.api, reason, context.peer())
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{reason} inference token")
            forward = [
                (k, v)
                for k, v in metadata
                if k not in tokens.CREDENTIAL_HEADERS
                and k != "user-agent"
                and not k.startswith(GRPC_RESERVED)
            ]
            call = self.channel.stream_stream(method)(
                requests, metadata=forward, timeout=context.time_remaining()
            )
            try:
                async for response in call:
                    yield response
                trailing = await call.trailing_metadata()
                if trailing:
                    context.set_trailing_metadata(trailing)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "", exc.trailing_metadata())

        return grpc.stream_stream_rpc_method_handler(handle)


# ---- the process ------------------------------------------------------------------------------------


async def refresh_until(tokenset: tokens.TokenSet, stop: asyncio.Event) -> None:
    """Re-read the token files every REFRESH_SECONDS until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
        tokenset.refresh()
        TOKENS.set(len(tokenset))


async def serve(
    host: str,
    http: list[Route],
    grpc_routes: list[Route],
    tokenset: tokens.TokenSet,
    drain_seconds: float = DRAIN_SECONDS,
) -> None:
    """Run every listener until SIGTERM, then drain: requests in flight get `drain_seconds` to end."""
    TOKENS.set(len(tokenset))
    runners = []
    for route in http:
        runner = web.AppRunner(http_app(route, tokenset), access_log=None, shutdown_timeout=drain_seconds)
        await runner.setup()
        await web.TCPSite(runner, host, route.port, backlog=1024).start()
        runners.append(runner)
    servers, channels = [], []
    for route in grpc_routes:
        channel = grpc.aio.insecure_channel(route.upstream, options=GRPC_OPTIONS)
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers([GrpcRelay(route, tokenset, channel)])
        server.add_insecure_port(f"{host}:{route.port}")
        await server.start()
        servers.append(server)
        channels.append(channel)
    log.warning(
        "auth proxy up: %s", ", ".join(f"{r.api} {r.port} -> {r.upstream}" for r in http + grpc_routes)
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await refresh_until(tokenset, stop)
        # SIGTERM: the pod is leaving the Service's endpoints meanwhile; requests still arriving are
        # served for DRAIN_SECONDS, then the listeners close, letting requests in flight (a generator's
        # streams: the operator passes its Triton's exit timeout) finish for up to drain_seconds
        log.warning("SIGTERM: serving %g s more, then draining for up to %g s", DRAIN_SECONDS, drain_seconds)
        await asyncio.sleep(DRAIN_SECONDS)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.gather(*(s.stop(drain_seconds) for s in servers))
            await asyncio.gather(*(r.cleanup() for r in runners))
            await asyncio.gather(*(c.close() for c in channels))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="conch-gateway auth-proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=Path, required=True, help="the mounted Secret's directory")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--http", action="append", default=[], type=lambda t: Route.parse("http", t))
    parser.add_argument("--openai", action="append", default=[], type=lambda t: Route.parse("openai", t))
    parser.add_argument("--grpc", action="append", default=[], type=lambda t: Route.parse("grpc", t))
    parser.add_argument("--metrics-port", type=int, default=8003)
    parser.add_argument(
        "--drain-seconds", type=float, default=DRAIN_SECONDS, help="in-flight time after SIGTERM"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    tokenset = tokens.TokenSet(args.tokens)
    if not len(tokenset):
        log.warning("no inference token in %s: every request is refused until one appears", args.tokens)
    prometheus_client.start_http_server(args.metrics_port, addr=args.host)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.http + args.openai, args.grpc, tokenset, args.drain_seconds))
