"""The keep-alive pool of upstream HTTP/1.1 connections (:mod:`roost.proxy.upstream`).

The pool keeps up to ``max_idle`` idle connections per (host, port), newest reused first
(so surplus connections age out), and closes those idle for ``idle_timeout`` seconds --
keep that below the instances' own keep-alive timeout (uvicorn: 5 s) to make the "reuse
a connection the server is closing" race rare. Backhaul addresses (host proxies) have their
own limits (``backhaul_max_idle``, ``backhaul_idle_timeout``). An idle connection keeps
reading, so a server closing it is noticed and it leaves the pool.
"""

from __future__ import annotations

import asyncio
import collections

from roost.proxy import localpipe
from roost.proxy.backhaul import parse_address
from roost.proxy.routes import Backend
from roost.proxy.upstream import Key, UpstreamConnection, pool_key

__all__ = ["UpstreamPool"]


class UpstreamPool:
    """Idle keep-alive connections per (host, port), plus connecting new ones."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_idle: int = 256,
        idle_timeout: float = 4.0,
        connect_timeout: float = 5.0,
        max_head_bytes: int = 256 * 1024,
        backhaul_max_idle: int = 512,
        backhaul_idle_timeout: float = 30.0,
    ) -> None:
        self.loop = loop
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_head_bytes = max_head_bytes
        self.backhaul_max_idle = backhaul_max_idle  # backhaul keys (str): own settings
        self.backhaul_idle_timeout = backhaul_idle_timeout
        self._idle: dict[Key, collections.deque[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.opened = 0  # connections opened so far
        self.closed = 0  # ... and closed
        self.reused = 0  # requests sent on a pooled connection

    def stats(self) -> dict[str, int]:
        """Counts for metrics (read at scrape time)."""
        idle = self.idle_count
        return {
            "idle": idle,
            "active": self.opened - self.closed - idle,
            "opened": self.opened,
            "closed": self.closed,
            "reused": self.reused,
        }

    def take(self, backend: Backend) -> UpstreamConnection | None:
        """An idle connection to ``backend``, or None (then :meth:`connect`)."""
        key = backend.backhaul or (backend.host, backend.port)
        idle = self._idle.get(key)
        if not idle:
            return None
        fresh_since = self.loop.time() - self._idle_timeout(key)
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if not conn.closed:
                if conn.idle_since > fresh_since:
                    self.reused += 1
                    return conn
                conn.close()  # the sweeper had not got to it yet
        return None

    async def connect(self, backend: Backend) -> UpstreamConnection:
        """A new connection to ``backend``; raises OSError or TimeoutError."""
        key = pool_key(backend)

        def factory() -> UpstreamConnection:
            return UpstreamConnection(self, key, backend.instance_id)

        async with asyncio.timeout(self.connect_timeout):
            if isinstance(key, tuple):
                _, conn = await self.loop.create_connection(factory, *key)
            else:
                kind, host, port = parse_address(key)
                if kind == "unix":
                    conn = await localpipe.open_unix(self.loop, factory, host)
                else:
                    _, conn = await self.loop.create_connection(factory, host, port)
        self.opened += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Take back a connection whose exchange finished cleanly."""
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = collections.deque()
        limit = self.max_idle if isinstance(conn.key, tuple) else self.backhaul_max_idle
        if self._closed or conn.closed or len(idle) >= limit:
            conn.close()
            return
        conn.resume_reading()  # notice the server closing it while idle
        conn.in_pool = True
        conn.idle_since = self.loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _idle_timeout(self, key: Key) -> float:
        return self.idle_timeout if isinstance(key, tuple) else self.backhaul_idle_timeout

    @property
    def _sweep_every(self) -> float:
        return min(self.idle_timeout, self.backhaul_idle_timeout) / 2

    def forget(self, conn: UpstreamConnection) -> None:
        """Drop a connection that closed while idle."""
        if conn.in_pool:
            conn.in_pool = False
            idle = self._idle.get(conn.key)
            if idle is not None:
                idle.remove(conn)

    @property
    def idle_count(self) -> int:
        """Idle connections held, over all backends."""
        return sum(len(idle) for idle in self._idle.values())

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for key, idle in list(self._idle.items()):
            deadline = now - self._idle_timeout(key)
            while idle and idle[0].idle_since <= deadline:
                idle[0].close()  # forget() pops it
            if not idle:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def close(self) -> None:
        """Close every idle connection and stop pooling."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in list(self._idle.values()):
            while idle:
                idle[0].close()
        self._idle.clear()
