"""A full request path in one process for tests: edge -> backhaul socket -> host proxy ->
instances that record what they saw and how many requests they served at once.

Instances (:class:`Instance`) are h11 servers. Paths: ``/`` answers at once, ``/sleep/MS``
after MS milliseconds, ``/gate`` when the instance's ``gate`` is set, ``/drop`` reads the
request then closes without answering, ``/ws`` with ``Upgrade`` answers 101 and then
echoes bytes upper-cased until EOF (then sends ``BYE`` and closes). Every request is
recorded with its ``X-Test-Id`` header and body digest; ``max_active`` is the most
requests it ever had in progress at once. :func:`req`, :func:`post` build requests for
them; :func:`hold` keeps an instance busy on ``/gate``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from roost.proxy import (
    Backend,
    HostTarget,
    InstanceTable,
    RouteHolder,
    RouteTable,
    TableHolder,
    start_edge,
    start_host_proxy,
)
from roost.proxy.backhaul import unix_address
from roost.proxy.edge import Edge
from roost.proxy.host import HostProxy
from tests.integration.rig import HOST, H11Server, RawClient, close_all, wait_for

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Instance(H11Server):
    ident: str
    hard: int | None = None
    soft: int = 20
    node: str = "n1"
    rtt: float = 0.0
    active: int = 0
    max_active: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0  # body bytes of /big/N written so far
    stalled: bool = False  # /big/N: its socket's kernel buffer is full (backpressure)

    def ids(self) -> list[str]:
        return [s["test_id"] for s in self.seen]

    async def _echo_upper(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: dict[str, str],
    ) -> None:
        """Accept the upgrade (101), then echo every byte upper-cased until EOF."""
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
        )
        data = conn.trailing_data[0]
        while True:
            if data:
                writer.write(data.upper())
                await writer.drain()
            data = await reader.read(65536)
            if not data:
                break
        writer.write(b"BYE")
        await writer.drain()

    async def _big(self, size: int, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        """``size`` bytes of ``z`` in 64 KiB writes, each waiting for the socket (drain)."""
        headers = [("Content-Length", str(size))]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        chunk = b"z" * 65536
        while self.sent < size:
            piece = chunk[: size - self.sent]
            writer.write(conn.send(h11.Data(data=piece)))
            self.sent += len(piece)
            self.stalled = writer.transport.get_write_buffer_size() > 0
            await writer.drain()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _answer(
        self,
        request: h11.Request,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        served: int,
    ) -> bool:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            body = await self._read_body(conn, reader)
            if body is None:
                return False
            headers = {n.decode().lower(): v.decode("latin-1") for n, v in request.headers}
            target = request.target.decode()
            self.seen.append(
                {
                    "test_id": headers.get("x-test-id", ""),
                    "target": target,
                    "headers": headers,
                    "body_len": body.size,
                    "body_sha256": body.sha256,
                }
            )
            if target == "/drop":
                return False
            if target == "/ws" and "upgrade" in headers:
                await self._echo_upper(conn, reader, writer, headers)
                return False
            if target.startswith("/big/"):
                await self._big(int(target.split("/")[2]), conn, writer)
                return True
            if target.startswith("/sleep/"):
                await asyncio.sleep(int(target.split("/")[2]) / 1000)
            elif target == "/gate":
                await self.gate.wait()
            body = self.ident.encode()
            headers_out = [("Content-Length", str(len(body))), ("Roost-Refused", "full")]
            writer.write(conn.send(h11.Response(status_code=200, headers=headers_out)))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        finally:
            self.active -= 1


@dataclass
class Rig:
    edge: Edge
    host: HostProxy
    instances: list[Instance]
    routes: RouteHolder
    table: TableHolder

    @property
    def port(self) -> int:
        return self.edge.port

    def by_id(self, ident: str) -> Instance:
        return next(i for i in self.instances if i.ident == ident)


def backends(instances: list[Instance], address: str) -> list[Backend]:
    return [
        Backend(
            i.ident,
            "127.0.0.1",
            i.port,
            node=i.node,
            backhaul=address,
            soft_limit=i.soft,
            hard_limit=i.hard,
        )
        for i in instances
    ]


@contextlib.asynccontextmanager
async def rig(
    tmp: Path,
    instances: list[Instance],
    *,
    stale_loads: bool = False,
    host_only: tuple[str, ...] | None = None,
    metrics: Any = None,
    in_process: bool = True,
    **limits: Any,
) -> AsyncIterator[Rig]:
    """Edge + host proxy + ``instances`` behind app "demo" (app "other" has instance
    "o1" when listed). ``stale_loads``: the edge sees load 0 everywhere (as if its load
    view lagged), so only the host proxy's refusals keep limits. ``host_only``: the host
    proxy knows only these instance ids. ``in_process=False``: the edge reaches the host
    proxy through its unix socket even in this one process (else in memory, as ``roost up``)."""
    for inst in instances:
        await inst.start()
    table = TableHolder(
        InstanceTable(
            HostTarget(
                i.ident,
                "other" if i.ident.startswith("o") else "demo",
                i.port,
                soft_limit=i.soft,
                hard_limit=i.hard,
            )
            for i in instances
            if host_only is None or i.ident in host_only
        )
    )
    host_limits = {k: v for k, v in limits.items() if k != "queue_timeout"}
    host = await start_host_proxy(
        str(tmp / "backhaul.sock"), table, metrics=metrics, in_process=in_process, **host_limits
    )
    address = unix_address(host.path)
    demo = [i for i in instances if not i.ident.startswith("o")]
    other = [i for i in instances if i.ident.startswith("o")]
    routes = RouteHolder(
        RouteTable.build(
            [("demo", []), ("other", [])],
            {"demo": backends(demo, address), "other": backends(other, address)},
        )
    )
    rtts = {i.node: i.rtt for i in instances}
    loads: Callable[[str], int] | None = (lambda _: 0) if stale_loads else None
    edge = await start_edge(
        "127.0.0.1",
        0,
        routes,
        region="tst",
        admission=host.admission,
        loads=loads,
        rtt=lambda node: rtts.get(node, 0.0),
        metrics=metrics,
        **limits,
    )
    if stale_loads:
        edge.context.inflight = _Blind()
    try:
        yield Rig(edge, host, instances, routes, table)
    finally:
        await close_all(RawClient.opened)
        await edge.close(timeout=2.0)
        await host.close(timeout=2.0)
        for inst in instances:
            await inst.close()


class _Blind(dict[str, int]):
    """An in-flight map that always reads 0 (the edge's own counts ignored too)."""

    def get(self, key: str, default: Any = None) -> int:  # type: ignore[override]
        return 0


class Recorder:
    """Metrics that record every call as (method, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.pools: dict[str, Any] = {}

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kw for n, kw in self.calls if n == name]

    def register_pool(self, name: str, pool: Any) -> None:
        self.pools[name] = pool

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(**kw: Any) -> None:
            self.calls.append((name, kw))

        return record


def req(path: str = "/", *, host: str = HOST, test_id: str = "", extra: str = "") -> bytes:
    """A GET request, with an ``X-Test-Id`` header when ``test_id`` is given."""
    tid = f"X-Test-Id: {test_id}\r\n" if test_id else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{tid}{extra}\r\n".encode()


def post(path: str, body: bytes, *, test_id: str = "", host: str = HOST) -> bytes:
    """A POST request with ``body`` (Content-Length), ``X-Test-Id`` as for :func:`req`."""
    tid = f"X-Test-Id: {test_id}\r\n" if test_id else ""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{tid}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def hold(port: int, inst: Instance, request: bytes) -> RawClient:
    """Send ``request`` (a ``/gate`` one) on a new client and wait until ``inst`` is busy
    with it; the client (its response comes once ``inst.gate`` is set) is returned."""
    held = await RawClient.open(port)
    held.send(request)
    await wait_for(lambda: inst.active == 1, what=f"{inst.ident} busy")
    return held
