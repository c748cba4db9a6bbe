"""The response half of an :class:`~roost.proxy.exchange.Exchange`: what the bound upstream
connection reports (a mixin; the state is the exchange's).

:class:`ResponseRelay` implements :class:`~roost.proxy.upstream.UpstreamSink`: the response
head is checked and rewritten (:func:`~roost.proxy.headers.prepare_response`: hop-by-hop and
``roost-*`` fields dropped, ``Via`` and ``Roost-Request-Id`` added) and passed to the client
codec (:class:`~roost.proxy.exchange.Downstream`) with its body, trailers and end; a
``Roost-Refused`` answer from a host proxy (or an HTTP/2 ``REFUSED_STREAM``) is swallowed and
becomes a retry-safe failure of the attempt; a ``101`` turns both connections into a tunnel;
a connection lost mid-way is retried only when that is safe (the exchange decides), else the
response is aborted. Backpressure: the client codec pauses reading the client while the
upstream connection's write buffer is full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roost.proxy import backhaul, errors
from roost.proxy.headers import HOP_BY_HOP, Headers, ResponseInfo, prepare_response
from roost.proxy.tunnel import upgrade_head

if TYPE_CHECKING:
    from roost.proxy.upstream import UpstreamConnection

__all__ = ["NEVER", "PAUSE_UPSTREAM", "ResponseRelay"]

NEVER = float("inf")
PAUSE_UPSTREAM = 1  # the client codec pauses reading: the upstream's write buffer is full


class ResponseRelay:
    """The :class:`~roost.proxy.upstream.UpstreamSink` half of an exchange."""

    __slots__ = ()

    # the exchange's state and hooks this half uses
    _ctx: Any
    _down: Any
    _conn: UpstreamConnection | None
    _deadline: float
    _refused: bytes | None
    _t_head: float
    _t_resp: float
    _waited_since: float
    response_started: bool
    finished: bool
    status: int
    bytes_out: int

    # -- UpstreamSink: reports from the bound connection --------------------------------

    def upstream_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        self._down.send_interim(status, reason, headers)

    def upstream_head(self, status: int, reason: bytes, headers: Headers) -> ResponseInfo:
        out, info = prepare_response(headers, self._response_id())
        if info.bad_framing is None:
            if info.refused is not None and self._trusts_refusal():
                self._refused = info.refused  # swallowed: its body is ignored
                return info
            self._deadline = NEVER
            self.response_started = True
            self.status = status
            self._t_head = self._ctx.loop.time()
            if self._waited_since:
                self._served_after_wait()
            self._down.send_head(self, status, reason, out, info)
        return info

    def _served_after_wait(self) -> None:
        """The response head came after the request waited for capacity (edge)."""

    def upstream_body(self, data: bytes) -> None:
        if self.response_started:
            if not self._t_resp:
                self._t_resp = self._ctx.loop.time()
            self.bytes_out += len(data)
            self._down.send_body(data)

    def upstream_end(self, trailers: Headers) -> None:
        self._conn = None
        self._end_attempt()
        if self.finished:
            return
        if not self.response_started:  # a swallowed refusal, complete
            self._retry_or_fail(self._refusal_error())
            self._down.flush()
            return
        self._finish(self.status)
        if trailers:
            trailers = [(n, v) for n, v in trailers if _forwardable(n)]
        self._down.send_end(self, trailers)

    def upstream_failed(self, err: errors.ProxyError) -> None:
        self._conn = None
        if err.retry_safe and err.reason.startswith("refused_") and self._trusts_refusal():
            self._refused = _refusal_reason(err)  # REFUSED_STREAM: same as Roost-Refused
        self._end_attempt()
        if self.finished:
            return
        if self.response_started:
            self._finish(self.status)
            self._down.abort_response(self)
            return
        if err.retry_safe or self._refused is not None:
            self._retry_or_fail(self._refusal_error() if self._refused is not None else err)
        else:
            self._fail(err)

    def upstream_upgraded(
        self, conn: UpstreamConnection, status: int, reason: bytes, headers: Headers, rest: bytes
    ) -> None:
        """The instance answered 101: the two connections become a tunnel."""
        self._conn = None
        self._deadline = NEVER
        self.response_started = True
        self.status = status
        self._t_head = self._ctx.loop.time()
        head = upgrade_head(status, reason, headers, self._response_id())
        self._down.send_upgrade(self, head, conn, rest)

    def tunnel_closed(self) -> None:
        """The tunnel this request became has closed: the request is over."""
        if not self.finished:
            self._end_attempt()
            self._finish(self.status)

    def upstream_flush(self) -> None:
        self._down.flush()

    def upstream_write_paused(self) -> None:
        self._down.pause_reading(PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self._down.resume_reading(PAUSE_UPSTREAM)

    def _refusal_error(self) -> errors.ProxyError:
        return errors.upstream_bad_response("?", "response swallowed")


def _refusal_reason(err: errors.ProxyError) -> bytes:
    """The ``Roost-Refused`` reason a refusal error carries."""
    return next((v for n, v in err.headers if n == backhaul.REFUSED), backhaul.FULL)


def _forwardable(name: bytes) -> bool:
    lname = name.lower()
    return lname not in HOP_BY_HOP and not lname.startswith(b"roost-")
