"""One request relayed over one upstream connection at a time: what edge and host proxy share.

An :class:`Exchange` is created by the client-side codec (``http1``) once a request head is
parsed. Subclasses decide where the request goes and what a failed attempt means --
:class:`~roost.proxy.forward.EdgeExchange` routes, balances, retries and waits for
capacity; :class:`~roost.proxy.host.HostExchange` admits against the instance's hard limit
and forwards to the instance. This class does the rest:

- **binding** an idle pooled connection or a new one (a connect task that is never
  cancelled: a cancel racing a completed connect would leak the socket);
- **request body** streamed up as it arrives; held while no connection is bound (reading
  pauses beyond ``request_buffer_bytes``); for a request that may be retried, a copy of
  what was sent is kept up to ``retry_buffer_bytes`` so a refused attempt can be replayed
  elsewhere -- beyond that the request is no longer retryable (:meth:`_rewind`);
- **response** events streamed down to the codec (:class:`Downstream`; the
  :class:`~roost.proxy.exchange_response.ResponseRelay` half), backpressure both
  ways; a ``101`` switches both connections to a byte tunnel (:mod:`roost.proxy.tunnel`);
- **deadlines** as plain numbers checked by the codec's tick (no timer per request);
- **metrics**: one ``request_finished`` per request (``protocol``: the client's, set by
  the codec), ``inflight`` up and down.

The upstream connection is an :class:`~roost.proxy.upstream.UpstreamConnection` (HTTP/1.1,
``head`` is the encoded request head) or an :class:`~roost.proxy.h2backhaul.BackhaulStream`
(HTTP/2 backhaul, ``head`` is a header block); :meth:`Exchange._pool_for` picks the pool.
A retry-safe failure carrying a refusal (an HTTP/2 ``REFUSED_STREAM``) counts exactly as a
``Roost-Refused`` response does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from roost.proxy import errors
from roost.proxy.exchange_response import NEVER, PAUSE_UPSTREAM, ResponseRelay
from roost.proxy.headers import Headers, RequestInfo, ResponseInfo
from roost.proxy.metrics import Role
from roost.proxy.routes import Backend
from roost.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from roost.proxy.context import RelayContext

__all__ = ["NEVER", "PAUSE_BUFFER", "PAUSE_UPSTREAM", "Downstream", "Exchange"]

PAUSE_BUFFER = 2  # the body held while no connection is bound is full


class Downstream(Protocol):
    """What an exchange needs from the client connection it answers."""

    write_paused: bool

    def send_interim(self, status: int, reason: bytes, headers: Headers) -> None: ...
    def send_head(
        self, ex: Exchange, status: int, reason: bytes, headers: Headers, info: ResponseInfo
    ) -> None: ...
    def send_body(self, data: bytes) -> None: ...
    def send_end(self, ex: Exchange, trailers: Headers) -> None: ...
    def send_error(self, ex: Exchange, err: errors.ProxyError) -> None: ...
    def send_upgrade(
        self, ex: Exchange, head: bytes, conn: UpstreamConnection, rest: bytes
    ) -> None: ...
    def abort_response(self, ex: Exchange) -> None: ...
    def flush(self) -> None: ...
    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...


class Exchange(ResponseRelay):
    """One request and its response; see the module docstring."""

    role: Role = "edge"

    __slots__ = (
        "_backend",
        "_conn",
        "_ctx",
        "_deadline",
        "_down",
        "_head",
        "_pending",
        "_pending_size",
        "_refused",
        "_replay",
        "_replay_size",
        "_sent_body",
        "_t_body",
        "_t_head",
        "_t_resp",
        "_t_start",
        "_waited_since",
        "app",
        "bytes_in",
        "bytes_out",
        "finished",
        "has_body",
        "host",
        "info",
        "method",
        "protocol",
        "request_done",
        "request_id",
        "response_started",
        "status",
    )

    def __init__(
        self,
        ctx: RelayContext,
        down: Downstream,
        method: bytes,
        head: bytes | Headers,
        info: RequestInfo,
        host: str,
        request_id: bytes,
    ) -> None:
        self._ctx = ctx
        self.protocol = "http/1.1"  # the client's protocol (the HTTP/2 codec sets "h2")
        self._down = down
        self.method = method
        self._head = head  # the request head as sent upstream, kept for a replay
        self.info = info
        self.host = host
        self.request_id = request_id
        self.app = ""
        self.status = 0
        self.has_body = has_body = info.chunked or bool(info.content_length)
        self.request_done = not has_body
        self.response_started = False
        self.finished = False
        self._pending: list[bytes] = []  # body bytes not yet sent on the current attempt
        self._pending_size = 0
        keep = has_body and (info.content_length or 0) <= ctx.limits.retry_buffer_bytes
        self._replay: list[bytes] | None = [] if keep and self.KEEPS_BODY else None
        self._replay_size = 0
        self._sent_body = False  # body bytes went out on the current attempt
        self._conn: UpstreamConnection | None = None
        self._backend: Backend | None = None
        self._deadline = NEVER  # loop time by which the response head must arrive
        self._refused: bytes | None = None  # Roost-Refused of the current attempt
        self._t_start = ctx.loop.time()
        self._t_body = self._t_head = self._t_resp = 0.0
        self.bytes_in = self.bytes_out = 0
        self._waited_since = 0.0  # loop time it started waiting for capacity (edge)

    KEEPS_BODY = False  # sent body bytes are kept for a replay (only where retries happen)

    # -- subclass hooks ---------------------------------------------------------------

    def start(self, *, flush: bool = True) -> None:
        """Decide where the request goes and make the first attempt."""
        raise NotImplementedError

    def _retry_or_fail(self, err: errors.ProxyError) -> None:
        """A retry-safe failure of the current attempt (already ended)."""
        self._fail(err)

    def _attempt_ended(self, backend: Backend) -> None:
        """The attempt on ``backend`` is over (any outcome)."""

    def _trusts_refusal(self) -> bool:
        """Whether a ``Roost-Refused`` response on the current attempt is a refusal."""
        return False

    def _response_id(self) -> bytes | None:
        """The ``Roost-Request-Id`` put on responses (None: none, and no ``Via``)."""
        return self.request_id

    def _pool_for(self, backend: Backend) -> Any:
        """The pool an attempt on ``backend`` takes its connection from."""
        return self._ctx.pool

    # -- driven by the client codec ---------------------------------------------------

    def request_body(self, data: bytes) -> None:
        """Request body bytes (de-framed) arrived from the client."""
        self.bytes_in += len(data)
        if not self._t_body:
            self._t_body = self._ctx.loop.time()
        conn = self._conn
        if conn is not None:
            conn.send_body(data)
            self._sent_body = True
            replay = self._replay
            if replay is not None:
                replay.append(data)
                self._replay_size += len(data)
                if self._replay_size > self._ctx.limits.retry_buffer_bytes:
                    self._replay = None  # too big to keep: no longer retryable
        elif not self.finished:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > self._ctx.limits.request_buffer_bytes:
                self._down.pause_reading(PAUSE_BUFFER)

    def request_end(self) -> None:
        """The request is complete."""
        if self.request_done:
            return
        self.request_done = True
        if self._t_body:
            self._t_body = self._ctx.loop.time() - self._t_body  # now a duration
        if self._conn is not None:
            self._conn.send_end()
            self._start_timer()

    def flush(self) -> None:
        """Write what the client's last bytes produced to the upstream connection."""
        if self._conn is not None:
            self._conn.flush()

    def client_write_paused(self) -> None:
        """The client's write buffer is full: stop reading the response."""
        if self._conn is not None:
            self._conn.pause_reading()

    def client_write_resumed(self) -> None:
        """The client's write buffer drained."""
        if self._conn is not None:
            self._conn.resume_reading()

    def fail_request(self, err: errors.ProxyError) -> None:
        """The client's request went bad mid-way (e.g. broken chunked framing)."""
        if self.finished:
            return
        self._drop_conn()
        if self.response_started:
            self._finish(self.status)
            self._down.abort_response(self)
        else:
            self._fail(err)

    def cancel(self) -> None:
        """The client is gone: drop everything, answer nothing."""
        if not self.finished:
            self._drop_conn()
            self._finish(self.status or 499)

    def check_deadline(self, now: float) -> None:
        """Called every tick by the client connection: the response-head timeout."""
        if now >= self._deadline:
            self._deadline = NEVER
            if not self.response_started and not self.finished and self._backend is not None:
                limits = self._ctx.limits
                self._ctx.metrics.timed_out(role=self.role, kind="response_headers")
                err = errors.upstream_timeout(self._backend.instance_id, limits.response_timeout)
                self._drop_conn()
                self._fail(err)
                self._down.flush()

    # -- attempts ---------------------------------------------------------------------

    def _send_to(self, backend: Backend, head: bytes | Headers, *, flush: bool = True) -> None:
        """Start an attempt: a pooled connection to ``backend`` or a new one."""
        self._backend = backend
        self._refused = None
        conn = self._pool_for(backend).take(backend)
        if conn is not None:
            self._bind(conn, head, flush=flush)
        else:
            task = self._ctx.loop.create_task(self._connect(backend, head))
            self._ctx.tasks.add(task)
            task.add_done_callback(self._ctx.tasks.discard)

    async def _connect(self, backend: Backend, head: bytes | Headers) -> None:
        # An exchange that finished (or moved on) meanwhile hands the connection to the pool.
        pool = self._pool_for(backend)
        try:
            conn = await pool.connect(backend)
        except (OSError, TimeoutError) as exc:
            if not self.finished and self._backend is backend and self._conn is None:
                if isinstance(exc, TimeoutError):
                    self._ctx.metrics.timed_out(role=self.role, kind="connect")
                self._end_attempt()
                self._retry_or_fail(errors.upstream_connect_failed(backend.instance_id, exc))
                self._down.flush()
            return
        if self.finished or self._backend is not backend or self._conn is not None:
            pool.release(conn)
        else:
            self._bind(conn, head, flush=True)

    def _bind(self, conn: UpstreamConnection, head: bytes | Headers, *, flush: bool) -> None:
        self._conn = conn
        conn.send_request(
            self,
            head,  # type: ignore[arg-type]  # a header block goes to a BackhaulStream only
            chunked=self.info.chunked,
            has_body=self.has_body,
            head_req=self.method == b"HEAD",
            upgrade=self.info.upgrade is not None,
        )
        if self._conn is not conn:  # failed at once (an HTTP/2 stream limit): moved on
            return
        if self._pending:
            for chunk in self._pending:
                conn.send_body(chunk)
            self._sent_body = True
            replay = self._replay
            if replay is not None:
                replay += self._pending
                self._replay_size += self._pending_size
                if self._replay_size > self._ctx.limits.retry_buffer_bytes:
                    self._replay = None
            self._pending = []
            self._pending_size = 0
            self._down.resume_reading(PAUSE_BUFFER)
        if self.has_body and self.request_done:
            conn.send_end()
        if self.request_done:
            self._start_timer()
        if self._down.write_paused:
            conn.pause_reading()
        if flush:
            conn.flush()

    def _rewind(self) -> bool:
        """Prepare to send the request again elsewhere; False if the body is not kept."""
        if self._sent_body:
            replay = self._replay
            if replay is None:
                return False
            self._pending = replay + self._pending
            self._pending_size += self._replay_size
            self._replay = []
            self._replay_size = 0
            self._sent_body = False
        return True

    def _start_timer(self) -> None:
        self._deadline = self._ctx.loop.time() + self._ctx.limits.response_timeout

    def _end_attempt(self) -> None:
        self._deadline = NEVER
        self._down.resume_reading(PAUSE_UPSTREAM)
        backend, self._backend = self._backend, None
        if backend is not None:
            self._attempt_ended(backend)

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._end_attempt()

    def _fail(self, err: errors.ProxyError) -> None:
        self._pending = []
        self._pending_size = 0
        self._replay = None
        self._down.resume_reading(PAUSE_BUFFER)  # the rest of the body is read and dropped
        self._finish(err.status)
        self._down.send_error(self, err)

    def _finish(self, status: int) -> None:
        """The exchange is over: report it once."""
        self.finished = True
        self.status = status
        ctx = self._ctx
        now = ctx.loop.time()
        t_head = self._t_head
        t_resp = self._t_resp
        ctx.metrics.request_finished(
            role=self.role,
            app=self.app,
            status=status,
            protocol=self.protocol,
            time_to_headers=(t_head or now) - self._t_start,
            request_body_time=self._t_body if self.request_done and self._t_body else 0.0,
            response_body_time=now - t_resp if t_resp else 0.0,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            duration=now - self._t_start,
        )
        if self.app:
            ctx.metrics.inflight(role=self.role, app=self.app, delta=-1)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (for the codec)."""
        return self._ctx.loop
