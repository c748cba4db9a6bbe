"""The work gate in the HTTP/2 codec, without sockets: streams for an app at capacity start
``congested_batch`` per loop turn while another app's stream goes at once; every held stream
is answered in the end."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events

from roost.proxy.edge import ConnectionRegistry
from roost.proxy.http2 import H2ClientConnection
from tests.unit.test_proxy_http1 import FakeTransport
from tests.unit.test_proxy_workgate_http1 import app_a_full


def test_h2_streams_for_a_full_app_wait_their_turns_others_go_first() -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_streams(loop))
    finally:
        loop.close()


def _statuses(client: h2.connection.H2Connection, data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for event in client.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived):
            out[event.stream_id] = dict(event.headers or [])[b":status"]
    return out


async def _streams(loop: asyncio.AbstractEventLoop) -> None:
    ctx, up_transport = app_a_full(loop)
    conn = H2ClientConnection(ctx, ConnectionRegistry(loop, 1.0))
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    a_streams = []
    for _ in range(10):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, _request("a"), end_stream=True)
        a_streams.append(sid)
    b_stream = client.get_next_available_stream_id()
    client.send_headers(b_stream, _request("b"), end_stream=True)
    conn.data_received(client.data_to_send())  # one read: eleven requests

    assert bytes(up_transport.data).startswith(b"GET / HTTP/1.1\r\n")  # b went at once
    assert ctx.gate is not None and ctx.gate.waiting("a") == 7
    await asyncio.sleep(0)  # the frames of this turn are written at its end
    answered = _statuses(client, bytes(transport.data))
    transport.data.clear()
    assert sorted(answered) == a_streams[:3]  # the batch went, the rest are held
    assert set(answered.values()) == {b"503"}

    for _ in range(6):  # each loop turn starts the next three
        await asyncio.sleep(0)
    answered.update(_statuses(client, bytes(transport.data)))
    assert sorted(answered) == a_streams
    assert set(answered.values()) == {b"503"}
    assert ctx.gate.waiting() == 0


def _request(app: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", f"{app}.localhost".encode()),
        (b":path", b"/"),
    ]
