"""Small standalone servers: TLS (peek the ClientHello, choose a context, terminate) and HTTP-01.

They exist for ACME integration tests and for bring-up before the edge mounts the same pieces;
they are also the reference for how the edge must drive TLS:

1. feed the first bytes into :class:`ClientHelloReader` (nothing reaches OpenSSL yet);
2. ``ctx = await select(hello)`` -- normally :func:`choose_context`: an ``acme-tls/1``-only
   hello gets the TLS-ALPN-01 responder's context for exactly its name, anything else gets the
   cert cache's SNI context after ``await cache.prepare(sni)``;
3. wrap an ``SSLObject`` over two ``MemoryBIO``s with ``ctx``, write ``hello.raw`` (and anything
   read meanwhile) into the incoming BIO, and pump the handshake.

Each server answers one HTTP/1.x request per connection (``respond(hello, tls, head)``) and
closes; the HTTP-01 server answers ``/.well-known/acme-challenge/<token>`` or 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from roost.proxy.tls.challenges import Http01Responder
from roost.proxy.tls.clienthello import (
    ALERT_UNRECOGNIZED_NAME,
    ClientHello,
    ClientHelloReader,
    NeedMore,
    Reject,
    alert_record,
)

Select = Callable[[ClientHello], Awaitable[ssl.SSLContext | None]]
Respond = Callable[[ClientHello, ssl.SSLObject, bytes], bytes]
_MAX_HEAD = 16 * 1024


def default_respond(hello: ClientHello, tls: ssl.SSLObject, head: bytes) -> bytes:
    """200 with ``<sni> <alpn>`` as the body."""
    body = f"{hello.server_name} {tls.selected_alpn_protocol()}\n".encode()
    return _response(200, body)


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class TlsConnection(asyncio.Protocol):
    """One client: peek, choose a context, handshake over MemoryBIOs, answer once, close."""

    def __init__(self, select: Select, respond: Respond = default_respond) -> None:
        self.select = select
        self.respond = respond
        self.reader = ClientHelloReader()
        self.hello: ClientHello | None = None
        self.tls: ssl.SSLObject | None = None
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._early = bytearray()  # bytes read while the context was being chosen
        self._head = bytearray()
        self._handshaken = False
        self._answered = False
        self._task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            self._in.write(data)
            self._pump()
        elif self.hello is not None:
            self._early += data
        else:
            result = self.reader.feed(data)
            if isinstance(result, NeedMore):
                return
            if isinstance(result, Reject):
                self._fail(result.alert)
                return
            self.hello = result
            self._task = asyncio.ensure_future(self._start(result))

    async def _start(self, hello: ClientHello) -> None:
        ctx = await self.select(hello)
        if ctx is None:
            self._fail(ALERT_UNRECOGNIZED_NAME)
            return
        self.tls = ctx.wrap_bio(self._in, self._out, server_side=True)
        self._in.write(hello.raw + bytes(self._early))
        self._pump()

    def _pump(self) -> None:
        assert self.tls is not None and self.transport is not None
        try:
            if not self._handshaken:
                self.tls.do_handshake()
                self._handshaken = True
            while not self._answered:
                chunk = self.tls.read(65536)
                if not chunk:
                    break
                self._head += chunk
                if b"\r\n\r\n" in self._head or len(self._head) > _MAX_HEAD:
                    assert self.hello is not None
                    self.tls.write(self.respond(self.hello, self.tls, bytes(self._head)))
                    self._answered = True
                    with contextlib.suppress(ssl.SSLError):
                        self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, OSError):
            self._flush()
            self.transport.close()
            return
        self._flush()
        if self._answered:
            self.transport.close()

    def _flush(self) -> None:
        assert self.transport is not None
        out = self._out.read()
        if out:
            self.transport.write(out)

    def _fail(self, alert: int) -> None:
        assert self.transport is not None
        self.transport.write(alert_record(alert))
        self.transport.close()


async def serve_tls(
    host: str, port: int, select: Select, respond: Respond = default_respond
) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and terminate TLS as described above."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: TlsConnection(select, respond), host, port)


async def serve_http01(responder: Http01Responder, host: str, port: int) -> asyncio.Server:
    """A plain-HTTP server answering ACME HTTP-01 challenges (404 for anything else)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
                writer.write(_response(400, b"bad request\n"))
            else:
                body = responder.response_for(parts[1].decode("latin-1"))
                writer.write(_response(200, body) if body else _response(404, b"not found\n"))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
