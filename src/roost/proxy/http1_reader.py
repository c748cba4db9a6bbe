"""Reading requests on an HTTP/1.x client connection: the httptools parser callbacks of
:class:`~roost.proxy.http1.ClientConnection` (a mixin; the state is the connection's).

A request head is collected (target, fields), bounded (``max_uri_bytes`` -> 414, header
lines and bytes -> 431), offered to the ``intercept`` (answers the edge gives itself), then
turned into an exchange by the context (``new_exchange``: checked and rewritten head; a
:class:`~roost.proxy.errors.ProxyError` rejects it). The exchange starts at once when it is
the only one; a pipelined one queues behind the one in flight (reading pauses); one for an
app at capacity may be held by the work gate (:mod:`roost.proxy.workgate`) until its turn.
Body bytes go to the exchange being parsed -- or are counted and dropped when it was already
answered. Trailer fields of a chunked request are counted against the head limit, not
forwarded. A chunked body's framing (chunk-size lines with their extensions, CRLFs,
trailers) is bounded too (:mod:`roost.proxy.chunkframing`): an endless chunk extension
gets 400 and the connection closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from roost.proxy import errors
from roost.proxy.chunkframing import TOO_LONG, ChunkFraming
from roost.proxy.http1_deadlines import NEVER

if TYPE_CHECKING:
    from roost.proxy.exchange import Exchange

__all__ = ["PAUSE_PIPELINE", "RequestReader"]

PAUSE_PIPELINE = 4  # a queued request waits for the one in flight


class _Reject(Exception):
    """Raised from a parser callback; the ProxyError to answer is in ``_reject``."""


class RequestReader:
    """The request-reading half of an HTTP/1 client connection."""

    __slots__ = ()  # (ClientConnection holds the attributes)

    # the connection's state this half uses (set by ClientConnection.__init__)
    parser: Any
    _ctx: Any
    _limits: Any
    _intercept: Any
    _stop_parsing: bool
    _in_head: bool
    _url: bytes
    _headers: list[tuple[bytes, bytes]]
    _trailer_bytes: int
    _discarded: int
    _head_fed: int
    _feed_len: int
    _deadline: float
    _deadline_is_head: bool
    _reject: errors.ProxyError | None
    _client_ip: bytes
    _fwd_tail: tuple[tuple[bytes, bytes], ...]
    _parsing: Exchange | None
    _parsing_keep_alive: bool
    _upgrading: Exchange | None
    _active: Exchange | None
    _queue: Any
    _gate_pass: int
    _rate_bytes: int
    _closing: bool
    _framing: ChunkFraming | None

    def on_message_begin(self) -> None:
        if self._stop_parsing:
            raise _Reject  # input after a request that ended the connection: ignored
        self._in_head = True
        self._url = b""
        self._headers = []
        self._trailer_bytes = 0
        self._discarded = 0
        self._head_fed = 0
        self._framing = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_uri_bytes:
            self._fail_parse(errors.uri_too_long(self._limits.max_uri_bytes))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            self._headers.append((name, value))  # sizes checked at the end of the head
        else:  # a chunked request's trailer field: counted, not forwarded
            self._trailer_bytes += len(name) + len(value)
            if self._trailer_bytes > self._limits.max_header_bytes:
                self._fail_parse(errors.header_too_large(self._limits.max_header_bytes))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._deadline = NEVER
        self._deadline_is_head = False
        headers, limits = self._headers, self._limits
        if len(headers) > limits.max_headers or (
            # exact size only when this head may be big: bytes fed so far bound it
            self._head_fed + self._feed_len > limits.max_header_bytes
            and sum([len(n) + len(v) + 4 for n, v in headers]) + len(self._url)
            > limits.max_header_bytes
        ):
            self._fail_parse(errors.header_too_large(limits.max_header_bytes))
        parser = self.parser
        method = parser.get_method()
        if self._intercept is not None:
            answer = self._intercept(method, self._url, headers)
            if answer is not None:
                self._fail_parse(answer)
        rid = self._ctx.request_ids.next()
        version = parser.get_http_version()
        try:
            ex = self._ctx.new_exchange(
                self,
                method,
                version,
                self._url,
                headers,
                self._fwd_tail,
                self._client_ip,
                rid,
                parser.should_upgrade(),
            )
        except errors.ProxyError as err:
            self._fail_parse(err)
        keep_alive = parser.should_keep_alive()
        http10 = version == "1.0"
        self._parsing = ex
        if ex.info.chunked:
            self._framing = ChunkFraming(limits.max_header_bytes)
        if ex.info.upgrade is not None:
            self._upgrading = ex
        self._parsing_keep_alive = keep_alive
        if self._active is None and not self._queue:
            passed, self._gate_pass = self._gate_pass, 0
            if self._held_by_gate(ex, passed):
                self._queue.append((ex, keep_alive, http10))  # gate_release() starts it
                return
            self._activate(ex, keep_alive, http10, flush=False)
        else:
            self._queue.append((ex, keep_alive, http10))
            self.pause_reading(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        self._rate_bytes += len(body)
        if not ex.finished:
            ex.request_body(body)
            return
        # answered already (before its body was read): discard the rest, within reason
        self._discarded += len(body)
        if self._discarded > self._limits.request_buffer_bytes and not self._closing:
            self._close(linger=True)

    def on_chunk_header(self) -> None:
        if self._framing is not None:
            self._framing.chunks += 1

    def on_message_complete(self) -> None:
        ex, self._parsing = self._parsing, None
        if ex is not None:
            ex.request_end()
        if not self._parsing_keep_alive:
            self._stop_parsing = True

    def _check_chunk_framing(self, framing: ChunkFraming, ex: Exchange, fed: int) -> None:
        """After a read of ``fed`` bytes that left ``ex``'s chunked body incomplete: 400
        and close when its framing has outgrown its bound."""
        if not framing.read(fed, ex.bytes_in + self._discarded) and not self._closing:
            self._bad_input(errors.bad_request(TOO_LONG))

    def _held_by_gate(self, ex: Exchange, passed: int) -> bool:
        """Whether the work gate holds this request back (its app is at capacity and has
        had its share of this loop turn); reading pauses until its turn. ``passed``: the
        gate's turn in which it let this connection's next request through (good in that
        turn only), or 0."""
        gate = self._ctx.gate
        if gate is None or passed == gate.turns:
            return False
        app = self._ctx.congested_app(ex.host)
        return app is not None and not gate.admit(app, self)

    def _fail_parse(self, err: errors.ProxyError) -> NoReturn:
        self._reject = err
        raise _Reject(err.reason)
