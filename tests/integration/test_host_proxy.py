"""The full request path over real sockets: client -> edge -> backhaul -> host proxy -> instance.

Limits (hard_limit), refusals and retries, the never-twice rule, waiting for capacity,
forced instances and per-app isolation, observed from outside: status codes, what each
instance received and how many requests it ever had in progress at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest

from tests.integration.hostrig import HOST, Instance, Recorder, hold, post, req, rig
from tests.integration.rig import RawClient, Response, fetch, wait_for

pytestmark = pytest.mark.integration
# the backhaul in memory (edge and host proxy in one process, as `roost up` runs them) and
# through the host proxy's unix socket (how other processes reach it)
BACKHAUL = pytest.mark.parametrize("in_process", [True, False], ids=["memory", "socket"])


@BACKHAUL
async def test_request_reaches_instance_through_host_proxy(
    tmp_path: Path, in_process: bool
) -> None:
    """A request is served by the instance; the backhaul header never reaches it."""
    async with rig(tmp_path, [Instance("a")], in_process=in_process) as r:
        resp = await fetch(r.port, req(extra="Roost-Instance: evil\r\n"))
        pooled = [c for idle in r.edge.context.pool._idle.values() for c in idle]
        transports = {type(c.transport).__name__ for c in pooled}
        assert len(pooled) == 1
        assert (transports == {"PipeEnd"}) is in_process  # else the loop's socket transport
        assert resp.status == 200 and resp.body == b"a"
        seen = r.by_id("a").seen[0]["headers"]
        assert "roost-instance" not in seen and "roost-refused" not in seen
        assert seen["roost-request-id"] == resp.header("roost-request-id")
        assert seen["roost-client-ip"] == "127.0.0.1"
        assert resp.header("roost-refused") is None  # the app's forged header is stripped
        assert r.host.admission.snapshot() == {}


async def test_backhaul_socket_is_private(tmp_path: Path) -> None:
    """The backhaul socket is mode 0600 (the filesystem authenticates the local hop)."""
    async with rig(tmp_path, [Instance("a")]) as r:
        assert stat.S_IMODE(os.stat(r.host.path).st_mode) == 0o600
    assert not Path(r.host.path).exists()


@BACKHAUL
async def test_hard_limit_never_exceeded_under_200_clients(
    tmp_path: Path, in_process: bool
) -> None:
    """200 concurrent clients, 3 instances with hard_limit 4: all served, none above 4."""
    instances = [Instance(n, hard=4, soft=2) for n in ("a", "b", "c")]
    async with rig(tmp_path, instances, in_process=in_process) as r:
        results = await asyncio.gather(
            *(fetch(r.port, req("/sleep/20", test_id=f"t{i}")) for i in range(200))
        )
        assert [x.status for x in results] == [200] * 200
        assert max(i.max_active for i in instances) <= 4
        assert sum(len(i.seen) for i in instances) == 200
        assert all(i.max_active == 4 for i in instances)  # they were all driven to the limit


@pytest.mark.parametrize("stale_loads", [False, True])
async def test_load_view_spares_the_host_its_refusals(tmp_path: Path, stale_loads: bool) -> None:
    """The host proxy's admission feeds the edge's load view: with it, the edge never sends
    a request to a full instance (it waits for a slot instead), so the host refuses nothing
    and nothing is retried; blind to load (the contrast), the same traffic is refused and
    retried. Both keep the limit."""
    instances = [Instance(n, hard=2) for n in ("a", "b")]
    metrics = Recorder()
    async with rig(tmp_path, instances, stale_loads=stale_loads, metrics=metrics) as r:
        results = await asyncio.gather(
            *(fetch(r.port, req("/sleep/20", test_id=f"t{i}")) for i in range(60))
        )
        assert [x.status for x in results] == [200] * 60
        assert max(i.max_active for i in instances) <= 2
        host_refusals = [m for m in metrics.of("refused") if m["role"] == "host"]
        if stale_loads:
            assert host_refusals and metrics.of("retried")
        else:
            assert host_refusals == [] and metrics.of("retried") == []


async def test_limit_holds_with_stale_load_view(tmp_path: Path) -> None:
    """With the edge blind to load, the host proxy's refusals alone keep the limit."""
    instances = [Instance(n, hard=3) for n in ("a", "b")]
    async with rig(tmp_path, instances, stale_loads=True) as r:
        results = await asyncio.gather(
            *(fetch(r.port, req("/sleep/20", test_id=f"t{i}")) for i in range(100))
        )
        assert [x.status for x in results] == [200] * 100
        assert max(i.max_active for i in instances) <= 3


async def test_refused_request_is_retried_on_another_instance(tmp_path: Path) -> None:
    """The closest instance is full (edge unaware): the host refuses, the next one serves."""
    near, far = Instance("a", hard=1), Instance("b", hard=1, node="n2", rtt=0.01)
    metrics = Recorder()
    async with rig(tmp_path, [near, far], stale_loads=True, metrics=metrics) as r:
        held = await hold(
            r.port, near, req("/gate", test_id="holder", extra="Roost-Force-Instance-Id: a\r\n")
        )
        resp = await fetch(r.port, req(test_id="second"))
        assert resp.status == 200 and resp.body == b"b"
        assert near.ids() == ["holder"] and far.ids() == ["second"]
        assert {"app": "demo", "reason": "refused"} in metrics.of("retried")
        assert any(c["role"] == "host" for c in metrics.of("refused"))
        near.gate.set()
        assert (await held.response()).status == 200


async def test_post_body_replayed_after_refusal(tmp_path: Path) -> None:
    """A refused POST's body (kept up to retry_buffer_bytes) reaches the next instance intact."""
    near, far = Instance("a", hard=1), Instance("b", node="n2", rtt=0.01)
    body = os.urandom(200_000)
    async with rig(tmp_path, [near, far], stale_loads=True) as r:
        await hold(r.port, near, req("/gate", extra="Roost-Force-Instance-Id: a\r\n"))
        resp = await fetch(r.port, post("/up", body, test_id="p"))
        assert resp.status == 200 and resp.body == b"b"
        seen = far.seen[0]
        assert seen["body_len"] == len(body)
        assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
        near.gate.set()


async def test_body_beyond_retry_buffer_is_not_retried(tmp_path: Path) -> None:
    """A refused request whose body was not kept is answered 503, never sent elsewhere."""
    near, far = Instance("a", hard=1), Instance("b", node="n2", rtt=0.01)
    async with rig(tmp_path, [near, far], stale_loads=True, retry_buffer_bytes=1000) as r:
        await hold(r.port, near, req("/gate", extra="Roost-Force-Instance-Id: a\r\n"))
        resp = await fetch(r.port, post("/up", b"x" * 5000, test_id="big"))
        assert resp.status == 503 and b"at capacity" in resp.body
        assert "big" not in near.ids() + far.ids()
        near.gate.set()


async def test_unreachable_instance_refused_then_retried(tmp_path: Path) -> None:
    """The host proxy cannot connect to an instance: refusal 'unreachable', next one serves."""
    dead, live = Instance("a"), Instance("b", node="n2", rtt=0.01)
    async with rig(tmp_path, [dead, live]) as r:
        assert dead.server is not None
        dead.server.close()
        await dead.server.wait_closed()
        for i in range(3):
            resp = await fetch(r.port, req(test_id=f"u{i}"))
            assert resp.status == 200 and resp.body == b"b"


async def test_instance_unknown_to_host_is_retried_elsewhere(tmp_path: Path) -> None:
    """A stale route to an instance its host no longer has: refused 'unknown', retried."""
    gone, live = Instance("a"), Instance("b", node="n2", rtt=0.01)
    async with rig(tmp_path, [gone, live], host_only=("b",)) as r:
        resp = await fetch(r.port, req(test_id="x"))
        assert resp.status == 200 and resp.body == b"b"
        assert gone.seen == []


async def test_never_twice_under_contention(tmp_path: Path) -> None:
    """Many POSTs with refusals and retries: every request is seen by exactly one instance."""
    instances = [Instance(n, hard=2) for n in ("a", "b", "c")]
    async with rig(tmp_path, instances, stale_loads=True) as r:
        results = await asyncio.gather(
            *(fetch(r.port, post("/sleep/10", b"body", test_id=f"p{i}")) for i in range(120))
        )
        assert [x.status for x in results] == [200] * 120
        ids = [t for i in instances for t in i.ids()]
        assert sorted(ids) == sorted(f"p{i}" for i in range(120))
        assert max(i.max_active for i in instances) <= 2


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_instance_that_saw_request_never_sees_it_again(tmp_path: Path, method: str) -> None:
    """An instance that read a request and hung up: 502, and neither it (again) nor another
    instance gets it -- a GET too: it may have had effects (DESIGN.md: never replay)."""
    a, b = Instance("a"), Instance("b", node="n2", rtt=0.01)
    request = req("/drop", test_id="once")
    if method == "POST":
        request = post("/drop", b"once", test_id="once")
    async with rig(tmp_path, [a, b]) as r:
        resp = await fetch(r.port, request)
        assert resp.status == 502
        assert a.ids() == ["once"] and b.ids() == []


async def test_waits_for_capacity_then_succeeds(tmp_path: Path) -> None:
    """With the only instance full, a request waits and is served once it frees up."""
    a = Instance("a", hard=1)
    metrics = Recorder()
    async with rig(tmp_path, [a], metrics=metrics) as r:
        held = await hold(r.port, a, req("/gate", test_id="first"))
        waiting = asyncio.ensure_future(fetch(r.port, req(test_id="second")))
        await wait_for(lambda: r.edge.context.queues.waiting("demo") == 1, what="queued")
        assert a.ids() == ["first"]
        a.gate.set()
        assert (await held.response()).status == 200
        assert (await waiting).status == 200
        assert a.ids() == ["first", "second"] and a.max_active == 1
        assert [w["outcome"] for w in metrics.of("queue_wait")] == ["served"]


async def test_wait_times_out_with_503_at_capacity(tmp_path: Path) -> None:
    """Still full after queue_timeout: 503 saying the app is at capacity."""
    a = Instance("a", hard=1)
    async with rig(tmp_path, [a], queue_timeout=0.3) as r:
        await hold(r.port, a, req("/gate"))
        resp = await fetch(r.port, req(test_id="late"))
        assert resp.status == 503 and b'app "demo" is at capacity' in resp.body
        assert resp.header("retry-after") == "1"
        assert "late" not in a.ids()
        a.gate.set()


async def test_full_queue_answers_503_at_once(tmp_path: Path) -> None:
    """Beyond queue_max waiting requests, the next gets 503 without waiting."""
    a = Instance("a", hard=1)
    async with rig(tmp_path, [a], queue_max=2) as r:
        await hold(r.port, a, req("/gate"))
        waiting = [asyncio.ensure_future(fetch(r.port, req(test_id=f"w{i}"))) for i in range(2)]
        await wait_for(lambda: r.edge.context.queues.waiting("demo") == 2, what="queued")
        resp = await fetch(r.port, req(test_id="over"))
        assert resp.status == 503 and b"at capacity" in resp.body
        a.gate.set()
        assert [(await w).status for w in waiting] == [200, 200]
        assert "over" not in a.ids()


async def test_force_instance(tmp_path: Path) -> None:
    """Forced: served by that instance; unknown -> 404; full -> waits, then 503."""
    a, b = Instance("a", hard=1), Instance("b", hard=1)
    async with rig(tmp_path, [a, b], queue_timeout=0.3) as r:
        for _ in range(3):
            resp = await fetch(r.port, req(extra="Roost-Force-Instance-Id: b\r\n"))
            assert resp.status == 200 and resp.body == b"b"
        resp = await fetch(r.port, req(extra="Roost-Force-Instance-Id: zz\r\n"))
        assert resp.status == 404 and b'no instance "zz"' in resp.body
        await hold(r.port, a, req("/gate", extra="Roost-Force-Instance-Id: a\r\n"))
        resp = await fetch(r.port, req(test_id="f", extra="Roost-Force-Instance-Id: a\r\n"))
        assert resp.status == 503
        assert "f" not in a.ids() + b.ids()
        resp = await fetch(r.port, req(test_id="free"))  # unforced: b has room
        assert resp.status == 200 and resp.body == b"b"
        a.gate.set()


async def test_flooded_app_does_not_starve_another(tmp_path: Path) -> None:
    """App demo flooded far past its limit (503s); app other's requests all succeed."""
    flooded = [Instance("a", hard=2)]
    calm = [Instance("o1")]
    async with rig(tmp_path, flooded + calm, queue_max=20, queue_timeout=0.5) as r:
        flood = [
            asyncio.ensure_future(fetch(r.port, req("/sleep/50", test_id=f"f{i}")))
            for i in range(300)
        ]
        calm_results: list[Response] = []
        for i in range(30):
            calm_results.append(await fetch(r.port, req(host="other.localhost", test_id=f"o{i}")))
        statuses = [x.status for x in await asyncio.gather(*flood)]
        assert [x.status for x in calm_results] == [200] * 30
        assert statuses.count(503) > 0 and statuses.count(200) > 0
        assert set(statuses) <= {200, 503}
        assert flooded[0].max_active <= 2


async def in_a_row(
    port: int, n: int, *, path: str = "/", host: str = HOST, test_id: str, pause: float = 0.0
) -> list[Response]:
    """``n`` requests one after another on one keep-alive connection (``X-Test-Id``
    ``test_id`` + its number), each sent when the last was answered (``pause`` s later)."""
    client = await RawClient.open(port)
    answers = []
    for i in range(n):
        client.send(req(path, host=host, test_id=f"{test_id}{i}"))
        answers.append(await client.response(timeout=30))
        if pause:
            await asyncio.sleep(pause)
    return answers


def flood_answered(
    inst: Instance, results: list[list[Response]], calm: list[Response], total: int
) -> None:
    """A keep-alive flood on ``inst`` (hard_limit 2) beside another app's ``calm`` run:
    the calm requests all succeeded; each of the ``total`` flood requests got a 200 or a
    503, some of each; the instance never went past its limit nor served one twice."""
    assert [x.status for x in calm] == [200] * len(calm)
    statuses = [x.status for answers in results for x in answers]
    assert len(statuses) == total and set(statuses) <= {200, 503}
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    assert inst.max_active <= 2
    served = inst.ids()
    assert len(served) == len(set(served)) == statuses.count(200)  # never twice


async def test_keep_alive_flood_is_answered_in_turns_and_loses_nothing(tmp_path: Path) -> None:
    """100 keep-alive clients each send 5 requests in a row to a full app (the work gate
    parks and holds them: congested_batch 4) while another app is used: every request gets
    its answer, in order on its connection, and the other app's requests all succeed."""
    flooded = [Instance("a", hard=2)]
    calm = [Instance("o1")]
    metrics = Recorder()
    async with rig(
        tmp_path,
        flooded + calm,
        queue_max=10,
        queue_timeout=0.3,
        congested_batch=4,
        metrics=metrics,
    ) as r:
        flood = [
            asyncio.ensure_future(in_a_row(r.port, 5, path="/sleep/20", test_id=f"f{n}-"))
            for n in range(100)
        ]
        calm = await in_a_row(r.port, 20, host="other.localhost", test_id="o")
        results = await asyncio.gather(*flood)
        flood_answered(flooded[0], results, calm, 500)
        assert r.edge.context.gate is not None and r.edge.context.gate.held > 0
        assert len(metrics.of("gate_held")) == r.edge.context.gate.held
        # the flooded app's requests, and (100 clients connecting at once) new connections
        assert {kw["app"] for kw in metrics.of("gate_held")} <= {"demo", "_new"}
        assert "demo" in {kw["app"] for kw in metrics.of("gate_held")}


async def test_paced_keep_alive_flood_is_gated_and_loses_nothing(tmp_path: Path) -> None:
    """Paced flood clients (a pause between requests, as load generators' tickers do): their
    connections are parked, released idle, and their next requests come later, when the
    gate holds them before parsing. Every request gets its one answer on its connection
    (a lost one times out, an extra one would be read as the next one's), none is served
    twice, and the other app's requests all succeed meanwhile."""
    flooded = [Instance("a", hard=2)]
    calm = [Instance("o1")]
    metrics = Recorder()
    async with rig(tmp_path, flooded + calm, queue_max=10, queue_timeout=0.3, metrics=metrics) as r:
        flood = [  # (pause: the clients' pacing, not a synchronisation)
            asyncio.ensure_future(
                in_a_row(r.port, 4, path="/sleep/20", test_id=f"p{n}-", pause=0.02)
            )
            for n in range(80)
        ]
        calm = await in_a_row(r.port, 20, host="other.localhost", test_id="o")
        results = await asyncio.gather(*flood)
        flood_answered(flooded[0], results, calm, 320)
        assert all(x.body == b"a" for answers in results for x in answers if x.status == 200)
        assert {kw["app"] for kw in metrics.of("gate_held")} >= {"demo"}


WS_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: demo.localhost\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


async def read_until(reader: asyncio.StreamReader, marker: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    async with asyncio.timeout(timeout):
        while marker not in data:
            chunk = await reader.read(65536)
            assert chunk, f"EOF before {marker!r}: {data!r}"
            data += chunk
    return data


async def _held_back(inst: Instance, size: int, turns: int = 300, timeout: float = 20.0) -> bool:
    """Whether ``inst`` comes to wait on a full socket and stays there, writing nothing more,
    for ``turns`` event-loop turns (every hop runs in this loop: with a hop buffering
    without limit, the instance would be written off again within a few turns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, still = -1, 0
    while loop.time() < deadline and inst.sent < size:
        if inst.stalled and inst.sent == last:
            still += 1
            if still >= turns:
                return True
        else:
            last, still = inst.sent, 0
        await asyncio.sleep(0)
    return False


@BACKHAUL
async def test_large_response_to_a_client_not_reading_is_held_back_at_the_instance(
    tmp_path: Path, in_process: bool
) -> None:
    """Backpressure crosses both hops: a client that does not read makes the instance's
    writes wait, with a bounded amount in between (not the whole body buffered in the edge,
    the backhaul or the host proxy); once it reads, the whole body arrives intact."""
    size = 64 << 20
    a = Instance("a")
    async with rig(tmp_path, [a], in_process=in_process) as r:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", r.port))
            await loop.sock_sendall(sock, req(f"/big/{size}"))
            assert await _held_back(a, size), f"the instance wrote {a.sent} bytes without waiting"
            assert a.sent < 24 << 20  # what the sockets and the proxies' buffers hold
            received, head = 0, b""
            while received < size:
                data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
                assert data, f"closed after {received} bytes"
                if not head:
                    head, _, data = data.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 ")
                assert data.count(b"z") == len(data)
                received += len(data)
            assert received == size
        finally:
            sock.close()


@BACKHAUL
async def test_websocket_upgrade_tunnelled_through_both_hops(
    tmp_path: Path, in_process: bool
) -> None:
    """101 from the instance turns both hops into a tunnel: bytes flow both ways, EOF ends it;
    the tunnel counts against the hard limit while open."""
    a = Instance("a", hard=1)
    async with rig(tmp_path, [a], queue_timeout=0.3, in_process=in_process) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(WS_REQUEST + b"early")  # bytes after the head wait for the 101
        head = await read_until(reader, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        assert b"Roost-Request-Id: " in head
        rest = head.split(b"\r\n\r\n", 1)[1]
        rest += await read_until(reader, b"EARLY") if b"EARLY" not in rest else b""
        writer.write(b"hello")
        assert b"HELLO" in await read_until(reader, b"HELLO")
        assert r.host.admission.load("a") == 1
        busy = await fetch(r.port, req(test_id="blocked"))  # the tunnel holds a's only slot
        assert busy.status == 503
        writer.write_eof()
        assert (await read_until(reader, b"BYE")).endswith(b"BYE")
        assert await reader.read() == b""
        writer.close()
        await wait_for(lambda: r.host.admission.load("a") == 0, what="slot released")
        assert (await fetch(r.port, req())).status == 200
