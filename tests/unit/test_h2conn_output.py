"""H2Base output: frames built at flush() are written once per event-loop turn, in order with
the frames written behind h2's back."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events as ev
from hyperframe.frame import PingFrame

from roost.proxy.h2conn import H2Base, H2Options, StreamOut

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


async def _server() -> tuple[H2Base, Transport, h2.connection.H2Connection]:
    """A server-side H2Base after the preface, two GETs (streams 1 and 3) received."""
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    base, transport = H2Base(asyncio.get_running_loop(), config, H2Options()), Transport()
    base.connection_made(transport)  # type: ignore[arg-type]
    base.start({})
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, GET, end_stream=True)
    client.send_headers(3, GET, end_stream=True)
    base.data_received(client.data_to_send())
    await asyncio.sleep(0)
    client.receive_data(b"".join(transport.writes))
    transport.writes.clear()
    return base, transport, client


def _respond(base: H2Base, sid: int) -> None:
    st = base.streams[sid] = StreamOut(sid)
    st.head = [(b":status", b"200")]
    base.queue(st, b"hi")
    st.ending = True
    base.touch(st)
    base.flush()


async def test_one_write_per_loop_turn() -> None:
    """Two responses completed in one turn go out in one write, once the turn ends."""
    base, transport, client = await _server()
    _respond(base, 1)
    _respond(base, 3)
    assert transport.writes == []
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    events: list[Any] = client.receive_data(transport.writes[0])
    assert [e.stream_id for e in events if isinstance(e, ev.StreamEnded)] == [1, 3]


async def test_raw_frames_follow_what_h2_queued() -> None:
    """A frame written behind h2's back comes after the frames flush() already built."""
    base, transport, client = await _server()
    _respond(base, 1)
    base._write_raw(PingFrame(0, b"12345678").serialize())
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the scheduled write found nothing left
    events = client.receive_data(transport.writes[0])
    kinds = [type(e) for e in events]
    assert kinds.index(ev.StreamEnded) < kinds.index(ev.PingReceived)
