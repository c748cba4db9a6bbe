"""h2hpack and the backhaul's request id: the edge writes ``roost-request-id`` in one fixed
form (never indexed, value not Huffman-coded), the host's decoder takes it out of the block
and caches the rest -- and every block, that form or not, decodes exactly as hpack's own
decoder does it (fields, their types, the errors, the dynamic table)."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.events as ev
import pytest
from hpack import (
    Decoder,
    Encoder,
    HeaderTuple,
    NeverIndexedHeaderTuple,
    OversizedHeaderListError,
)
from hpack.hpack import encode_integer
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy import h2hpack, h2wire
from roost.proxy.h2backhaul import request_block

RID = b"roost-request-id"
REQUEST = [
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":authority", b"fast.localhost"),
    (b":path", b"/"),
    (b":path", b"/a?b"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"x-forwarded-for", b"127.0.0.1"),
    (b"roost-instance", b"i-0123"),
    (b"x-big", b"v" * 3000),  # evicts most of a 4 KiB table
]
ID = st.binary(max_size=140)  # from 127 bytes on, the length takes two bytes
FIELD = st.one_of(
    st.sampled_from(REQUEST),
    st.builds(lambda v: h2hpack.RequestIdField(RID, v), ID),  # (h2hpack's, read when drawn)
    st.builds(lambda v: NeverIndexedHeaderTuple(RID, v), ID),  # hpack's form: Huffman
    st.builds(lambda v: (RID, v), st.binary(max_size=4)),  # indexed: a foreign encoder's
    st.builds(lambda v: (b"x-any", v), st.binary(max_size=4)),
)
# (a SETTINGS_HEADER_TABLE_SIZE from the peer or None, the header list limit, the fields)
STEP = st.tuples(
    st.sampled_from([None, None, None, 4096, 256, 0]),
    st.sampled_from([65536, 65536, 400, 150]),
    st.lists(FIELD, max_size=8),
)


def _fields(out: Any) -> list[tuple[type, bytes, bytes]]:
    return [(type(f), f[0], f[1]) for f in out]


def _typed(fields: list[tuple[bytes, bytes]]) -> list[tuple[type, bytes, bytes]]:
    """``_fields`` of ``fields`` decoded: the request id never indexed, the rest not."""
    return [(NeverIndexedHeaderTuple if n == RID else HeaderTuple, n, v) for n, v in fields]


def _outcome(decoder: Decoder, block: bytes) -> object:
    """What decoding ``block`` gives: the fields with their types, or the error."""
    try:
        return _fields(decoder.decode(block, raw=True))
    except Exception as e:
        return type(e), str(e)


def _same(ours: h2wire.CachingDecoder, theirs: Decoder, block: bytes) -> Any:
    """Decode ``block`` with both: the same outcome and table (returned)."""
    got = _outcome(ours, block)
    assert got == _outcome(theirs, block)
    assert ours.header_table.dynamic_entries == theirs.header_table.dynamic_entries
    assert ours.header_table_size == theirs.header_table_size
    return got


def _with_ids(fields: list[Any], turn: int) -> list[Any]:
    """``fields`` with every request id changed (a new request), in the same form."""
    if not turn:
        return fields
    return [
        f.__class__(f[0], f[1] + b"%d" % turn) if isinstance(f, HeaderTuple) else f for f in fields
    ]


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(STEP, max_size=20))
def test_decoder_matches_hpack(hpack_encodes: bool, steps: list) -> None:
    """Fields, errors (header list limit included) and table as hpack's decoder, for blocks
    of ours or hpack's encoder, repeated with new ids (then mostly from the cache)."""
    encoder = Encoder() if hpack_encodes else h2wire.CachingEncoder()
    ours, theirs = h2wire.CachingDecoder(65536), Decoder()
    ours.max_allowed_table_size = theirs.max_allowed_table_size = 8192
    for size, limit, fields in steps:
        if size is not None:
            encoder.header_table_size = size
        ours.max_header_list_size = theirs.max_header_list_size = limit
        for turn in range(3):
            _same(ours, theirs, encoder.encode(_with_ids(fields, turn)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(REQUEST[:9]), max_size=8),
    ID,
    st.lists(st.sampled_from(REQUEST[:9]), max_size=3),
)
def test_encoder_writes_the_fixed_form(before: list, rid: bytes, after: list) -> None:
    """Our encoder writes a RequestIdField as ``<prefix><length><id>`` (no Huffman in the
    value), touches no table for it, and codes every other field as hpack does."""
    ours, theirs, parts, decoder = h2wire.CachingEncoder(), Encoder(), Encoder(), Decoder()
    literal = b"\x10\x8b" + h2hpack.huffman_encode(RID) + bytes(encode_integer(len(rid), 7))
    for _ in range(2):  # (the second time, the fields around the id are indexed)
        block = ours.encode([*before, h2hpack.RequestIdField(RID, rid), *after])
        theirs.encode([*before, NeverIndexedHeaderTuple(RID, rid), *after])
        assert block == parts.encode(before) + literal + rid + parts.encode(after)
        assert ours.header_table.dynamic_entries == theirs.header_table.dynamic_entries
        assert all(name != RID for name, _ in ours.header_table.dynamic_entries)
        fields = [*before, (RID, rid), *after]
        assert _fields(decoder.decode(block, raw=True)) == _typed(fields)


def _backhaul(rid: bytes) -> list[Any]:
    """A GET as the edge sends it on the backhaul: roost-instance after the request id."""
    fields = [
        (b"Host", b"fast.localhost"),
        (b"User-Agent", b"h2load"),
        (b"X-Forwarded-For", b"127.0.0.1"),
        (b"Roost-Request-Id", rid),
    ]
    return [*request_block(b"GET", b"/", fields), (b"roost-instance", b"i-0123")]


def _expected(rid: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"fast.localhost"),
        (b":path", b"/"),
        (b"user-agent", b"h2load"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"roost-request-id", rid),
        (b"roost-instance", b"i-0123"),
    ]


def _warm() -> tuple[h2wire.CachingEncoder, h2wire.CachingDecoder, Decoder]:
    """An encoder and two decoders after two backhaul requests (the first one's literals
    entered the tables; the second's block, indexed fields and the id, is cached)."""
    encoder, ours, theirs = h2wire.CachingEncoder(), h2wire.CachingDecoder(65536), Decoder()
    for rid in (b"r0", b"r1"):
        _same(ours, theirs, encoder.encode(_backhaul(rid)))
    return encoder, ours, theirs


def _count_full_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]

    def counted(self: Decoder, data: bytes, raw: bool = False) -> Any:
        calls[0] += 1
        return HPACK_DECODE(self, data, raw)

    monkeypatch.setattr(Decoder, "decode", counted)
    return calls


HPACK_DECODE = Decoder.decode


def test_new_request_ids_are_cache_hits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the table holds the fields that repeat, a request with a new id is decoded
    without hpack's decoder: the same fields, the new id in its place, never indexed."""
    encoder, ours, theirs = _warm()
    calls = _count_full_decodes(monkeypatch)
    for i in range(2, 50):
        rid = b"%016x" % i
        block = encoder.encode(_backhaul(rid))
        got = ours.decode(block, raw=True)
        assert calls[0] == 0
        assert _fields(got) == _typed(_expected(rid))
        assert _fields(got) == _fields(HPACK_DECODE(theirs, block, True))


def _rid(value: bytes) -> bytes:
    """The id field in the fixed form (as our encoder writes it)."""
    return h2wire.CachingEncoder().encode([h2hpack.RequestIdField(RID, value)])


@pytest.mark.parametrize(
    "name",
    [
        "hpack's form",  # same first bytes, the value Huffman-coded (length byte >= 0x80)
        "truncated id",  # (a block with nothing after the id is cached too)
        "id moved",  # the same fields around the id, the id one field earlier
        "literal after",  # a field entering the table after the id
        "two ids",
        "long index after",  # an index of two bytes (>= 127) after the id
        "long id",  # 127 bytes: the length takes two bytes (0x7f, 0x00)
        "empty id",
        "id of prefix bytes",
        "nothing after prefix",
        "index 0",
    ],
)
def test_foreign_blocks_decode_exactly(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that start like the fixed form but are something else (or are it, oddly) give
    what hpack's decoder gives, every time, and the cached block is still a hit after."""
    encoder, ours, theirs = _warm()
    head = encoder.encode(_backhaul(b"r2"))  # cached but for the id
    head = head[: head.index(b"\x10")]
    prefix = _rid(b"")[:-1]
    blocks = {
        "hpack's form": Encoder().encode([NeverIndexedHeaderTuple(RID, b"abc")]),
        "truncated id": head + prefix + b"\x05ab",
        "id moved": head[:-1] + _rid(b"a") + head[-1:] + b"\xbe",
        "literal after": head + _rid(b"a") + b"\x40\x01x\x01y\xbe",
        "two ids": head + _rid(b"a") + _rid(b"b"),
        "long index after": head + _rid(b"a") + b"\xff\x00",
        "long id": head + _rid(b"\xbe" * 127) + b"\xbe",
        "empty id": head + _rid(b"") + b"\xbe\xbe",
        "id of prefix bytes": head + _rid(prefix * 2) + b"\xbe",
        "nothing after prefix": head + prefix,
        "index 0": head + _rid(b"a") + b"\x80",
    }
    block = blocks[name]
    assert b"\x10\x8b" + prefix[2:] in block  # (hpack's form too: the same prefix)
    # blocks a wrong reading of those would be taken for: cached
    assert _same(ours, theirs, head + _rid(b"abcde")) == _typed(_expected(b"abcde")[:7])
    _same(ours, theirs, head + _rid(b"x") + b"\xbe\xbe")
    first = _same(ours, theirs, block)
    second = _same(ours, theirs, block)
    if name == "literal after":
        return  # (the table moved: the second decode differs, as in hpack; stale indexes)
    assert second == first
    calls = _count_full_decodes(monkeypatch)
    rid = b"%016x" % 99
    got = _same(ours, theirs, encoder.encode(_backhaul(rid)))
    assert got == _typed(_expected(rid))
    assert calls[0] == 1  # theirs; ours from the cache


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]), st.integers(0, 60), st.integers(0, 255)
        ),
        min_size=1,
        max_size=3,
    )
)
def test_damaged_blocks_decode_exactly(edits: list[tuple[str, int, int]]) -> None:
    """A cached backhaul block with bytes changed, added or removed: hpack's outcome, every
    time (a cache entry must never answer for a block it was not made from)."""
    encoder, ours, theirs = _warm()
    whole = encoder.encode(_backhaul(b"0123456789abcdef"))
    at = whole.index(b"\x10")
    for variant in (whole[:-1], whole[:at] + whole[-1:]):  # no roost-instance, no id: cached
        _same(ours, theirs, variant)
    block = bytearray(whole)
    for op, at, byte in edits:
        at %= len(block) + 1
        if op == "insert":
            block.insert(at, byte)
        elif at < len(block):
            if op == "set":
                block[at] = byte
            else:
                del block[at]
    for _ in range(2):
        _same(ours, theirs, bytes(block))


def test_list_limit_refuses_an_oversized_id() -> None:
    """The id counts in the header list size (32 + name + value) on a cache hit too: a block
    cached with a short id is refused with a long one, as hpack refuses it."""
    encoder, ours, theirs = _warm()
    small = encoder.encode(_backhaul(b"r2"))
    size = sum(32 + len(n) + len(v) for n, v in _expected(b"r2"))
    ours.max_header_list_size = theirs.max_header_list_size = size + 10
    assert _same(ours, theirs, small) == _typed(_expected(b"r2"))  # (a hit)
    for rid in (b"r" * 12, b"r" * 13, b"r" * 100):  # 10 bytes more than b"r2" fit, not 11
        got = _same(ours, theirs, encoder.encode(_backhaul(rid)))
        if len(rid) <= 12:
            assert got == _typed(_expected(rid))
        else:
            assert got[0] is OversizedHeaderListError
    ours.max_header_list_size = theirs.max_header_list_size = size - 1  # the cached one too
    assert _same(ours, theirs, small)[0] is OversizedHeaderListError


def test_host_sees_the_block_as_sent() -> None:
    """Through h2 (the edge's ``open_stream``, the host's connection): the fields in the
    edge's order, the id in neither side's dynamic table."""
    client = h2wire.new_connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    server = h2wire.new_connection(
        h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
    )
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for i in range(5):
        rid = b"%016x" % i
        sid = client.get_next_available_stream_id()
        h2wire.open_stream(client, sid, _backhaul(rid), True)
        events = server.receive_data(client.data_to_send())
        request = next(e for e in events if isinstance(e, ev.RequestReceived))
        assert _fields(request.headers) == _typed(_expected(rid))
    for table in (client.encoder.header_table, server.decoder.header_table):
        assert table.dynamic_entries
        assert all(name != RID for name, _ in table.dynamic_entries)
