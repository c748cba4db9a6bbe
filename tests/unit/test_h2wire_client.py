"""h2wire.open_stream: a client's request HEADERS on a new stream are h2's bytes, and leave
h2's connection and stream state (ids, states, pruned streams, limits) as h2 would."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events as ev
import h2.exceptions
import h2.settings
import h2.stream
import pytest
from hpack import NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy import h2wire

CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
SERVER = h2.config.H2Configuration(
    client_side=False, header_encoding=None, validate_inbound_headers=False
)
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
EXTRA = st.one_of(
    st.sampled_from([(b"user-agent", b"h2load"), (b"x-forwarded-for", b"127.0.0.1")]),
    st.builds(lambda v: NeverIndexedHeaderTuple(b"roost-request-id", v), st.binary(max_size=8)),
    st.builds(lambda v: (b"x-any", v), st.binary(max_size=4)),
    st.just((b"x-big", b"z" * 20_000)),  # HEADERS + CONTINUATION
)
METHOD = st.sampled_from([b"GET", b"POST", b"HEAD"])
# a request (method, extra fields, end_stream), or the server answering the oldest open stream
STEP = st.one_of(st.tuples(METHOD, st.lists(EXTRA, max_size=4), st.booleans()), st.just("answer"))


def _state(conn: h2.connection.H2Connection) -> tuple:
    streams = {
        sid: (
            s.state_machine.state,
            s._authority,
            s.request_method,
            s.outbound_flow_control_window,
            s.inbound_flow_control_window,
            s.max_outbound_frame_size,
        )
        for sid, s in conn.streams.items()
    }
    return (
        conn.state_machine.state,
        conn.highest_outbound_stream_id,
        streams,
        dict(conn._closed_streams),
        conn.outbound_flow_control_window,
    )


def _connected(max_streams: int) -> tuple[h2.connection.H2Connection, ...]:
    """Ours (h2wire's connection), theirs (h2's) and a server each talks to."""
    ours, theirs = h2wire.new_connection(CONFIG), h2.connection.H2Connection(CONFIG)
    theirs.encoder = h2wire.CachingEncoder()  # (its bytes are hpack's: test_h2wire)
    servers = []
    for client in (ours, theirs):
        server = h2.connection.H2Connection(SERVER)
        server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        server.initiate_connection()
        # up to four 20 kB fields in one request: beyond hpack's default 64 KiB list limit,
        # which is the receiving server's business, not what this test compares
        server.decoder.max_header_list_size = 1 << 20
        client.initiate_connection()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        server.receive_data(client.data_to_send())
        servers.append(server)
    return ours, theirs, *servers


def _unanswered(stream: h2.stream.H2Stream) -> bool:
    return stream.open and not stream.state_machine.headers_sent


def _open(conn: h2.connection.H2Connection, block: list, end: bool, fast: bool) -> object:
    """The error (or None) opening the next stream, with h2wire or with h2."""
    sid = conn.get_next_available_stream_id()
    try:
        if fast:
            h2wire.open_stream(conn, sid, block, end)
        else:
            conn.send_headers(sid, block, end_stream=end)
    except h2.exceptions.ProtocolError as e:
        return type(e), str(e)
    return None


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.lists(STEP, max_size=20))
def test_open_stream_matches_h2(max_streams: int, steps: list) -> None:
    """Same bytes, errors (the peer's stream limit) and state as h2's send_headers, while
    streams open, end and are answered (closed streams are pruned by the limit check)."""
    ours, theirs, our_server, their_server = _connected(max_streams)
    for step in steps:
        if step == "answer":
            for client, server in ((ours, our_server), (theirs, their_server)):
                sid = next((s for s, x in server.streams.items() if _unanswered(x)), None)
                if sid is not None:
                    server.send_headers(sid, [(b":status", b"200")], end_stream=True)
                    client.receive_data(server.data_to_send())
            continue
        method, extra, end = step
        block = [(b":method", method), *GET[1:], *extra]
        assert _open(ours, block, end, True) == _open(theirs, block, end, False)
        out = ours.data_to_send()
        assert out == theirs.data_to_send()
        assert _state(ours) == _state(theirs)
        events = our_server.receive_data(out)
        their_server.receive_data(out)
        got = [e for e in events if isinstance(e, ev.RequestReceived)]
        assert [list(e.headers) for e in got] == [[tuple(f) for f in block]] * len(got)


def test_open_stream_falls_back_to_h2() -> None:
    """str fields, a 3-tuple or an existing stream (trailers) take h2's own path."""
    ours, theirs, *_ = _connected(10)
    for conn, fast in ((ours, True), (theirs, False)):
        sid = conn.get_next_available_stream_id()
        block = [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/")]
        (h2wire.open_stream if fast else _h2)(conn, sid, block, False)
        trailers = [(b"x-t", b"1", True)]
        (h2wire.open_stream if fast else _h2)(conn, sid, trailers, True)
    assert ours.data_to_send() == theirs.data_to_send()
    assert _state(ours) == _state(theirs)
    assert ours.streams[1]._authority == b"a"


def _h2(conn: h2.connection.H2Connection, sid: int, block: list, end: bool) -> None:
    conn.send_headers(sid, block, end_stream=end)


def test_open_stream_refuses_what_h2_refuses() -> None:
    """A stream id that is too low raises as h2 does."""
    ours, *_ = _connected(10)
    h2wire.open_stream(ours, 3, GET, True)
    with pytest.raises(h2.exceptions.StreamIDTooLowError):
        h2wire.open_stream(ours, 1, GET, True)


@given(st.lists(st.tuples(st.integers(1, 40), st.sampled_from(list(h2.stream.StreamState)))))
def test_open_streams_counted_as_h2_does(streams: list) -> None:
    """Open streams of either parity counted, closed ones moved out, as h2's own method."""
    conns = [h2wire.new_connection(CONFIG), h2.connection.H2Connection(CONFIG)]
    for conn in conns:
        for sid, state in streams:
            stream = h2.stream.H2Stream(sid, conn.config, 65535, 65535)
            stream.state_machine.state = state
            stream.state_machine.stream_closed_by = sid  # (any marker)
            conn.streams[sid] = stream
    for remainder in (1, 0):
        assert conns[0]._open_streams(remainder) == conns[1]._open_streams(remainder)
        assert list(conns[0].streams) == list(conns[1].streams)
        assert conns[0]._closed_streams == conns[1]._closed_streams
