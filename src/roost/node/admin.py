"""Admin HTTP server on its own port: ``GET /metrics`` (Prometheus text) and ``GET /healthz``.

Default address ``127.0.0.1:9280`` (``roost up --admin-port``). There is no token: the metrics
carry no secrets (app names, counts, timings; never headers, paths or instance ids) and the
default bind is loopback. Expose it beyond the host only behind something that authenticates.

Deliberately tiny: one request per connection (``Connection: close``), GET and HEAD only, a
16 KiB head limit and a 10 s deadline for it. The metrics are copied on the event loop (the
thread that updates them) and rendered to text in a worker thread (``PrometheusMetrics.frozen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest

log = logging.getLogger("roost.admin")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9280
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
LINGER = 1.0  # seconds to wait for the client to close after our response
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
TEXT = "text/plain; charset=utf-8"
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes


class HasRegistry(Protocol):
    """What the admin server scrapes: ``PrometheusMetrics`` has one. When the object also has
    ``frozen()`` (a copy of the registry, safe to render in any thread), the text is rendered in
    a worker thread so a big exposition does not stall the event loop."""

    @property
    def registry(self) -> CollectorRegistry: ...


Response = tuple[int, str, bytes, dict[str, str]]


class AdminServer:
    """A running admin listener; see :func:`start_admin`."""

    def __init__(self, metrics: HasRegistry, health: Callable[[], bool] | None) -> None:
        self.metrics = metrics
        self.health = health
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end open connections."""
        if self.server is None:
            return
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one request on a new connection, then close it."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        head = b""
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:
                response: Response = (431, TEXT, b"request head too large\n", {})
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            else:
                response = await self.respond(head)
            writer.write(_render(*response, head_only=head.startswith(b"HEAD ")))
            await writer.drain()
            await _linger(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # CancelledError: close(); ending quietly keeps asyncio from logging it
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def respond(self, head: bytes) -> Response:
        """The response to a request head (request line + headers)."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, TEXT, b"bad request\n", {}
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0]
        if path not in (b"/metrics", b"/healthz"):
            return 404, TEXT, b"not found: try /metrics or /healthz\n", {}
        if method not in (b"GET", b"HEAD"):
            return 405, TEXT, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path == b"/healthz":
            if self.health is not None and not self.health():
                return 503, TEXT, b"unhealthy\n", {}
            return 200, TEXT, b"ok\n", {}
        return await self.render_metrics()

    async def render_metrics(self) -> Response:
        """The exposition text: copied on the loop, rendered in a thread when possible."""
        try:
            frozen = getattr(self.metrics, "frozen", None)
            if frozen is None:
                body = generate_latest(self.metrics.registry)
            else:
                body = await asyncio.to_thread(generate_latest, frozen())
        except Exception:
            log.exception("rendering /metrics failed")
            return 500, TEXT, b"metrics failed; see the node's log\n", {}
        return 200, EXPOSITION, body, {}


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close and discard what the client still sends (bounded), so closing with unread
    input (an oversized head, a body) does not reset the connection before it reads our reply."""
    if not writer.can_write_eof():
        return
    writer.write_eof()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(LINGER):
            left = 256 * 1024
            while left > 0 and (chunk := await reader.read(65536)):
                left -= len(chunk)


def _render(
    status: int, ctype: str, body: bytes, extra: dict[str, str], *, head_only: bool
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


async def start_admin(
    host: str,
    port: int,
    metrics: HasRegistry,
    *,
    health: Callable[[], bool] | None = None,
) -> AdminServer:
    """Listen on ``host:port`` (``0`` = any free port) and serve ``metrics.registry``.

    ``health`` (optional) decides ``/healthz``: 200 ``ok`` when it returns true, 503 otherwise.
    Raises ``OSError`` when the address cannot be bound.
    """
    admin = AdminServer(metrics, health)
    admin.server = await asyncio.start_server(
        admin.handle, host, port, limit=MAX_HEAD, reuse_address=True, backlog=128
    )
    return admin
