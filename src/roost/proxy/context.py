"""What every exchange of one proxy shares: sizes and timeouts (:class:`Limits`) and the
per-listener context (:class:`RelayContext`; the edge's and host proxy's extend it).

The context is the seam between the HTTP codec and the proxy's policy: the codec parses a
request head and asks :meth:`RelayContext.new_exchange` for the exchange that will carry
it (an edge exchange routes and balances; a host exchange admits and forwards).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from roost.proxy.forwarding import RequestIds
from roost.proxy.headers import Headers
from roost.proxy.metrics import Metrics, NullMetrics
from roost.proxy.upstream_pool import UpstreamPool

if TYPE_CHECKING:
    from roost.proxy.exchange import Downstream, Exchange
    from roost.proxy.workgate import WorkGate

__all__ = ["Limits", "RelayContext"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes and timeouts of the edge and the host proxy (``start_edge(**limits)``)."""

    max_header_bytes: int = 64 * 1024  # request line + headers -> 431 beyond
    max_uri_bytes: int = 8 * 1024  # request target -> 414 beyond
    max_headers: int = 128  # header lines -> 431 beyond
    request_buffer_bytes: int = 256 * 1024  # body held while connecting; reading pauses beyond
    retry_buffer_bytes: int = 1 << 20  # body kept for a replay; larger bodies are not retried
    max_attempts: int = 5  # attempts per request per round (a wake-up starts a new round)
    queue_timeout: float = 5.0  # how long a request waits for capacity -> 503 at capacity
    queue_max: int = 200  # waiting requests per app -> 503 at once beyond
    strategy: Literal["closest", "leastload"] = "closest"
    keepalive_timeout: float = 75.0  # idle client connection
    header_timeout: float = 30.0  # a started request head must complete within -> 408
    body_min_rate: int = 1024  # request body bytes/s over each body_rate_window -> 408 below
    body_rate_window: float = 10.0
    connect_timeout: float = 5.0  # per upstream (backhaul or instance) connect attempt
    response_timeout: float = 60.0  # request fully sent -> response head, else 504
    upstream_max_idle: int = 256  # idle pooled connections kept per upstream address
    upstream_idle_timeout: float = 4.0  # below the instances' own keep-alive timeout
    backhaul_max_idle: int = 512  # idle backhaul connections kept per host proxy
    backhaul_idle_timeout: float = 30.0  # below the host proxy's keepalive_timeout
    backhaul_h2_max_streams: int = 100  # streams per HTTP/2 backhaul connection
    backhaul_h2_idle_timeout: float = 30.0  # an HTTP/2 backhaul connection without streams
    shutdown_timeout: float = 30.0  # close() waits this long for in-flight requests
    congested_batch: int = 1  # requests per loop turn of an app at capacity (workgate)
    new_connections_batch: int = 4  # new connections' first requests per loop turn (edge)

    @property
    def tick(self) -> float:
        """How often deadlines are checked: timeouts fire up to one tick late. (A
        ``call_later`` per request costs more than the rest of the request.)"""
        shortest = min(
            self.header_timeout,
            self.keepalive_timeout,
            self.response_timeout,
            self.queue_timeout,
            self.body_rate_window,
        )
        return max(0.01, min(1.0, shortest / 4))


class RelayContext:
    """What every exchange of one proxy (edge or host) shares."""

    role: Literal["edge", "host"] = "edge"
    gate: WorkGate | None = None  # per-app caps on work (the edge's; None: no caps)

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: UpstreamPool,
        limits: Limits,
        region: str,
        request_ids: RequestIds,
        metrics: Metrics | None = None,
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.limits = limits
        self.region = region
        self.request_ids = request_ids
        self.metrics: Metrics = metrics if metrics is not None else NullMetrics()
        self.tasks: set[asyncio.Task[None]] = set()  # connect attempts in progress

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
        """An exchange for a parsed request head (raises ProxyError to reject it);
        ``protocol`` is the client's (``"h2"`` from the HTTP/2 codec)."""
        raise NotImplementedError

    def congested_app(self, host: str) -> str | None:
        """The app a request for ``host`` goes to if that app is at capacity (its requests
        wait for a slot), else None: the work gate's cue (:mod:`roost.proxy.workgate`)."""
        return None

    def first_bytes_key(self, data: bytes) -> str | None:
        """The work gate's key for the request head ``data`` starts with: an app at
        capacity, None for an app with room, ``workgate.NEW`` when they show no app (the
        edge's: :class:`~roost.proxy.edge_context.EdgeContext`; here there is no gate)."""
        return None

    def request_rejected(self, status: int, protocol: str) -> None:
        """A request answered by the codec before any exchange existed (400, 405, 408, 414,
        431...): still one ``request_finished``, with no app and no timings."""
        self.metrics.request_finished(
            role=self.role,
            app="",
            status=status,
            protocol=protocol,
            time_to_headers=0.0,
            request_body_time=0.0,
            response_body_time=0.0,
            bytes_in=0,
            bytes_out=0,
            duration=0.0,
        )

    def close_pools(self) -> None:
        """Close pooled upstream connections (at the end of shutdown)."""
        self.pool.close()

    def tick(self, now: float) -> None:
        """Called once per tick by the connection registry."""
