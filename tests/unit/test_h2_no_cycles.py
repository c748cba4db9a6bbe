"""An HTTP/2 request leaves no reference cycle behind at the edge: when its stream is done
(answered, or reset by the client) the stream and its exchange are freed by reference
counting, not left for the cyclic garbage collector (they were: ~17 objects a request,
and collecting them cost the h2c path a third of its throughput under load)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import h2.config
import h2.connection
import h2.events as ev

from roost.proxy.edge import start_edge
from roost.proxy.http2 import H2ClientConnection
from roost.proxy.routes import Backend, RouteHolder, RouteTable
from roost.proxy.upstream import UpstreamConnection, pool_key
from tests.unit.test_proxy_http1 import FakeTransport

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"app.localhost"),
    (b":path", b"/"),
]


async def _edge_and_client() -> tuple[Any, H2ClientConnection, FakeTransport, Any]:
    backend = Backend(instance_id="i1", host="127.0.0.1", port=9)
    edge = await start_edge(
        "127.0.0.1",
        0,
        RouteHolder(RouteTable.build([("app", [])], {"app": [backend]})),
        region="tst",
    )
    pool, ups = edge.context.pool, []
    for _ in range(4):
        up = UpstreamConnection(pool, pool_key(backend), backend.instance_id)
        side = FakeTransport()
        up.connection_made(side)  # type: ignore[arg-type]
        ups.append((up, side))
        pool.opened += 1
        pool.release(up)
    conn = H2ClientConnection(edge.context, edge.connections)
    down = FakeTransport()
    conn.connection_made(down)  # type: ignore[arg-type]
    return edge, conn, down, ups


def _answer(ups: list[Any]) -> None:
    for up, side in ups:
        if side.data:
            side.data.clear()
            up.data_received(RESPONSE)


async def test_answered_and_reset_streams_leave_no_cycles() -> None:
    edge, conn, down, ups = await _edge_and_client()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    ended = 0

    def client_reads() -> None:
        nonlocal ended
        data = bytes(down.data)
        down.data.clear()
        for event in client.receive_data(data):
            ended += isinstance(event, ev.StreamEnded)

    async def round_trip(reset: bool) -> None:
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST, end_stream=True)
        conn.data_received(client.data_to_send())
        if reset:  # the client gives up before the response: the exchange is cancelled
            client.reset_stream(sid)
            conn.data_received(client.data_to_send())
        _answer(ups)
        await asyncio.sleep(0)  # the connection writes at the end of the loop's turn
        client_reads()

    try:
        for _ in range(5):  # warm up: settings, caches, pools
            await round_trip(reset=False)
            await round_trip(reset=True)
        gc.collect()
        gc.disable()
        try:
            before = ended
            for _ in range(40):
                await round_trip(reset=False)
                await round_trip(reset=True)
            assert ended - before == 40  # the answered ones were answered
            garbage = gc.collect()
        finally:
            gc.enable()
        assert garbage < 40, f"{garbage} objects in reference cycles after 80 requests"
    finally:
        await edge.close(timeout=1.0)
