"""The HTTP/2 backhaul client and pool against a real HTTP/2 server (the h2 edge codec,
which a host proxy's backhaul listener can reuse): multiplexing, stream limits, refusals,
graceful GOAWAY, backpressure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from roost.proxy import errors
from roost.proxy.h2backhaul import H2BackhaulPool, request_fields
from roost.proxy.h2conn import H2Options
from roost.proxy.h2limits import H2Limits
from roost.proxy.headers import Headers, ResponseInfo, prepare_response
from roost.proxy.routes import Backend
from tests.integration.test_edge_h2_rig import AUTHORITY, h2_edge, wait_stable

pytestmark = pytest.mark.integration


@dataclass(eq=False)
class Sink:
    """An UpstreamSink that records what the backhaul stream reports."""

    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    trailers: Headers | None = None
    error: errors.ProxyError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    write_paused: bool = False
    flushed_after_end: bool = False

    def upstream_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        pass

    def upstream_head(self, status: int, reason: bytes, headers: Headers) -> ResponseInfo:
        self.status = status
        return prepare_response(headers, None)[1]

    def upstream_body(self, data: bytes) -> None:
        self.body += data

    def upstream_end(self, trailers: Headers) -> None:
        self.trailers = trailers
        self.done.set()

    def upstream_failed(self, err: errors.ProxyError) -> None:
        self.error = err
        self.done.set()

    def upstream_flush(self) -> None:
        self.flushed_after_end = self.done.is_set()

    def upstream_write_paused(self) -> None:
        self.write_paused = True

    def upstream_write_resumed(self) -> None:
        self.write_paused = False


def head(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {AUTHORITY}\r\n{extra}\r\n".encode()


async def fetch(pool: H2BackhaulPool, backend: Backend, path: str) -> Sink:
    stream = pool.take(backend) or await pool.connect(backend)
    sink = Sink()
    stream.send_request(sink, head(path), chunked=False, has_body=False, head_req=False)
    stream.flush()
    return sink


def test_request_fields() -> None:
    """The exchange's HTTP/1.1 head becomes pseudo-headers + lower-case fields."""
    raw = b"POST /a?b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    assert request_fields(raw) == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"x"),
        (b":path", b"/a?b"),
        (b"x-a", b"1"),
    ]


async def test_streams_share_one_connection() -> None:
    """Twenty concurrent requests ride one connection and all complete."""
    async with h2_edge() as rig:
        pool = H2BackhaulPool(asyncio.get_running_loop())
        backend = Backend("b0", "127.0.0.1", rig.port)
        first = await fetch(pool, backend, "/first")
        sinks = [await fetch(pool, backend, f"/n/{i}") for i in range(20)]
        for sink in [first, *sinks]:
            await asyncio.wait_for(sink.done.wait(), 10)
            assert sink.status == 200 and sink.error is None
        assert pool.stats()["connections"] == 1 and pool.stats()["opened"] == 1
        pool.close()


async def test_stream_limit_opens_more_connections() -> None:
    """max_streams=4 and 10 requests in flight: at least 3 connections."""
    async with h2_edge() as rig:
        pool = H2BackhaulPool(asyncio.get_running_loop(), max_streams=4)
        backend = Backend("b0", "127.0.0.1", rig.port)
        sinks = [await fetch(pool, backend, "/gated/100") for _ in range(10)]
        assert pool.stats()["connections"] >= 3
        assert pool.stats()["streams"] == 10
        rig.backend.gate.set()
        for sink in sinks:
            await asyncio.wait_for(sink.done.wait(), 10)
            assert len(sink.body) == 100
        pool.close()


async def test_refused_stream_is_retry_safe() -> None:
    """Streams past the peer's limit get REFUSED_STREAM -> a retry-safe error."""
    async with h2_edge(H2Options(limits=H2Limits(max_concurrent_streams=2))) as rig:
        pool = H2BackhaulPool(asyncio.get_running_loop(), max_streams=10)
        backend = Backend("b0", "127.0.0.1", rig.port)
        stream = await pool.connect(backend)
        sinks = [Sink() for _ in range(5)]
        stream.send_request(
            sinks[0], head("/gated/1"), chunked=False, has_body=False, head_req=False
        )
        for sink in sinks[1:]:  # sent before the peer's SETTINGS could arrive
            s = type(stream)(stream.conn, "b0")
            s.send_request(sink, head("/gated/1"), chunked=False, has_body=False, head_req=False)
        stream.flush()
        for sink in sinks[2:]:
            await asyncio.wait_for(sink.done.wait(), 10)
            assert sink.error is not None and sink.error.retry_safe
        rig.backend.gate.set()
        for sink in sinks[:2]:
            await asyncio.wait_for(sink.done.wait(), 10)
            assert sink.status == 200
        pool.close()


async def test_graceful_goaway_finishes_streams_and_drains() -> None:
    """The peer's graceful close: the stream in flight completes; no new streams go there."""
    async with h2_edge() as rig:
        pool = H2BackhaulPool(asyncio.get_running_loop())
        backend = Backend("b0", "127.0.0.1", rig.port)
        sink = await fetch(pool, backend, "/gated/3000")
        await wait_stable(lambda: sink.status)
        closing = asyncio.create_task(rig.edge.close(timeout=10))
        await wait_stable(lambda: int(pool.take(backend) is None))
        rig.backend.gate.set()
        await asyncio.wait_for(sink.done.wait(), 10)
        assert sink.error is None and len(sink.body) == 3000
        await closing
        pool.close()


async def test_paused_stream_holds_the_response() -> None:
    """pause_reading holds the stream's credit: the peer stops at the window."""
    async with h2_edge() as rig:
        pool = H2BackhaulPool(asyncio.get_running_loop())
        backend = Backend("b0", "127.0.0.1", rig.port)
        stream = await pool.connect(backend)
        sink = Sink()
        stream.send_request(
            sink, head("/stream/67108864"), chunked=False, has_body=False, head_req=False
        )
        stream.pause_reading()
        stream.flush()
        got = await wait_stable(lambda: len(sink.body))
        assert got < 1 << 20 and not sink.done.is_set()  # one window (grown at most once)
        stream.resume_reading()
        await asyncio.wait_for(sink.done.wait(), 30)
        assert len(sink.body) == 64 << 20
        pool.close()


async def test_sink_is_flushed_after_a_response_that_ends_in_one_read() -> None:
    """A whole response in one read still ends with upstream_flush (else the client's
    side would wait for the next tick)."""
    async with h2_edge() as rig:
        pool = H2BackhaulPool(asyncio.get_running_loop())
        sink = await fetch(pool, Backend("b0", "127.0.0.1", rig.port), "/small")
        await asyncio.wait_for(sink.done.wait(), 10)
        assert sink.status == 200 and sink.flushed_after_end
        pool.close()
