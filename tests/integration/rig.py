"""Shared rig for the integration tests (no tests here): backends, edge stacks, a raw client.

- :class:`H11Server`: the base of every test backend -- an h11 server on 127.0.0.1:0 whose
  subclasses answer one request at a time in :meth:`H11Server._answer`; ``gate`` is set (and
  connections cancelled) on close.
- :class:`EchoBackend` and :func:`stack`: HTTP/1.1 backends that echo what they received
  (a parser independent of the edge's httptools) behind a real edge.
- :class:`RawClient`, :func:`get`, :func:`fetch`: a socket client that sends raw bytes.
- :func:`wait_for`, :func:`wait_stable`: polling with deadlines on the running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import h11
import httptools

from roost.proxy import Backend, RouteHolder, RouteTable, start_edge
from roost.proxy.edge import Edge

HOST = "demo.localhost"
BLOCK = bytes(range(256)) * 256  # 64 KiB


async def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Wait until ``cond()`` is truthy, polling the loop, failing after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


async def wait_stable(
    value: Callable[[], int],
    quiet: float = 0.3,
    timeout: float = 20.0,
    what: str = "",
    interval: float = 0.01,
) -> int:
    """Wait until ``value()`` is positive and has not changed for ``quiet`` seconds (polled
    every ``interval``); return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = value(), loop.time()
    while True:
        now = loop.time()
        if now > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a value to settle'}")
        current = value()
        if current != last:
            last, since = current, now
        elif current > 0 and now - since >= quiet:
            return current
        await asyncio.sleep(interval)


async def close_all(opened: list[Any]) -> None:
    """Close every client in ``opened`` (a client class's ``opened`` list), emptying it."""
    while opened:
        await opened.pop().close()


# -- backends ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestBody:
    """A request body as :meth:`H11Server._read_body` read it."""

    size: int
    sha256: str  # hex digest
    first: bytes  # its first 1000 bytes
    trailers: list[list[str]]  # [name, value] of each trailer field


@dataclass(kw_only=True)
class H11Server:
    """An h11 server on 127.0.0.1:0; a subclass answers each request in :meth:`_answer`.

    ``connections``: connections accepted so far. ``gate``: set on :meth:`close` (so gated
    handlers finish), when every connection's task is cancelled too. ``body_progress``:
    body bytes of the request being read so far.
    """

    port: int = 0
    connections: int = 0
    body_progress: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        self.gate.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while isinstance(request := await self._next(conn, reader), h11.Request):
                if not await self._answer(request, conn, reader, writer, served):
                    break
                conn.start_next_cycle()
                served += 1
        except (ConnectionError, h11.RemoteProtocolError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        """The next h11 event, reading from ``reader`` as needed."""
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        return event

    async def _read_body(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> RequestBody | None:
        """Read the request's body to its end; None if the connection broke off instead."""
        digest = hashlib.sha256()
        size = 0
        first = b""
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.Data):
                digest.update(event.data)
                size += len(event.data)
                self.body_progress = size
                if len(first) < 1000:
                    first += event.data[: 1000 - len(first)]
            elif isinstance(event, h11.EndOfMessage):
                trailers = [[n.decode(), v.decode("latin-1")] for n, v in event.headers]
                return RequestBody(size, digest.hexdigest(), first, trailers)
            else:
                return None

    async def _answer(
        self,
        request: h11.Request,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        served: int,
    ) -> bool:
        """Answer ``request`` (the ``served``-th on this connection; its body is still to be
        read with :meth:`_next`); False closes the connection."""
        raise NotImplementedError


@dataclass
class EchoBackend(H11Server):
    """An HTTP/1.1 server that answers with JSON describing the request it got.

    Paths: ``/stream/N`` (N body bytes, Content-Length), ``/chunked/N`` (chunked),
    ``/gated/N`` (first MiB, then waits for ``gate``), ``/truncate`` and
    ``/truncate-chunked`` (close mid-body), ``/eof/N`` (close-delimited body),
    ``/status/N``, ``/reject`` (413 without reading the body), ``/no-continue``.
    ``drop=True`` closes every connection on receipt of a request, answering nothing (the
    targets it read are in ``dropped``).
    """

    ident: str
    drop: bool = False
    drop_after: int | None = None  # drop each connection's requests after this many
    requests: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # targets read, then hung up on
    sent: int = 0
    finished_sending: bool = False

    @property
    def backend(self) -> Backend:
        return Backend(self.ident, "127.0.0.1", self.port)

    async def _answer(
        self,
        request: h11.Request,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        served: int,
    ) -> bool:
        if self.drop or (self.drop_after is not None and served >= self.drop_after):
            self.dropped.append(request.target.decode())
            return False
        target = request.target.decode()
        if target == "/reject":
            writer.write(
                conn.send(h11.Response(status_code=413, headers=[("Content-Length", "0")]))
            )
            writer.write(conn.send(h11.EndOfMessage()))
            return False
        if conn.they_are_waiting_for_100_continue and target != "/no-continue":
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = await self._read_body(conn, reader)
        if body is None:
            return False
        seen = {
            "id": self.ident,
            "method": request.method.decode(),
            "target": target,
            "http_version": request.http_version.decode(),
            "headers": [[n.decode(), v.decode("latin-1")] for n, v in request.headers],
            "body_len": body.size,
            "body_sha256": body.sha256,
            "body": body.first.decode("latin-1"),
        }
        self.requests.append(seen)
        return await self._respond(conn, writer, target, seen)

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, target: str, seen: dict[str, Any]
    ) -> bool:
        parts = target.split("/")
        kind = parts[1] if len(parts) > 1 else ""
        n = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        if kind in ("stream", "chunked", "gated"):
            headers = [("Content-Length", str(n))] if kind != "chunked" else []
            writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
            await self._stream(conn, writer, n, gated=kind == "gated")
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        if kind == "truncate":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            return False
        if kind == "truncate-chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await writer.drain()
            return False
        if kind == "eof":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"e" * n)
            await writer.drain()
            return False
        if kind == "trailers":
            writer.write(conn.send(h11.Response(status_code=200, headers=[])))
            writer.write(conn.send(h11.Data(data=b"body")))
            trailers = [("X-Checksum", "abc"), ("Roost-Bad", "x")]
            writer.write(conn.send(h11.EndOfMessage(headers=trailers)))
            return True
        if kind == "status":
            writer.write(conn.send(h11.Response(status_code=n, headers=[("X-Echo", self.ident)])))
            writer.write(conn.send(h11.EndOfMessage()))
            return True
        payload = json.dumps(seen).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        headers += [("Connection", "X-Hop"), ("X-Hop", "1"), ("Roost-Secret", "app-set")]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        if seen["method"] != "HEAD":
            writer.write(conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    async def _stream(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, n: int, *, gated: bool
    ) -> None:
        self.sent = 0
        self.finished_sending = False
        while self.sent < n:
            if gated and self.sent >= 1 << 20:
                await self.gate.wait()
                gated = False
            piece = BLOCK[: min(len(BLOCK), n - self.sent)]
            writer.write(conn.send(h11.Data(data=piece)))
            self.sent += len(piece)
            await writer.drain()
        self.finished_sending = True


def dead_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    edge: Edge
    holder: RouteHolder
    backends: list[EchoBackend]

    @property
    def port(self) -> int:
        return self.edge.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"


@contextlib.asynccontextmanager
async def stack(
    n: int = 1,
    *,
    dead: int = 0,
    drop: tuple[int, ...] = (),
    unhealthy: tuple[int, ...] = (),
    **limits: Any,
) -> AsyncIterator[Stack]:
    """Backends b0..b{n-1} (+ ``dead`` refusing ones) behind app "demo"; app "idle" has none."""
    backends = [await EchoBackend(f"b{i}", drop=i in drop).start() for i in range(n)]
    routed = [
        Backend(b.ident, "127.0.0.1", b.port, healthy=i not in unhealthy)
        for i, b in enumerate(backends)
    ]
    routed += [Backend(f"dead{i}", "127.0.0.1", dead_port()) for i in range(dead)]
    table = RouteTable.build(
        [("demo", ["demo.example.com"]), ("idle", [])], {"demo": routed, "idle": []}
    )
    holder = RouteHolder(table)
    edge = await start_edge("127.0.0.1", 0, holder, region="tst", **limits)
    try:
        yield Stack(edge, holder, backends)
    finally:
        await close_all(RawClient.opened)
        await edge.close(timeout=2.0)
        for b in backends:
            await b.close()


# -- raw client --------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.decode().lower() == name.lower():
                return v.decode("latin-1")
        return None

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class RawClient:
    """A socket client that sends raw bytes and parses responses as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.responses: list[Response] = []
        self.interim: list[int] = []
        self._cur: Response | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False

    opened: list[RawClient] = []  # closed by stack() and hostrig.rig() on exit

    @classmethod
    async def open(cls, port: int) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        cls.opened.append(client)
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def on_message_begin(self) -> None:
        self._cur = Response(0, [], b"", False)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._cur is not None
        self._cur.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._cur is not None
        self._cur.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self._cur is not None
        self._cur.body += body

    def on_message_complete(self) -> None:
        assert self._cur is not None
        if self._cur.status < 200:
            self.interim.append(self._cur.status)
        else:
            self._cur.complete = True
            self.responses.append(self._cur)
        self._cur = None

    async def read_responses(self, count: int = 1, timeout: float = 10.0) -> list[Response]:
        """Read until ``count`` complete responses (or EOF), return them."""
        async with asyncio.timeout(timeout):
            while len(self.responses) < count and not self.closed:
                await self._read_some()
        return self.responses[:count]

    async def response(self, timeout: float = 10.0) -> Response:
        before = len(self.responses)
        await self.read_responses(before + 1, timeout)
        assert len(self.responses) > before, "connection closed before a response"
        return self.responses[before]

    async def _read_some(self) -> None:
        try:
            data = await self.reader.read(1 << 20)
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            if self._cur is not None and self._cur.status and not self._cur.complete:
                self.responses.append(self._cur)  # incomplete: kept for inspection
            return
        self._parser.feed_data(data)

    async def read_until(self, cond: Callable[[], object], timeout: float = 10.0) -> None:
        """Read (and parse) until ``cond()`` holds."""
        async with asyncio.timeout(timeout):
            while not cond():
                assert not self.closed, "connection closed"
                await self._read_some()

    def partial_body(self) -> int:
        """Body bytes of the response being received so far."""
        return len(self._cur.body) if self._cur is not None else 0

    async def send_until_closed(self, piece: bytes, limit: int, timeout: float = 10.0) -> int:
        """Send ``piece`` again and again (at most ``limit`` bytes in all) until the edge
        closes the connection, reading its answer meanwhile; the number of bytes sent."""
        closed = asyncio.ensure_future(self.wait_closed(timeout=timeout))
        sent = 0
        while sent < limit and not closed.done():
            self.send(piece)
            sent += len(piece)
            await self.writer.drain()
            await asyncio.sleep(0)  # (the edge may run in this loop)
        await closed
        return sent

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Read (and parse) until the edge closes the connection."""
        async with asyncio.timeout(timeout):
            while not self.closed:
                await self._read_some()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def get(path: str = "/", host: str = HOST, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def fetch(port: int, request: bytes) -> Response:
    client = await RawClient.open(port)
    try:
        client.send(request)
        return await client.response()
    finally:
        await client.close()


# -- checks shared by the edge-only and the full-path suites ------------------------------
# (the backend answers as EchoBackend does: JSON describing the request, /status/N, /reject)


async def check_expect_continue(port: int) -> None:
    """``Expect: 100-continue``: the backend's 100 comes back before the body is sent, then
    the body arrives and is answered."""
    client = await RawClient.open(port)
    client.send(
        f"POST /x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    await client.read_until(lambda: client.interim)
    assert client.interim == [100]
    client.send(b"hello")
    r = await client.response()
    assert r.status == 200 and r.json()["body"] == "hello"
    await client.close()


async def check_early_final_answer(port: int) -> None:
    """A backend answering 413 before reading a 100-continue body: the client gets it with
    ``Connection: close``, and the connection closes."""
    client = await RawClient.open(port)
    client.send(
        f"POST /reject HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    r = await client.response()
    assert r.status == 413 and r.header("connection") == "close"
    await client.wait_closed()


async def check_bodiless_responses(port: int) -> None:
    """HEAD, 204 and 304 end at their head: one client connection carries them and a
    request after them (the caller checks the backend side)."""
    client = await RawClient.open(port)
    client.send(f"HEAD / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await client.reader.read(65536)
        assert chunk, "closed after a HEAD"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
    assert head.endswith(b"\r\n\r\n")  # no body bytes after the head
    client._parser = httptools.HttpResponseParser(client)
    for status in (204, 304):
        client.send(get(f"/status/{status}"))
        r = await client.response()
        assert r.status == status and r.body == b""
    client.send(get("/last"))
    assert (await client.response()).json()["target"] == "/last"
    await client.close()
