"""Header policy for requests and responses crossing the edge (pure: bytes in, bytes out).

Headers are lists of ``(name, value)`` byte pairs exactly as parsed (original case and
order). One pass over a request's headers both *checks* what the edge must understand
(Host, framing, Expect) and *rewrites* the list sent upstream:

- hop-by-hop headers are dropped: ``Connection`` and every header it names,
  ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Upgrade`` (the edge does
  not proxy upgrades yet) and ``Transfer-Encoding`` (the body is re-framed, and
  ``Transfer-Encoding: chunked`` re-added when the body is chunked);
- every client-sent ``roost-*`` header is dropped (``Roost-Force-Instance-Id`` is read
  first: it is a routing request to the edge, never forwarded);
- ``X-Forwarded-For`` gets the client address appended to the chain the client sent (the
  chain is kept, never trusted); ``X-Forwarded-Proto``/``-Port``, ``Via``,
  ``Roost-Client-IP``, ``Roost-Region`` and ``Roost-Request-Id`` are set by the edge.

Responses lose their hop-by-hop and ``roost-*`` headers and gain ``Via`` and
``Roost-Request-Id``; the HTTP/1 codec adds framing and ``Connection`` itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from roost.proxy import errors

__all__ = [
    "HOP_BY_HOP",
    "Forwarding",
    "RequestIds",
    "RequestInfo",
    "ResponseInfo",
    "encode_head",
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
# Connection may name extra hop-by-hop headers, but never these: dropping a framing header
# because a client listed it would be a request-smuggling gift.
_NEVER_NAMED = HOP_BY_HOP | {b"close", _HOST, _CONTENT_LENGTH}
_REQUEST_SPECIAL = HOP_BY_HOP | {
    _HOST,
    _CONTENT_LENGTH,
    _EXPECT,
    _XFF,
    b"x-forwarded-proto",
    b"x-forwarded-port",
}


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Per-connection facts the edge stamps on every request (all as header bytes)."""

    client_ip: bytes
    proto: bytes
    port: bytes
    region: bytes

    def tail(self) -> tuple[tuple[bytes, bytes], ...]:
        """The constant headers appended to every request from this connection."""
        return (
            (b"X-Forwarded-Proto", self.proto),
            (b"X-Forwarded-Port", self.port),
            (b"Via", VIA),
            (b"Roost-Client-IP", self.client_ip),
            (b"Roost-Region", self.region),
        )


class RequestIds:
    """Short unique request ids: a random per-process prefix (passed in) + a counter."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        """The next id, e.g. ``b"9f2c41d0000003e8"``."""
        return b"%s%08x" % (self._prefix, next(self._counter) & 0xFFFFFFFF)


@dataclass(slots=True)
class RequestInfo:
    """What the edge needs from a request's headers."""

    host: bytes | None = None
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    force_instance: bytes | None = None


@dataclass(slots=True)
class ResponseInfo:
    """What the HTTP/1 codec needs from a response's headers to frame it."""

    content_length: int | None = None
    chunked: bool = False
    bad_framing: str | None = None


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
    xff: bytes | None = None
    named: set[bytes] | None = None  # headers named by Connection beyond the usual ones
    for name, value in headers:
        lname = name.lower()
        if lname in _REQUEST_SPECIAL:
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
            elif lname == _CONNECTION:
                for token in _tokens(value):
                    if token and token not in _NEVER_NAMED:
                        named = {token} if named is None else named | {token}
            # every other special name is hop-by-hop or replaced below: dropped
        elif lname.startswith(b"roost-"):
            if lname == _FORCE_INSTANCE:
                info.force_instance = value.strip(_OWS)
        else:
            out.append((name, value))
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


def prepare_response(headers: Headers, request_id: bytes) -> tuple[Headers, ResponseInfo]:
    """Strip a response's hop-by-hop and ``roost-*`` headers; read its framing."""
    info = ResponseInfo()
    out: Headers = []
    named: set[bytes] | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == _TRANSFER_ENCODING:
                if value.strip(_OWS).lower() == b"chunked" and not info.chunked:
                    info.chunked = True
                else:
                    info.bad_framing = "unsupported Transfer-Encoding"
            elif lname == _CONNECTION:
                for token in _tokens(value):
                    if token and token not in _NEVER_NAMED:
                        named = {token} if named is None else named | {token}
        elif lname.startswith(b"roost-"):
            continue
        else:
            if lname == _CONTENT_LENGTH:
                text = value.strip(_OWS)
                if not text.isdigit() or (
                    info.content_length is not None and int(text) != info.content_length
                ):
                    info.bad_framing = "invalid Content-Length"
                    continue
                if info.content_length is not None:
                    continue  # an identical duplicate: keep one
                info.content_length = int(text)
            out.append((name, value))
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
    out.append((b"Via", VIA))
    out.append((b"Roost-Request-Id", request_id))
    return out, info


def encode_head(first_line: bytes, headers: Headers) -> bytes:
    """``first_line`` (with its CRLF), the header lines and the blank line, as one bytes."""
    parts = [first_line]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
