"""Fuzzing the ClientHello reader with hypothesis: no exception escapes, memory stays bounded."""

from __future__ import annotations

import contextlib
import ssl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.proxy.tls.clienthello import ClientHello, ClientHelloReader, NeedMore, Reject

MAX_HANDSHAKE = 2048


def _real_hellos() -> list[bytes]:
    out = []
    for name, alpn in (("fuzz.example.com", ["h2", "http/1.1"]), (None, None)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.do_handshake()
        out.append(outgoing.read())
    return out


HELLOS = _real_hellos()


def check_bounded_feeds(data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` in pieces; every result is a known type and buffers stay within bounds."""
    reader = ClientHelloReader(max_handshake=MAX_HANDSHAKE)
    last = 0
    first: NeedMore | ClientHello | Reject = NeedMore()
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        piece = data[last:cut] if cut >= last else b""
        last = max(last, cut)
        result = reader.feed(piece)
        if not isinstance(first, NeedMore):
            assert result is first  # a result is final: later feeds change nothing
            continue
        first = result
        assert isinstance(result, NeedMore | ClientHello | Reject)
        assert len(reader._handshake) <= MAX_HANDSHAKE + 4
        assert sum(map(len, reader._chunks)) <= reader.max_raw + len(piece)
        if isinstance(result, Reject):
            assert result.reason and 0 <= result.alert < 256
        if isinstance(result, ClientHello):
            assert result.raw == data[:last]
            assert result.server_name is None or 0 < len(result.server_name) <= 253


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.lists(st.integers(0, 5000), max_size=8))
def test_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes in arbitrary feeds: no exception, bounded buffers."""
    check_bounded_feeds(data, cuts)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64), st.lists(st.integers(0, 5000), max_size=4))
def test_handshake_prefixed_bytes(body: bytes, cuts: list[int]) -> None:
    """Valid record + handshake headers around random bodies reach the body parser."""
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    data = b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs
    check_bounded_feeds(data, cuts)


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(HELLOS))),
    st.lists(mutation, min_size=1, max_size=6),
    st.lists(st.integers(0, 5000), max_size=6),
)
def test_mutated_real_hellos(
    which: int, mutations: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    """Real hellos with bytes flipped, set, inserted, deleted or cut: no exception escapes."""
    data = bytearray(HELLOS[which])
    for op, pos, value in mutations:
        pos %= len(data) + 1
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << (value % 8)
        elif op == "set" and pos < len(data):
            data[pos] = value
        elif op == "insert":
            data[pos:pos] = bytes((value,))
        elif op == "delete" and pos < len(data):
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    check_bounded_feeds(bytes(data), cuts)


@settings(max_examples=200)
@given(st.integers(1, (1 << 24) - 1))
def test_huge_declared_lengths_are_refused_without_buffering(declared: int) -> None:
    """Any declared hello larger than the limit is refused on its header alone."""
    reader = ClientHelloReader(max_handshake=MAX_HANDSHAKE)
    header = b"\x16\x03\x01\x40\x00\x01" + declared.to_bytes(3, "big")
    result = reader.feed(header)
    if declared > MAX_HANDSHAKE:
        assert isinstance(result, Reject) and len(reader._handshake) == 0
    else:
        assert isinstance(result, NeedMore)
