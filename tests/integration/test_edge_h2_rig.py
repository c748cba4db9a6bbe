"""Shared rig for the HTTP/2 edge tests (no tests here): backends, an h2c edge, a client.

- :class:`Backend`: an h11 server on 127.0.0.1:0 that answers with JSON describing what it
  received (``/``), ``/stream/N`` (N bytes), ``/chunked/N``, ``/trailers``, ``/gated/N``
  (headers, then waits for ``gate`` before N bytes), ``/hold`` (reads nothing until
  ``gate``, then echoes).
- :func:`h2_edge`: a real edge (``start_edge``) plus a second listener that serves HTTP/1
  and h2c on one port through :class:`~roost.proxy.preface.PrefaceSniffer` -- the wiring
  ``edge.py`` is to adopt.
- :class:`H2Client`: an asyncio client over h2 that can also misbehave (raw frames, no
  header validation, no flow-control acks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h2.config
import h2.connection
import h2.events as ev
import h2.settings
import h11
from h2.connection import ConnectionState

from roost.proxy import Backend as Route
from roost.proxy import RouteHolder, RouteTable, start_edge
from roost.proxy.edge import Edge
from roost.proxy.http1 import ClientConnection
from roost.proxy.http2 import H2ClientConnection, H2Options
from roost.proxy.preface import PrefaceSniffer
from tests.integration import rig as shared
from tests.integration.rig import BLOCK, H11Server, close_all

AUTHORITY = shared.HOST


@dataclass
class Backend(H11Server):
    """See the module docstring. ``sent``: body bytes written by the last stream."""

    ident: str = "b0"
    requests: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    received: int = 0

    async def _answer(
        self,
        request: h11.Request,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        served: int,
    ) -> bool:
        target = request.target.decode()
        if target == "/hold":
            await self.gate.wait()
        digest, size = hashlib.sha256(), 0
        while isinstance(event := await self._next(conn, reader), h11.Data):
            digest.update(event.data)
            size += len(event.data)
            self.received = size
        seen = {
            "method": request.method.decode(),
            "target": target,
            "headers": [[n.decode(), v.decode("latin-1")] for n, v in request.headers],
            "raw_headers": [n.decode() for n, _ in request.headers.raw_items()],
            "body_len": size,
            "body_sha256": digest.hexdigest(),
        }
        self.requests.append(seen)
        kind, _, arg = target[1:].partition("/")
        n = int(arg) if arg.isdigit() else 0
        send = writer.write
        if kind in ("stream", "gated", "chunked"):
            headers = [] if kind == "chunked" else [("Content-Length", str(n))]
            send(conn.send(h11.Response(status_code=200, headers=headers)))
            if kind == "gated":
                await writer.drain()
                await self.gate.wait()
            self.sent = 0
            while self.sent < n and request.method != b"HEAD":
                piece = BLOCK[: min(len(BLOCK), n - self.sent)]
                send(conn.send(h11.Data(data=piece)))
                self.sent += len(piece)
                await writer.drain()
            send(conn.send(h11.EndOfMessage()))
        elif kind == "trailers":
            send(conn.send(h11.Response(status_code=200, headers=[("Trailer", "X-Sum")])))
            send(conn.send(h11.Data(data=b"body")))
            send(conn.send(h11.EndOfMessage(headers=[("X-Sum", "abc"), ("Roost-Bad", "x")])))
        else:
            payload = json.dumps(seen).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
            headers += [("Connection", "X-Hop"), ("X-Hop", "1"), ("Roost-Secret", "app")]
            send(conn.send(h11.Response(status_code=200, headers=headers)))
            send(conn.send(h11.Data(data=payload)))
            send(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True


# The h2 tests' own settings: a longer quiet spell (0.5 s), polled every 20 ms.
wait_stable = functools.partial(shared.wait_stable, quiet=0.5, interval=0.02)


@dataclass
class Rig:
    edge: Edge
    server: asyncio.Server
    backend: Backend

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def h2_edge(options: H2Options | None = None, **limits: Any) -> AsyncIterator[Rig]:
    """An edge routing ``demo.localhost`` to one :class:`Backend`, HTTP/1 + h2c on one port."""
    backend = await Backend().start()
    table = RouteTable.build(
        [("demo", [AUTHORITY])], {"demo": [Route("b0", "127.0.0.1", backend.port)]}
    )
    edge = await start_edge("127.0.0.1", 0, RouteHolder(table), region="tst", **limits)
    ctx, registry = edge.context, edge.connections
    server = await asyncio.get_running_loop().create_server(
        lambda: PrefaceSniffer(
            ClientConnection(ctx, registry), lambda: H2ClientConnection(ctx, registry, options)
        ),
        "127.0.0.1",
        0,
    )
    try:
        yield Rig(edge, server, backend)
    finally:
        await close_all(H2Client.opened)
        server.close()
        await edge.close(timeout=2.0)
        await backend.close()


@dataclass
class Reply:
    """What arrived on one stream."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # error code of an RST_STREAM from the edge

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)

    def json(self) -> dict[str, Any]:
        return dict(json.loads(bytes(self.body)))


class H2Client:
    """A client connection driven by h2; ``ack=False`` never returns flow-control credit."""

    opened: ClassVar[list[H2Client]] = []  # closed by h2_edge() on exit

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Any
    ) -> None:
        self.reader, self.writer, self.conn = reader, writer, conn
        self.replies: dict[int, Reply] = {}
        self.events: list[ev.Event] = []
        self.goaways: list[ev.ConnectionTerminated] = []
        self.closed = False
        self.ack = True
        self._buffer = b""
        self.uploaded: dict[int, int] = {}

    @classmethod
    async def open(
        cls, port: int, *, validate: bool = True, settings: dict[int, int] | None = None
    ) -> H2Client:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        conn = h2.connection.H2Connection(config)
        if settings:
            conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        conn.initiate_connection()
        client = cls(*await asyncio.open_connection("127.0.0.1", port), conn)
        cls.opened.append(client)
        client.flush()
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: str = AUTHORITY,
    ) -> int:
        """Send a request (a small body goes at once; see :meth:`upload` for big ones)."""
        sid = int(self.conn.get_next_available_stream_id())
        fields = [(":method", method), (":path", path), (":scheme", "http")]
        fields += [(":authority", authority), *(headers or [])]
        encoded = [(n.encode(), v.encode("latin-1")) for n, v in fields]
        self.conn.send_headers(sid, encoded, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.replies[sid] = Reply()
        self.flush()
        return sid

    def send_block(self, block: list[tuple[bytes, bytes]], end: bool = True) -> int:
        """Send a raw header block as a new stream (validation as configured)."""
        sid = int(self.conn.get_next_available_stream_id())
        self.conn.send_headers(sid, block, end_stream=end)
        self.replies[sid] = Reply()
        self.flush()
        return sid

    async def upload(self, sid: int, data: bytes, timeout: float = 30.0) -> None:
        """Send ``data`` on ``sid`` as the edge's windows allow, then end the stream."""
        view = memoryview(data)
        async with asyncio.timeout(timeout):
            while view:
                window = min(self.conn.local_flow_control_window(sid), 16384)
                if window <= 0:
                    await self.read_some()
                    continue
                self.conn.send_data(sid, bytes(view[:window]))
                self.uploaded[sid] = self.uploaded.get(sid, 0) + window
                view = view[window:]
                self.flush()
                await self.writer.drain()
            self.conn.end_stream(sid)
            self.flush()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_some(self) -> None:
        try:
            data = await self.reader.read(1 << 20)
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return
        # One frame at a time: h2 refuses every frame after a GOAWAY (python-hyper/h2#1181),
        # so after a graceful GOAWAY this client reopens its state machine to read on.
        buf = self._buffer = self._buffer + data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            size = 9 + int.from_bytes(buf[:3], "big")
            frame, buf = buf[:size], buf[size:]
            for event in self.conn.receive_data(frame):
                self._on(event)
            if self.goaways and self.goaways[-1].error_code == 0:
                self.conn.state_machine.state = ConnectionState.CLIENT_OPEN
        self._buffer = buf
        self.flush()

    def _on(self, event: ev.Event) -> None:
        self.events.append(event)
        reply = self.replies.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, ev.ResponseReceived) and reply is not None:
            reply.headers = list(event.headers or [])
            reply.status = int(dict(reply.headers)[b":status"])
        elif isinstance(event, ev.DataReceived) and reply is not None:
            reply.body += event.data or b""
            if self.ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, ev.TrailersReceived) and reply is not None:
            reply.trailers = list(event.headers or [])
        elif isinstance(event, ev.StreamEnded) and reply is not None:
            reply.ended = True
        elif isinstance(event, ev.StreamReset) and reply is not None:
            reply.reset = int(event.error_code or 0)
        elif isinstance(event, ev.ConnectionTerminated):
            self.goaways.append(event)

    async def until(self, cond: Callable[[], object], timeout: float = 10.0) -> None:
        """Read and process until ``cond()`` holds (fails on timeout or a closed socket)."""
        async with asyncio.timeout(timeout):
            while not cond():
                assert not self.closed, "connection closed"
                await self.read_some()

    async def done(self, sid: int, timeout: float = 10.0) -> Reply:
        reply = self.replies[sid]
        await self.until(lambda: reply.ended or reply.reset is not None, timeout)
        return reply

    async def wait_closed(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.closed:
                await self.read_some()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
