"""One request's trip through the edge: route -> balance -> attempts -> streamed response.

An :class:`Exchange` is created by the client-side codec (``http1`` today, ``http2``
later) once a request head is parsed, and is the *only* thing that talks to upstream
connections. Its phases, in order:

1. **route**: ``Host`` -> :class:`~roost.proxy.routes.AppRoute` in the current table
   (unknown host -> 404, no backends -> 503, unknown forced instance -> 404);
2. **balance**: :func:`~roost.proxy.balance.order_backends` gives the order to try;
3. **attempt**: an idle pooled connection or a new one; a retry-safe failure
   (:attr:`~roost.proxy.errors.ProxyError.retry_safe`) moves on to the next backend, each
   backend at most once; when all fail -> 502;
4. **stream**: request body bytes flow up as they arrive (buffered, bounded, only until a
   connection is bound), response events flow down to the client codec; backpressure is
   passed on both ways.

The exchange implements :class:`~roost.proxy.upstream.UpstreamSink` and talks to its
client codec through :class:`Downstream`.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Protocol

from roost.proxy import errors
from roost.proxy.balance import order_backends
from roost.proxy.headers import (
    HOP_BY_HOP,
    Headers,
    RequestIds,
    RequestInfo,
    ResponseInfo,
    prepare_response,
)
from roost.proxy.routes import AppRoute, Backend, RouteHolder, normalize_host
from roost.proxy.upstream import UpstreamConnection, UpstreamPool

__all__ = ["PAUSE_BUFFER", "PAUSE_UPSTREAM", "Downstream", "EdgeContext", "Exchange", "Limits"]

PAUSE_UPSTREAM = 1  # the upstream connection's write buffer is full
PAUSE_BUFFER = 2  # the body buffered before a connection was bound is full
_NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes and timeouts of the edge (``start_edge(**limits)``)."""

    max_header_bytes: int = 64 * 1024  # request line + headers -> 431 beyond
    max_uri_bytes: int = 8 * 1024  # request target -> 414 beyond
    max_headers: int = 128  # header lines -> 431 beyond
    request_buffer_bytes: int = 256 * 1024  # body held while connecting; reading pauses beyond
    keepalive_timeout: float = 75.0  # idle client connection
    header_timeout: float = 30.0  # a started request head must complete within -> 408
    connect_timeout: float = 5.0  # per upstream connect attempt
    response_timeout: float = 60.0  # request fully sent -> response head, else 504
    upstream_max_idle: int = 256  # idle pooled connections kept per backend
    upstream_idle_timeout: float = 4.0  # below the instances' own keep-alive timeout
    shutdown_timeout: float = 10.0  # Edge.close() waits this long for in-flight requests

    @property
    def tick(self) -> float:
        """How often deadlines are checked: timeouts fire up to one tick late. (A
        ``call_later`` per request costs more than the rest of the request.)"""
        shortest = min(self.header_timeout, self.keepalive_timeout, self.response_timeout)
        return max(0.01, min(1.0, shortest / 4))


class EdgeContext:
    """Everything the exchanges of one edge share."""

    __slots__ = (
        "inflight",
        "limits",
        "loop",
        "pool",
        "region",
        "request_ids",
        "rng",
        "routes",
        "tasks",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        routes: RouteHolder,
        pool: UpstreamPool,
        limits: Limits,
        region: str,
        request_ids: RequestIds,
        rng: random.Random,
    ) -> None:
        self.loop = loop
        self.routes = routes
        self.pool = pool
        self.limits = limits
        self.region = region
        self.request_ids = request_ids
        self.rng = rng
        self.inflight: dict[str, int] = {}  # instance id -> this edge's open attempts
        self.tasks: set[asyncio.Task[None]] = set()  # connect attempts in progress


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
    def abort_response(self, ex: Exchange) -> None: ...
    def flush(self) -> None: ...
    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...


def _forwardable(name: bytes) -> bool:
    lname = name.lower()
    return lname not in HOP_BY_HOP and not lname.startswith(b"roost-")


class Exchange:
    """One request and its response; see the module docstring for the phases."""

    __slots__ = (
        "_backend",
        "_body",
        "_body_size",
        "_candidates",
        "_conn",
        "_ctx",
        "_deadline",
        "_down",
        "_head",
        "_last_error",
        "_route",
        "_tried",
        "finished",
        "has_body",
        "host",
        "info",
        "method",
        "replayable",
        "request_done",
        "request_id",
        "response_started",
    )

    def __init__(
        self,
        ctx: EdgeContext,
        down: Downstream,
        method: bytes,
        head: bytes,
        info: RequestInfo,
        host: str,
        request_id: bytes,
    ) -> None:
        self._ctx = ctx
        self._down = down
        self.method = method
        self._head = head  # the request head as sent upstream, kept for a replay
        self.info = info
        self.host = host
        self.request_id = request_id
        self.has_body = info.chunked or bool(info.content_length)
        self.replayable = not self.has_body and method in errors.IDEMPOTENT_METHODS
        self.request_done = not self.has_body
        self.response_started = False
        self.finished = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._conn: UpstreamConnection | None = None
        self._backend: Backend | None = None
        self._route: AppRoute | None = None
        self._candidates: list[Backend] = []
        self._tried = 0
        self._last_error: errors.ProxyError | None = None
        self._deadline = _NEVER  # loop time by which the response head must arrive

    # -- driven by the client codec ---------------------------------------------------

    def start(self, *, flush: bool = True) -> None:
        """Route and balance, then make the first attempt.

        ``flush=False`` leaves the request head queued on a pooled connection: the
        caller flushes once its current input is parsed (one write for head and body).
        """
        ctx = self._ctx
        route = self._route = ctx.routes.table.lookup(self.host)
        if route is None:
            if self.host and normalize_host(self.host) is None:
                return self._fail(errors.bad_request("invalid Host header"))
            return self._fail(errors.no_app(self.host))
        if not route.backends:
            return self._fail(errors.no_instances(route.app))
        forced = self.info.force_instance
        if forced is not None:
            backend = route.backend(forced.decode("latin-1"))
            if backend is None:
                return self._fail(errors.unknown_instance(route.app, forced.decode("latin-1")))
            self._candidates = [backend]
        else:
            self._candidates = order_backends(route, ctx.inflight, ctx.rng)
        self._attempt(flush=flush)

    def request_body(self, data: bytes) -> None:
        """Request body bytes (de-framed) arrived from the client."""
        if self._conn is not None:
            self._conn.send_body(data)
        elif not self.finished:
            self._body.append(data)
            self._body_size += len(data)
            if self._body_size > self._ctx.limits.request_buffer_bytes:
                self._down.pause_reading(PAUSE_BUFFER)

    def request_end(self) -> None:
        """The request is complete."""
        if self.request_done:
            return
        self.request_done = True
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
            self.finished = True
            self._down.abort_response(self)
        else:
            self._fail(err)

    def cancel(self) -> None:
        """The client is gone: drop everything, answer nothing."""
        if not self.finished:
            self.finished = True
            self._drop_conn()

    # -- attempts ---------------------------------------------------------------------

    def _attempt(self, *, flush: bool = True) -> None:
        if not self._candidates:
            assert self._route is not None and self._last_error is not None
            return self._fail(
                errors.upstream_unavailable(self._route.app, self._tried, self._last_error)
            )
        backend = self._backend = self._candidates.pop(0)
        self._tried += 1
        inflight = self._ctx.inflight
        inflight[backend.instance_id] = inflight.get(backend.instance_id, 0) + 1
        conn = self._ctx.pool.take(backend)
        if conn is not None:
            self._bind(conn, flush=flush)
        else:
            task = self._ctx.loop.create_task(self._connect(backend))
            self._ctx.tasks.add(task)
            task.add_done_callback(self._ctx.tasks.discard)

    async def _connect(self, backend: Backend) -> None:
        # Never cancelled: a cancel racing a completed connect would leak the socket.
        # An exchange that finished meanwhile hands the new connection to the pool.
        try:
            conn = await self._ctx.pool.connect(backend)
        except (OSError, TimeoutError) as exc:
            if not self.finished:
                self._end_attempt()
                self._last_error = errors.upstream_connect_failed(backend.instance_id, exc)
                self._attempt()
                self._down.flush()
            return
        if self.finished:
            self._ctx.pool.release(conn)
        else:
            self._bind(conn, flush=True)

    def _bind(self, conn: UpstreamConnection, *, flush: bool) -> None:
        self._conn = conn
        conn.send_request(
            self,
            self._head,
            chunked=self.info.chunked,
            has_body=self.has_body,
            head_req=self.method == b"HEAD",
        )
        if self._body:
            for chunk in self._body:
                conn.send_body(chunk)
            self._body = []
            self._body_size = 0
            self._down.resume_reading(PAUSE_BUFFER)
        if self.has_body and self.request_done:
            conn.send_end()
        if self.request_done:
            self._start_timer()
        if self._down.write_paused:
            conn.pause_reading()
        if flush:
            conn.flush()

    def _start_timer(self) -> None:
        self._deadline = self._ctx.loop.time() + self._ctx.limits.response_timeout

    def check_deadline(self, now: float) -> None:
        """Called every tick by the client connection: enforce the response timeout."""
        if now >= self._deadline:
            self._deadline = _NEVER
            self._response_timed_out()

    def _response_timed_out(self) -> None:
        if not self.response_started and not self.finished and self._backend is not None:
            err = errors.upstream_timeout(
                self._backend.instance_id, self._ctx.limits.response_timeout
            )
            self._drop_conn()
            self._fail(err)
            self._down.flush()

    def _end_attempt(self) -> None:
        self._deadline = _NEVER
        self._down.resume_reading(PAUSE_UPSTREAM)
        backend, self._backend = self._backend, None
        if backend is not None:
            inflight = self._ctx.inflight
            count = inflight.get(backend.instance_id, 0) - 1
            if count > 0:
                inflight[backend.instance_id] = count
            else:
                inflight.pop(backend.instance_id, None)

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._end_attempt()

    def _fail(self, err: errors.ProxyError) -> None:
        self.finished = True
        self._body = []
        self._down.resume_reading(PAUSE_BUFFER)  # the rest of the body is read and dropped
        self._down.send_error(self, err)

    # -- UpstreamSink: reports from the bound connection --------------------------------

    def upstream_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        self._down.send_interim(status, reason, headers)

    def upstream_head(self, status: int, reason: bytes, headers: Headers) -> ResponseInfo:
        out, info = prepare_response(headers, self.request_id)
        if info.bad_framing is None:
            self._deadline = _NEVER
            self.response_started = True
            self._down.send_head(self, status, reason, out, info)
        return info

    def upstream_body(self, data: bytes) -> None:
        self._down.send_body(data)

    def upstream_end(self, trailers: Headers) -> None:
        self._conn = None
        self._end_attempt()
        self.finished = True
        if trailers:
            trailers = [(n, v) for n, v in trailers if _forwardable(n)]
        self._down.send_end(self, trailers)

    def upstream_failed(self, err: errors.ProxyError) -> None:
        self._conn = None
        self._end_attempt()
        if self.finished:
            return
        if self.response_started:
            self.finished = True
            self._down.abort_response(self)
        elif err.retry_safe:
            self._last_error = err
            self._attempt()
        else:
            self._fail(err)

    def upstream_flush(self) -> None:
        self._down.flush()

    def upstream_write_paused(self) -> None:
        self._down.pause_reading(PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self._down.resume_reading(PAUSE_UPSTREAM)
