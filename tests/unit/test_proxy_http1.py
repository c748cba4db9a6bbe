"""The HTTP/1 client codec driven without sockets: arbitrary splits, arbitrary junk.

Requests here go to hosts the edge answers itself (404 unknown host, 503 no instances),
so no upstream is involved and the codec's parsing, pipelining, error and closing rules
can be checked byte by byte with hypothesis.
"""

from __future__ import annotations

import asyncio
import gc
import random
import weakref
from collections.abc import Iterator
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy.edge import ConnectionRegistry
from roost.proxy.edge_context import EdgeContext, Limits
from roost.proxy.forwarding import RequestIds
from roost.proxy.http1 import ClientConnection
from roost.proxy.preface import PrefaceSniffer
from roost.proxy.routes import RouteHolder, RouteTable
from roost.proxy.upstream_pool import UpstreamPool


class FakeTransport:
    """Records what the codec writes and whether it closed."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.eof_written = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.9", 5555), "sockname": ("0.0.0.0", 80)}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connect(loop: asyncio.AbstractEventLoop) -> tuple[ClientConnection, FakeTransport]:
    table = RouteTable.build([("idle", [])], {})
    ctx = EdgeContext(
        loop,
        RouteHolder(table),
        UpstreamPool(loop),
        Limits(),
        "tst",
        RequestIds(b"t"),
        random.Random(0),
    )
    conn = ClientConnection(ctx, ConnectionRegistry(loop, 1.0))
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


class Responses:
    """Parse what the edge wrote back into (status, body) pairs."""

    def __init__(self, data: bytes) -> None:
        self.items: list[tuple[int, bytes]] = []
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(bytes(data))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.items.append((self._parser.get_status_code(), self._body))
        self._body = b""


GOOD = [
    b"GET /a HTTP/1.1\r\nHost: idle.localhost\r\n\r\n",
    b"GET /b HTTP/1.1\r\nHost: nope.localhost\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: idle.localhost\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /d HTTP/1.1\r\nHost: x.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nhi\r\n0\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: nope.localhost\r\n\r\n",
]
STATUS = {0: 503, 1: 404, 2: 503, 3: 404, 4: 404}


def feed(loop: asyncio.AbstractEventLoop, data: bytes, cuts: list[int]) -> FakeTransport:
    conn, transport = connect(loop)
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for end in [*points, len(data)]:
        if start < end and not transport.closed:
            conn.data_received(data[start:end])
        start = end
    return transport


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(GOOD) - 1), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_pipelined_requests_split_anywhere(picks: list[int], cuts: list[int]) -> None:
    """Property: however the bytes are split, every request gets its answer, in order,
    and the connection stays open (HEAD answers carry no body)."""
    loop = asyncio.new_event_loop()
    try:
        data = b"".join(GOOD[i] for i in picks)
        transport = feed(loop, data, cuts)
        # a HEAD answer has no body, which a plain response parser cannot know: cut there
        expected = [STATUS[i] for i in picks]
        statuses = []
        rest = bytes(transport.data)
        for i in picks:
            if GOOD[i].startswith(b"HEAD"):
                head, _, rest = rest.partition(b"\r\n\r\n")
                statuses.append(int(head.split(b" ")[1]))
            else:
                size = _response_length(rest)
                statuses.append(Responses(rest[:size]).items[0][0])
                rest = rest[size:]
        assert statuses == expected
        assert rest == b""
        assert not transport.closed
    finally:
        loop.close()


def _response_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return len(head) + 4 + length


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_arbitrary_bytes_never_crash(junk: bytes, cuts: list[int]) -> None:
    """Property: any input yields only well-formed responses; a rejected connection is
    closed (or half-closed, lingering) and written to no more."""
    loop = asyncio.new_event_loop()
    try:
        transport = feed(loop, GOOD[0] + junk, cuts)
        answers = Responses(transport.data).items
        assert answers and answers[0][0] == 503
        assert all(status in (400, 404, 405, 414, 431, 503, 505) for status, _ in answers)
        if any(status >= 400 and status not in (404, 503) for status, _ in answers):
            assert transport.closed or transport.eof_written
    finally:
        loop.close()


def test_error_response_then_linger(loop: asyncio.AbstractEventLoop) -> None:
    """After a 400 the edge half-closes and keeps reading (discarding) for a moment."""
    conn, transport = connect(loop)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    assert Responses(transport.data).items[0][0] == 400
    assert transport.eof_written and not transport.closed and not transport.paused
    conn.data_received(b"more junk that is ignored")
    assert Responses(transport.data).items[0][0] == 400


def test_request_ids_on_edge_answers(loop: asyncio.AbstractEventLoop) -> None:
    """Answers the edge makes itself carry Roost-Request-Id, one per request."""
    conn, transport = connect(loop)
    conn.data_received(GOOD[0] + GOOD[1])
    assert transport.data.count(b"Roost-Request-Id: t") == 2


def test_closed_connection_is_freed_without_the_cycle_collector(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A closed connection leaves no reference cycle (parser <-> connection, transport <->
    protocol): under connection churn cyclic garbage means full collections that stall the
    event loop for 100+ ms."""

    class HoldingTransport(FakeTransport):
        """Holds its protocol, as real transports do."""

        protocol: asyncio.BaseProtocol | None = None

        def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
            self.protocol = protocol

    conn, _ = connect(loop)
    transport = HoldingTransport()
    sniffer = PrefaceSniffer(conn, asyncio.Protocol)
    transport.set_protocol(sniffer)
    sniffer.connection_made(transport)  # type: ignore[arg-type]
    sniffer.data_received(b"GET / HTTP/1.1\r\nHost: idle.localhost\r\n\r\n")
    assert Responses(transport.data).items[0][0] == 503
    sniffer.connection_lost(None)
    gone = weakref.ref(conn)
    transport_gone = weakref.ref(transport)
    gc.disable()
    try:
        del conn, transport, sniffer
        assert gone() is None
        assert transport_gone() is None
    finally:
        gc.enable()
