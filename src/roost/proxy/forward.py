"""One request's trip through the edge: route -> balance -> attempts -> (wait) -> response.

:class:`EdgeExchange` is the edge's :class:`~roost.proxy.exchange.Exchange`. Its phases:

1. **route**: ``Host`` -> :class:`~roost.proxy.routes.AppRoute` in the current table
   (unknown host -> 404, no backends -> 503, unknown forced instance -> 404);
2. **balance**: :func:`~roost.proxy.balance.select` over candidates built from the route's
   backends, the load each is known to carry (:func:`~roost.proxy.loadview.effective_load`
   of the ``loads`` source -- the load view, or on one node the host proxy's admission --
   and this edge's own attempts) and the RTT to its node; instances already tried this
   round are left out, and so are instances at their hard limit;
3. **attempt**: a backhaul request naming the instance (``Roost-Instance``) to its node's
   host proxy (or, for a backend without backhaul, straight to the instance over HTTP/1.1).
   The backhaul protocol follows the client's: HTTP/1.1 requests go over the keep-alive
   :class:`~roost.proxy.upstream_pool.UpstreamPool` with the encoded head, HTTP/2 requests as a
   header block (built from the parsed fields, never re-parsed) on a stream of the
   multiplexed :class:`~roost.proxy.h2backhaul.H2BackhaulPool` (connections per backhaul
   address, ``backhaul_h2_max_streams`` each, idle ones closed after
   ``backhaul_h2_idle_timeout``; metrics pool ``edge_backhaul_h2``);
4. **retry** only when the instance never saw the request (DESIGN.md): the host proxy
   refused it (``Roost-Refused``, or HTTP/2 ``REFUSED_STREAM``: the same), or the connect
   failed or timed out. A connection that closed with the request on it is never a reason
   to retry, whatever the method (:func:`~roost.proxy.errors.upstream_lost`). At most
   ``max_attempts`` attempts per round, and only while the body sent so far is kept
   (``retry_buffer_bytes``);
5. **wait** when every instance is full: the app's bounded FIFO
   (:mod:`~roost.proxy.waitqueue`), woken when a host proxy releases a slot, for up to
   ``queue_timeout``; then ``503`` "at capacity". A woken request starts a new round.
   While an app has waiters, new requests queue behind them (first come, first served).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roost.proxy import backhaul, errors
from roost.proxy.balance import Candidate, select
from roost.proxy.context import Limits, RelayContext
from roost.proxy.exchange import NEVER, Downstream, Exchange
from roost.proxy.headers import Headers, RequestInfo, encode_head
from roost.proxy.loadview import effective_load
from roost.proxy.metrics import RetryReason
from roost.proxy.routes import AppRoute, Backend, normalize_host

if TYPE_CHECKING:
    from roost.proxy.edge_context import EdgeContext

__all__ = ["EdgeExchange", "Limits", "RelayContext"]


def _h1_head(block: Headers, chunked: bool) -> bytes:
    """An HTTP/2 request header block as an HTTP/1.1 head (to an instance directly)."""
    method = path = b""
    fields: Headers = []
    for name, value in block:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
        elif name == b":authority":
            fields.insert(0, (b"host", value))
        elif name[:1] != b":":
            fields.append((name, value))
    if chunked:
        fields.append((b"transfer-encoding", b"chunked"))
    return encode_head(method + b" " + path + b" HTTP/1.1\r\n", fields)


class EdgeExchange(Exchange):
    """A request at the edge; see the module docstring."""

    __slots__ = (
        "_attempts",
        "_excluded",
        "_failed",
        "_forced",
        "_last_error",
        "_last_id",
        "_queued",
        "_route",
        "_wait_deadline",
    )

    _ctx: EdgeContext

    KEEPS_BODY = True

    def __init__(
        self,
        ctx: EdgeContext,
        down: Downstream,
        method: bytes,
        head: bytes | Headers,
        info: RequestInfo,
        host: str,
        request_id: bytes,
    ) -> None:
        super().__init__(ctx, down, method, head, info, host, request_id)
        self._route: AppRoute | None = None
        self._forced: Backend | None = None
        self._attempts = 0
        self._excluded: set[str] | None = None  # tried this round
        self._failed: set[str] | None = None  # failed (not full): never again
        self._last_error: errors.ProxyError | None = None
        self._last_id = ""
        self._queued = False
        self._wait_deadline = NEVER

    @property
    def forced(self) -> str | None:
        """The forced instance (``Roost-Force-Instance-Id``), as a waiter."""
        return None if self._forced is None else self._forced.instance_id

    def start(self, *, flush: bool = True) -> None:
        """Route, then attempt (or wait behind the app's waiters)."""
        ctx = self._ctx
        route = self._route = ctx.routes.table.lookup(self.host)
        if route is None:
            if self.host and normalize_host(self.host) is None:
                return self._fail(errors.bad_request("invalid Host header"))
            return self._fail(errors.no_app(self.host))
        self.app = route.app
        ctx.metrics.inflight(role="edge", app=route.app, delta=1)
        if not route.backends:
            return self._fail(errors.no_instances(route.app))
        forced = self.info.force_instance
        if forced is not None:
            self._forced = route.backend(forced.decode("latin-1"))
            if self._forced is None:
                return self._fail(errors.unknown_instance(route.app, forced.decode("latin-1")))
        elif ctx.queues.general(route.app):
            return self._wait()
        self._attempt(flush=flush)

    # -- attempts ---------------------------------------------------------------------

    def _attempt(self, *, flush: bool = True) -> None:
        backend = self._pick()
        if backend is None:
            return self._no_candidate()
        self._attempts += 1
        inflight = self._ctx.inflight
        iid = backend.instance_id
        inflight[iid] = inflight.get(iid, 0) + 1
        head = self._head
        if backend.backhaul is None:
            if not isinstance(head, bytes):
                head = _h1_head(head, self.info.chunked)
        elif isinstance(head, bytes):
            head = backhaul.with_instance(head, iid)
        else:
            head = [*head, (_INSTANCE, iid.encode("ascii"))]
        self._send_to(backend, head, flush=flush)

    def _pool_for(self, backend: Backend) -> Any:
        if backend.backhaul is not None and self.protocol == "h2":
            return self._ctx.h2pool
        return self._ctx.pool

    def _pick(self) -> Backend | None:
        """The best backend to try next, or None."""
        ctx = self._ctx
        assert self._route is not None
        backends = self._route.backends if self._forced is None else (self._forced,)
        excluded = self._excluded
        own = ctx.inflight.get
        loads = ctx.loads
        if len(backends) == 1 and excluded is None:  # one instance: nothing to rank
            b = backends[0]
            load = own(b.instance_id, 0)
            if b.backhaul is not None:
                load = effective_load(loads(b.instance_id), load)
            if b.hard_limit is None or load < b.hard_limit:
                return b  # healthy or not: with no other instance it is the last resort
            return None
        rtt = ctx.rtt
        candidates: list[Candidate] = []
        by_id: dict[str, Backend] = {}
        for b in backends:
            iid = b.instance_id
            if excluded is not None and iid in excluded:
                continue
            load = own(iid, 0)
            if b.backhaul is not None:
                load = effective_load(loads(iid), load)
            by_id[iid] = b
            candidates.append(
                Candidate(
                    iid, b.node, b.region, rtt(b.node), load, b.soft_limit, b.hard_limit, b.healthy
                )
            )
        order = select(candidates, rng=ctx.rng, strategy=ctx.limits.strategy)
        if not order:  # unhealthy instances with room are a last resort (health may be stale)
            sick = [c for c in candidates if not c.healthy]
            if sick:
                order = select(
                    [
                        Candidate(
                            c.instance_id,
                            c.node,
                            c.region,
                            c.rtt,
                            c.load,
                            c.soft_limit,
                            c.hard_limit,
                        )
                        for c in sick
                    ],
                    rng=ctx.rng,
                    strategy="leastload",
                    choices=len(sick),
                )
        return by_id[order[0].instance_id] if order else None

    def _no_candidate(self) -> None:
        assert self._route is not None
        failed = self._failed
        backends = self._route.backends if self._forced is None else (self._forced,)
        if any(failed is None or b.instance_id not in failed for b in backends):
            return self._wait()  # every one left is full (or refused us this round)
        assert self._last_error is not None
        self._fail(errors.upstream_unavailable(self.app, len(failed or ()), self._last_error))

    def _attempt_ended(self, backend: Backend) -> None:
        ctx = self._ctx
        iid = self._last_id = backend.instance_id
        inflight = ctx.inflight
        count = inflight.get(iid, 0) - 1
        if count > 0:
            inflight[iid] = count
        else:
            inflight.pop(iid, None)
        if ctx.queues.waiting(self.app):
            ctx.capacity_freed(self.app, iid)

    def _trusts_refusal(self) -> bool:
        backend = self._backend
        return backend is not None and backend.backhaul is not None

    def _refusal_error(self) -> errors.ProxyError:
        return backhaul.refusal(self._refused or backhaul.FULL, self._last_id)

    def _retry_or_fail(self, err: errors.ProxyError) -> None:
        iid = self._last_id
        refused = self._refused
        full = refused is not None and refused != backhaul.UNREACHABLE
        if self._excluded is None:
            self._excluded = set()
        self._excluded.add(iid)
        if not full:
            if self._failed is None:
                self._failed = set()
            self._failed.add(iid)
            self._last_error = (
                err
                if refused is None
                else errors.upstream_connect_failed(
                    iid, ConnectionRefusedError("instance unreachable from its host proxy")
                )
            )
        if not self._rewind():  # the body sent is not kept: cannot go elsewhere
            return self._fail(errors.at_capacity(self.app) if full else err)
        self._ctx.metrics.retried(app=self.app, reason=_retry_reason(err, refused))
        if self._attempts >= self._ctx.limits.max_attempts:
            if full:
                return self._wait()
            return self._fail(errors.upstream_unavailable(self.app, self._attempts, err))
        self._attempt()

    # -- waiting for capacity ---------------------------------------------------------

    def _wait(self) -> None:
        ctx = self._ctx
        now = ctx.loop.time()
        first = self._wait_deadline == NEVER
        if first:
            self._waited_since = now
            self._wait_deadline = now + ctx.limits.queue_timeout
        elif now >= self._wait_deadline:
            return self._give_up(now)
        if not ctx.queues.push(self.app, self, front=not first):
            ctx.metrics.queue_wait(app=self.app, seconds=0.0, outcome="queue_full")
            ctx.metrics.refused(role="edge", app=self.app, reason="queue_full")
            return self._fail(errors.at_capacity(self.app, "queue_full"))
        self._queued = True

    def wake(self) -> None:
        """Capacity may have freed: a new round of attempts."""
        self._queued = False
        if self.finished:
            return
        self._attempts = 0
        self._excluded = set(self._failed) if self._failed else None
        route = self._ctx.routes.table.app(self.app)  # instances may have come and gone
        if route is None or not route.backends:
            self._fail(errors.no_instances(self.app))
        else:
            self._route = route
            if self._forced is not None:
                self._forced = route.backend(self._forced.instance_id)
            if self._forced is None and self.info.force_instance is not None:
                name = self.info.force_instance.decode("latin-1")
                self._fail(errors.unknown_instance(self.app, name))
            else:
                self._attempt()
        self._down.flush()

    def _give_up(self, now: float) -> None:
        ctx = self._ctx
        ctx.metrics.queue_wait(app=self.app, seconds=now - self._waited_since, outcome="timeout")
        ctx.metrics.refused(role="edge", app=self.app, reason="at_capacity")
        self._fail(errors.at_capacity(self.app))

    def check_deadline(self, now: float) -> None:
        if self._queued and now >= self._wait_deadline:
            self._queued = False
            self._ctx.queues.remove(self.app, self)
            self._give_up(now)
            self._down.flush()
            return
        super().check_deadline(now)

    def cancel(self) -> None:
        if self._queued:
            self._queued = False
            self._ctx.queues.remove(self.app, self)
        super().cancel()

    def _served_after_wait(self) -> None:
        seconds, self._waited_since = self._t_head - self._waited_since, 0.0
        self._ctx.metrics.queue_wait(app=self.app, seconds=seconds, outcome="served")


_INSTANCE = backhaul.INSTANCE.lower()


def _retry_reason(err: errors.ProxyError, refused: bytes | None) -> RetryReason:
    if refused is not None:
        return "connect_failed" if refused == backhaul.UNREACHABLE else "refused"
    # (the only other retry-safe failure: a connect that failed or timed out)
    return "connect_timeout" if "timed out" in err.message else "connect_failed"
