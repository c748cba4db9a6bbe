"""Writing responses to an HTTP/1.x client: the :class:`~roost.proxy.exchange.Downstream`
side of :class:`~roost.proxy.http1.ClientConnection` (a mixin; the state is the
connection's).

The exchange reports the response as events (interim, head, body, end, error, upgrade);
this frames them for the client: ``Content-Length`` bodies as they are, others chunked
(close-delimited to HTTP/1.0), ``Connection: close`` when the connection cannot carry
another request (see :meth:`ResponseWriter._must_close`), interim ``1xx`` responses not to
HTTP/1.0 clients. Bytes are queued in ``_out`` and written once per event-loop callback by
:meth:`ResponseWriter.flush`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from roost.proxy import errors
from roost.proxy.headers import (
    BODY_CHUNKED,
    BODY_RAW,
    HOP_BY_HOP,
    Headers,
    ResponseInfo,
    encode_head,
    frame_response,
)
from roost.proxy.tunnel import CLIENT, UPSTREAM, Tunnel

if TYPE_CHECKING:
    import asyncio

    from roost.proxy.exchange import Exchange
    from roost.proxy.upstream import UpstreamConnection

__all__ = ["ResponseWriter"]

_PHRASES = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


class ResponseWriter:
    """The response-writing half of an HTTP/1 client connection."""

    __slots__ = ()  # (ClientConnection holds the attributes)

    # the connection's state this half uses (set by ClientConnection.__init__)
    transport: asyncio.Transport | None
    write_paused: bool
    _out: list[bytes]
    _closed: bool
    _closing: bool
    _paused: int
    _mode: int
    _close_after: bool
    _active_http10: bool
    _tunnel: Tunnel | None

    def send_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        if not self._active_http10 and not self._closing:
            kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
            self._out.append(encode_head(self._status_line(status, reason), kept))

    def send_head(
        self, ex: Exchange, status: int, reason: bytes, headers: Headers, info: ResponseInfo
    ) -> None:
        close = self._must_close(ex)
        self._mode, self._close_after = frame_response(
            headers,
            info,
            status,
            head=ex.method == b"HEAD",
            http10=self._active_http10,
            close=close,
        )
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or _PHRASES.get(status, b"Unknown"))
        self._out.append(encode_head(line, headers))

    def send_body(self, data: bytes) -> None:
        if self._mode == BODY_CHUNKED:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        elif self._mode == BODY_RAW:
            self._out.append(data)

    def send_end(self, ex: Exchange, trailers: Headers) -> None:
        if self._mode == BODY_CHUNKED:
            self._out.append(encode_head(b"0\r\n", trailers))
        self._exchange_done(self._close_after, linger=not ex.request_done)

    def send_error(self, ex: Exchange, err: errors.ProxyError) -> None:
        close = err.close or self._must_close(ex)
        head = ex.method == b"HEAD"
        self._out.append(errors.render(err, request_id=ex.request_id, close=close, head=head))
        self._exchange_done(close, linger=err.close or not ex.request_done)

    def _must_close(self, ex: Exchange) -> bool:
        """Whether the connection must close after the answer to ``ex``.

        An answer sent before the request body was read keeps the connection when the
        rest of the body can be read and thrown away: not when it is large, and not when
        the client waits for ``100 Continue`` (it may never send the body at all).
        """
        if not self._active_keep_alive or self._registry.draining or self._eof:
            return True
        if ex.request_done:
            return False
        info = ex.info
        return info.expect_continue or (info.content_length or 0) > (
            self._limits.request_buffer_bytes
        )

    def send_upgrade(
        self, ex: Exchange, head: bytes, conn: UpstreamConnection, rest: bytes
    ) -> None:
        """The instance accepted the upgrade: relay bytes both ways from now on."""
        transport, upstream = self.transport, conn.transport
        if transport is None or upstream is None or self._closed:
            conn.abort()
            ex.tunnel_closed()
            return
        self._out.append(head)
        self.flush()
        self._clear_deadlines()
        self._upgrading = None
        tunnel = self._tunnel = conn.tunnel = Tunnel(transport, upstream, ex.tunnel_closed)
        tunnel.received(UPSTREAM, rest)
        held, self._upgrade_rest = self._upgrade_rest, None
        if held:
            tunnel.received(CLIENT, held)
        self._paused = 0
        transport.resume_reading()
        upstream.resume_reading()
        if self.write_paused:
            tunnel.pause(CLIENT)

    def abort_response(self, ex: Exchange) -> None:
        self._exchange_done(True, linger=False)

    def flush(self) -> None:
        out = self._out
        if out:
            if not self._closed and self.transport is not None:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def pause_reading(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self._closed:
                self.transport.resume_reading()

    @staticmethod
    def _status_line(status: int, reason: bytes) -> bytes:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason or _PHRASES.get(status, b"Unknown"))
