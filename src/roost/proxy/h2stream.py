"""One HTTP/2 stream of the client-facing codec: the exchange's ``Downstream``.

:class:`ClientStream` is what an :class:`~roost.proxy.exchange.Exchange` writes its response to
when the client speaks HTTP/2 (:mod:`roost.proxy.http2` creates one per request): it turns
the exchange's calls into a HEADERS block, queued body bytes and an end on its
:class:`~roost.proxy.h2conn.StreamOut` state, which the connection frames at ``flush()``.
Interim (1xx) responses go out at once; a 101 never does (no upgrades over HTTP/2). The
edge's own answers (errors) need no exchange. On a host proxy's backhaul a ``full``
refusal is RST_STREAM(REFUSED_STREAM): the instance saw nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h2.exceptions
from hpack import NeverIndexedHeaderTuple

from roost.proxy import backhaul, errors
from roost.proxy import h2limits as lim
from roost.proxy.h2conn import StreamOut
from roost.proxy.h2fields import response_fields
from roost.proxy.headers import Headers, ResponseInfo

if TYPE_CHECKING:
    from roost.proxy.exchange import Exchange
    from roost.proxy.http2 import H2ClientConnection
    from roost.proxy.upstream import UpstreamConnection

__all__ = ["INTERNAL_ERROR", "ClientStream"]

INTERNAL_ERROR = 0x2
_RID = b"roost-request-id"
_REFUSED_FULL = "refused_" + backhaul.FULL.decode("ascii")
_ALLOW = (b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")


class ClientStream(StreamOut):
    """One request and its response: the exchange's Downstream."""

    __slots__ = ("conn", "ex", "request_done")

    def __init__(self, conn: H2ClientConnection, sid: int, request_done: bool) -> None:
        super().__init__(sid)
        self.conn = conn
        self.ex: Exchange | None = None
        self.request_done = request_done

    def send_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        if status != 101 and not self.done:
            try:
                self.conn.h2.send_headers(
                    self.sid, [(b":status", b"%d" % status), *response_fields(headers)]
                )
            except h2.exceptions.ProtocolError:  # the client reset it under us
                self.conn.drop(self.sid)

    def send_head(
        self, ex: Exchange, status: int, reason: bytes, headers: Headers, info: ResponseInfo
    ) -> None:
        self.head = response_fields(headers, status)
        self.conn.touch(self)

    def send_body(self, data: bytes) -> None:
        self.conn.queue(self, data)

    def send_end(self, ex: Exchange, trailers: Headers) -> None:
        self.ending = True
        self.trailers = response_fields(trailers) or None
        self.conn.touch(self)

    def send_error(self, ex: Exchange, err: errors.ProxyError) -> None:
        if err.reason == _REFUSED_FULL and self.conn.backhaul:
            return self.conn.reset(self.sid, lim.REFUSED_STREAM)  # the instance saw nothing
        self.answer(err, ex.request_id, head=ex.method == b"HEAD")

    def answer(self, err: errors.ProxyError, request_id: bytes, *, head: bool) -> None:
        """The edge's own response (no exchange needed)."""
        body = err.message.encode("utf-8", "replace") + b"\n"
        self.head = [(b":status", b"%d" % err.status), (b"content-length", b"%d" % len(body))]
        self.head += [(b"content-type", b"text/plain; charset=utf-8")]
        self.head += [NeverIndexedHeaderTuple(_RID, request_id)]
        self.head += [(n.lower(), v) for n, v in err.headers]
        if err.status == 405:
            self.head.append(_ALLOW)
        if not head:
            self.conn.queue(self, body)
        self.ending = True
        self.conn.touch(self)

    def send_upgrade(
        self, ex: Exchange, head: bytes, conn: UpstreamConnection, rest: bytes = b""
    ) -> None:
        conn.abort()  # never asked for over HTTP/2
        self.conn.reset(self.sid, INTERNAL_ERROR)

    def abort_response(self, ex: Exchange) -> None:
        self.conn.reset(self.sid, INTERNAL_ERROR)

    def flush(self) -> None:
        self.conn.flush()

    def pause_reading(self, reason: int) -> None:
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused:
                self.conn.release(self)
