"""A new connection's first request waits in its own app's line (``preface.peek_host``,
``EdgeContext.first_bytes_key``): new connections for a flooded app (at capacity) go
``congested_batch`` per loop turn with that app's other requests, new connections for apps
with room are handled at once, and only bytes that show no app share the ``NEW`` line."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest

from roost.proxy.edge import ConnectionRegistry
from roost.proxy.edge_context import EdgeContext, Limits
from roost.proxy.forwarding import RequestIds
from roost.proxy.http1 import ClientConnection
from roost.proxy.preface import H2_PREFACE, PEEK_MAX, PrefaceSniffer, peek_host
from roost.proxy.routes import RouteHolder, RouteTable
from roost.proxy.upstream_pool import UpstreamPool
from roost.proxy.workgate import NEW
from tests.unit.test_proxy_http1 import Responses
from tests.unit.test_proxy_workgate_new import SniffedTransport, run


@pytest.mark.parametrize(
    ("data", "host"),
    [
        (b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n", b"a.localhost"),
        (b"GET / HTTP/1.1\r\nhOsT:\ta.localhost:8080 \r\nAccept: */*\r\n\r\n", b"a.localhost:8080"),
        (
            b"GET / HTTP/1.1\r\nAccept: */*\r\nHOST: B.Example\r\n\r\nbody\r\nHost: c\r\n",
            b"B.Example",
        ),
        (b"GET / HTTP/1.1\r\nX-Host: a\r\nHost: b\r\n\r\n", b"b"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", None),  # two: not ours to pick
        (b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a.localhost\r\n", None),  # the head is not complete
        (H2_PREFACE, None),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (PEEK_MAX // 6) + b"Host: a\r\n\r\n", None),
        (b"", None),
    ],
)
def test_peek_host(data: bytes, host: bytes | None) -> None:
    assert peek_host(data) == host


def request(app: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {app}.localhost\r\n\r\n".encode()


def edge(loop: asyncio.AbstractEventLoop) -> tuple[EdgeContext, ConnectionRegistry]:
    """Apps ``flooded`` and ``calm`` with no instances: each request is answered (503) in
    the call that starts it -- so "answered" shows "handled". ``flooded`` is made to look
    at capacity (a request waits for it)."""
    ctx = EdgeContext(
        loop,
        RouteHolder(RouteTable.build([("flooded", []), ("calm", [])], {})),
        UpstreamPool(loop),
        Limits(new_connections_batch=4, congested_batch=3),
        "tst",
        RequestIds(b"t"),
        random.Random(0),
    )
    assert ctx.queues.push("flooded", SimpleNamespace(forced=None))  # type: ignore[arg-type]
    return ctx, ConnectionRegistry(loop, 1.0)


def test_first_bytes_key() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        ctx, _ = edge(loop)
        assert ctx.first_bytes_key(request("flooded", "/")) == "flooded"
        assert ctx.first_bytes_key(b"GET / HTTP/1.1\r\nHost: FLOODED.localhost:80\r\n\r\n") == (
            "flooded"
        )
        assert ctx.first_bytes_key(request("calm", "/")) is None
        assert ctx.first_bytes_key(request("nowhere", "/")) == NEW
        assert ctx.first_bytes_key(H2_PREFACE) == NEW
        assert ctx.first_bytes_key(b"GET / HTTP/1.1\r\nHost: calm.localhost\r\n") == NEW

    run(body)


def test_new_connections_wait_in_their_apps_line() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        ctx, registry = edge(loop)
        gate = ctx.gate
        assert gate is not None

        def connect(first: bytes) -> tuple[PrefaceSniffer, SniffedTransport]:
            sniffer = PrefaceSniffer(
                ClientConnection(ctx, registry),
                lambda: None,  # type: ignore[arg-type,return-value]
                gate,
                ctx.first_bytes_key,
            )
            transport = SniffedTransport()
            sniffer.connection_made(transport)  # type: ignore[arg-type]
            sniffer.data_received(first)
            return sniffer, transport

        flood = [connect(request("flooded", f"/f{i}")) for i in range(8)]  # one turn's reads
        calm = [connect(request("calm", f"/c{i}")) for i in range(2)]
        lost = [connect(request("nowhere", f"/n{i}")) for i in range(2)]

        def answered(conns: list[tuple[PrefaceSniffer, SniffedTransport]]) -> list[int]:
            return [s for _, t in conns for s, _ in Responses(bytes(t.data)).items]

        # at most the flooded app's batch went at once (the first one answered parks its
        # connection: the app's line begins), the rest waits in that line, reading paused
        first = len(answered(flood))
        assert 1 <= first <= 3
        assert sum(1 for _, t in flood if t.paused) >= 8 - first
        assert gate.waiting("flooded") >= 8 - first and gate.waiting(NEW) == 0
        # new connections for an app with room, and those showing no app, did not wait
        assert answered(calm) == [503, 503] and answered(lost) == [404, 404]

        per_turn = []
        for _ in range(10):  # then a batch per turn, until every one is answered
            if len(answered(flood)) == 8:
                break
            before = len(answered(flood))
            await asyncio.sleep(0)
            per_turn.append(len(answered(flood)) - before)
        assert answered(flood) == [503] * 8, answered(flood)
        assert per_turn and max(per_turn) <= 3, per_turn
        for i, (_, t) in enumerate(flood):  # each answered its own request, once
            assert [s for s, _ in Responses(bytes(t.data)).items] == [503], i

    run(body)


def test_a_new_connection_admitted_by_its_app_is_not_gated_twice() -> None:
    """Its request is let through once under the app's key, taking the turn's last place
    in the batch; parsed, it is not gated a second time (else it would wait, the batch
    spent). Answered, the connection is parked like any other of the app's."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        ctx, registry = edge(loop)
        gate = ctx.gate
        assert gate is not None
        others = [SimpleNamespace(gate_hold=lambda: None) for _ in range(2)]
        assert all(gate.admit("flooded", o) for o in others)  # type: ignore[arg-type]
        conn = ClientConnection(ctx, registry)
        sniffer = PrefaceSniffer(conn, lambda: None, gate, ctx.first_bytes_key)  # type: ignore[arg-type,return-value]
        transport = SniffedTransport()
        sniffer.connection_made(transport)  # type: ignore[arg-type]
        sniffer.data_received(request("flooded", "/"))  # the batch's third (last) place
        assert [s for s, _ in Responses(bytes(transport.data)).items] == [503]
        assert transport.paused and gate.waiting("flooded") == 1  # parked

    run(body)
