"""A running proxy listener (edge or host proxy): its connections, ticks and shutdown.

:class:`ConnectionRegistry` knows every open client connection of one listener; once per
tick it checks their deadlines (idle, head, body rate, response head, queue wait) -- plain
numbers, no timer per request -- and lets the context do its periodic work. The walk goes
``slice`` connections per loop callback (~1 µs each: 10,000 idle keep-alive connections
would otherwise stall every request in flight ~10 ms once a second).

:class:`ProxyServer` is the lifecycle both roles share. Shutdown (:meth:`ProxyServer.close`)
goes in order: stop accepting -> close idle keep-alive connections and mark busy ones to
close after their response (``Connection: close``) -> wait for them up to the drain
timeout -> abort the rest -> close pooled upstream connections -> settle connect attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.proxy.context import RelayContext
    from roost.proxy.http1 import ClientConnection

__all__ = ["ConnectionRegistry", "ProxyServer"]


class ConnectionRegistry:
    """The open client connections of one listener: deadline ticks and shutdown."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tick: float,
        context: RelayContext | None = None,
        *,
        slice: int = 512,
    ) -> None:
        if slice < 1:
            raise ValueError("slice must be at least 1")
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._loop = loop
        self._tick_every = tick
        self._context = context
        self._slice = slice
        self._ticker: asyncio.TimerHandle | asyncio.Handle | None = None
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
        if self._context is not None:
            self._context.tick(self._loop.time())
        self._walk(list(self.connections), 0)

    def _walk(self, conns: list[ClientConnection], start: int) -> None:
        """Check ``conns[start:start + slice]``; the rest in the next loop callback (other
        work runs in between), then the next tick."""
        if self._ticker is None:
            return  # stopped
        now = self._loop.time()
        end = start + self._slice
        alive = self.connections
        for conn in conns[start:end]:
            if conn in alive:  # one that closed since the walk began is left alone
                conn.check_deadlines(now)
        if end < len(conns):
            self._ticker = self._loop.call_soon(self._walk, conns, end)
        else:
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


class ProxyServer:
    """A running listener with its context and connections."""

    def __init__(
        self, server: asyncio.Server, context: RelayContext, connections: ConnectionRegistry
    ) -> None:
        self.server = server
        self.context = context
        self.connections = connections
        self._closed = False

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
        ctx.close_pools()
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
        self._closed_hook()

    def _closed_hook(self) -> None:
        """After close (subclasses: remove a socket file, unsubscribe)."""
