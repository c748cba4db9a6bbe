"""The HTTP/2 edge against frame floods (CVE-2019-9515/9518 and kin): SETTINGS, empty
DATA, empty HEADERS/CONTINUATION and WINDOW_UPDATE floods end in GOAWAY ENHANCE_YOUR_CALM
and a closed connection, while the same frames in a count just below the edge's default
budget (``H2Limits()`` in ``roost.proxy.h2limits``) are not punished.

The hostile client is the rig's :class:`H2Client` sending raw hyperframe frames to a real
edge's own listener (``start_edge``: HTTP/1 and h2c on one port), with the default limits.
"""

from __future__ import annotations

import pytest
from h2.events import SettingsAcknowledged
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from roost.proxy.h2limits import ENHANCE_YOUR_CALM, H2Limits
from tests.integration.test_edge_h2_abuse import still_serving
from tests.integration.test_edge_h2_rig import H2Client, Reply, h2_edge

pytestmark = pytest.mark.integration

LIMITS = H2Limits()  # what the edge runs with unless told otherwise
# A flood is several bursts in one write: token refill (per_second x the few ms the frames
# take to arrive) cannot cover it. A "moderate" count spends the burst and no more.
FLOOD_FACTOR = 4
# empty CONTINUATIONs per header block: under max_continuations, so the block itself is fine
EMPTY_CONTINUATIONS = LIMITS.max_continuations - 1


def frames(frame: Frame, count: int) -> bytes:
    """``count`` copies of ``frame``, serialized back to back (one write)."""
    return frame.serialize() * count


async def assert_calm_goaway(client: H2Client, reason: bytes) -> None:
    """The edge sent GOAWAY ENHANCE_YOUR_CALM naming ``reason`` and closed the socket."""
    await client.wait_closed(5)
    assert client.goaways, "closed without a GOAWAY"
    assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM
    assert reason in (client.goaways[-1].additional_data or b"")


async def assert_still_open(client: H2Client) -> None:
    """The connection takes a new request after what was sent, with no GOAWAY."""
    reply = await client.done(client.request("/after"), timeout=5)
    assert reply.status == 200
    assert not client.goaways and not client.closed


def split_request(client: H2Client, path: str) -> tuple[int, bytes]:
    """A POST on a new stream whose header block is an empty HEADERS frame (no END_STREAM,
    no END_HEADERS), then EMPTY_CONTINUATIONS empty CONTINUATIONs, then one CONTINUATION
    carrying the whole block with END_HEADERS: the stream id and the raw bytes to send.
    The block is h2's own encoding, so the client's HPACK state stays in step."""
    sid = int(client.conn.get_next_available_stream_id())
    fields = [(":method", "POST"), (":path", path), (":scheme", "http")]
    fields.append((":authority", "demo.localhost"))
    client.conn.send_headers(sid, [(n.encode(), v.encode()) for n, v in fields])
    client.replies[sid] = Reply()
    raw = client.conn.data_to_send()
    head, length = Frame.parse_frame_header(memoryview(raw[:9]))
    assert isinstance(head, HeadersFrame) and len(raw) == 9 + length
    head.parse_body(memoryview(raw[9:]))
    assert "END_STREAM" not in head.flags
    split = HeadersFrame(sid, data=b"").serialize()
    split += frames(ContinuationFrame(sid, data=b""), EMPTY_CONTINUATIONS)
    split += ContinuationFrame(sid, data=head.data, flags=["END_HEADERS"]).serialize()
    return sid, split


async def test_settings_just_under_the_budget_are_answered() -> None:
    """The client's own SETTINGS plus burst-1 more: every one ACKed, the connection serves."""
    burst = LIMITS.settings.burst
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        client.send_raw(frames(SettingsFrame(0), burst - 1))

        def acks() -> int:
            return sum(isinstance(e, SettingsAcknowledged) for e in client.events)

        await client.until(lambda: acks() >= burst, timeout=5)  # ours + the burst-1 raw ones
        await assert_still_open(client)


async def test_settings_flood_gets_goaway() -> None:
    """SETTINGS frames far past the budget: GOAWAY ENHANCE_YOUR_CALM; others still served."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        client.send_raw(frames(SettingsFrame(0), FLOOD_FACTOR * LIMITS.settings.burst))
        await assert_calm_goaway(client, b"SETTINGS flood")
        await still_serving(rig.edge.port)


async def test_empty_data_just_under_the_budget_is_tolerated() -> None:
    """A full burst of empty DATA frames (no END_STREAM) on an open stream: the request
    still completes (200, empty body upstream) and the connection serves on."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        sid = client.request("/upload", method="POST", end=False)
        client.send_raw(frames(DataFrame(sid, data=b""), LIMITS.empty_frames.burst))
        client.conn.end_stream(sid)
        client.flush()
        reply = await client.done(sid, timeout=5)
        assert reply.status == 200 and reply.json()["body_len"] == 0
        await assert_still_open(client)


async def test_empty_data_flood_gets_goaway() -> None:
    """Empty DATA frames (no END_STREAM) far past the budget on an open stream: GOAWAY
    ENHANCE_YOUR_CALM, the request never reaches the app; others still served."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        sid = client.request("/upload", method="POST", end=False)
        client.send_raw(frames(DataFrame(sid, data=b""), FLOOD_FACTOR * LIMITS.empty_frames.burst))
        await assert_calm_goaway(client, b"empty frame flood")
        assert client.replies[sid].status == 0
        await still_serving(rig.edge.port)
        assert [r["target"] for r in rig.backend.requests] == ["/ok"]


async def test_empty_header_frames_under_the_budget_are_tolerated() -> None:
    """Requests whose header blocks are an empty HEADERS and empty CONTINUATIONs, spending
    just under the empty-frame budget: all of them answered, the connection serves on."""
    per_block = 1 + EMPTY_CONTINUATIONS  # the empty HEADERS + the empty CONTINUATIONs
    blocks = LIMITS.empty_frames.burst // per_block
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        sent = [split_request(client, f"/split/{i}") for i in range(blocks)]
        client.send_raw(b"".join(raw for _, raw in sent))
        for sid, _ in sent:
            client.conn.end_stream(sid)
        client.flush()
        for sid, _ in sent:
            assert (await client.done(sid, timeout=5)).status == 200
        await assert_still_open(client)
        assert len(rig.backend.requests) == blocks + 1


async def test_empty_header_frames_flood_gets_goaway() -> None:
    """The same split header blocks, a few more of them than the empty-frame budget holds:
    GOAWAY ENHANCE_YOUR_CALM for an *empty frame* flood (no block is over
    max_continuations); others still served."""
    per_block = 1 + EMPTY_CONTINUATIONS
    blocks = LIMITS.empty_frames.burst // per_block + 2  # >= 2 blocks' worth over
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        client.send_raw(b"".join(split_request(client, "/split")[1] for _ in range(blocks)))
        await assert_calm_goaway(client, b"empty frame flood")
        await still_serving(rig.edge.port)
        assert [r["target"] for r in rig.backend.requests] == ["/ok"]


async def test_window_updates_just_under_the_budget_are_tolerated() -> None:
    """A full burst of WINDOW_UPDATE frames (increment 1): no GOAWAY, the connection serves."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        update = WindowUpdateFrame(0, window_increment=1)
        client.send_raw(frames(update, LIMITS.window_updates.burst))
        await assert_still_open(client)


async def test_window_update_flood_gets_goaway() -> None:
    """WINDOW_UPDATE frames far past the budget: GOAWAY ENHANCE_YOUR_CALM; others served."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.edge.port)
        update = WindowUpdateFrame(0, window_increment=1)
        client.send_raw(frames(update, FLOOD_FACTOR * LIMITS.window_updates.burst))
        await assert_calm_goaway(client, b"WINDOW_UPDATE flood")
        await still_serving(rig.edge.port)
