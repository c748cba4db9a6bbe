"""The work gate in the HTTP/1 codec, without sockets: a burst for an app at capacity is
started ``congested_batch`` per loop turn while another app's request goes at once, and
every held request is answered in the end (nothing dropped, nothing reordered)."""

from __future__ import annotations

import asyncio
import random

from roost.proxy.edge import ConnectionRegistry
from roost.proxy.edge_context import EdgeContext, Limits
from roost.proxy.forwarding import RequestIds
from roost.proxy.http1 import ClientConnection
from roost.proxy.routes import Backend, RouteHolder, RouteTable
from roost.proxy.upstream import UpstreamConnection
from roost.proxy.upstream_pool import UpstreamPool
from tests.unit.test_proxy_http1 import FakeTransport, Responses


class Waiter:
    forced = None


def request(app: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {app}.localhost\r\n\r\n".encode()


def test_a_burst_for_a_full_app_waits_its_turns_and_others_go_first() -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_burst(loop))
    finally:
        loop.close()


def app_a_full(loop: asyncio.AbstractEventLoop) -> tuple[EdgeContext, FakeTransport]:
    """An edge context routing apps ``a`` (at capacity: its one queue slot is taken) and
    ``b`` (one pooled upstream connection on the returned fake transport); batch 3."""
    b = Backend(instance_id="b1", host="127.0.0.1", port=9)
    a = Backend(instance_id="a1", host="127.0.0.1", port=8, hard_limit=1)
    table = RouteTable.build([("a", []), ("b", [])], {"a": [a], "b": [b]})
    pool = UpstreamPool(loop)
    limits = Limits(queue_max=1, congested_batch=3)
    ctx = EdgeContext(
        loop, RouteHolder(table), pool, limits, "tst", RequestIds(b"t"), random.Random(0)
    )
    assert ctx.queues.push("a", Waiter())
    upstream = UpstreamConnection(pool, ("127.0.0.1", 9), "b1")
    up_transport = FakeTransport()
    upstream.connection_made(up_transport)  # type: ignore[arg-type]
    pool.release(upstream)
    return ctx, up_transport


async def _burst(loop: asyncio.AbstractEventLoop) -> None:
    ctx, up_transport = app_a_full(loop)
    registry = ConnectionRegistry(loop, 1.0)

    def connect() -> tuple[ClientConnection, FakeTransport]:
        conn = ClientConnection(ctx, registry)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    flood = [connect() for _ in range(10)]
    for conn, _ in flood:  # one loop turn's worth of input: ten new connections for a
        conn.data_received(request("a"))
    b_conn, _ = connect()
    b_conn.data_received(request("b"))

    answered = [bool(t.data) for _, t in flood]
    assert answered == [True] * 3 + [False] * 7  # the batch went; the rest are held
    assert all(t.paused for _, t in flood[3:])  # not read while held
    assert bytes(up_transport.data).startswith(b"GET / HTTP/1.1\r\n")  # b went at once
    assert ctx.gate is not None and ctx.gate.waiting("a") == 7

    for _ in range(3):  # each loop turn releases the next three
        await asyncio.sleep(0)
    assert all(t.data for _, t in flood)
    for _, t in flood:
        assert [status for status, _ in Responses(bytes(t.data)).items] == [503]
    # answered, each is parked (its app is still full): it reads again in a later turn
    for _ in range(10):
        if not ctx.gate.waiting():
            break
        await asyncio.sleep(0)
    assert ctx.gate.waiting() == 0
    assert not any(t.paused for _, t in flood)
