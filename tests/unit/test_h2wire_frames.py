"""h2wire's frame buffer: received DATA and HEADERS frames parsed into light frames give the
same events, errors, replies and state as hyperframe's frames in h2's own buffer, for any
frames (any flags, padding, priority, stream 0, oversized, a header block in progress) cut
into reads anywhere."""

from __future__ import annotations

import itertools
import struct

import h2.config
import h2.connection
import h2.exceptions
from h2.frame_buffer import FrameBuffer
from hpack import Encoder
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roost.proxy import h2wire

CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
SERVER = h2.config.H2Configuration(client_side=False, header_encoding=None)
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
BLOCKS = [
    [(b":status", b"200"), (b"content-length", b"2")],
    [(b":status", b"100")],
    [(b":status", b"204"), (b"server", b"x")],
    [(b"x-trailer", b"1")],
]
PRIORITY = b"\x00\x00\x00\x03\x10"  # depends on stream 3, weight 17
BODY = st.one_of(
    st.sampled_from(BLOCKS).map(lambda b: Encoder().encode(b)),
    st.sampled_from(BLOCKS).map(lambda b: PRIORITY + Encoder().encode(b)),  # flag 0x20
    st.just(b"\x02ok\x00\x00"),  # padded (flag 0x8)
    st.binary(max_size=12),
    st.just(b"x" * 16_385),  # over the default frame size
)
FRAME = st.tuples(
    st.sampled_from([0x0, 0x0, 0x1, 0x1, 0x9, 0x3, 0x6, 0x8]),  # DATA, HEADERS, CONT, ...
    st.integers(0, 255),  # flags: any bits (END_STREAM, END_HEADERS, PADDED, PRIORITY, ...)
    st.sampled_from([0, 1, 3, 5, 7, 0x80000001]),  # (the last: reserved bit set on 1)
    BODY,
)


def _frame(ftype: int, flags: int, sid: int, body: bytes) -> bytes:
    return struct.pack(">HBBBL", len(body) >> 8, len(body) & 0xFF, ftype, flags, sid) + body


def _feed(conn: h2.connection.H2Connection, data: bytes) -> object:
    try:
        return [repr(e) for e in conn.receive_data(data)]
    except h2.exceptions.ProtocolError as e:
        return type(e), str(e)


def _state(conn: h2.connection.H2Connection) -> tuple:
    streams = {
        sid: (
            s.state_machine.state,
            s.inbound_flow_control_window,
            s._expected_content_length,
            s._actual_content_length,
        )
        for sid, s in conn.streams.items()
    }
    return conn.state_machine.state, streams, conn.inbound_flow_control_window


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _compare(
    ours: h2.connection.H2Connection, ref: h2.connection.H2Connection, data: bytes, cuts: list[int]
) -> None:
    assert isinstance(ours.incoming_buffer, h2wire._FrameBuffer)
    assert type(ref.incoming_buffer) is FrameBuffer
    for chunk in _cut(data, cuts):
        out = _feed(ours, chunk)
        assert out == _feed(ref, chunk)
        assert ours.data_to_send() == ref.data_to_send()
        assert _state(ours) == _state(ref)
        if isinstance(out, tuple):
            break


OK = Encoder().encode(BLOCKS[0])


@settings(max_examples=400, deadline=None)
@given(st.lists(FRAME, max_size=12), st.lists(st.integers(0, 1 << 20), max_size=6))
@example([(0x1, 0x0, 1, OK), (0x0, 0x1, 1, b"ok")], [])  # DATA inside a header block
@example([(0x1, 0x24, 1, PRIORITY + OK), (0x0, 0x1, 1, b"ok")], [])  # PRIORITY
@example([(0x1, 0x5, 1, OK), (0x0, 0x9, 1, b"\x02ok\x00\x00")], [])  # padded DATA
def test_client_receives_frames_as_h2_does(frames: list, cuts: list[int]) -> None:
    """Responses, data, trailers and junk to a client with streams 1 (GET), 3 (POST, body
    to come) and 5 (HEAD) open."""
    conns = []
    for _ in range(2):
        conn = h2wire.new_connection(CONFIG)
        conn.initiate_connection()
        conn.send_headers(1, GET, end_stream=True)
        conn.send_headers(3, [(b":method", b"POST"), *GET[1:]])
        conn.send_headers(5, [(b":method", b"HEAD"), *GET[1:]], end_stream=True)
        conn.data_to_send()
        conns.append(conn)
    ours, ref = conns
    ref.incoming_buffer = FrameBuffer(server=False)
    settings_frame = _frame(0x4, 0, 0, b"")
    _compare(ours, ref, settings_frame + b"".join(_frame(*f) for f in frames), cuts)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=40)), min_size=1, max_size=6),
    st.lists(st.integers(0, 1 << 20), max_size=8),
)
def test_server_receives_requests_as_h2_does(requests: list, cuts: list[int]) -> None:
    """An h2 client's preface, requests and bodies to a server, in reads cut anywhere."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for i, (has_body, body) in enumerate(requests):
        sid = 2 * i + 1
        method = b"POST" if has_body else b"GET"
        client.send_headers(sid, [(b":method", method), *GET[1:]], end_stream=not has_body)
        if has_body:
            client.send_data(sid, body, end_stream=True, pad_length=len(body) % 3 or None)
    ours, ref = h2wire.new_connection(SERVER), h2wire.new_connection(SERVER)
    ref.incoming_buffer = FrameBuffer(server=True)
    for conn in (ours, ref):
        conn.initiate_connection()
        conn.data_to_send()
    _compare(ours, ref, client.data_to_send(), cuts)


def test_real_logger_keeps_hyperframe_frames() -> None:
    """With a real logger (whose trace repr-s frames) h2's own buffer stays."""

    class Logger(h2.config.DummyLogger):
        pass

    conn = h2wire.new_connection(h2.config.H2Configuration(client_side=True, logger=Logger()))
    assert type(conn.incoming_buffer) is FrameBuffer
