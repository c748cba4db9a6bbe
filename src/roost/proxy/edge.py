"""The edge: assemble the HTTP/1.1 proxy stack and run it on a listening socket.

:func:`start_edge` is the one place the pieces are put together::

    RouteHolder (swapped by the catalog watcher)
        -> EdgeContext (limits, region, balancer state, request ids, upstream pool)
        -> ClientConnection per accepted socket (http1)
        -> Exchange per request (forward) -> UpstreamConnection (upstream)

Shutdown (:meth:`Edge.close`) goes in order: stop accepting -> close idle keep-alive
connections and mark busy ones to close after their response -> wait for them with a
deadline -> abort the rest -> close pooled upstream connections -> settle connect attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from typing import Any

from roost.proxy.forward import EdgeContext, Limits
from roost.proxy.headers import RequestIds
from roost.proxy.http1 import ClientConnection
from roost.proxy.routes import RouteHolder
from roost.proxy.upstream import UpstreamPool

__all__ = ["ConnectionRegistry", "Edge", "Limits", "start_edge"]


class ConnectionRegistry:
    """The open client connections of one edge: deadline ticks and shutdown."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._loop = loop
        self._tick_every = tick
        self._ticker: asyncio.TimerHandle | None = None
        self._empty = asyncio.Event()
        self._empty.set()

    def start(self) -> None:
        """Start checking every connection's deadlines each tick."""
        self._ticker = self._loop.call_later(self._tick_every, self._tick)

    def stop(self) -> None:
        """Stop the deadline checks."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _tick(self) -> None:
        now = self._loop.time()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        if self._ticker is not None:
            self._ticker = self._loop.call_later(self._tick_every, self._tick)

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


class Edge:
    """A running edge listener; see :func:`start_edge`."""

    def __init__(
        self, server: asyncio.Server, context: EdgeContext, connections: ConnectionRegistry
    ) -> None:
        self.server = server
        self.context = context
        self.connections = connections
        self._closed = False
        self._port = int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return self._port

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout`` seconds, default
        ``Limits.shutdown_timeout``), then drop whatever is left."""
        if self._closed:
            return
        self._closed = True
        ctx = self.context
        self.server.close()
        self.connections.draining = True
        for conn in list(self.connections.connections):
            conn.shutdown()
        deadline = ctx.limits.shutdown_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(deadline):
                await self.connections.wait_empty()
        except TimeoutError:
            for conn in list(self.connections.connections):
                conn.abort()
        self.connections.stop()
        ctx.pool.close()
        if ctx.tasks:
            # Connect attempts of finished exchanges end within connect_timeout and hand
            # their connection to the (closed) pool; cancelling one that just connected
            # could leak its socket, so wait a little before cancelling the rest.
            await asyncio.wait(list(ctx.tasks), timeout=min(1.0, ctx.limits.connect_timeout))
            for task in list(ctx.tasks):
                task.cancel()
            await asyncio.gather(*ctx.tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.server.wait_closed()

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
    loop: asyncio.AbstractEventLoop | None = None,
    **limits: Any,
) -> Edge:
    """Listen on ``host:port`` (``0`` = any free port) and proxy HTTP/1.x by ``routes``.

    ``limits`` are the fields of :class:`~roost.proxy.forward.Limits` (sizes, timeouts);
    an unknown name raises TypeError. ``region`` is stamped as ``Roost-Region``.
    """
    loop = loop or asyncio.get_running_loop()
    config = Limits(**limits)
    pool = UpstreamPool(
        loop,
        max_idle=config.upstream_max_idle,
        idle_timeout=config.upstream_idle_timeout,
        connect_timeout=config.connect_timeout,
    )
    request_ids = RequestIds(os.urandom(4).hex().encode("ascii"))
    context = EdgeContext(loop, routes, pool, config, region, request_ids, random.Random())
    connections = ConnectionRegistry(loop, config.tick)
    server = await loop.create_server(
        lambda: ClientConnection(context, connections), host, port, backlog=1024
    )
    connections.start()
    return Edge(server, context, connections)
