"""A fault-injecting HTTPS reverse proxy between the operator and the test control plane's apiserver.

The operator is pointed at it by a kubeconfig that differs from the cluster's only in `server`. It
terminates TLS with the apiserver's own serving certificate (the cluster CA signed it for 127.0.0.1,
so the operator verifies it exactly as it verifies the apiserver) and demands a client certificate
signed by the cluster CA, so only a holder of a cluster identity gets through, as at the apiserver.
It sends each request on to the apiserver over a new TLS connection with the admin certificate, the
identity the test operator holds anyway, so authentication and RBAC are the apiserver's, unchanged.

Each request is read whole (head and body) and counted by User-Agent, per second; then, by the mode
set at run time: passed through (one request per upstream connection, `Connection: close` both
ways, so every request of a keep-alive client is seen and counted), or answered 429 / 500 / 503
with a Retry-After, or its connection reset (RST, no answer). Entering a fault mode also cuts every
request in flight, watches included, as an apiserver in trouble does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MODES = ("pass", "429", "500", "503", "drop")
HOP = {b"connection", b"keep-alive", b"proxy-connection"}


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic()
    method: str
    path: str
    query: str
    agent: str
    answer: str  # "pass" or the fault given


class FaultProxy:
    """Listens on 127.0.0.1:`port` (after start()); `upstream` is the apiserver's https host:port."""

    def __init__(self, pki: Path, upstream: tuple[str, int], retry_after: int = 1) -> None:
        self.upstream = upstream
        self.retry_after = retry_after
        self.mode = "pass"
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
        self._server_tls.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self._server_tls.verify_mode = ssl.CERT_REQUIRED
        self._server_tls.set_alpn_protocols(["http/1.1"])
        self._client_tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self._client_tls.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._live: set[asyncio.StreamWriter] = set()
        self.port = 0

    # ---- control (from the test's thread) ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._server_tls), self._loop
        ).result(10)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_mode(self, mode: str) -> None:
        """Switch what new requests get; any fault mode also resets every connection in flight."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not one of {MODES}")
        self.mode = mode
        if mode != "pass":
            self._loop.call_soon_threadsafe(self._cut_all)

    @contextlib.contextmanager
    def storm(self, mode: str) -> Iterator[None]:
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode("pass")

    def kubeconfig(self, cluster_kubeconfig: Path, out: Path) -> Path:
        """The cluster's kubeconfig with its server replaced by this proxy (kubeconfig is YAML; the
        cluster's is written by testenv/cluster.sh with one `server:` line)."""
        text = cluster_kubeconfig.read_text()
        lines = [
            f"    server: https://127.0.0.1:{self.port}" if line.strip().startswith("server:") else line
            for line in text.splitlines()
        ]
        out.write_text("\n".join(lines) + "\n")
        return out

    def requests(self, since: float, until: float | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.at >= since and (until is None or s.at < until)]

    def max_rate(self, since: float, until: float, agent: str = "") -> int:
        """The most requests (of User-Agents starting with `agent`) in any one-second window."""
        times = sorted(s.at for s in self.requests(since, until) if s.agent.startswith(agent))
        best, start = 0, 0
        for end, t in enumerate(times):
            while times[start] <= t - 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    def watch_streams(self, since: float, until: float) -> int:
        """Distinct watched collections (path and label selector) asked for in the window."""
        return len({(s.path, s.query.split("&resourceVersion")[0]) for s in self.requests(since, until)
                    if "watch=" in s.query})  # fmt: skip

    def by_agent(self, since: float, until: float) -> dict[str, int]:
        return dict(collections.Counter(s.agent.split(" ")[0] for s in self.requests(since, until)))

    # ---- the proxy (on its own loop) ----------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._server.close()
        self._cut_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cut_all(self) -> None:
        for writer in list(self._live):
            _reset(writer)
        self._live.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._live.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await _read_body(reader, head)
            request_line, *header_lines = head.split(b"\r\n")
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers = {}
            for line in header_lines:
                if b":" in line:
                    name, value = line.split(b":", 1)
                    headers[name.strip().lower()] = value.strip()
            mode = self.mode
            agent = headers.get(b"user-agent", b"").decode("latin-1")
            with self._lock:
                path, _, query = target.partition("?")
                self.seen.append(Seen(time.monotonic(), method, path, query, agent, mode))
            if mode == "drop":
                _reset(writer)
            elif mode != "pass":
                await self._refuse(writer, int(mode))
            else:
                await self._forward(head, header_lines, request_line, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError, ValueError):
            pass
        finally:
            self._live.discard(writer)
            writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, code: int) -> None:
        reason = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}[code]
        body = json.dumps(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": "FaultProxy",
             "message": f"fault proxy: {reason}"}
        ).encode()  # fmt: skip
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {self.retry_after}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _forward(
        self,
        head: bytes,
        header_lines: list[bytes],
        request_line: bytes,
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        del head
        kept = [line for line in header_lines if line and line.split(b":", 1)[0].strip().lower() not in HOP]
        out_head = b"\r\n".join([request_line, *kept, b"Connection: close", b"", b""])
        up_reader, up_writer = await asyncio.open_connection(
            *self.upstream, ssl=self._client_tls, server_hostname="127.0.0.1"
        )
        try:
            up_writer.write(out_head + body)
            await up_writer.drain()
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        raw = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            raw += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return raw
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":", 1)[1]))
    return b""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): the peer sees 'connection reset', not a clean end."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
