"""The full path for HTTP/2 clients: client -h2-> edge -h2 backhaul-> host proxy -> instance.

The backhaul follows the client's protocol (HTTP/2 requests ride multiplexed HTTP/2
backhaul connections), the host proxy refuses at the hard limit with RST_STREAM
REFUSED_STREAM before the instance sees a byte, and the edge treats that exactly like an
HTTP/1.1 ``Roost-Refused``: retry elsewhere, never twice. The adaptive flow-control
windows grow on the backhaul connection too, on both of its ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import pytest

from tests.integration.hostrig import Instance, Recorder, hold, req, rig
from tests.integration.rig import HOST as DEMO
from tests.integration.rig import fetch, wait_for
from tests.integration.test_edge_h2_rig import H2Client

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def h2_client(port: int) -> AsyncIterator[H2Client]:
    """An HTTP/2 client connection to the edge, closed on exit."""
    client = await H2Client.open(port)
    try:
        yield client
    finally:
        H2Client.opened.remove(client)
        await client.close()


async def unix_h2_client(path: str) -> H2Client:
    """An HTTP/2 client on the host proxy's backhaul socket (as an edge would connect)."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    client = H2Client(*await asyncio.open_unix_connection(path), conn)
    client.flush()
    return client


async def test_h2_request_uses_h2_backhaul(tmp_path: Path) -> None:
    """An HTTP/2 request reaches the instance over an HTTP/2 backhaul connection."""
    metrics = Recorder()
    async with rig(tmp_path, [Instance("a")], metrics=metrics) as r, h2_client(r.port) as c:
        replies = [c.request(f"/n/{i}", authority=DEMO) for i in range(5)]
        for sid in replies:
            reply = await c.done(sid)
            assert reply.status == 200 and bytes(reply.body) == b"a"
        seen = r.by_id("a").seen[0]["headers"]
        assert "roost-instance" not in seen and seen["host"] == DEMO
        host_calls = [m for m in metrics.of("request_finished") if m["role"] == "host"]
        edge_calls = [m for m in metrics.of("request_finished") if m["role"] == "edge"]
        assert [m["protocol"] for m in host_calls] == ["h2"] * 5
        assert [m["protocol"] for m in edge_calls] == ["h2"] * 5
        stats = metrics.pools["edge_backhaul_h2"].stats()
        assert stats["opened"] == 1 and stats["requests"] == 5 and stats["max_streams"] == 100
        assert metrics.pools["edge_backhaul"].stats()["opened"] == 0


async def test_http1_request_keeps_http1_backhaul(tmp_path: Path) -> None:
    """An HTTP/1.1 request still goes over the HTTP/1.1 backhaul pool."""
    metrics = Recorder()
    async with rig(tmp_path, [Instance("a")], metrics=metrics) as r:
        resp = await fetch(r.port, req("/", test_id="h1"))
        assert resp.status == 200 and resp.body == b"a"
        host_calls = [m for m in metrics.of("request_finished") if m["role"] == "host"]
        assert [m["protocol"] for m in host_calls] == ["http/1.1"]
        assert metrics.pools["edge_backhaul_h2"].stats()["requests"] == 0


async def test_host_refuses_h2_stream_at_hard_limit(tmp_path: Path) -> None:
    """At the hard limit the host proxy resets the stream REFUSED_STREAM; the instance sees
    nothing."""
    inst = Instance("a", hard=1)
    async with rig(tmp_path, [inst]) as r:
        held = await hold(r.port, inst, req("/gate", test_id="holder"))
        client = await unix_h2_client(r.host.path)
        try:
            sid = client.send_block(
                [
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":authority", DEMO.encode()),
                    (b":path", b"/"),
                    (b"roost-instance", b"a"),
                    (b"x-test-id", b"refused"),
                ]
            )
            reply = await client.done(sid)
            assert reply.reset == 7 and reply.status == 0  # REFUSED_STREAM, no response
            assert inst.ids() == ["holder"]
        finally:
            await client.close()
        inst.gate.set()
        assert (await held.response()).status == 200


async def test_refused_stream_retried_on_another_instance(tmp_path: Path) -> None:
    """The closest instance is full (edge unaware): REFUSED_STREAM, the next one serves."""
    near, far = Instance("a", hard=1), Instance("b", hard=1, node="n2", rtt=0.01)
    metrics = Recorder()
    async with rig(tmp_path, [near, far], stale_loads=True, metrics=metrics) as r:
        held = await hold(
            r.port, near, req("/gate", test_id="holder", extra="Roost-Force-Instance-Id: a\r\n")
        )
        async with h2_client(r.port) as c:
            reply = await c.done(c.request("/", authority=DEMO, headers=[("x-test-id", "2nd")]))
            assert reply.status == 200 and bytes(reply.body) == b"b"
        assert near.ids() == ["holder"] and far.ids() == ["2nd"]
        assert {"app": "demo", "reason": "refused"} in metrics.of("retried")
        assert any(m["role"] == "host" for m in metrics.of("refused"))
        near.gate.set()
        assert (await held.response()).status == 200


async def test_h2_post_body_replayed_after_refused_stream(tmp_path: Path) -> None:
    """A refused HTTP/2 POST's body reaches the next instance intact."""
    near, far = Instance("a", hard=1), Instance("b", node="n2", rtt=0.01)
    body = os.urandom(200_000)
    async with rig(tmp_path, [near, far], stale_loads=True) as r:
        await hold(
            r.port, near, req("/gate", test_id="holder", extra="Roost-Force-Instance-Id: a\r\n")
        )
        async with h2_client(r.port) as c:
            headers = [("content-length", str(len(body))), ("x-test-id", "p")]
            sid = c.request("/up", method="POST", authority=DEMO, headers=headers, end=False)
            await c.upload(sid, body)
            reply = await c.done(sid)
            assert reply.status == 200 and bytes(reply.body) == b"b"
        seen = far.seen[0]
        assert seen["body_len"] == len(body)
        assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert near.ids() == ["holder"]
        near.gate.set()


async def test_200_h2_streams_never_exceed_hard_limit(tmp_path: Path) -> None:
    """200 concurrent HTTP/2 streams (2 connections x 100), 3 instances with hard_limit 4:
    all served, none above 4, each request seen exactly once."""
    instances = [Instance(n, hard=4, soft=2) for n in ("a", "b", "c")]
    async with rig(tmp_path, instances) as r, h2_client(r.port) as c1, h2_client(r.port) as c2:
        sids = []
        for i in range(200):
            c = c1 if i % 2 else c2
            headers = [("x-test-id", f"t{i}")]
            sids.append((c, c.request("/sleep/20", authority=DEMO, headers=headers)))
        statuses = [(await c.done(sid, 30)).status for c, sid in sids]
        assert statuses == [200] * 200
        assert max(i.max_active for i in instances) <= 4
        ids = [t for i in instances for t in i.ids()]
        assert sorted(ids) == sorted(f"t{i}" for i in range(200))


async def test_never_twice_h2_under_contention(tmp_path: Path) -> None:
    """HTTP/2 POSTs with the edge blind to load: refusals and retries, each seen once."""
    instances = [Instance(n, hard=2) for n in ("a", "b", "c")]
    async with rig(tmp_path, instances, stale_loads=True) as r, h2_client(r.port) as c:
        sids = [
            c.request(
                "/sleep/10",
                method="POST",
                authority=DEMO,
                headers=[("content-length", "4"), ("x-test-id", f"p{i}")],
                body=b"body",
            )
            for i in range(90)
        ]
        statuses = [(await c.done(sid, 30)).status for sid in sids]
        assert statuses == [200] * 90
        ids = [t for i in instances for t in i.ids()]
        assert sorted(ids) == sorted(f"p{i}" for i in range(90))
        assert max(i.max_active for i in instances) <= 2


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_h2_request_the_instance_saw_is_never_replayed(tmp_path: Path, method: str) -> None:
    """An instance that read an HTTP/2 request (a GET too) and hung up: 502, and neither it
    (again) nor another instance gets it."""
    a, b = Instance("a"), Instance("b", node="n2", rtt=0.01)
    async with rig(tmp_path, [a, b]) as r, h2_client(r.port) as c:
        if method == "POST":
            headers = [("content-length", "4"), ("x-test-id", "once")]
            sid = c.request("/drop", method="POST", authority=DEMO, headers=headers, body=b"once")
        else:
            sid = c.request("/drop", authority=DEMO, headers=[("x-test-id", "once")])
        reply = await c.done(sid)
        assert reply.status == 502
        assert a.ids() == ["once"] and b.ids() == []


async def test_h2_request_rejected_before_an_exchange_is_counted(tmp_path: Path) -> None:
    """A request the edge rejects while preparing it (bad :path) still finishes in metrics."""
    metrics = Recorder()
    async with rig(tmp_path, [Instance("a")], metrics=metrics) as r, h2_client(r.port) as c:
        block = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", DEMO.encode())]
        reply = await c.done(c.send_block([*block, (b":path", b"nope")]))
        assert reply.status == 400
        assert r.by_id("a").seen == []
        calls = metrics.of("request_finished")
        assert [(m["role"], m["status"], m["protocol"]) for m in calls] == [("edge", 400, "h2")]


async def test_backhaul_windows_grow_with_bdp_both_ways(tmp_path: Path) -> None:
    """The adaptive windows work on the second hop too: a 16 MiB download grows the edge's
    receive window on its HTTP/2 backhaul connection, and a 16 MiB upload grows the host
    proxy's receive window on its side of that connection (both start at 64 KiB)."""
    a = Instance("a")
    async with rig(tmp_path, [a], in_process=False) as r, h2_client(r.port) as c:
        size = 16 << 20
        reply = await c.done(c.request(f"/big/{size}", authority=DEMO), 60)
        assert reply.status == 200 and len(reply.body) == size
        [backhaul] = [conn for conns in r.edge.context.h2pool._conns.values() for conn in conns]
        assert backhaul.window.window > 65535
        sid = c.request("/up", method="POST", authority=DEMO, end=False)
        await c.upload(sid, b"u" * size, timeout=60)
        assert (await c.done(sid, 60)).status == 200
        assert a.seen[-1]["body_len"] == size
        hosts = [conn for conn in r.host.connections.connections if hasattr(conn, "window")]
        assert hosts and max(conn.window.window for conn in hosts) > 65535


async def test_backhaul_stream_limit_setting_opens_more_connections(tmp_path: Path) -> None:
    """``backhaul_h2_max_streams`` (a setting of the edge) caps the streams per backhaul
    connection: six requests in flight at once ride three connections, shown in the pool's
    metrics, and all are answered."""
    a = Instance("a")
    metrics = Recorder()
    async with (
        rig(tmp_path, [a], metrics=metrics, backhaul_h2_max_streams=2) as r,
        h2_client(r.port) as c,
    ):
        sids = [c.request("/gate", authority=DEMO) for _ in range(6)]
        await wait_for(lambda: a.active == 6, what="six requests at the instance")
        stats = metrics.pools["edge_backhaul_h2"].stats()
        assert stats["max_streams"] == 2
        assert stats["connections"] == 3 and stats["streams"] == 6
        a.gate.set()
        for sid in sids:
            assert (await c.done(sid)).status == 200


async def test_idle_backhaul_connection_expires(tmp_path: Path) -> None:
    """``backhaul_h2_idle_timeout``: a backhaul connection without streams is closed after
    it (the pool's metrics show it), and the next request opens a new one."""
    metrics = Recorder()
    async with (
        rig(tmp_path, [Instance("a")], metrics=metrics, backhaul_h2_idle_timeout=0.3) as r,
        h2_client(r.port) as c,
    ):
        pool = metrics.pools["edge_backhaul_h2"]
        assert (await c.done(c.request("/", authority=DEMO))).status == 200
        assert pool.stats()["connections"] == 1
        await wait_for(lambda: pool.stats()["connections"] == 0, what="idle connection closed")
        assert pool.stats()["closed"] == 1
        assert (await c.done(c.request("/", authority=DEMO))).status == 200
        assert pool.stats()["opened"] == 2 and pool.stats()["connections"] == 1
