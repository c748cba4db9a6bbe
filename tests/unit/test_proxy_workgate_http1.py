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


Conn = tuple[ClientConnection, FakeTransport]


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


def connect(ctx: EdgeContext, registry: ConnectionRegistry, n: int) -> list[Conn]:
    """``n`` new client connections of the edge ``ctx``, each on a fake transport."""
    conns = []
    for _ in range(n):
        conn = ClientConnection(ctx, registry)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conns.append((conn, transport))
    return conns


async def _burst(loop: asyncio.AbstractEventLoop) -> None:
    ctx, up_transport = app_a_full(loop)
    registry = ConnectionRegistry(loop, 1.0)
    flood = connect(ctx, registry, 10)
    for conn, _ in flood:  # one loop turn's worth of input: ten new connections for a
        conn.data_received(request("a"))
    [(b_conn, _)] = connect(ctx, registry, 1)
    b_conn.data_received(request("b"))

    answered = [bool(t.data) for _, t in flood]
    # the first went (answered at once, its connection parked: the app's line begins);
    # the rest are held behind it, not read
    assert answered == [True] + [False] * 9
    assert all(t.paused for _, t in flood)
    assert bytes(up_transport.data).startswith(b"GET / HTTP/1.1\r\n")  # b went at once
    assert ctx.gate is not None and ctx.gate.waiting("a") == 10

    per_turn = []
    for _ in range(10):  # each loop turn releases the next three (batch): held ones start
        if all(t.data for _, t in flood):
            break
        before = sum(1 for _, t in flood if t.data)
        await asyncio.sleep(0)
        per_turn.append(sum(1 for _, t in flood if t.data) - before)
    assert all(t.data for _, t in flood)
    assert per_turn and max(per_turn) <= 3, per_turn
    for _, t in flood:
        assert [status for status, _ in Responses(bytes(t.data)).items] == [503]
    # answered, each is parked (its app is still full): it reads again in a later turn
    for _ in range(10):
        if not ctx.gate.waiting():
            break
        await asyncio.sleep(0)
    assert ctx.gate.waiting() == 0
    assert not any(t.paused for _, t in flood)


async def test_a_released_connection_whose_client_sends_later_is_gated_again() -> None:
    """Paced flood clients: their connections were parked and released (reading again,
    idle), and turns later all their clients send at the same tick. Only a batch starts
    in that turn; a pass from the release turn must not let them all through."""
    await _paced(asyncio.get_running_loop())


async def _released_idle(
    loop: asyncio.AbstractEventLoop,
) -> tuple[EdgeContext, list[Conn]]:
    """Ten connections of ``a`` (at capacity) that were each answered, parked and released."""
    ctx, _ = app_a_full(loop)
    conns = connect(ctx, ConnectionRegistry(loop, 1.0), 10)
    for conn, _ in conns:
        conn.data_received(request("a"))
    assert ctx.gate is not None
    for _ in range(20):
        if not ctx.gate.waiting() and all(t.data for _, t in conns):
            break
        await asyncio.sleep(0)
    assert ctx.gate.waiting() == 0 and not any(t.paused for _, t in conns)
    for _, t in conns:
        t.data.clear()
    return ctx, conns


async def _paced(loop: asyncio.AbstractEventLoop) -> None:
    ctx, conns = await _released_idle(loop)
    assert ctx.gate is not None
    released_in = ctx.gate.turns
    for _ in range(3):  # the clients are idle for a few turns (their next tick)
        await asyncio.sleep(0)
    assert ctx.gate.turns > released_in  # (the gate is armed: a turn ran)
    for conn, _ in conns:  # then all send in one turn
        conn.data_received(request("a"))
    answered = sum(1 for _, t in conns if t.data)
    assert 1 <= answered <= 3, answered  # at most one batch, as for new requests
    assert sum(1 for _, t in conns if t.paused) >= 7
    # the held ones are held before they are parsed: their bytes wait, no exchange exists
    unparsed = [c for c, t in conns if not t.data]
    assert all(c._unparsed == request("a") and not c._queue for c in unparsed)
    for _ in range(10):
        if all(t.data for _, t in conns):
            break
        await asyncio.sleep(0)
    for _, t in conns:  # held, not dropped
        assert [status for status, _ in Responses(bytes(t.data)).items] == [503]


async def test_a_request_waiting_when_its_connection_is_released_goes_at_once() -> None:
    """A parked connection whose client had already sent its next request: released in a
    turn, that request was the turn's work and is not held a second time."""
    await _waiting_at_release(asyncio.get_running_loop())


async def _waiting_at_release(loop: asyncio.AbstractEventLoop) -> None:
    ctx, _ = app_a_full(loop)
    assert ctx.gate is not None
    conns = connect(ctx, ConnectionRegistry(loop, 1.0), 6)
    for conn, _ in conns:  # answered one batch per turn, then parked
        conn.data_received(request("a"))
    for _ in range(10):
        if all(t.data for _, t in conns):
            break
        await asyncio.sleep(0)
    assert all(t.data for _, t in conns)
    # still parked: the release comes in turns of three; the kernel holds each one's next
    # request, read as soon as the release resumes reading (the same loop iteration)
    turns = ctx.gate.turns
    for _ in range(4):  # (the app stays full: answered, each is parked again)
        before = {id(c) for c, t in conns if t.paused}
        await asyncio.sleep(0)
        assert ctx.gate.turns == turns + 1  # one turn ran
        turns = ctx.gate.turns
        released = [(c, t) for c, t in conns if id(c) in before and not t.paused]
        assert 0 < len(released) <= 3
        for conn, t in released:
            t.data.clear()
            conn.data_received(request("a"))
            assert t.data, "a request read in its release turn was held again"


async def test_a_request_held_unparsed_is_answered_before_a_drain_closes_its_connection() -> None:
    await _drain_held(asyncio.get_running_loop())


async def _drain_held(loop: asyncio.AbstractEventLoop) -> None:
    _ctx, conns = await _released_idle(loop)
    for _ in range(3):
        await asyncio.sleep(0)
    for conn, _ in conns:
        conn.data_received(request("a"))
    held = [(c, t) for c, t in conns if c._unparsed is not None]
    assert held
    conns[0][0]._registry.draining = True  # the edge drains (as ProxyServer.close does):
    for conn, _ in conns:  # idle connections close now
        conn.shutdown()
    assert not any(t.closed for _, t in held)  # not idle: a request waits in them
    for _ in range(10):
        if all(t.closed for _, t in held):
            break
        await asyncio.sleep(0)
    for _, t in held:  # answered (told the connection closes), then closed
        assert t.closed
        assert [status for status, _ in Responses(bytes(t.data)).items] == [503]
        assert b"\r\nconnection: close\r\n" in bytes(t.data).lower()


async def test_a_shared_connection_s_request_for_another_app_is_not_held() -> None:
    """A connection a load balancer shares between apps: its last request was for ``a``
    (at capacity), its next one is for ``b`` (room). That one goes at once even when ``a``'s
    batch for the turn is spent -- it is not held in ``a``'s line -- while another ``a``
    request in the same turn is."""
    await _shared(asyncio.get_running_loop())


async def _shared(loop: asyncio.AbstractEventLoop) -> None:
    _ctx, conns = await _released_idle(loop)
    for _ in range(3):
        await asyncio.sleep(0)
    for conn, _ in conns[:3]:  # a's batch for this turn (congested_batch 3)
        conn.data_received(request("a"))
    (to_b, _), (to_a, _) = conns[3], conns[4]
    to_b.data_received(request("b"))
    to_a.data_received(request("a"))
    assert to_b._unparsed is None and to_b._active is not None  # routed and started
    assert to_b._active.app == "b"
    assert to_a._unparsed == request("a")  # the control: a's line
