"""The edge: assemble the HTTP/1.1 proxy stack and run it on a listening socket.

:func:`start_edge` is the one place the pieces are put together::

    RouteHolder (swapped by the catalog watcher)
        -> EdgeContext (limits, region, balancer inputs, wait queues, backhaul pool)
        -> ClientConnection per accepted socket (http1)
        -> EdgeExchange per request (forward) -> UpstreamConnection to a host proxy
           (or straight to an instance for backends without backhaul)

Load and wake-ups on one node: ``loads`` is the host proxy's live count per instance and
``admission`` the host proxy's :class:`~roost.proxy.admission.Admission`, whose releases
wake requests waiting for capacity. Across nodes the load view (mesh) plays both parts.

Shutdown: see :class:`~roost.proxy.server.ProxyServer`.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from typing import Any

from roost.proxy.admission import Admission
from roost.proxy.forward import EdgeContext, Limits
from roost.proxy.h2conn import H2Options
from roost.proxy.headers import RequestIds
from roost.proxy.http1 import ClientConnection
from roost.proxy.http2 import H2ClientConnection
from roost.proxy.metrics import Metrics, NullMetrics
from roost.proxy.preface import PrefaceSniffer
from roost.proxy.routes import RouteHolder
from roost.proxy.server import ConnectionRegistry, ProxyServer
from roost.proxy.upstream import UpstreamPool

__all__ = ["ConnectionRegistry", "Edge", "Limits", "start_edge"]


class Edge(ProxyServer):
    """A running edge listener; see :func:`start_edge`."""

    context: EdgeContext

    def __init__(
        self,
        server: asyncio.Server,
        context: EdgeContext,
        connections: ConnectionRegistry,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(server, context, connections)
        self._port = int(server.sockets[0].getsockname()[1])
        self._admission = admission

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return self._port

    def _closed_hook(self) -> None:
        if self._admission is not None:
            self._admission.unsubscribe(self.context.capacity_freed)

    async def __aenter__(self) -> Edge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_edge(
    host: str,
    port: int,
    routes: RouteHolder,
    *,
    region: str,
    metrics: Metrics | None = None,
    admission: Admission | None = None,
    loads: Callable[[str], int] | None = None,
    rtt: Callable[[str], float] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    h2: H2Options | None = None,
    **limits: Any,
) -> Edge:
    """Listen on ``host:port`` (``0`` = any free port) and proxy HTTP/1.x by ``routes``.

    ``limits`` are the fields of :class:`~roost.proxy.forward.Limits` (sizes, timeouts);
    an unknown name raises TypeError. ``region`` is stamped as ``Roost-Region``.
    ``admission``: a host proxy's counts on this node -- its load feeds the balancer and its
    releases wake waiting requests (``loads`` overrides where load is read from). ``rtt``:
    node id -> seconds from this edge (default 0.0: everything is on this node).
    """
    loop = loop or asyncio.get_running_loop()
    config = Limits(**limits)
    metrics = metrics if metrics is not None else NullMetrics()
    assert metrics is not None
    pool = UpstreamPool(
        loop,
        max_idle=config.upstream_max_idle,
        idle_timeout=config.upstream_idle_timeout,
        connect_timeout=config.connect_timeout,
        backhaul_max_idle=config.backhaul_max_idle,
        backhaul_idle_timeout=config.backhaul_idle_timeout,
    )
    metrics.register_pool("edge_backhaul", pool)
    if loads is None and admission is not None:
        loads = admission.load
    request_ids = RequestIds(os.urandom(4).hex().encode("ascii"))
    context = EdgeContext(
        loop,
        routes,
        pool,
        config,
        region,
        request_ids,
        random.Random(),
        metrics=metrics,
        loads=loads,
        rtt=rtt,
    )
    if admission is not None:
        admission.subscribe(context.capacity_freed)
    connections = ConnectionRegistry(loop, config.tick, context)
    h2_options = h2 if h2 is not None else H2Options()

    def accept() -> asyncio.Protocol:
        # one port serves HTTP/1.x and HTTP/2 with prior knowledge (h2c), told apart by preface
        return PrefaceSniffer(
            ClientConnection(context, connections),
            lambda: H2ClientConnection(context, connections, h2_options),
        )

    server = await loop.create_server(accept, host, port, backlog=1024)
    connections.start()
    return Edge(server, context, connections, admission)
