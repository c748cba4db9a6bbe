"""The client side of the edge for HTTP/1.x: an ``asyncio.Protocol`` driving httptools.

In uvicorn's style there is no task per request: parser callbacks build an
:class:`~roost.proxy.exchange.Exchange` per request and the exchange calls back into this
connection (:class:`~roost.proxy.exchange.Downstream`) to write the response.

Rules kept here:

- **One request at a time.** Requests are answered in order. A pipelined request parsed
  while another is in flight is queued and reading pauses until the queue drains, so at
  most one socket read of pipelined input is ever buffered.
- **Strict framing.** llhttp rejects most ambiguity (CL + TE, duplicate CL, bad chunk
  sizes, obs-fold, whitespace before the colon, bad tokens, bare LF);
  :func:`~roost.proxy.headers.prepare_head` adds the rest (TE other than exactly
  ``chunked``, several Host headers). Anything rejected gets 400 + close and never
  reaches an instance. Head > ``max_header_bytes`` -> 431, target > ``max_uri_bytes``
  -> 414, CONNECT -> 405, HTTP/1.1 without Host -> 400, other versions -> 505. A chunked
  body whose framing outgrows its bound (an endless chunk extension; see
  :mod:`~roost.proxy.chunkframing`) -> 400 + close, the request already streaming upstream
  aborted there.
- **Expect: 100-continue is forwarded** and the instance's ``100 Continue`` relayed: the
  app decides whether it wants the body (and can refuse it with e.g. 413 before it is
  sent). HTTP/1.0 clients get neither (RFC 9110 section 10.1.1).
- **Upgrade** (WebSocket etc.) is forwarded and the connection becomes a byte tunnel only
  once the instance answers 101 (:mod:`roost.proxy.tunnel`); until then input after the
  request head is held and reading paused. Declined upgrades (any other answer) go on as
  HTTP/1.1. ``Upgrade: h2c`` is ignored (dropped), so such clients just get HTTP/1.1.
- **Closing.** A response that cannot be followed by another (client asked, framing
  error, draining, close-delimited body, or an answer sent before a large or
  100-continue request body was read) carries ``Connection: close``; a small unread body
  is read and discarded instead. After an error the connection lingers briefly, reading
  and discarding, so the client gets to read the response instead of a reset. A response
  the instance ended early closes the connection: never a truncated response on a
  keep-alive connection.
- **Answered at the edge.** An optional ``intercept`` sees each request head before routing
  and may answer it itself (ACME HTTP-01 tokens, ``force_https`` redirects; see
  :mod:`roost.proxy.tls.sites`); such an answer closes the connection. Over TLS the
  forwarding headers say ``X-Forwarded-Proto: https``.
- **Deadlines** (head total, body rate, keep-alive idle): :mod:`roost.proxy.http1_deadlines`;
  writing responses: :mod:`roost.proxy.http1_writer`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools

from roost.proxy import errors
from roost.proxy.chunkframing import ChunkFraming
from roost.proxy.exchange import Exchange
from roost.proxy.forwarding import forwarding_tail
from roost.proxy.headers import (
    BODY_NONE,
    Headers,
)
from roost.proxy.http1_deadlines import NEVER, Deadlines
from roost.proxy.http1_reader import PAUSE_PIPELINE, RequestReader
from roost.proxy.http1_writer import ResponseWriter
from roost.proxy.tunnel import CLIENT, Tunnel
from roost.proxy.workgate import NEW

if TYPE_CHECKING:
    from roost.proxy.context import RelayContext
    from roost.proxy.server import ConnectionRegistry

__all__ = ["ClientConnection"]

PAUSE_UPGRADE = 8  # an upgrade request waits for its answer (101 or not)
PAUSE_GATE = 16  # the work gate holds this connection's input (its app is at capacity)
_LINGER = 2.0  # seconds to read-and-discard after an error response before closing
_HEAD_SLACK = 256 * 1024  # one socket read: head bytes counted roughly may include that much
# what a closed connection's ``parser`` becomes: never fed (parsing has stopped), and it holds
# no bound methods of the connection, so nothing keeps the connection alive in a cycle
_CLOSED_PARSER = httptools.HttpRequestParser(object())


Intercept = Callable[[bytes, bytes, Headers], errors.ProxyError | None]
"""``(method, target, headers) -> answer or None``: a request the edge answers itself before
routing (ACME HTTP-01 tokens, ``force_https`` redirects); the connection closes after it."""


class ClientConnection(RequestReader, ResponseWriter, Deadlines, asyncio.Protocol):
    """One client TCP connection speaking HTTP/1.0 or HTTP/1.1 (reading requests:
    :class:`~roost.proxy.http1_reader.RequestReader`; writing responses:
    :class:`~roost.proxy.http1_writer.ResponseWriter`; timeouts:
    :class:`~roost.proxy.http1_deadlines.Deadlines`)."""

    # slots: a connection has ~40 fields, past the size at which CPython stops sharing an
    # instance dict's keys; slotted, a new connection is built in ~3 µs instead of ~7 µs
    # (floods of new connections construct hundreds per loop turn)
    __slots__ = (
        "__weakref__",  # (tests check that a closed connection is freed)
        "_active",
        "_active_http10",
        "_active_keep_alive",
        "_app",
        "_client_ip",
        "_close_after",
        "_closed",
        "_closing",
        "_ctx",
        "_deadline",
        "_deadline_is_head",
        "_discarded",
        "_dispatching",
        "_eof",
        "_feed_len",
        "_framing",
        "_fwd_tail",
        "_gate_pass",
        "_head_fed",
        "_headers",
        "_in_head",
        "_intercept",
        "_limits",
        "_linger",
        "_mode",
        "_out",
        "_parsing",
        "_parsing_keep_alive",
        "_paused",
        "_queue",
        "_rate_bytes",
        "_rate_since",
        "_registry",
        "_reject",
        "_stop_parsing",
        "_trailer_bytes",
        "_tunnel",
        "_unparsed",
        "_upgrade_rest",
        "_upgrading",
        "_url",
        "parser",
        "transport",
        "write_paused",
    )

    def __init__(
        self, ctx: RelayContext, registry: ConnectionRegistry, intercept: Intercept | None = None
    ) -> None:
        self._ctx = ctx
        self._intercept = intercept
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
        self._deadline = NEVER  # loop time of the idle or head timeout (checked per tick)
        self._deadline_is_head = False  # a head deadline survives new bytes (slowloris)
        self._linger: asyncio.TimerHandle | None = None
        self._dispatching = False
        self._reject: errors.ProxyError | None = None
        # the request head being parsed
        self._in_head = False
        self._url = b""
        self._headers: Headers = []
        self._trailer_bytes = 0
        self._discarded = 0  # body bytes of an already answered request, thrown away
        self._head_fed = 0  # bytes fed while this head was incomplete (a bound on its size)
        self._framing: ChunkFraming | None = None  # the chunked body's framing bound
        self._feed_len = 0
        # exchanges: the one being answered, the one receiving body bytes, the waiting ones
        self._active: Exchange | None = None
        self._active_keep_alive = True
        self._active_http10 = False
        self._parsing: Exchange | None = None
        self._parsing_keep_alive = True
        self._queue: collections.deque[tuple[Exchange | errors.ProxyError, bool, bool]]
        self._queue = collections.deque()
        self._mode = BODY_NONE
        self._close_after = False
        self._tunnel: Tunnel | None = None  # set once upgraded: bytes are relayed as they come
        self._upgrading: Exchange | None = None  # an upgrade request whose answer is awaited
        self._upgrade_rest: bytes | None = None  # input after its head, held until then
        self._rate_since = 0.0  # start of the current body-rate window (0: not measuring)
        self._rate_bytes = 0  # request body bytes received in that window
        self._app = ""  # the app of the last request (the work gate's key)
        # the work gate's turn in which it let this connection's next request through
        # (0: none); the pass lapses at the gate's next turn (see workgate's "park")
        self._gate_pass = 0
        self._unparsed: bytes | None = None  # an idle connection's input held by the gate

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._client_ip = (peer[0] if isinstance(peer, tuple) else "").encode("ascii")
        port = str(local[1]).encode("ascii") if isinstance(local, tuple) else b""
        proto = b"http" if transport.get_extra_info("ssl_object") is None else b"https"
        region = self._ctx.region.encode("ascii")
        self._fwd_tail = forwarding_tail(self._client_ip, proto, port, region)
        self._registry.add(self)
        self._arm_deadline()
        if self._registry.draining:
            self._close(linger=False)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.received(CLIENT, data)
            return
        if self._closing or self._stop_parsing:
            return
        if self._active is None and not self._in_head and self._hold_unparsed(data):
            return
        if not self._deadline_is_head:
            self._deadline = NEVER
        self._feed_len = len(data)
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = data[exc.args[0] :]
                ex = self._upgrading
                if ex is not None and not ex.finished and not self._stop_parsing:
                    # hold the rest until the instance accepts (tunnel) or declines
                    self._upgrade_rest = data
                    self._stop_parsing = True
                    self.pause_reading(PAUSE_UPGRADE)
                    break
                self._upgrading = None  # ignored or already answered: parse on
                self.parser = httptools.HttpRequestParser(self)
                if data and not self._stop_parsing:
                    continue
            except httptools.HttpParserError as exc:
                if not self._stop_parsing or self._reject is not None:
                    self._bad_input(self._reject or errors.bad_request(str(exc)))
            break
        parsing = self._parsing
        if parsing is not None and self._framing is not None and not self._stop_parsing:
            self._check_chunk_framing(self._framing, parsing, len(data))
        if self._in_head and not self._closing:
            self._head_fed += len(data)
            if self._head_fed > self._limits.max_header_bytes + _HEAD_SLACK:
                self._bad_input(errors.header_too_large(self._limits.max_header_bytes))
            elif self._deadline == NEVER and self._active is None:
                self._arm_deadline()
        if self._active is not None:
            self._active.flush()
        self.flush()

    def gate_hold(self) -> None:
        self.pause_reading(PAUSE_GATE)

    def gate_pass(self) -> None:
        # (preface.PrefaceSniffer: admitted under its app's key)
        self._gate_pass = self._gate_turn()

    def gate_release(self) -> None:
        if self._closed:
            return
        # read again first: answering the held request may park the connection anew
        # (and pause it), which must stick
        self.resume_reading(PAUSE_GATE)
        if self._unparsed is not None:  # input held before it was parsed: its turn now
            data, self._unparsed = self._unparsed, None
            self._gate_pass = self._gate_turn()
            self.data_received(data)
        elif self._active is None and self._queue:  # a held request: its turn now
            self._dispatch()
            self.flush()
        else:  # parked while idle: read again; a request already sent has had its turn
            self._gate_pass = self._gate_turn()

    def _hold_unparsed(self, data: bytes) -> bool:
        """New input on an idle connection whose last request was for an app at capacity:
        True if the work gate holds it, unparsed, in that app's line (this turn's batch is
        spent; reading pauses until :meth:`gate_release`). Parsing, routing and checking a
        flood's requests is the work the gate caps; holding the bytes costs only the read.
        A head that shows another app (a connection a load balancer shares between apps)
        goes by that app instead: at once if it has room, else in its line."""
        if self._unparsed is not None:  # (a read that raced the pause)
            self._unparsed += data
            return True
        gate = self._ctx.gate
        app = self._app
        if gate is None or not app or self._queue or self._gate_pass == gate.turns:
            return False
        if not gate.congested(app):
            return False
        shown = self._ctx.first_bytes_key(data)
        if shown is None:
            return False  # a request for an app with room: none of the gate's business
        if shown != NEW:
            app = shown
        if gate.admit(app, self):
            self._gate_pass = gate.turns  # its place in this turn's batch: not gated again
            return False
        self._unparsed = data
        return True

    def _gate_turn(self) -> int:
        gate = self._ctx.gate
        return 0 if gate is None else gate.turns

    def eof_received(self) -> bool:
        if self._tunnel is not None:
            return self._tunnel.eof(CLIENT)
        self._eof = True
        parsing = self._parsing
        if parsing is not None and not parsing.request_done:
            return False  # the request can never complete; connection_lost cancels it
        return self._active is not None or bool(self._queue)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._clear_deadlines()
        self._registry.discard(self)
        if self._tunnel is not None:
            self._tunnel.lost(CLIENT)
        if self._active is not None:
            self._active.cancel()
        for item, _, _ in self._queue:
            if isinstance(item, Exchange):
                item.cancel()
        self._queue.clear()
        self._out.clear()
        self._unparsed = None
        # break the reference cycles (parser -> bound methods -> self, self <-> transport):
        # without this every closed connection is cyclic garbage, and under connection churn
        # the full collections it causes stall the event loop for 100+ ms
        self._stop_parsing = True
        self.parser = _CLOSED_PARSER
        self.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._tunnel is not None:
            self._tunnel.pause(CLIENT)
        elif self._active is not None:
            self._active.client_write_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._tunnel is not None:
            self._tunnel.resume(CLIENT)
        elif self._active is not None:
            self._active.client_write_resumed()

    # -- connection lifecycle -----------------------------------------------------------

    def shutdown(self) -> None:
        """The edge is draining: close now if idle, else after the current response."""
        if (
            self._active is None
            and not self._queue
            and not self._in_head
            and self._unparsed is None  # (a request held by the gate is answered, then closed)
            and not self._closing
        ):
            self._close(linger=False)

    def abort(self) -> None:
        """Drop the connection now (shutdown deadline passed)."""
        if self.transport is not None and not self._closed:
            self.transport.abort()

    def _activate(
        self, ex: Exchange, keep_alive: bool, http10: bool, *, flush: bool = True
    ) -> None:
        self._active = ex
        self._active_keep_alive = keep_alive
        self._active_http10 = http10
        self._mode = BODY_NONE
        ex.start(flush=flush)

    def _exchange_done(self, close: bool, *, linger: bool) -> None:
        ex = self._active
        if ex is not None:  # (routed by now: its app is known, even if answered in start())
            self._app = ex.app
        self._active = None
        if self._upgrade_rest is not None and not (close or self._closing):
            self._upgrade_declined()
        if close or self._closing:
            self._close(linger=linger)
            return
        if self._dispatching:
            return  # answered at once from inside the loop below, which goes on
        self._dispatch()

    def _dispatch(self) -> None:
        """Start the queued requests (pipelined, or held by the work gate) in turn."""
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
                self._arm_deadline()
                gate = self._ctx.gate
                if gate is not None and self._app and not self._in_head:
                    gate.park(self._app, self)  # its app is at capacity: read it later

    def _upgrade_declined(self) -> None:
        """The upgrade request got an ordinary answer: parse what followed it as HTTP."""
        held, self._upgrade_rest = self._upgrade_rest, None
        self._upgrading = None
        self._stop_parsing = False
        self.parser = httptools.HttpRequestParser(self)
        if held:  # before any newer input: reading is still paused
            self._ctx.loop.call_soon(self._feed_held, held)
        else:
            self.resume_reading(PAUSE_UPGRADE)

    def _feed_held(self, held: bytes) -> None:
        if not self._closed:
            self.data_received(held)
            self.resume_reading(PAUSE_UPGRADE)

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
            self._ctx.request_rejected(err.status, "http/1.1")
            self._out.append(errors.render(err, request_id=self._ctx.request_ids.next()))
            self._close(linger=True)

    def _close(self, *, linger: bool) -> None:
        """Write what is queued, then close; with ``linger``, half-close and drain first."""
        self._closing = self._stop_parsing = True
        self._clear_deadlines()
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
            self._linger = self._ctx.loop.call_later(_LINGER, transport.close)
        else:
            transport.close()
