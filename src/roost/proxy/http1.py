"""The client side of the edge for HTTP/1.x: an ``asyncio.Protocol`` driving httptools.

In uvicorn's style there is no task per request: parser callbacks build an
:class:`~roost.proxy.forward.Exchange` per request and the exchange calls back into this
connection (:class:`~roost.proxy.forward.Downstream`) to write the response.

Rules kept here:

- **One request at a time.** Requests are answered in order. A pipelined request parsed
  while another is in flight is queued and reading pauses until the queue drains, so at
  most one socket read of pipelined input is ever buffered.
- **Strict framing.** llhttp rejects most ambiguity (CL + TE, duplicate CL, bad chunk
  sizes, obs-fold, whitespace before the colon, bad tokens, bare LF);
  :func:`~roost.proxy.headers.prepare_request` adds the rest (TE other than exactly
  ``chunked``, several Host headers). Anything rejected gets 400 + close and never
  reaches an instance. Head > ``max_header_bytes`` -> 431, target > ``max_uri_bytes``
  -> 414, CONNECT -> 405, HTTP/1.1 without Host -> 400, other versions -> 505.
- **Expect: 100-continue is forwarded** and the instance's ``100 Continue`` relayed: the
  app decides whether it wants the body (and can refuse it with e.g. 413 before it is
  sent). HTTP/1.0 clients get neither (RFC 9110 section 10.1.1).
- **Upgrade is ignored** (the header is hop-by-hop and dropped; RFC 9110 lets a server
  ignore it), so ``Upgrade: h2c`` clients just get HTTP/1.1; WebSocket comes later.
- **Closing.** A response that cannot be followed by another (client asked, request body
  unread, error, draining, close-delimited body) carries ``Connection: close``; after
  an error the connection lingers briefly, reading and discarding, so the client gets to
  read the response instead of a reset. A response the instance ended early closes the
  connection: never a truncated response on a keep-alive connection.
"""

from __future__ import annotations

import asyncio
import collections
from http import HTTPStatus
from typing import NoReturn

import httptools

from roost.proxy import errors
from roost.proxy.forward import EdgeContext, Exchange
from roost.proxy.headers import HOP_BY_HOP, Forwarding, Headers, ResponseInfo, encode_head
from roost.proxy.headers import prepare_request as _prepare_request

__all__ = ["ClientConnection", "ConnectionRegistry"]

PAUSE_PIPELINE = 4  # a queued request waits for the one in flight
_LINGER = 2.0  # seconds to read-and-discard after an error response before closing
_HEAD_SLACK = 256 * 1024  # one socket read: head bytes counted roughly may include that much
_NONE, _RAW, _CHUNKED = 0, 1, 2  # response body framing towards the client
_PHRASES = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


class ConnectionRegistry:
    """The open client connections of one edge, for shutdown."""

    def __init__(self) -> None:
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, conn: ClientConnection) -> None:
        """A connection opened."""
        self.connections.add(conn)
        self._empty.clear()

    def discard(self, conn: ClientConnection) -> None:
        """A connection closed."""
        self.connections.discard(conn)
        if not self.connections:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Until every connection has closed."""
        await self._empty.wait()


class _Reject(Exception):
    """Raised from a parser callback; the ProxyError to answer is in ``_reject``."""


class ClientConnection(asyncio.Protocol):
    """One client TCP connection speaking HTTP/1.0 or HTTP/1.1."""

    def __init__(self, ctx: EdgeContext, registry: ConnectionRegistry) -> None:
        self._ctx = ctx
        self._limits = ctx.limits
        self._registry = registry
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.write_paused = False
        self._paused = 0  # PAUSE_* reasons reading is paused for
        self._closed = False
        self._closing = False  # final response queued; discarding input
        self._eof = False
        self._stop_parsing = False
        self._out: list[bytes] = []
        self._client_ip = b""
        self._fwd_tail: tuple[tuple[bytes, bytes], ...] = ()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_is_head = False  # a head timer survives new bytes (slowloris)
        self._dispatching = False
        self._reject: errors.ProxyError | None = None
        # the request head being parsed
        self._in_head = False
        self._url = b""
        self._headers: Headers = []
        self._head_size = 0
        self._head_fed = 0
        # exchanges: the one being answered, the one receiving body bytes, the waiting ones
        self._active: Exchange | None = None
        self._active_keep_alive = True
        self._active_http10 = False
        self._parsing: Exchange | None = None
        self._parsing_keep_alive = True
        self._queue: collections.deque[tuple[Exchange | errors.ProxyError, bool, bool]]
        self._queue = collections.deque()
        self._mode = _NONE
        self._close_after = False

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._client_ip = (peer[0] if peer else "").encode("ascii")
        port = str(local[1]).encode("ascii") if local else b""
        fwd = Forwarding(self._client_ip, b"http", port, self._ctx.region.encode("ascii"))
        self._fwd_tail = fwd.tail()
        self._registry.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._stop_parsing:
            return
        if self._timer is not None and not self._timer_is_head:
            self._cancel_timer()
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:  # Upgrade ignored: parse on
                data = data[exc.args[0] :]
                self.parser = httptools.HttpRequestParser(self)
                if data and not self._stop_parsing:
                    continue
            except httptools.HttpParserError as exc:
                if not self._stop_parsing or self._reject is not None:
                    self._bad_input(self._reject or errors.bad_request(str(exc)))
            break
        if self._in_head and not self._closing:
            self._head_fed += len(data)
            if self._head_fed > self._limits.max_header_bytes + _HEAD_SLACK:
                self._bad_input(errors.header_too_large(self._limits.max_header_bytes))
            elif self._timer is None and self._active is None:
                self._arm_timer()
        if self._parsing is not None:
            self._parsing.flush()
        self.flush()

    def eof_received(self) -> bool:
        self._eof = True
        parsing = self._parsing
        if parsing is not None and not parsing.request_done:
            return False  # the request can never complete; connection_lost cancels it
        return self._active is not None or bool(self._queue)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        self._registry.discard(self)
        if self._active is not None:
            self._active.cancel()
        for item, _, _ in self._queue:
            if isinstance(item, Exchange):
                item.cancel()
        self._queue.clear()
        self._out.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._active is not None:
            self._active.client_write_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._active is not None:
            self._active.client_write_resumed()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._stop_parsing:
            raise _Reject  # input after a request that ended the connection: ignored
        self._in_head = True
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._head_fed = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if len(self._url) > self._limits.max_uri_bytes:
            self._fail_parse(errors.uri_too_long(self._limits.max_uri_bytes))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._limits.max_header_bytes or (
            len(self._headers) >= self._limits.max_headers
        ):
            self._fail_parse(errors.header_too_large(self._limits.max_header_bytes))
        if self._in_head:
            self._headers.append((name, value))
        # else: a chunked request's trailer field: counted above, not forwarded

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._timer is not None:
            self._cancel_timer()
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._fail_parse(errors.version_not_supported(version))
        method = parser.get_method()
        if method == b"CONNECT":
            self._fail_parse(errors.method_not_allowed("CONNECT"))
        keep_alive = parser.should_keep_alive()
        http10 = version == "1.0"
        rid = self._ctx.request_ids.next()
        try:
            headers, info = _prepare_request(
                self._headers, self._fwd_tail, self._client_ip, rid, keep_expect=not http10
            )
        except errors.ProxyError as err:
            self._fail_parse(err)
        target = self._url
        host = info.host
        if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
            host, target = self._origin_form(target)
            headers = [(n, host if n.lower() == b"host" else v) for n, v in headers]
        elif host is None and not http10:
            self._fail_parse(errors.bad_request("missing Host header"))
        if parser.should_upgrade() and (info.chunked or info.content_length):
            self._fail_parse(errors.bad_request("Upgrade request with a body"))
        head = encode_head(method + b" " + target + b" HTTP/1.1\r\n", headers)
        host_text = (host or b"").decode("latin-1")
        ex = self._parsing = Exchange(self._ctx, self, method, head, info, host_text, rid)
        self._parsing_keep_alive = keep_alive
        if self._active is None and not self._queue:
            self._activate(ex, keep_alive, http10)
        else:
            self._queue.append((ex, keep_alive, http10))
            self.pause_reading(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.request_body(body)

    def on_message_complete(self) -> None:
        ex, self._parsing = self._parsing, None
        if ex is not None:
            ex.request_end()
        if not self._parsing_keep_alive:
            self._stop_parsing = True

    def _fail_parse(self, err: errors.ProxyError) -> NoReturn:
        self._reject = err
        raise _Reject(err.reason)

    def _origin_form(self, target: bytes) -> tuple[bytes, bytes]:
        """``(authority, origin-form target)`` of an absolute-form request target."""
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            url = None
        if url is None or url.schema not in (b"http", b"https") or not url.host:
            self._fail_parse(errors.bad_request("invalid request target"))
        assert url is not None
        host = url.host if url.port is None else b"%s:%d" % (url.host, url.port)
        path = url.path or b"/"
        return host, path + b"?" + url.query if url.query is not None else path

    # -- Downstream: called by the active exchange --------------------------------------

    def send_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        if not self._active_http10 and not self._closing:
            kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
            self._out.append(encode_head(self._status_line(status, reason), kept))

    def send_head(
        self, ex: Exchange, status: int, reason: bytes, headers: Headers, info: ResponseInfo
    ) -> None:
        close = (
            not self._active_keep_alive
            or self._registry.draining
            or self._eof
            or not ex.request_done
        )
        if ex.method == b"HEAD" or status == 204 or status == 304:
            self._mode = _NONE
            if info.chunked and not self._active_http10:
                headers.append((b"Transfer-Encoding", b"chunked"))
        elif info.content_length is not None:
            self._mode = _RAW
        elif not self._active_http10:
            self._mode = _CHUNKED
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            self._mode = _RAW  # close-delimited, as the instance sent it
            close = True
        if close:
            headers.append((b"Connection", b"close"))
        elif self._active_http10:
            headers.append((b"Connection", b"keep-alive"))
        self._close_after = close
        self._out.append(encode_head(self._status_line(status, reason), headers))

    def send_body(self, data: bytes) -> None:
        if self._mode == _CHUNKED:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        elif self._mode == _RAW:
            self._out.append(data)

    def send_end(self, ex: Exchange, trailers: Headers) -> None:
        if self._mode == _CHUNKED:
            self._out.append(encode_head(b"0\r\n", trailers))
        self._exchange_done(self._close_after, linger=False)

    def send_error(self, ex: Exchange, err: errors.ProxyError) -> None:
        close = (
            err.close
            or not ex.request_done
            or not self._active_keep_alive
            or self._registry.draining
            or self._eof
        )
        self._out.append(errors.render(err, request_id=ex.request_id, close=close))
        self._exchange_done(close, linger=err.close or not ex.request_done)

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

    # -- connection lifecycle -----------------------------------------------------------

    def shutdown(self) -> None:
        """The edge is draining: close now if idle, else after the current response."""
        if self._active is None and not self._in_head and not self._closing:
            self._close(linger=False)

    def abort(self) -> None:
        """Drop the connection now (shutdown deadline passed)."""
        if self.transport is not None and not self._closed:
            self.transport.abort()

    def _activate(self, ex: Exchange, keep_alive: bool, http10: bool) -> None:
        self._active = ex
        self._active_keep_alive = keep_alive
        self._active_http10 = http10
        self._mode = _NONE
        ex.start()

    def _exchange_done(self, close: bool, *, linger: bool) -> None:
        self._active = None
        if close or self._closing:
            self._close(linger=linger)
            return
        if self._dispatching:
            return  # answered at once from inside the loop below, which goes on
        self._dispatching = True
        try:
            while self._active is None and self._queue and not self._closing:
                item, keep_alive, http10 = self._queue.popleft()
                if isinstance(item, errors.ProxyError):
                    self._out.append(errors.render(item, request_id=self._ctx.request_ids.next()))
                    self._close(linger=True)
                else:
                    self._activate(item, keep_alive, http10)
        finally:
            self._dispatching = False
        if self._closing:
            return
        if not self._queue:
            self.resume_reading(PAUSE_PIPELINE)
        if self._active is None:
            if self._eof or (self._registry.draining and not self._in_head):
                self._close(linger=False)
            else:
                self._arm_timer()

    def _bad_input(self, err: errors.ProxyError) -> None:
        """Unparseable or rejected input: answer in turn, then close."""
        self._stop_parsing = True
        self._in_head = False
        self._reject = None
        parsing, self._parsing = self._parsing, None
        if parsing is not None and parsing is self._active:
            parsing.fail_request(err)  # answers (or aborts) and closes
            return
        if parsing is not None:  # queued behind the active one: never started
            self._queue = collections.deque(q for q in self._queue if q[0] is not parsing)
        if self._active is not None or self._queue:
            self._queue.append((err, False, False))
            self.pause_reading(PAUSE_PIPELINE)
        else:
            self._out.append(errors.render(err, request_id=self._ctx.request_ids.next()))
            self._close(linger=True)

    def _close(self, *, linger: bool) -> None:
        """Write what is queued, then close; with ``linger``, half-close and drain first."""
        self._closing = self._stop_parsing = True
        self._cancel_timer()
        for item, _, _ in self._queue:
            if isinstance(item, Exchange):
                item.cancel()
        self._queue.clear()
        self.flush()
        transport = self.transport
        if transport is None or self._closed:
            return
        if linger and not self._eof and transport.can_write_eof():
            transport.write_eof()
            self._paused = 0
            transport.resume_reading()
            self._timer = self._ctx.loop.call_later(_LINGER, transport.close)
        else:
            transport.close()

    def _arm_timer(self) -> None:
        self._cancel_timer()
        self._timer_is_head = self._in_head
        limits = self._limits
        delay = limits.header_timeout if self._in_head else limits.keepalive_timeout
        self._timer = self._ctx.loop.call_later(delay, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._active is not None or self._queue or self._closing:
            return
        if self._in_head:
            self._bad_input(errors.request_timeout())
            self.flush()
        else:
            self._close(linger=False)

    @staticmethod
    def _status_line(status: int, reason: bytes) -> bytes:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason or _PHRASES.get(status, b"Unknown"))
