"""The edge's connection lifecycle over real sockets: pooling, shutdown, upload flow control.

- The upstream keep-alive pool: an idle pooled connection is closed after
  ``upstream_idle_timeout`` (the next request opens a new one), and at most
  ``upstream_max_idle`` idle connections are kept per backend.
- Graceful close with a drain timeout: idle client connections close at once, a response
  that cannot finish in time is cut off (the client never sees it complete) and ``close``
  returns soon after the deadline; one that finishes in time is complete and carries
  ``Connection: close``.
- HTTP/1.1 upload backpressure: a client uploading to a backend that does not read is
  stalled (the edge stops reading) with a bounded amount accepted, and the body arrives
  intact once the backend reads.
- Request trailers of a chunked request are dropped (see :mod:`roost.proxy.http1_reader`),
  and a trailer section over ``max_header_bytes`` is refused with 431.

:class:`HoldBackend` (here, not in the rig) is an h11 backend that can hold a request
before reading its body, and records trailers and the raw bytes it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

import h11
import pytest

from roost.proxy import Backend, RouteTable
from tests.integration.rig import (
    HOST,
    H11Server,
    RawClient,
    Stack,
    fetch,
    get,
    stack,
    wait_for,
    wait_stable,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@dataclass
class HoldBackend(H11Server):
    """An h11 backend answering every request with JSON about its body.

    While ``hold`` is set a request waits for ``release`` before its body is read (its
    socket's receive buffer is small, so the sender soon stalls). Records per request the
    body's length and sha256 and the trailer fields h11 parsed; with ``keep_raw`` every
    byte received goes to ``raw`` too. ``waiting``: requests held right now.
    """

    hold: bool = False
    keep_raw: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    raw: bytearray = field(default_factory=bytearray)
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def backend(self) -> Backend:
        return Backend("hold", "127.0.0.1", self.port)

    async def start(self) -> Self:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # accepted inherit
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._serve, sock=sock, limit=16 * 1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.release.set()
        await super().close()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            data = await reader.read(65536)
            if self.keep_raw:
                self.raw += data
            conn.receive_data(data)
        return event

    async def _answer(
        self,
        request: h11.Request,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        served: int,
    ) -> bool:
        if self.hold:
            self.waiting += 1
            await self.release.wait()
            self.waiting -= 1
        body = await self._read_body(conn, reader)
        if body is None:
            return False
        seen = {
            "target": request.target.decode(),
            "headers": [[n.decode(), v.decode("latin-1")] for n, v in request.headers],
            "body_len": body.size,
            "body_sha256": body.sha256,
            "trailers": body.trailers,
        }
        self.seen.append(seen)
        payload = json.dumps(seen).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        writer.write(conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True


@contextlib.asynccontextmanager
async def held_stack(**limits: Any) -> AsyncIterator[tuple[Stack, HoldBackend]]:
    """An edge (:func:`stack`) whose app "demo" is routed to one :class:`HoldBackend`."""
    backend = await HoldBackend().start()
    try:
        async with stack(**limits) as s:
            s.holder.table = RouteTable.build([("demo", [])], {"demo": [backend.backend]})
            yield s, backend
    finally:
        await backend.close()


def chunked_post(path: str, body: bytes, trailers: str) -> bytes:
    """A chunked POST of ``body`` (in 1000-byte chunks) ending with ``trailers``."""
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
        for i in range(0, len(body), 1000)
    )
    return head.encode() + chunks + b"0\r\n" + trailers.encode() + b"\r\n"


# -- the upstream pool ---------------------------------------------------------------------


async def test_idle_pooled_connection_expires_and_next_request_reconnects() -> None:
    """A pooled backend connection is reused while fresh, closed by the pool once idle for
    ``upstream_idle_timeout`` (the backend sees it close), and the next request opens a new
    connection and succeeds."""
    loop = asyncio.get_running_loop()
    async with stack(upstream_idle_timeout=0.5) as s:
        b, pool = s.backends[0], s.edge.context.pool
        assert (await fetch(s.port, get("/1"))).status == 200
        released = loop.time()
        assert pool.stats()["idle"] == 1
        r = await fetch(s.port, get("/2"))  # well inside the idle timeout: reused
        assert r.json()["target"] == "/2"
        assert (b.connections, pool.stats()["reused"]) == (1, 1)
        assert pool.stats()["idle"] == 1
        await wait_for(lambda: pool.stats()["idle"] == 0, timeout=3, what="idle expiry")
        assert loop.time() - released >= 0.45  # not before the timeout
        await wait_for(lambda: not b.tasks, timeout=2, what="backend to see the close")
        assert pool.stats() == {"idle": 0, "active": 0, "opened": 1, "closed": 1, "reused": 1}
        r = await fetch(s.port, get("/3"))
        assert r.status == 200 and r.json()["target"] == "/3"
        assert b.connections == 2
        assert (pool.stats()["opened"], pool.stats()["reused"]) == (2, 1)
        assert [q["target"] for q in b.requests] == ["/1", "/2", "/3"]


async def test_max_idle_keeps_one_of_two_finished_connections() -> None:
    """With ``upstream_max_idle=1``, two concurrent requests (two backend connections)
    finishing leave one idle connection pooled and the other closed; the kept one serves
    the next request."""
    async with held_stack(upstream_max_idle=1) as (s, hb):
        pool = s.edge.context.pool
        hb.hold = True
        clients = [await RawClient.open(s.port) for _ in range(2)]
        for i, client in enumerate(clients):
            client.send(get(f"/c{i}"))
        await wait_for(lambda: hb.waiting == 2, what="both requests held at the backend")
        assert hb.connections == 2 and pool.stats()["idle"] == 0
        hb.hold = False
        hb.release.set()
        responses = await asyncio.gather(*(c.response() for c in clients))
        assert sorted(r.json()["target"] for r in responses) == ["/c0", "/c1"]
        await wait_for(lambda: len(hb.tasks) == 1, timeout=3, what="surplus connection closed")
        assert pool.stats() == {"idle": 1, "active": 0, "opened": 2, "closed": 1, "reused": 0}
        assert (await fetch(s.port, get("/next"))).json()["target"] == "/next"
        assert hb.connections == 2 and pool.stats()["reused"] == 1


# -- graceful close ------------------------------------------------------------------------


async def test_close_aborts_response_unfinished_at_drain_timeout() -> None:
    """``close(timeout=0.3)`` with a response that never finishes: an idle keep-alive client
    is closed at once, the busy one is cut off at the deadline (its response incomplete),
    and close returns soon after the deadline; the listener is gone."""
    size = 2 * MiB
    loop = asyncio.get_running_loop()
    async with stack() as s:
        idle = await RawClient.open(s.port)
        idle.send(get("/warm"))
        assert (await idle.response()).status == 200
        busy = await RawClient.open(s.port)
        busy.send(get(f"/gated/{size}"))
        await busy.read_until(lambda: busy.partial_body() >= MiB)
        start = loop.time()
        closing = asyncio.ensure_future(s.edge.close(timeout=0.3))
        await idle.wait_closed(timeout=2)
        # the idle one did not wait for the drain: the busy one is still open
        assert not closing.done() and len(s.edge.connections.connections) == 1
        assert idle.responses[1:] == []
        await busy.wait_closed(timeout=3)
        await asyncio.wait_for(closing, timeout=3)
        elapsed = loop.time() - start
        assert 0.29 <= elapsed < 1.5, elapsed
        [cut] = busy.responses
        assert cut.status == 200 and not cut.complete and len(cut.body) < size
        assert not s.backends[0].finished_sending
        assert not s.edge.connections.connections
        assert s.edge.context.pool.stats()["idle"] == 0
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", s.port)


async def test_close_lets_response_within_drain_timeout_finish_with_connection_close() -> None:
    """A request still uploading when ``close`` starts, finished well within the drain
    timeout: its response is complete and says ``Connection: close``, the connection then
    closes, and close returns then -- not at its deadline."""
    loop = asyncio.get_running_loop()
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(
            f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nhello".encode()
        )
        await wait_for(lambda: s.backends[0].body_progress == 5, what="first half upstream")
        start = loop.time()
        closing = asyncio.ensure_future(s.edge.close(timeout=3.0))
        await wait_for(lambda: s.edge.connections.draining, what="drain to begin")
        client.send(b"world")
        r = await client.response(timeout=2)
        assert r.complete and r.status == 200 and r.json()["body"] == "helloworld"
        assert r.header("connection") == "close"
        await client.wait_closed(timeout=2)
        await asyncio.wait_for(closing, timeout=2)
        assert loop.time() - start < 1.5  # ended with the last connection, not the deadline
        assert [r.status for r in client.responses] == [200]


# -- upload backpressure ---------------------------------------------------------------------


async def test_upload_to_backend_not_reading_stalls_client_then_arrives_intact() -> None:
    """A 32 MiB Content-Length upload to a backend that does not read: the edge stops
    reading the client, so the client can write only a bounded part of the body before its
    writes stall; once the backend reads, the whole body arrives intact."""
    size = 32 * MiB
    payload = os.urandom(size)
    async with held_stack() as (s, hb):
        hb.hold = True
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.connect(("127.0.0.1", s.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        client = RawClient(reader, writer)
        RawClient.opened.append(client)
        client.send(f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n".encode())
        written = 0

        async def pump() -> None:
            nonlocal written
            for off in range(0, size, 256 * 1024):
                writer.write(payload[off : off + 256 * 1024])
                await writer.drain()
                written = min(off + 256 * 1024, size)

        pumping = asyncio.ensure_future(pump())
        try:
            await wait_for(lambda: hb.waiting == 1, what="request held at the backend")
            stalled = await wait_stable(lambda: written, quiet=0.3, timeout=5, what="stall")
            assert not pumping.done()
            assert hb.body_progress == 0
            assert stalled < size // 4, f"client wrote {stalled} bytes of {size} unread"
            [edge_conn] = s.edge.connections.connections
            assert edge_conn.transport is not None
            assert not edge_conn.transport.is_reading()  # the edge stopped reading
            # what the edge holds itself (beyond kernel buffers) is small: the exchange
            # received what it passed on, and the upstream write buffer is near its mark
            ex = edge_conn._active
            assert ex is not None and ex._conn is not None and ex._conn.transport is not None
            assert ex._conn.transport.get_write_buffer_size() < MiB
            assert ex.bytes_in <= stalled
            hb.release.set()
            await asyncio.wait_for(pumping, timeout=10)
        finally:
            pumping.cancel()
        r = await client.response(timeout=10)
        seen = r.json()
        assert seen["body_len"] == size
        assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


# -- request trailers ------------------------------------------------------------------------


async def test_request_trailers_dropped_body_intact() -> None:
    """Trailer fields of a chunked request never reach the backend (not parsed by it, not in
    the bytes it received); the body arrives intact and the connection goes on."""
    body = os.urandom(50_000)
    async with held_stack() as (s, hb):
        hb.keep_raw = True
        client = await RawClient.open(s.port)
        client.send(chunked_post("/t", body, "X-Checksum: abc123\r\nX-Other-Trailer: zzz\r\n"))
        r = await client.response()
        assert r.status == 200
        seen = r.json()
        assert seen["body_len"] == len(body)
        assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert seen["trailers"] == []
        raw = bytes(hb.raw).lower()
        assert b"transfer-encoding: chunked" in raw and raw.endswith(b"0\r\n\r\n")
        assert b"x-checksum" not in raw and b"abc123" not in raw and b"x-other-trailer" not in raw
        client.send(get("/after"))
        assert (await client.response()).json()["target"] == "/after"


async def test_trailer_section_at_limit_passes_over_limit_gets_431() -> None:
    """Trailer fields count against ``max_header_bytes`` (names + values): at the limit the
    request goes through (trailers dropped); one byte over, the client gets 431 with
    ``Connection: close``, the connection closes and the backend never gets the request
    complete."""
    limit = 4096
    fields = [f"X-T{i}: " + "v" * 1000 + "\r\n" for i in range(3)]  # 3 * (4 + 1000)
    used = 3 * (4 + 1000)
    at_limit = "".join(fields) + "X-Last: " + "w" * (limit - used - len("X-Last")) + "\r\n"
    over = "".join(fields) + "X-Last: " + "w" * (limit - used - len("X-Last") + 1) + "\r\n"
    body = b"payload" * 100
    async with held_stack(max_header_bytes=limit) as (s, hb):
        r = await fetch(s.port, chunked_post("/ok", body, at_limit))
        assert r.status == 200
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert r.json()["trailers"] == []
        client = await RawClient.open(s.port)
        client.send(chunked_post("/over", body, over))
        r = await client.response()
        assert r.status == 431, (r.status, r.body)
        await client.wait_closed()
        assert client.responses == [r]
        assert r.body == f"request header section larger than {limit} bytes\n".encode()
        assert r.header("connection") == "close"
        await wait_for(lambda: not hb.tasks, timeout=2, what="upstream connection dropped")
        assert [q["target"] for q in hb.seen] == ["/ok"]


async def test_endless_trailer_field_gets_400() -> None:
    """A trailer field that never ends is refused long before the client is done -- with
    400 from the chunked-framing bound, not 431: httptools reports a field only once it is
    complete, so the trailer limit never sees it; the bytes still count as framing."""
    limit = 4096
    async with held_stack(max_header_bytes=limit) as (s, hb):
        client = await RawClient.open(s.port)
        client.send(
            f"POST /t HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\nX-Endless: ".encode()
        )
        sent = await client.send_until_closed(b"v" * 8192, limit=4 * MiB, timeout=5)
        assert [r.status for r in client.responses] == [400]
        body = client.responses[0].body
        assert (
            body == b"bad request: chunked framing too long (chunk extensions or trailer section)\n"
        )
        assert sent < 256 * 1024  # cut off near the bound (4 KiB + 16 KiB), not at the end
        assert hb.seen == []
