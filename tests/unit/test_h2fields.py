"""The h2 codec's field helpers: the one-pass request check never accepts what h2's validator
or the CR/LF/NUL guard would reject, and the HTTP/1.1 <-> HTTP/2 field conversions."""

from __future__ import annotations

import h2.exceptions
import pytest
from h2.utilities import HeaderValidationFlags, validate_headers
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy.h2fields import plainly_valid, response_fields, to_http1
from roost.proxy.h2hpack import RequestIdField
from roost.proxy.h2limits import bad_field_value
from roost.proxy.headers import HOP_BY_HOP
from roost.proxy.http2 import H2ClientConnection

REQUEST = HeaderValidationFlags(False, False, False, False)
GET = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"app.localhost"),
    (b":path", b"/"),
]


def h2_accepts(headers: list[tuple[bytes, bytes]]) -> bool:
    try:
        for _ in validate_headers(headers, REQUEST):
            pass
    except h2.exceptions.ProtocolError:
        return False
    return bad_field_value(headers) is None


NAMES = st.sampled_from(
    [
        b":method",
        b":scheme",
        b":authority",
        b":path",
        b":protocol",
        b":status",
        b":",
        b"",
        b"host",
        b"te",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"user-agent",
        b"Accept",
        b"x:y",
        b"a b",
        b"caf\xc3\xa9",
        b"content-length",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"GET",
            b"CONNECT",
            b"http",
            b"/",
            b"app.localhost",
            b"other",
            b"trailers",
            b"TRAILERS",
            b"gzip",
            b" x",
            b"x\t",
            b"a\r\nb",
            b"a\x00",
            b"\n",
        ]
    ),
    st.binary(max_size=6),
)
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=8)


@settings(max_examples=1500, deadline=None)
@given(prefix=st.booleans(), fields=FIELDS)
def test_never_accepts_what_the_full_checks_reject(
    prefix: bool, fields: list[tuple[bytes, bytes]]
) -> None:
    """plainly_valid(block) implies h2's request validation and the guard both pass."""
    block = [*GET, *fields] if prefix else fields
    if plainly_valid(block):
        assert h2_accepts(block), block


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [(b"user-agent", b"h2load nghttp2/1.52.0"), (b"accept", b"*/*")],
        [(b"content-length", b"3"), (b"te", b"trailers")],
        [(b"host", b"app.localhost"), (b"x-empty", b"")],
    ],
)
def test_ordinary_requests_take_the_fast_path(extra: list[tuple[bytes, bytes]]) -> None:
    """Ordinary requests (HeaderTuples, as h2 decodes them) pass the one-pass check."""
    block = [HeaderTuple(n, v) for n, v in [*GET, *extra]]
    assert plainly_valid(block) and h2_accepts(block)


@pytest.mark.parametrize(
    "block",
    [
        [(b":method", b"CONNECT"), (b":authority", b"h:1")],
        [*GET, (b":protocol", b"websocket")],
        [*GET, (b"te", b"gzip")],
        [*GET, (b"connection", b"close")],
        [*GET, (b"host", b"other")],
        [*GET, (b"host", b"app.localhost"), (b"host", b"app.localhost")],
        [*GET, (b":path", b"/again")],
        [(b"x-a", b"1"), *GET],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"")],
        [*GET, (b"x-a", b" padded")],
        [*GET, (b"x-a", b"a\nb")],
        [*GET, (b"X-Upper", b"1")],
        [(b":method", b"GET"), (b":authority", b"a"), (b":path", b"/")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")],
    ],
)
def test_unusual_requests_go_to_the_full_checks(block: list[tuple[bytes, bytes]]) -> None:
    """Anything unusual (valid or not) answers False: the full checks decide and explain."""
    assert not plainly_valid(block)


def test_to_http1_puts_authority_first_as_host() -> None:
    """:authority becomes the first field (replacing host); fields come back as plain tuples."""
    block = [HeaderTuple(n, v) for n, v in GET] + [
        HeaderTuple(b"host", b"app.localhost"),
        NeverIndexedHeaderTuple(b"cookie", b"a=1"),
    ]
    method, target, fields = to_http1(block, ended=True)
    assert (method, target) == (b"GET", b"/")
    assert fields == [(b"host", b"app.localhost"), (b"cookie", b"a=1")]
    assert all(type(f) is tuple for f in fields)


def test_to_http1_chunks_an_unsized_body() -> None:
    """A body without content-length is chunked upstream; a sized or absent one is not."""
    post = [(b":method", b"POST"), (b":path", b"/up"), (b":authority", b"a")]
    assert to_http1(post, ended=False)[2][-1] == (b"transfer-encoding", b"chunked")
    sized = [*post, (b"content-length", b"3")]
    assert (b"transfer-encoding", b"chunked") not in to_http1(sized, ended=False)[2]
    assert (b"transfer-encoding", b"chunked") not in to_http1(post, ended=True)[2]


def test_response_fields() -> None:
    """Lower-case names, hop-by-hop fields dropped, the request id never indexed."""
    out = response_fields(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"keep-alive"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Roost-Request-Id", b"abc"),
        ]
    )
    assert out == [(b"content-type", b"text/plain"), (b"roost-request-id", b"abc")]
    assert isinstance(out[1], NeverIndexedHeaderTuple) and not out[1].indexable


RESPONSE_NAMES = st.sampled_from(
    [
        b"Content-Type",
        b"content-type",
        b"CONTENT-TYPE",
        b"Connection",
        b"KEEP-ALIVE",
        b"Transfer-Encoding",
        b"te",
        b"Trailer",
        b"Upgrade",
        b"Proxy-Connection",
        b"Roost-Request-Id",
        b"roost-request-id",
        b"X-\xc3\xa9",
        b"Server",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.tuples(RESPONSE_NAMES, st.binary(max_size=3)), max_size=6), max_size=4),
    st.sampled_from([None, 200, 404, 103, 599]),
)
def test_response_fields_as_computed_afresh(blocks: list, status: int | None) -> None:
    """Names remembered between calls give what lower() and the hop-by-hop set give; with a
    status, ``:status`` leads."""
    for block in blocks:
        out = response_fields(block, status)
        expected = [(n.lower(), v) for n, v in block if n.lower() not in HOP_BY_HOP]
        lead = [] if status is None else [(b":status", str(status).encode())]
        assert out == [*lead, *expected]
        ids = [f for f in out if f[0] == b"roost-request-id"]
        assert all(type(f) is RequestIdField for f in ids)
        assert all(type(f) is tuple for f in out if f[0] != b"roost-request-id")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    GET,
                    [*GET, (b"content-length", b"3")],
                    [*GET, (b"host", b"other")],
                    [HeaderTuple(n, v) for n, v in GET],
                    [*GET[:3], (b":path", b"/b")],
                ]
            ),
            st.booleans(),
        ),
        max_size=8,
    )
)
def test_codec_reuses_to_http1_exactly(requests: list) -> None:
    """The codec's remembered conversion of the last block gives to_http1's answer, and a
    copy of its fields (the exchange may keep or change them)."""

    class Conn:
        _last_http1 = None

    conn = Conn()
    for block, ended in requests:
        got = H2ClientConnection._http1(conn, list(block), ended)  # type: ignore[arg-type]
        assert got == to_http1(list(block), ended)
        got[2].append((b"x-mutated", b"1"))  # not seen by the next request
