"""Header policy for requests and responses crossing the edge (pure: bytes in, bytes out).

Headers are lists of ``(name, value)`` byte pairs exactly as parsed (original case and
order). One pass over a request's headers both *checks* what the edge must understand
(Host, framing, Expect) and *rewrites* the list sent upstream:

- hop-by-hop headers are dropped: ``Connection`` and every header it names,
  ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Upgrade`` and
  ``Transfer-Encoding`` (the body is re-framed, and ``Transfer-Encoding: chunked``
  re-added when the body is chunked); an upgrade request (other than ``h2c``) gets
  ``Connection: upgrade`` and its ``Upgrade`` back, for the instance to accept with 101;
- every client-sent ``roost-*`` header is dropped (``Roost-Force-Instance-Id`` is read
  first: it is a routing request to the edge, never forwarded);
- ``X-Forwarded-For`` gets the client address appended to the chain the client sent (the
  chain is kept, never trusted); ``X-Forwarded-Proto``/``-Port``, ``Via``,
  ``Roost-Client-IP``, ``Roost-Region`` and ``Roost-Request-Id`` are set by the edge
  (the per-connection ones come from :mod:`roost.proxy.forwarding`).

Responses lose their hop-by-hop and ``roost-*`` headers and gain ``Via`` and
``Roost-Request-Id``; the HTTP/1 codec adds framing and ``Connection`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httptools

from roost.proxy import errors

__all__ = [
    "HOP_BY_HOP",
    "KEEP",
    "NameKinds",
    "RequestInfo",
    "ResponseInfo",
    "encode_head",
    "frame_response",
    "prepare_head",
    "prepare_request",
    "prepare_response",
]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
VIA = b"1.1 roost"
_OWS = b" \t"

# Request header names that need more than "keep it" (all lower-case).
_HOST = b"host"
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_CONNECTION = b"connection"
_EXPECT = b"expect"
_XFF = b"x-forwarded-for"
_FORCE_INSTANCE = b"roost-force-instance-id"
_REFUSED = b"roost-refused"
# Connection may name extra hop-by-hop headers, but never these: dropping a framing header
# because a client listed it would be a request-smuggling gift.
_NEVER_NAMED = HOP_BY_HOP | {b"close", _HOST, _CONTENT_LENGTH}
# Connection values naming nothing beyond the usual hop-by-hop headers (the common case)
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade"})
_REQUEST_SPECIAL = HOP_BY_HOP | {
    _HOST,
    _CONTENT_LENGTH,
    _EXPECT,
    _XFF,
    b"x-forwarded-proto",
    b"x-forwarded-port",
}


@dataclass(slots=True)
class RequestInfo:
    """What the edge needs from a request's headers."""

    host: bytes | None = None
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    force_instance: bytes | None = None
    instance: bytes | None = None  # Roost-Instance (backhaul requests only)
    upgrade: bytes | None = None  # the Upgrade header of a tunnel-able request


@dataclass(slots=True)
class ResponseInfo:
    """What the HTTP/1 codec needs from a response's headers to frame it."""

    content_length: int | None = None
    chunked: bool = False
    bad_framing: str | None = None
    refused: bytes | None = None  # Roost-Refused (trusted only from a host proxy)


class NameKinds(dict[bytes, str]):
    """Header names as sent (exact bytes) -> what a pass over headers does with them, found by
    ``classify(lower-cased name)`` the first time a name is seen. Names repeat across requests
    ("Host", "User-Agent", ...): one lookup instead of ``lower()`` and set tests per header.
    Bounded: past ``cap`` names (a client inventing them), new ones are classified each time
    and not stored."""

    __slots__ = ("_cap", "_classify")

    def __init__(self, classify: Callable[[bytes], str], cap: int = 4096) -> None:
        super().__init__()
        self._classify = classify
        self._cap = cap

    def __missing__(self, name: bytes) -> str:
        kind = self._classify(name.lower())
        if len(self) < self._cap:
            self[name] = kind
        return kind


KEEP = "keep"  # a kind every NameKinds user has: forwarded as is, nothing to check
_SPECIAL, _ROOST, _LENGTH = "special", "roost", "length"


def _request_kind(lname: bytes) -> str:
    if lname in _REQUEST_SPECIAL:
        return _SPECIAL
    return _ROOST if lname.startswith(b"roost-") else KEEP


def _response_kind(lname: bytes) -> str:
    if lname in HOP_BY_HOP:
        return _SPECIAL
    if lname.startswith(b"roost-"):
        return _ROOST
    return _LENGTH if lname == _CONTENT_LENGTH else KEEP


_REQUEST_KINDS = NameKinds(_request_kind)  # what prepare_request does with a name
_RESPONSE_KINDS = NameKinds(_response_kind)  # ... and prepare_response


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip(_OWS) for t in value.lower().split(b",")]


def prepare_request(
    headers: Headers,
    fwd_tail: tuple[tuple[bytes, bytes], ...],
    client_ip: bytes,
    request_id: bytes,
    *,
    keep_expect: bool = True,
) -> tuple[Headers, RequestInfo]:
    """Check a request's headers and build the list to send upstream.

    ``fwd_tail`` is :meth:`Forwarding.tail` of the connection. Raises
    :class:`errors.ProxyError` (400) for ambiguous framing: several Host or
    Content-Length headers, a Transfer-Encoding other than exactly ``chunked``, or both
    Content-Length and Transfer-Encoding (llhttp rejects most of these already; this
    keeps the rule in one readable place). ``keep_expect=False`` drops ``Expect`` (HTTP/1.0
    clients, which must not get a ``100 Continue``).
    """
    info = RequestInfo()
    out: Headers = []
    append = out.append
    xff: bytes | None = None
    named: set[bytes] | None = None  # headers named by Connection beyond the usual ones
    kinds = _REQUEST_KINDS
    for name, value in headers:
        kind = kinds[name]
        if kind is KEEP:
            append((name, value))
            continue
        lname = name.lower()
        if kind is _SPECIAL:
            if lname == _HOST:
                if info.host is not None:
                    raise errors.bad_request("more than one Host header")
                info.host = value.strip(_OWS)
                out.append((name, info.host))
            elif lname == _CONTENT_LENGTH:
                if info.content_length is not None:
                    raise errors.bad_request("more than one Content-Length header")
                text = value.strip(_OWS)
                if not text.isdigit():
                    raise errors.bad_request("invalid Content-Length")
                info.content_length = int(text)
                out.append((name, text))
            elif lname == _TRANSFER_ENCODING:
                if info.chunked or value.strip(_OWS).lower() != b"chunked":
                    raise errors.bad_request("only 'Transfer-Encoding: chunked' is accepted")
                info.chunked = True
            elif lname == _EXPECT:
                if value.strip(_OWS).lower() == b"100-continue":
                    info.expect_continue = True
                    if keep_expect:
                        out.append((name, value))
            elif lname == _XFF:
                value = value.strip(_OWS)
                xff = value if xff is None else xff + b", " + value
            elif lname == _CONNECTION and value not in _PLAIN_CONNECTION:
                for token in _tokens(value):
                    if token and token not in _NEVER_NAMED:
                        named = {token} if named is None else named | {token}
            # every other special name is hop-by-hop or replaced below: dropped
        elif lname == _FORCE_INSTANCE:  # every other roost-* is dropped
            info.force_instance = value.strip(_OWS)
    if info.chunked and info.content_length is not None:
        raise errors.bad_request("both Content-Length and Transfer-Encoding")
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
    if info.chunked:
        out.append((b"Transfer-Encoding", b"chunked"))
    out.append((b"X-Forwarded-For", client_ip if xff is None else xff + b", " + client_ip))
    out.extend(fwd_tail)
    out.append((b"Roost-Request-Id", request_id))
    return out, info


def prepare_head(
    method: bytes,
    version: str,
    target: bytes,
    headers: Headers,
    fwd_tail: tuple[tuple[bytes, bytes], ...],
    client_ip: bytes,
    request_id: bytes,
    *,
    upgrade: bool = False,
) -> tuple[bytes, RequestInfo]:
    """Check a whole request head and build the head to send upstream.

    Adds to :func:`prepare_request`: HTTP/1.0 or 1.1 only (505), no CONNECT (405), a Host
    header on HTTP/1.1 (400), an absolute-form target turned into origin-form with its
    authority as Host, no body on an Upgrade request (llhttp would not parse it). The
    upstream head is always HTTP/1.1. ``info.host`` is the host to route by.
    """
    if version != "1.1" and version != "1.0":
        raise errors.version_not_supported(version)
    if method == b"CONNECT":
        raise errors.method_not_allowed("CONNECT")
    http10 = version == "1.0"
    out, info = prepare_request(headers, fwd_tail, client_ip, request_id, keep_expect=not http10)
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
        authority, target = _origin_form(target)
        if info.host is None:
            out.insert(0, (b"Host", authority))
        else:
            out = [(n, authority if n.lower() == _HOST else v) for n, v in out]
        info.host = authority
    elif info.host is None and not http10:
        raise errors.bad_request("missing Host header")
    if upgrade:
        if info.chunked or info.content_length:
            raise errors.bad_request("Upgrade request with a body")
        for name, value in headers:
            if name.lower() == b"upgrade" and b"h2c" not in value.lower():
                info.upgrade = value
                out += ((b"Connection", b"upgrade"), (b"Upgrade", value))
                break
    return encode_head(method + b" " + target + b" HTTP/1.1\r\n", out), info


def _origin_form(target: bytes) -> tuple[bytes, bytes]:
    """``(authority, origin-form target)`` of an absolute-form request target."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise errors.bad_request("invalid request target") from None
    if url.schema not in (b"http", b"https") or not url.host:
        raise errors.bad_request("invalid request target")
    host = url.host if url.port is None else b"%s:%d" % (url.host, url.port)
    path = url.path or b"/"
    return host, path + b"?" + url.query if url.query is not None else path


def prepare_response(headers: Headers, request_id: bytes | None) -> tuple[Headers, ResponseInfo]:
    """Strip a response's hop-by-hop and ``roost-*`` headers; read its framing.

    ``Roost-Refused`` is noted in ``info.refused`` (the edge trusts it only on a backhaul
    connection; the host proxy strips it from instances' responses like every ``roost-*``).
    ``request_id=None`` (the host proxy) adds neither ``Via`` nor ``Roost-Request-Id``.
    """
    info = ResponseInfo()
    out: Headers = []
    append = out.append
    named: set[bytes] | None = None
    kinds = _RESPONSE_KINDS
    for name, value in headers:
        kind = kinds[name]
        if kind is KEEP:
            append((name, value))
            continue
        lname = name.lower()
        if kind is _SPECIAL:
            if lname == _TRANSFER_ENCODING:
                if value.strip(_OWS).lower() == b"chunked" and not info.chunked:
                    info.chunked = True
                else:
                    info.bad_framing = "unsupported Transfer-Encoding"
            elif lname == _CONNECTION and value not in _PLAIN_CONNECTION:
                for token in _tokens(value):
                    if token and token not in _NEVER_NAMED:
                        named = {token} if named is None else named | {token}
        elif kind is _ROOST:
            if lname == _REFUSED:
                info.refused = value
        else:  # Content-Length
            text = value.strip(_OWS)
            if not text.isdigit() or (
                info.content_length is not None and int(text) != info.content_length
            ):
                info.bad_framing = "invalid Content-Length"
                continue
            if info.content_length is not None:
                continue  # an identical duplicate: keep one
            info.content_length = int(text)
            append((name, value))
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
    if request_id is not None:
        out.append((b"Via", VIA))
        out.append((b"Roost-Request-Id", request_id))
    return out, info


BODY_NONE, BODY_RAW, BODY_CHUNKED = 0, 1, 2  # how a response body goes to the client


def frame_response(
    headers: Headers, info: ResponseInfo, status: int, *, head: bool, http10: bool, close: bool
) -> tuple[int, bool]:
    """Frame a response for the client: append framing and ``Connection`` headers to
    ``headers`` and return ``(BODY_*, close_after)``.

    HEAD/204/304 have no body (their Content-Length is kept as sent); a Content-Length
    body is relayed as is; otherwise the body is chunked to an HTTP/1.1 client (even if the
    instance delimited it by closing) and close-delimited to an HTTP/1.0 one.
    """
    if head or status == 204 or status == 304:
        mode = BODY_NONE
        if info.chunked and not http10:
            headers.append((b"Transfer-Encoding", b"chunked"))
    elif info.content_length is not None:
        mode = BODY_RAW
    elif not http10:
        mode = BODY_CHUNKED
        headers.append((b"Transfer-Encoding", b"chunked"))
    else:
        mode, close = BODY_RAW, True  # close-delimited
    if close:
        headers.append((b"Connection", b"close"))
    elif http10:
        headers.append((b"Connection", b"keep-alive"))
    return mode, close


def encode_head(first_line: bytes, headers: Headers) -> bytes:
    """``first_line`` (with its CRLF), the header lines and the blank line, as one bytes."""
    if not headers:
        return first_line + b"\r\n"
    return first_line + b"\r\n".join(map(_COLON_SP.join, headers)) + b"\r\n\r\n"


_COLON_SP = b": "
