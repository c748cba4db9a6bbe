"""What the two in-process HTTP/2 backhaul harnesses share (``h2_backhaul_cost.py``, the
edge's side, and ``h2_host_decode_cost.py``, the host proxy's): an edge backhaul connection
on a fake transport, the request fields an h2load GET becomes at the edge, the response an
nginx ``return 200 "ok"`` becomes behind the host proxy, and an exchange stand-in."""

from __future__ import annotations

import asyncio
from typing import Any

from _common import FakeTransport

from roost.proxy.h2backhaul import BackhaulConnection, H2BackhaulPool
from roost.proxy.headers import Headers, ResponseInfo, prepare_request
from roost.proxy.routes import Backend
from roost.proxy.upstream import pool_key

AUTHORITY = b"fast.localhost"
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx/1.22.1"),
    (b"date", b"Fri, 27 Nov 2026 05:00:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
]
INFO = ResponseInfo(content_length=2)


class Sink:
    """An exchange, as far as the backhaul stream sees it: counts finished responses."""

    replayable = True
    done = 0

    def upstream_interim(self, status: int, reason: bytes, headers: Any) -> None: ...

    def upstream_head(self, status: int, reason: bytes, headers: Any) -> ResponseInfo:
        return INFO

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_end(self, trailers: Any) -> None:
        Sink.done += 1

    def upstream_failed(self, err: Any) -> None:
        raise SystemExit(f"request failed: {err}")

    def upstream_flush(self) -> None: ...
    def upstream_write_paused(self) -> None: ...
    def upstream_write_resumed(self) -> None: ...


def edge_connection(
    loop: asyncio.AbstractEventLoop,
) -> tuple[Backend, H2BackhaulPool, BackhaulConnection, FakeTransport]:
    """An edge's h2 backhaul pool holding one connection on a fake transport."""
    backend = Backend(instance_id="bench-backend", host="127.0.0.1", port=9)
    pool = H2BackhaulPool(loop)
    conn = BackhaulConnection(pool, pool_key(backend))
    pool._conns[conn.key] = [conn]
    side = FakeTransport()
    conn.connection_made(side)  # type: ignore[arg-type]
    return backend, pool, conn, side


def request_fields() -> Headers:
    """The fields of an h2load GET as the edge prepared them (request id last)."""
    fields, _ = prepare_request(
        [(b"host", AUTHORITY), (b"user-agent", b"h2load nghttp2/1.52.0")],
        (),
        b"127.0.0.1",
        b"0000000000000000",
    )
    return fields
