"""Header policy: what crosses the edge, what is stripped, what is added."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.errors import ProxyError
from roost.proxy.forwarding import Forwarding, RequestIds
from roost.proxy.headers import (
    BODY_CHUNKED,
    BODY_NONE,
    BODY_RAW,
    HOP_BY_HOP,
    ResponseInfo,
    encode_head,
    frame_response,
    prepare_head,
    prepare_request,
    prepare_response,
)

TAIL = Forwarding(b"10.1.2.3", b"http", b"80", b"ams").tail()
IP = b"10.1.2.3"


def req(*headers: tuple[bytes, bytes], keep_expect: bool = True):  # type: ignore[no-untyped-def]
    return prepare_request(list(headers), TAIL, IP, b"rid1", keep_expect=keep_expect)


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def value(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def test_edge_headers_appended() -> None:
    """The edge stamps forwarding headers, Via, client IP, region and request id."""
    out, info = req((b"Host", b"demo.localhost"), (b"Accept", b"*/*"))
    assert out == [
        (b"Host", b"demo.localhost"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", IP),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Port", b"80"),
        (b"Via", b"1.1 roost"),
        (b"Roost-Client-IP", IP),
        (b"Roost-Region", b"ams"),
        (b"Roost-Request-Id", b"rid1"),
    ]
    assert info.host == b"demo.localhost"
    assert info.content_length is None and not info.chunked


def test_x_forwarded_for_chain_appended_not_trusted() -> None:
    """Client-sent XFF lines are merged, then the real client address appended."""
    out, _ = req((b"X-Forwarded-For", b"1.1.1.1"), (b"x-forwarded-for", b" 2.2.2.2 "))
    assert value(out, b"x-forwarded-for") == [b"1.1.1.1, 2.2.2.2, " + IP]


def test_client_forwarding_headers_replaced() -> None:
    """X-Forwarded-Proto/-Port from the client are replaced by the edge's."""
    out, _ = req((b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Port", b"443"))
    assert value(out, b"x-forwarded-proto") == [b"http"]
    assert value(out, b"x-forwarded-port") == [b"80"]


def test_roost_headers_stripped_any_case() -> None:
    """Every client roost-* header is dropped; the edge's own are the only ones left."""
    out, info = req(
        (b"Roost-Foo", b"x"),
        (b"ROOST-CLIENT-IP", b"6.6.6.6"),
        (b"roost-request-id", b"forged"),
        (b"Roost-Force-Instance-Id", b" i-7 "),
    )
    assert value(out, b"roost-client-ip") == [IP]
    assert value(out, b"roost-request-id") == [b"rid1"]
    assert b"roost-foo" not in names(out)
    assert b"roost-force-instance-id" not in names(out)
    assert info.force_instance == b"i-7"


def test_hop_by_hop_and_connection_named_stripped() -> None:
    """Connection, the headers it names, and the fixed hop-by-hop set are dropped."""
    out, _ = req(
        (b"X-Private", b"1"),
        (b"Connection", b"keep-alive, X-Private, Upgrade"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-T"),
        (b"Upgrade", b"websocket"),
        (b"X-Kept", b"yes"),
    )
    kept = names(out)
    assert not set(kept) & (HOP_BY_HOP | {b"x-private"})
    assert b"x-kept" in kept


def test_connection_cannot_strip_framing_or_host() -> None:
    """Naming Content-Length or Host in Connection does not drop them (smuggling)."""
    out, info = req(
        (b"Host", b"a"), (b"Content-Length", b"5"), (b"Connection", b"content-length, host")
    )
    assert value(out, b"content-length") == [b"5"]
    assert value(out, b"host") == [b"a"]
    assert info.content_length == 5


def test_chunked_reframed() -> None:
    """Transfer-Encoding: chunked is recognised (any case) and re-added once."""
    out, info = req((b"Transfer-Encoding", b"Chunked "))
    assert info.chunked
    assert value(out, b"transfer-encoding") == [b"chunked"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Transfer-Encoding", b"gzip, chunked")],
        [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
        [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")],
        [(b"Content-Length", b"3"), (b"Content-Length", b"3")],
        [(b"Content-Length", b"3"), (b"Content-Length", b"4")],
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"1,1")],
        [(b"Host", b"a"), (b"Host", b"b")],
    ],
)
def test_ambiguous_framing_rejected(headers: list[tuple[bytes, bytes]]) -> None:
    """Ambiguous framing or several Hosts: a 400 that closes the connection."""
    with pytest.raises(ProxyError) as caught:
        req(*headers)
    assert caught.value.status == 400 and caught.value.close


def test_expect_continue_kept_or_dropped() -> None:
    """Expect: 100-continue is forwarded for HTTP/1.1 clients, dropped for HTTP/1.0."""
    out, info = req((b"Expect", b"100-Continue"))
    assert info.expect_continue and value(out, b"expect") == [b"100-Continue"]
    out, info = req((b"Expect", b"100-continue"), keep_expect=False)
    assert info.expect_continue and value(out, b"expect") == []
    out, info = req((b"Expect", b"something-else"))
    assert not info.expect_continue and value(out, b"expect") == []


def test_response_cleaned_and_framing_read() -> None:
    """Responses lose hop-by-hop and roost-* headers, gain Via and the request id."""
    out, info = prepare_response(
        [
            (b"Content-Type", b"text/plain"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Roost-Internal", b"x"),
            (b"Trailer", b"X-T"),
        ],
        b"rid9",
    )
    assert out == [
        (b"Content-Type", b"text/plain"),
        (b"Via", b"1.1 roost"),
        (b"Roost-Request-Id", b"rid9"),
    ]
    assert info.chunked and info.content_length is None and info.bad_framing is None


def test_response_content_length() -> None:
    """Content-Length is kept and read; an identical duplicate collapses to one."""
    out, info = prepare_response([(b"Content-Length", b"12"), (b"content-length", b"12")], b"r")
    assert info.content_length == 12 and value(out, b"content-length") == [b"12"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Content-Length", b"1"), (b"Content-Length", b"2")],
        [(b"Content-Length", b"x")],
    ],
)
def test_response_bad_framing_flagged(headers: list[tuple[bytes, bytes]]) -> None:
    """A response the edge cannot frame is flagged (it becomes a 502)."""
    assert prepare_response(headers, b"r")[1].bad_framing is not None


def test_encode_head() -> None:
    """The head is the first line, header lines and a blank line."""
    head = encode_head(b"GET / HTTP/1.1\r\n", [(b"Host", b"a"), (b"X", b"1")])
    assert head == b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"


def test_request_ids_unique_and_prefixed() -> None:
    """Ids are short, share the edge's prefix and never repeat."""
    ids = RequestIds(b"abcd1234")
    many = [ids.next() for _ in range(1000)]
    assert len(set(many)) == 1000
    assert all(i.startswith(b"abcd1234") and len(i) == 16 for i in many)


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-", min_size=1, max_size=12)
header_names = st.one_of(
    token, st.sampled_from(["Roost-X", "roost-client-ip", "Connection", "Keep-Alive", "Upgrade"])
)
header_values = st.text(alphabet="abcdefghijklmnop ,;=", max_size=20)


@given(st.lists(st.tuples(header_names, header_values), max_size=15))
def test_no_client_roost_or_hop_header_survives(headers: list[tuple[str, str]]) -> None:
    """Property: whatever the client sends, only the edge's roost-* headers go upstream,
    no fixed hop-by-hop header does, and X-Forwarded-For ends with the client address."""
    raw = [(n.encode(), v.encode()) for n, v in headers]
    try:
        out, _ = prepare_request(raw, TAIL, IP, b"rid", keep_expect=True)
    except ProxyError:
        return
    roost = [(n.lower(), v) for n, v in out if n.lower().startswith(b"roost-")]
    assert roost == [
        (b"roost-client-ip", IP),
        (b"roost-region", b"ams"),
        (b"roost-request-id", b"rid"),
    ]
    assert not set(names(out)) & (HOP_BY_HOP - {b"transfer-encoding"})
    assert value(out, b"x-forwarded-for")[0].endswith(IP)


def head(method: bytes, version: str, target: bytes, *headers: tuple[bytes, bytes], **kw: bool):  # type: ignore[no-untyped-def]
    return prepare_head(method, version, target, list(headers), TAIL, IP, b"rid", **kw)


def test_prepare_head_builds_http11_request_line() -> None:
    """The upstream head is always HTTP/1.1, with the checked, rewritten headers."""
    data, info = head(b"GET", "1.0", b"/x?y", (b"Host", b"a"))
    assert data.startswith(b"GET /x?y HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: ")
    assert data.endswith(b"Roost-Request-Id: rid\r\n\r\n")
    assert info.host == b"a"


def test_prepare_head_absolute_form() -> None:
    """An absolute-form target routes by its authority and goes on in origin-form."""
    data, info = head(b"GET", "1.1", b"http://Demo.localhost:8080/p?q=1", (b"Host", b"x"))
    assert info.host == b"Demo.localhost:8080"
    assert data.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: Demo.localhost:8080\r\n")
    data, info = head(b"GET", "1.0", b"http://a.localhost")
    assert data.startswith(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n")


@pytest.mark.parametrize(
    ("args", "status"),
    [
        ((b"GET", "2.0", b"/", (b"Host", b"a")), 505),
        ((b"GET", "0.9", b"/"), 505),
        ((b"CONNECT", "1.1", b"a:443", (b"Host", b"a")), 405),
        ((b"GET", "1.1", b"/"), 400),
        ((b"GET", "1.1", b"ftp://a/"), 400),
        ((b"GET", "1.1", b"a.localhost/"), 400),
    ],
)
def test_prepare_head_refusals(args: tuple, status: int) -> None:  # type: ignore[type-arg]
    """Wrong versions, CONNECT, missing Host and odd targets are refused."""
    with pytest.raises(ProxyError) as caught:
        head(*args)
    assert caught.value.status == status


def test_prepare_head_options_star_and_http10_without_host() -> None:
    """OPTIONS * is a valid target; HTTP/1.0 may omit Host."""
    data, _ = head(b"OPTIONS", "1.1", b"*", (b"Host", b"a"))
    assert data.startswith(b"OPTIONS * HTTP/1.1\r\n")
    _, info = head(b"GET", "1.0", b"/")
    assert info.host is None


def test_prepare_head_upgrade_with_body_refused() -> None:
    """llhttp does not parse an Upgrade request's body, so such a request is refused."""
    upgrade = (b"Upgrade", b"h2c")
    head(b"GET", "1.1", b"/", (b"Host", b"a"), upgrade, upgrade=True)
    with pytest.raises(ProxyError):
        head(b"POST", "1.1", b"/", (b"Host", b"a"), (b"Content-Length", b"3"), upgrade=True)


@pytest.mark.parametrize(
    ("status", "is_head", "cl", "chunked", "http10", "close", "want"),
    [
        (200, False, 5, False, False, False, (BODY_RAW, False, [])),
        (200, False, None, True, False, False, (BODY_CHUNKED, False, [b"Transfer-Encoding"])),
        (200, False, None, False, False, False, (BODY_CHUNKED, False, [b"Transfer-Encoding"])),
        (200, False, None, True, True, False, (BODY_RAW, True, [b"Connection"])),
        (200, False, 5, False, True, False, (BODY_RAW, False, [b"Connection"])),
        (200, True, 5, False, False, False, (BODY_NONE, False, [])),
        (200, True, None, True, False, False, (BODY_NONE, False, [b"Transfer-Encoding"])),
        (204, False, None, False, False, False, (BODY_NONE, False, [])),
        (304, False, 10, False, False, True, (BODY_NONE, True, [b"Connection"])),
    ],
)
def test_frame_response(
    status: int,
    is_head: bool,
    cl: int | None,
    chunked: bool,
    http10: bool,
    close: bool,
    want: tuple[int, bool, list[bytes]],
) -> None:
    """Response framing towards the client, for each kind of response and client."""
    headers: list[tuple[bytes, bytes]] = []
    info = ResponseInfo(content_length=cl, chunked=chunked)
    mode, close_after = frame_response(
        headers, info, status, head=is_head, http10=http10, close=close
    )
    assert (mode, close_after, [n for n, _ in headers]) == want


def test_forwarding_tail_is_shared_and_bounded() -> None:
    from roost.proxy import forwarding as headers

    a = headers.forwarding_tail(b"10.0.0.1", b"http", b"80", b"ams")
    assert a == headers.Forwarding(b"10.0.0.1", b"http", b"80", b"ams").tail()
    assert headers.forwarding_tail(b"10.0.0.1", b"http", b"80", b"ams") is a
    assert headers.forwarding_tail(b"10.0.0.2", b"http", b"80", b"ams") != a
    for i in range(headers._TAILS_MAX + 10):
        headers.forwarding_tail(b"%d" % i, b"http", b"80", b"ams")
    assert len(headers._TAILS) <= headers._TAILS_MAX


def test_name_kinds_classify_once_and_stay_bounded() -> None:
    from roost.proxy.headers import NameKinds

    seen: list[bytes] = []

    def classify(lname: bytes) -> str:
        seen.append(lname)
        return "look" if lname == b"host" else "keep"

    kinds = NameKinds(classify, cap=2)
    assert kinds[b"Host"] == "look" and kinds[b"Host"] == "look"
    assert seen == [b"host"]  # classified once, by its lower-cased name
    assert kinds[b"X-A"] == "keep" and kinds[b"X-B"] == "keep" and kinds[b"X-B"] == "keep"
    assert len(kinds) == 2 and seen == [b"host", b"x-a", b"x-b", b"x-b"]  # full: not stored
