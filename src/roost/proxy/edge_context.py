"""What the exchanges of one edge share (:class:`EdgeContext`), and where they are made.

The HTTP codecs ask :meth:`EdgeContext.new_exchange` for the exchange that carries a parsed
request head: the head is checked and rewritten (:mod:`roost.proxy.headers`; for HTTP/2 a
header block for the h2 backhaul), then an :class:`~roost.proxy.forward.EdgeExchange` routes,
balances and forwards it. The context holds the route table, the balancer's inputs (the edge's
own attempts per instance, the ``loads`` source, RTTs), the per-app wait queues and work gate,
and the backhaul pools (HTTP/1.1 keep-alive, multiplexed HTTP/2).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable

from roost.proxy import errors, localpipe
from roost.proxy.context import Limits, RelayContext
from roost.proxy.exchange import Downstream, Exchange
from roost.proxy.forward import EdgeExchange
from roost.proxy.forwarding import RequestIds
from roost.proxy.h2backhaul import H2BackhaulPool, request_block
from roost.proxy.h2conn import H2Options
from roost.proxy.headers import Headers, RequestInfo, prepare_head, prepare_request
from roost.proxy.metrics import Metrics
from roost.proxy.preface import peek_host
from roost.proxy.routes import RouteHolder
from roost.proxy.upstream_pool import UpstreamPool
from roost.proxy.waitqueue import WaitQueues
from roost.proxy.workgate import NEW, WorkGate

__all__ = ["EdgeContext", "Limits"]


class EdgeContext(RelayContext):
    """Everything the exchanges of one edge share."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        routes: RouteHolder,
        pool: UpstreamPool,
        limits: Limits,
        region: str,
        request_ids: RequestIds,
        rng: random.Random,
        *,
        metrics: Metrics | None = None,
        loads: Callable[[str], int | None] | None = None,
        rtt: Callable[[str], float] | None = None,
        h2: H2Options | None = None,
    ) -> None:
        super().__init__(loop, pool, limits, region, request_ids, metrics)
        self.routes = routes
        self.rng = rng
        self.inflight: dict[str, int] = {}  # instance id -> this edge's open attempts
        # instance id -> reported in-flight (None: unknown/expired; own count is used then)
        self.loads: Callable[[str], int | None] = loads or _no_load
        self.h2pool = H2BackhaulPool(  # backhaul for requests that came in over HTTP/2
            loop,
            max_streams=limits.backhaul_h2_max_streams,
            idle_timeout=limits.backhaul_h2_idle_timeout,
            connect_timeout=limits.connect_timeout,
            options=h2,
        )
        self.metrics.register_pool("edge_backhaul_h2", self.h2pool)
        self.rtt: Callable[[str], float] = rtt or _same_node  # node id -> seconds
        self.queues = WaitQueues(limits.queue_max)
        self.gate = WorkGate(
            loop.call_soon,
            self.congested,
            batch=limits.congested_batch,
            on_hold=self._gate_held,
            batches={NEW: limits.new_connections_batch},
            before_turn=functools.partial(localpipe.run_due, loop),
        )
        self._table_seen = routes.table

    def new_exchange(
        self,
        down: Downstream,
        method: bytes,
        version: str,
        target: bytes,
        headers: Headers,
        fwd_tail: tuple[tuple[bytes, bytes], ...],
        client_ip: bytes,
        request_id: bytes,
        upgrade: bool,
        *,
        protocol: str = "http/1.1",
    ) -> Exchange:
        head: bytes | Headers
        if protocol == "h2":
            fields, info = _prepare_h2(method, target, headers, fwd_tail, client_ip, request_id)
            head = request_block(method, target, fields)
        else:
            head, info = prepare_head(
                method, version, target, headers, fwd_tail, client_ip, request_id, upgrade=upgrade
            )
        host = (info.host or b"").decode("latin-1")
        ex = EdgeExchange(self, down, method, head, info, host, request_id)
        ex.protocol = protocol
        return ex

    def _gate_held(self, app: str) -> None:
        self.metrics.gate_held(app=app)

    def congested(self, app: str) -> bool:
        """Whether ``app`` is at capacity: requests wait for a slot (see :mod:`workgate`)."""
        return self.queues.waiting(app) > 0

    def first_bytes_key(self, data: bytes) -> str | None:
        """The work gate's key for a new connection's first bytes (``preface``): the app
        when they show a request for an app at capacity, None (no gate) for an app with
        room, :data:`NEW` when they show no app (an h2 preface, a partial or odd head, a
        host no app has)."""
        host = peek_host(data)
        route = None if host is None else self.routes.table.lookup(host.decode("latin-1"))
        if route is None:
            return NEW
        return route.app if self.congested(route.app) else None

    def congested_app(self, host: str) -> str | None:
        if not self.queues.any_waiting():
            return None  # the common case: one check, no lookup
        route = self.routes.table.lookup(host)
        return route.app if route is not None and self.congested(route.app) else None

    def close_pools(self) -> None:
        super().close_pools()
        self.h2pool.close()

    def capacity_freed(self, app: str, instance_id: str, in_flight: int = 0) -> None:
        """An instance of ``app`` may have room now: wake one waiter (soon, not inside
        the caller's callback)."""
        if self.queues.waiting(app):
            self.loop.call_soon(self._wake, app, instance_id)

    def _wake(self, app: str, instance_id: str | None) -> None:
        waiter = self.queues.take(app, instance_id)
        if isinstance(waiter, EdgeExchange):
            waiter.wake()

    def tick(self, now: float) -> None:
        table = self.routes.table
        if table is not self._table_seen:  # instances may have come: let the heads retry
            self._table_seen = table
            for app in self.queues.apps():
                self._wake(app, None)


def _no_load(instance_id: str) -> int | None:
    return None


def _prepare_h2(
    method: bytes,
    target: bytes,
    headers: Headers,
    fwd_tail: tuple[tuple[bytes, bytes], ...],
    client_ip: bytes,
    request_id: bytes,
) -> tuple[Headers, RequestInfo]:
    """:func:`~roost.proxy.headers.prepare_head` for an HTTP/2 request (``Host`` from
    ``:authority``; no version, absolute form or upgrade to handle): the fields to send."""
    if method == b"CONNECT":
        raise errors.method_not_allowed("CONNECT")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
        raise errors.bad_request("invalid :path")
    fields, info = prepare_request(headers, fwd_tail, client_ip, request_id)
    if info.host is None:
        raise errors.bad_request("missing :authority")
    return fields, info


def _same_node(node: str) -> float:
    return 0.0
