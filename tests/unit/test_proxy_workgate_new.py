"""New connections' first bytes go through the work gate (key ``NEW``): a burst of new
connections is parsed ``new_connections_batch`` per loop turn, while requests on connections
already open are handled at once; the rest wait with reading paused and are all handled, in
arrival order, in later turns."""

from __future__ import annotations

import asyncio
import random

from roost.proxy.edge import ConnectionRegistry
from roost.proxy.edge_context import EdgeContext, Limits
from roost.proxy.forwarding import RequestIds
from roost.proxy.http1 import ClientConnection
from roost.proxy.preface import PrefaceSniffer
from roost.proxy.routes import RouteHolder, RouteTable
from roost.proxy.upstream_pool import UpstreamPool
from roost.proxy.workgate import NEW
from tests.unit.test_proxy_http1 import FakeTransport, Responses


class SniffedTransport(FakeTransport):
    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n".encode()


def run(coro_fn: object) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro_fn(loop))  # type: ignore[operator]
    finally:
        loop.close()


def edge(loop: asyncio.AbstractEventLoop) -> tuple[EdgeContext, ConnectionRegistry]:
    """No routes: every request is answered 404 by the edge itself, in the call that
    parsed it -- so "answered" shows "handled"."""
    limits = Limits(new_connections_batch=4)
    ctx = EdgeContext(
        loop,
        RouteHolder(RouteTable.build([], {})),
        UpstreamPool(loop),
        limits,
        "tst",
        RequestIds(b"t"),
        random.Random(0),
    )
    return ctx, ConnectionRegistry(loop, 1.0)


def test_a_burst_of_new_connections_is_parsed_in_turns_open_ones_go_first() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        ctx, registry = edge(loop)
        assert ctx.gate is not None

        def connect() -> tuple[PrefaceSniffer, SniffedTransport]:
            sniffer = PrefaceSniffer(ClientConnection(ctx, registry), lambda: None, ctx.gate)  # type: ignore[arg-type,return-value]
            transport = SniffedTransport()
            sniffer.connection_made(transport)  # type: ignore[arg-type]
            return sniffer, transport

        old, old_t = connect()
        old.data_received(request("/first"))  # an open connection (a turn ago)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [s for s, _ in Responses(bytes(old_t.data)).items] == [404]

        burst = [connect() for _ in range(10)]
        for i, (sniffer, _) in enumerate(burst):  # one loop turn's worth of first bytes
            sniffer.data_received(request(f"/n{i}"))
        old_t.protocol.data_received(request("/again"))  # the open connection's next one

        assert [bool(t.data) for _, t in burst] == [True] * 4 + [False] * 6
        assert all(t.paused for _, t in burst[4:])  # their sockets are not read meanwhile
        assert [s for s, _ in Responses(bytes(old_t.data)).items] == [404, 404]  # at once
        assert ctx.gate.waiting(NEW) == 6 and ctx.gate.held == 6

        await asyncio.sleep(0)  # next turn: the next four, in arrival order
        assert [bool(t.data) for _, t in burst] == [True] * 8 + [False] * 2
        await asyncio.sleep(0)
        assert all(t.data and not t.paused for _, t in burst)
        for i, (_, t) in enumerate(burst):
            assert [s for s, _ in Responses(bytes(t.data)).items] == [404], i
        assert ctx.gate.waiting() == 0

    run(body)


def test_a_connection_closed_while_held_is_left_alone() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        ctx, registry = edge(loop)
        conns = []
        for i in range(5):
            sniffer = PrefaceSniffer(ClientConnection(ctx, registry), lambda: None, ctx.gate)  # type: ignore[arg-type,return-value]
            transport = SniffedTransport()
            sniffer.connection_made(transport)  # type: ignore[arg-type]
            sniffer.data_received(request(f"/{i}"))
            conns.append((sniffer, transport))
        held, held_t = conns[4]
        assert not held_t.data
        held.connection_lost(None)  # the client went away before its turn
        await asyncio.sleep(0)
        assert not held_t.data and len(registry.connections) == 4

    run(body)
