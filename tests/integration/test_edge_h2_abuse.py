"""The HTTP/2 edge against hostile clients: each attack gets a GOAWAY or a stream reset,
and the edge keeps serving everyone else.

The hostile client is h2 itself (with its header validation off) plus raw frames built
with hyperframe.
"""

from __future__ import annotations

import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame

from roost.proxy.h2conn import H2Options
from roost.proxy.h2limits import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2Limits,
    Rate,
)
from tests.integration.test_edge_h2_rig import AUTHORITY, H2Client, h2_edge

pytestmark = pytest.mark.integration

FAST_TICK = {"header_timeout": 1.0}  # Limits.tick = header_timeout / 4: timers fire fast


async def still_serving(port: int) -> None:
    """A fresh, well-behaved client gets a 200."""
    client = await H2Client.open(port)
    assert (await client.done(client.request("/ok"))).status == 200


async def test_rapid_reset_gets_goaway() -> None:
    """Streams opened and reset at once, past the churn budget -> GOAWAY ENHANCE_YOUR_CALM."""
    opts = H2Options(limits=H2Limits(stream_churn=Rate(10.0, 50)))
    async with h2_edge(opts) as rig:
        client = await H2Client.open(rig.port)
        for _ in range(200):
            sid = client.request("/")
            client.conn.reset_stream(sid)
        client.flush()
        await client.wait_closed()
        assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM
        assert b"rapid reset" in (client.goaways[-1].additional_data or b"")
        await still_serving(rig.port)


async def test_continuation_flood_gets_goaway() -> None:
    """A header block in endless CONTINUATION frames -> GOAWAY before h2 buffers it."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        frames = [HeadersFrame(1, data=b"")] + [ContinuationFrame(1, data=b"") for _ in range(40)]
        client.send_raw(b"".join(f.serialize() for f in frames))
        await client.wait_closed()
        assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM
        await still_serving(rig.port)


async def test_unfinished_header_block_times_out() -> None:
    """A HEADERS frame whose block never ends -> GOAWAY after header_block_timeout."""
    opts = H2Options(limits=H2Limits(header_block_timeout=0.5))
    async with h2_edge(opts, **FAST_TICK) as rig:
        client = await H2Client.open(rig.port)
        await client.done(client.request("/"))  # SETTINGS exchanged: we send nothing more
        client.ack = False
        client.send_raw(HeadersFrame(3, data=b"\x82").serialize())
        await client.wait_closed(5)
        assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM


async def test_hpack_bomb_gets_goaway() -> None:
    """A small block decoding past max_header_list_size (dynamic-table references)."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        client.request("/", headers=[("x-bomb", "a" * 3000)] * 30)
        await client.wait_closed()
        assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM
        await still_serving(rig.port)


async def test_ping_flood_gets_goaway() -> None:
    """More PINGs at once than the budget -> GOAWAY ENHANCE_YOUR_CALM."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        client.send_raw(PingFrame(0, b"pingpong").serialize() * 500)
        await client.wait_closed()
        assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb"])
async def test_nul_cr_lf_in_a_value_resets_the_stream(value: str) -> None:
    """CR, LF or NUL in a field value: RST_STREAM PROTOCOL_ERROR; the connection lives."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port, validate=False)
        reply = await client.done(client.request("/", headers=[("x-bad", value)]))
        assert reply.reset == PROTOCOL_ERROR
        assert (await client.done(client.request("/after"))).status == 200
        assert rig.backend.requests[-1]["target"] == "/after" and len(rig.backend.requests) == 1


async def test_malformed_request_resets_the_stream() -> None:
    """A request without :path (h2's own validation) is a stream error, not a GOAWAY."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port, validate=False)
        block = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", AUTHORITY.encode())]
        assert (await client.done(client.send_block(block))).reset == PROTOCOL_ERROR
        assert (await client.done(client.request("/after"))).status == 200


async def test_excess_streams_are_refused() -> None:
    """Past MAX_CONCURRENT_STREAMS (sent before our SETTINGS arrived): REFUSED_STREAM."""
    async with h2_edge(H2Options(limits=H2Limits(max_concurrent_streams=5))) as rig:
        client = await H2Client.open(rig.port)
        sids = [client.request("/gated/10") for _ in range(8)]
        await client.until(lambda: sum(client.replies[s].reset is not None for s in sids) == 3)
        assert [client.replies[s].reset for s in sids[5:]] == [REFUSED_STREAM] * 3
        rig.backend.gate.set()
        for sid in sids[:5]:
            assert bytes((await client.done(sid)).body) == bytes(range(10))
        assert (await client.done(client.request("/more"))).status == 200


async def test_zero_window_stall_resets_the_stream() -> None:
    """A client keeping the stream window at zero: RST_STREAM CANCEL after the timeout."""
    opts = H2Options(limits=H2Limits(zero_window_timeout=0.5))
    async with h2_edge(opts, **FAST_TICK) as rig:
        client = await H2Client.open(rig.port, settings={4: 0})  # INITIAL_WINDOW_SIZE = 0
        reply = await client.done(client.request("/stream/1000"), timeout=5)
        assert reply.status == 200 and reply.reset == CANCEL and not reply.body
        await still_serving(rig.port)
