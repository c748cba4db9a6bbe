"""h2recv: a server connection's receipt of request HEADERS (the fast path) gives the same
events, errors, frames sent and state as a plain h2 ``H2Connection``, for ordinary and
hostile request sequences: bad and duplicate pseudo-headers, ``:status`` in a request,
connection-specific fields, TE, upper-case names, CR/LF/NUL, bad or conflicting
content-length, cookies, reused / even / too-low stream ids, the stream limit, trailers,
DATA and resets, under every inbound validation / normalization / encoding setting."""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.events as ev
import h2.exceptions
import h2.settings
import pytest
from hpack import Encoder
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roost.proxy import h2recv, h2wire

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
FIELDS = [
    (b":method", b"GET"),
    (b":method", b"HEAD"),
    (b":method", b"CONNECT"),
    (b":scheme", b"http"),
    (b":authority", b"a"),
    (b":path", b"/"),
    (b":path", b""),
    (b":status", b"200"),
    (b":status", b"103"),
    (b":protocol", b"websocket"),
    (b":bogus", b"1"),
    (b"host", b"a"),
    (b"host", b"b"),
    (b"user-agent", b"h2load"),
    (b"User-Agent", b"upper"),
    (b"content-length", b"5"),
    (b"content-length", b"0"),
    (b"content-length", b"7"),
    (b"content-length", b"x1"),
    (b"content-length", b"-1"),
    (b"cookie", b"a=1"),
    (b"cookie", b"b=2"),
    (b"te", b"trailers"),
    (b"te", b"gzip"),
    (b"connection", b"close"),
    (b"keep-alive", b"1"),
    (b"transfer-encoding", b"chunked"),
    (b"upgrade", b"h2c"),
    (b"proxy-connection", b"x"),
    (b"x-crlf", b"a\r\nb"),
    (b"x-nul", b"a\x00b"),
    (b"x-space", b" padded "),
    (b"", b"empty name"),
    (b"x y", b"space in name"),
]
EXTRA = st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4)
BLOCK = st.one_of(
    st.just(GET),
    EXTRA.map(lambda extra: [*GET, *extra]),
    EXTRA.map(lambda extra: [*GET[:2], *extra, *GET[2:]]),
    st.lists(st.sampled_from(FIELDS), max_size=7),  # anything, any order
)
END_STREAM, END_HEADERS = 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# stream ids: mostly the next new one (None), else one drawn: reused, even, too low
NEW = st.sampled_from([None, None, None, None, None, 1, 3, 2, 8, 13])
OPEN = st.sampled_from([None, 1, 3, 5])  # (None: the last stream opened)
# (kind, stream id, END_STREAM, header block or data); "trailers": HEADERS on OPEN's ids
STEP = st.one_of(
    st.tuples(st.just("headers"), NEW, st.booleans(), BLOCK),
    st.tuples(st.just("headers"), NEW, st.booleans(), BLOCK),
    st.tuples(st.just("trailers"), OPEN, st.booleans(), BLOCK),
    st.tuples(st.just("data"), OPEN, st.booleans(), st.binary(max_size=7)),
    st.tuples(st.just("rst"), OPEN, st.booleans(), st.just(b"")),
)
FAST = {"validate_inbound_headers": False}  # (h2's default validates: its own path)
FIRST = [("headers", None, True, GET)]  # (the connection is then SERVER_OPEN)
BODY5 = ("data", None, True, b"12345")
CONFIG = st.fixed_dictionaries(
    {
        "validate_inbound_headers": st.sampled_from([False, False, True]),
        "normalize_inbound_headers": st.booleans(),
        "header_encoding": st.sampled_from([None, "utf-8"]),
    }
)


def _frame(ftype: int, flags: int, sid: int, body: bytes) -> bytes:
    return struct.pack(">HBBBL", len(body) >> 8, len(body) & 0xFF, ftype, flags, sid) + body


def _wire(steps: list, encoder: Encoder) -> list[bytes]:
    """The client's frames, one read each (stream ids and blocks as drawn: h2 judges them)."""
    reads = []
    last = -1  # the last new stream id drawn as None
    for kind, drawn, end, body in steps:
        if drawn is not None:
            sid = drawn
        elif kind == "headers":
            sid = last = last + 2
        else:
            sid = max(last, 1)
        flags = END_STREAM if end else 0
        if kind in ("headers", "trailers"):
            reads.append(_frame(0x1, END_HEADERS | flags, sid, encoder.encode(body)))
        elif kind == "data":
            reads.append(_frame(0x0, flags, sid, body))
        else:
            reads.append(_frame(0x3, 0, sid, struct.pack(">L", 0x8)))  # RST_STREAM(CANCEL)
    return reads


def _event(event: Any) -> tuple:
    """An event as comparable data (the headers with their types: HeaderTuple, never
    indexed, str or bytes)."""
    fields = {}
    for name, value in sorted(vars(event).items()):
        if name == "headers" and value is not None:
            value = [(type(f).__name__, tuple(f)) for f in value]
        elif isinstance(value, ev.Event):
            value = _event(value)
        else:
            value = repr(value)  # (ChangedSetting has no __eq__)
        fields[name] = value
    return type(event).__name__, fields


def _feed(conn: h2.connection.H2Connection, data: bytes) -> Any:
    try:
        return [_event(e) for e in conn.receive_data(data)]
    except h2.exceptions.ProtocolError as e:
        return type(e).__name__, str(e), e.error_code


def _state(conn: h2.connection.H2Connection) -> tuple:
    streams = {
        sid: (
            s.stream_id,
            vars(s.state_machine),
            s.max_outbound_frame_size,
            s.request_method,
            s.outbound_flow_control_window,
            s.inbound_flow_control_window,
            s._expected_content_length,
            s._actual_content_length,
            s._authority,
        )
        for sid, s in conn.streams.items()
    }
    return (
        conn.state_machine.state,
        list(streams.items()),  # (in order)
        dict(conn._closed_streams),
        conn.highest_inbound_stream_id,
        conn.highest_outbound_stream_id,
        conn.inbound_flow_control_window,
    )


def _server(config: h2.config.H2Configuration, *, ours: bool, limit: int) -> Any:
    conn = h2wire.new_connection(config) if ours else h2.connection.H2Connection(config)
    conn.initiate_connection()
    conn.local_settings.max_concurrent_streams = limit
    conn.local_settings.acknowledge()
    conn.data_to_send()
    return conn


@settings(max_examples=500, deadline=None)
@given(
    CONFIG,
    st.sampled_from([100, 2]),  # the stream limit
    st.sampled_from([None, 1000, 0]),  # the client's SETTINGS_INITIAL_WINDOW_SIZE
    st.lists(STEP, max_size=10),
)
@example(FAST, 100, None, [("headers", None, True, GET), ("headers", None, True, GET)])
@example(FAST, 2, None, [("headers", None, False, GET)] * 3)  # over the limit
@example(FAST, 100, None, [*FIRST, ("headers", None, False, [*GET, (b":status", b"103")])])
@example(FAST, 100, None, [*FIRST, ("headers", None, True, [*GET, (b":status", b"200")])])
@example(
    FAST, 100, None, [*FIRST, ("headers", None, False, [*GET, *FIELDS[20:22], *FIELDS[13:14]])]
)
@example(FAST, 100, None, [*FIRST, ("headers", None, False, [*GET, *FIELDS[15:17]])])  # 5 and 0
@example(FAST, 100, None, [*FIRST, ("headers", None, False, [*GET, FIELDS[18]])])  # x1
@example(FAST, 100, None, [*FIRST, ("headers", None, False, [*GET, FIELDS[15]]), BODY5])
@example(
    {**FAST, "normalize_inbound_headers": False},
    100,
    None,
    [*FIRST, ("headers", None, False, [*GET, *FIELDS[20:22]])],
)
def test_requests_received_as_h2_does(
    options: dict, limit: int, window: int | None, steps: list
) -> None:
    """Same events (headers and their types), errors, replies and state as plain h2."""
    config = h2.config.H2Configuration(client_side=False, **options)
    ours = _server(config, ours=True, limit=limit)
    ref = _server(config, ours=False, limit=limit)
    assert ours._frame_dispatch_table[h2wire._LightHeaders] == ours._receive_request
    values = b"" if window is None else struct.pack(">HL", 0x4, window)
    reads = [PREFACE + _frame(0x4, 0, 0, values), *_wire(steps, Encoder())]
    for data in reads:
        out = _feed(ours, data)
        assert out == _feed(ref, data)
        assert ours.data_to_send() == ref.data_to_send()
        assert _state(ours) == _state(ref)
        if isinstance(out, tuple):  # a connection error: h2 has closed it
            break


def test_fast_path_taken_for_plain_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the second request on (the connection is SERVER_OPEN), new streams do not go
    through h2's _receive_headers_frame; trailers and repeated ids do."""
    calls: list[int] = []
    original = h2.connection.H2Connection._receive_headers_frame

    def spy(self: Any, frame: Any) -> Any:
        calls.append(frame.stream_id)
        return original(self, frame)

    monkeypatch.setattr(h2.connection.H2Connection, "_receive_headers_frame", spy)
    conn = _server(h2.config.H2Configuration(client_side=False), ours=True, limit=100)
    encoder = Encoder()
    steps = [("headers", None, sid != 3, GET) for sid in (1, 3, 5)]
    steps.append(("trailers", 3, True, [(b"x-trailer", b"1")]))
    events = []
    for data in _wire(steps, encoder):
        events += conn.receive_data(data if events else PREFACE + data)
    assert calls == [1, 3]  # the first request (connection IDLE), the trailers
    assert [type(e).__name__ for e in events][-2:] == ["TrailersReceived", "StreamEnded"]


def test_layout_is_h2s() -> None:
    """The h2 internals the fast paths read are where h2 4.x keeps them."""
    assert h2recv.FAST_LAYOUT
    config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    assert config._header_encoding == "utf-8" and config._client_side is False
    values = h2.settings.Settings(client=False, initial_values={0x3: 7})
    assert values._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS][0] == 7
