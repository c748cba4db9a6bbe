"""Multiplexed HTTP/2 backhaul: the edge's pool of connections to host proxies.

Requests that came in over HTTP/2 go to the host proxy over HTTP/2 (issue 3), many
streams per connection. The connections and their streams are
:mod:`roost.proxy.h2backhaul_conn`'s (re-exported here); this module decides which
connection a request rides:

- :class:`H2BackhaulPool` -- ``take(backend)`` gives a
  :class:`~roost.proxy.h2backhaul_conn.BackhaulStream` on the busiest connection to the
  backend's host proxy with a free slot (so spare connections go idle and expire),
  ``connect(backend)`` opens a connection (or joins one being opened), ``release`` is a
  no-op (a stream ends itself), idle connections close after ``idle_timeout``; ``stats()``
  for metrics. Connections report back with ``forget`` when they close.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from roost.proxy import backhaul, localpipe
from roost.proxy.h2backhaul_conn import (
    BackhaulConnection,
    BackhaulStream,
    request_block,
    request_fields,
)
from roost.proxy.h2conn import H2Options
from roost.proxy.upstream import pool_key

if TYPE_CHECKING:
    from roost.proxy.routes import Backend

__all__ = [
    "BackhaulConnection",
    "BackhaulStream",
    "H2BackhaulPool",
    "request_block",
    "request_fields",
]


class H2BackhaulPool:
    """HTTP/2 backhaul connections per host proxy (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_streams: int = 100,
        idle_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        options: H2Options | None = None,
    ) -> None:
        self.loop = loop
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.options = options or H2Options()
        self._conns: dict[Any, list[BackhaulConnection]] = {}
        self._connecting: dict[Any, asyncio.Future[BackhaulConnection | None]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.opened = self.closed = 0
        self.requests = 0  # streams opened so far

    def take(self, backend: Backend) -> BackhaulStream | None:
        """A stream on the busiest connection to ``backend``'s host with a free slot."""
        best: BackhaulConnection | None = None
        for conn in self._conns.get(pool_key(backend), ()):
            if conn.usable and (best is None or len(conn.streams) > len(best.streams)):
                best = conn
        return None if best is None else BackhaulStream(best, backend.instance_id)

    async def connect(self, backend: Backend) -> BackhaulStream:
        """A stream on a new connection (or one being opened, if it has room); raises
        OSError or TimeoutError."""
        stream = self.take(backend)  # one opened since (an in-process one opens at once)
        if stream is not None:
            return stream
        key = pool_key(backend)
        pending = self._connecting.get(key)
        if pending is not None:
            conn = await asyncio.shield(pending)
            if conn is None:
                raise ConnectionRefusedError("backhaul connect failed")
            if conn.usable:
                return BackhaulStream(conn, backend.instance_id)
        future = self._connecting[key] = self.loop.create_future()
        try:
            conn = await self._open(key)
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._connecting[key]
        future.set_result(conn)
        return BackhaulStream(conn, backend.instance_id)

    async def _open(self, key: Any) -> BackhaulConnection:
        def factory() -> BackhaulConnection:
            return BackhaulConnection(self, key)

        kind, host, port = ("tcp", *key) if isinstance(key, tuple) else backhaul.parse_address(key)
        async with asyncio.timeout(self.connect_timeout):
            if kind == "unix":
                conn = await localpipe.open_unix(self.loop, factory, host)
            else:
                _, conn = await self.loop.create_connection(factory, host, port)
        self.opened += 1
        self._conns.setdefault(key, []).append(conn)
        if self._sweeper is None and not self._closed:
            self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)
        return conn

    def release(self, conn: Any) -> None:
        """Nothing to do: a stream ends itself (kept for the UpstreamPool interface)."""

    def forget(self, conn: BackhaulConnection) -> None:
        """A connection closed."""
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            self.closed += 1
            if not conns:
                del self._conns[conn.key]

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = self.loop.time() - self.idle_timeout
        for conns in list(self._conns.values()):
            for conn in list(conns):
                if conn.idle_since <= deadline:
                    conn.close_idle()
        if self._conns and not self._closed:
            self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)

    def stats(self) -> dict[str, int]:
        """Counts for metrics: connections, open streams, opened/closed so far."""
        conns = [c for cs in self._conns.values() for c in cs]
        out = {"connections": len(conns), "streams": sum(len(c.streams) for c in conns)}
        out |= {"opened": self.opened, "closed": self.closed, "requests": self.requests}
        return out | {"max_streams": self.max_streams}

    def close(self) -> None:
        """Close idle connections now; busy ones close after their last stream."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.draining = True
                conn.close_idle()
