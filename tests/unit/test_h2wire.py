"""h2wire: the caching HPACK codecs and the direct frame writers produce exactly what hpack
and h2 would, and h2's state (stream states, windows) ends up the same."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events as ev
import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy import h2wire

FIELDS = [
    (b":status", b"200"),
    (b":status", b"404"),
    (b"server", b"nginx"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
    (b"date", b"Fri, 27 Nov 2026 05:00:00 GMT"),
    (b"date", b"Fri, 27 Nov 2026 05:00:01 GMT"),
    (b"x-big", b"v" * 3000),  # evicts most of a 4 KiB table
    (b"via", b"1.1 roost"),
]
FIELD = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from([("server", "nginx"), ("x-str", "é")]),  # str fields: UTF-8, as hpack
    st.builds(lambda v: NeverIndexedHeaderTuple(b"roost-request-id", v), st.binary(max_size=8)),
    st.builds(lambda v: (b"x-any", v), st.binary(max_size=4)),
)
BLOCK = st.lists(FIELD, max_size=8)
# a block, or a SETTINGS_HEADER_TABLE_SIZE from the peer and the block after it (hpack loses
# the size update of a change set twice between two blocks: not the subject here)
STEP = st.one_of(BLOCK, st.tuples(st.sampled_from([4096, 256, 0, 8192]), BLOCK))


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=25))
def test_encoder_matches_hpack(steps: list) -> None:
    """Same bytes as hpack's encoder for any sequence of blocks and table size changes; a
    cached index going stale after an insertion or eviction would differ here."""
    ours, theirs, decoder = h2wire.CachingEncoder(), Encoder(), Decoder()
    decoder.max_allowed_table_size = 8192
    for step in steps:
        if isinstance(step, tuple):
            ours.header_table_size = theirs.header_table_size = step[0]
            step = step[1]
        block = ours.encode(step)
        assert block == theirs.encode(step)
        expected = [(f[0].encode(), f[1].encode()) if isinstance(f[0], str) else f for f in step]
        assert decoder.decode(block, raw=True) == [tuple(f) for f in expected]


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=25))
def test_decoder_matches_hpack(steps: list) -> None:
    """Same fields as hpack's decoder, blocks repeated (all-indexed, cached) or not."""
    encoder = Encoder()
    ours, theirs = h2wire.CachingDecoder(65536), Decoder()
    ours.max_allowed_table_size = theirs.max_allowed_table_size = 8192
    for step in steps:
        if isinstance(step, tuple):
            encoder.header_table_size = step[0]
            step = step[1]
        for _ in range(3):  # again: all indexed (cached), unless the table moved meanwhile
            block = encoder.encode(step)
            assert ours.decode(block, raw=True) == theirs.decode(block, raw=True)


def test_decoder_cache_keeps_the_list_size_limit() -> None:
    """A cached block is still refused once it exceeds a lowered header list limit."""
    encoder, decoder = Encoder(), h2wire.CachingDecoder(65536)
    fields = [(b":method", b"GET"), (b"x-a", b"b" * 100)]
    decoder.decode(encoder.encode(fields), raw=True)
    block = encoder.encode(fields)  # all indexed now
    assert decoder.decode(block, raw=True) == fields
    assert decoder.decode(block, raw=True) == fields  # from the cache
    decoder.max_header_list_size = 100
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(block, raw=True)


@given(st.binary(max_size=64))
def test_huffman_matches_hpack(data: bytes) -> None:
    """The Huffman coder gives hpack's bytes."""
    assert h2wire.huffman_encode(data) == HuffmanEncoder(
        REQUEST_CODES, REQUEST_CODES_LENGTH
    ).encode(data)


def _pair(server: h2.connection.H2Connection) -> h2.connection.H2Connection:
    """A client with a GET on stream 1 and stream 3 (POST, body to come) sent to ``server``."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.initiate_connection()
    get = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    client.send_headers(1, get, end_stream=True)
    client.send_headers(3, [(b":method", b"POST"), *get[1:]])
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client


def _respond(server: h2.connection.H2Connection, *, fast: bool) -> bytes:
    big = [(b":status", b"200"), (b"x-big", b"z" * 40_000)]  # HEADERS + CONTINUATIONs
    small = [(b":status", b"200"), NeverIndexedHeaderTuple(b"roost-request-id", b"r1")]
    if fast:
        h2wire.send_headers(server, 1, small, False)
        h2wire.send_data(server, 1, b"ok", True)
        h2wire.send_headers(server, 3, [(b":status", b"100")], False)  # via h2
        h2wire.send_headers(server, 3, big, False)
        h2wire.send_data(server, 3, b"x" * 100, False)
        h2wire.send_headers(server, 3, [(b"x-trailer", b"1")], True)  # trailers: via h2
    else:
        server.send_headers(1, small)
        server.send_data(1, b"ok", end_stream=True)
        server.send_headers(3, [(b":status", b"100")])
        server.send_headers(3, big)
        server.send_data(3, b"x" * 100)
        server.send_headers(3, [(b"x-trailer", b"1")], end_stream=True)
    return server.data_to_send()


def test_writers_match_h2() -> None:
    """Responses written by h2wire are h2's bytes, and leave h2 in the same state."""
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    ours, theirs = h2wire.new_connection(config), h2.connection.H2Connection(config)
    ours.encoder = h2wire.CachingEncoder()
    client = _pair(ours)
    _pair(theirs)
    out = _respond(ours, fast=True)
    assert out == _respond(theirs, fast=False)
    for sid in (1, 3):
        a, b = ours.streams[sid], theirs.streams[sid]
        assert a.state_machine.state == b.state_machine.state
        assert a.outbound_flow_control_window == b.outbound_flow_control_window
    assert ours.outbound_flow_control_window == theirs.outbound_flow_control_window
    events = client.receive_data(out)
    ended = [e.stream_id for e in events if isinstance(e, ev.StreamEnded)]
    assert ended == [1, 3]
    response = next(e for e in events if isinstance(e, ev.ResponseReceived))
    assert response.headers == [(b":status", b"200"), (b"roost-request-id", b"r1")]


def test_writers_refuse_a_reset_stream_as_h2_does() -> None:
    """Writing to a stream the client reset raises h2's StreamClosedError."""
    server = h2wire.new_connection(h2.config.H2Configuration(client_side=False))
    client = _pair(server)
    client.reset_stream(1)
    server.receive_data(client.data_to_send())
    with pytest.raises(h2.exceptions.StreamClosedError):
        h2wire.send_headers(server, 1, [(b":status", b"200")], False)
    with pytest.raises(h2.exceptions.StreamClosedError):
        h2wire.send_data(server, 1, b"x", True)


def test_frames_on_a_reset_stream_answered_as_h2_does() -> None:
    """DATA for a stream we reset gets RST_STREAM(STREAM_CLOSED) (the receive path without
    h2's frame repr), the same bytes as h2's own connection."""
    outs = []
    for server in (
        h2wire.new_connection(h2.config.H2Configuration(client_side=False)),
        h2.connection.H2Connection(h2.config.H2Configuration(client_side=False)),
    ):
        client = _pair(server)
        client.send_data(3, b"late")  # sent before the client saw the reset
        server.reset_stream(3)
        server.data_to_send()
        server.receive_data(client.data_to_send())
        outs.append(server.data_to_send())
    assert outs[0] == outs[1] and outs[0]


def test_received_goaway_keeps_the_connection_open() -> None:
    """After the client's GOAWAY, a response on an open stream can still be sent."""
    server = h2wire.new_connection(h2.config.H2Configuration(client_side=False))
    client = _pair(server)
    client.close_connection()
    server.receive_data(client.data_to_send())
    h2wire.send_headers(server, 1, [(b":status", b"204")], True)
    assert server.streams[1].closed
