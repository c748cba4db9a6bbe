"""Edge timeouts with real sockets: each gives a clear status and a ``timed_out`` call.

The response-head timeout (504) is covered in ``test_edge_http1``; here: the header-section
deadline against a trickling (slowloris) client, the request body minimum rate, the
keep-alive idle timeout and its exception for a slow reader still draining a large
response, and connect failures and timeouts.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from roost.proxy.routes import Backend, RouteTable
from tests.integration.hostrig import Recorder
from tests.integration.rig import HOST, RawClient, fetch, get, stack

pytestmark = pytest.mark.integration


async def test_slow_body_gets_408() -> None:
    """A request body arriving slower than body_min_rate is answered 408 and closed."""
    metrics = Recorder()
    async with stack(body_min_rate=10_000, body_rate_window=0.2, metrics=metrics) as s:
        client = await RawClient.open(s.port)
        client.send(f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\nab".encode())
        r = await client.response(timeout=5)
        assert r.status == 408 and b"slower than 10000 bytes/s" in r.body
        await client.wait_closed()
        assert {"role": "edge", "kind": "body_rate"} in metrics.of("timed_out")


async def test_body_rate_not_enforced_while_edge_paused_reading() -> None:
    """Waiting for 100-continue is not a slow body: the client is waiting for us."""
    async with stack(body_min_rate=10_000, body_rate_window=0.1) as s:
        client = await RawClient.open(s.port)
        client.send(
            f"POST /no-continue HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        await asyncio.sleep(0.5)  # behaviour under test: several windows without bytes
        client.send(b"hello")
        r = await client.response()
        assert r.status == 200 and r.json()["body"] == "hello"


async def test_idle_keepalive_timeout_counted() -> None:
    """An idle keep-alive connection is closed after keepalive_timeout."""
    metrics = Recorder()
    async with stack(keepalive_timeout=0.2, metrics=metrics) as s:
        client = await RawClient.open(s.port)
        client.send(get("/"))
        assert (await client.response()).status == 200
        await client.wait_closed(timeout=3)
        assert {"role": "edge", "kind": "keepalive_idle"} in metrics.of("timed_out")


async def test_slow_reader_survives_idle_timeout() -> None:
    """A client reading a 50 MB response in small slow reads is not cut off by an idle
    timeout far shorter than the download: while the kernel send queue still drains the
    connection is not idle, and it stays usable for the next request."""
    size = 50 * 1024 * 1024
    metrics = Recorder()
    async with stack(keepalive_timeout=0.05, metrics=metrics) as s:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", s.port))
        await loop.sock_sendall(sock, get(f"/stream/{size}"))
        received = 0
        head = b""
        start = loop.time()
        try:
            while received < size:
                data = await loop.sock_recv(sock, 16 * 1024)
                assert data, f"closed after {received} bytes"
                if not head:
                    head, _, data = data.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 ")
                before, received = received, received + len(data)
                if before // (512 * 1024) != received // (512 * 1024):
                    await asyncio.sleep(0.02)  # behaviour under test: a slow reader
            assert received == size
            assert loop.time() - start > 1.0  # the download outlasted the idle timeout
            await loop.sock_sendall(sock, get("/again"))
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]
        finally:
            sock.close()
        assert metrics.of("timed_out") == []


async def test_connect_failure_counted_and_retried() -> None:
    """A backend refusing connections: retried with reason connect_failed."""
    metrics = Recorder()
    async with stack(1, dead=3, metrics=metrics) as s:
        for i in range(6):
            assert (await fetch(s.port, get(f"/{i}"))).status == 200
        reasons = {c["reason"] for c in metrics.of("retried")}
        assert reasons == {"connect_failed"}


async def test_header_deadline_is_not_pushed_back_by_trickled_bytes() -> None:
    """Slowloris: a client trickling its head a byte at a time, each byte well inside the
    deadline, still gets 408 once the head's total time is up (and is counted)."""
    metrics = Recorder()
    async with stack(header_timeout=0.3, metrics=metrics) as s:
        client = await RawClient.open(s.port)
        closed = asyncio.ensure_future(client.wait_closed(timeout=10))
        head = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: {'v' * 200}\r\n\r\n".encode()
        sent = 0
        while sent < len(head) and not closed.done():
            client.send(head[sent : sent + 1])
            sent += 1
            # behaviour under test: a byte every 50 ms (a whole head would take ~11 s)
            await asyncio.sleep(0.05)
        await closed
        assert [r.status for r in client.responses] == [408]
        assert sent < len(head)  # cut off mid-head, not answered after it completed
        assert {"role": "edge", "kind": "header_deadline"} in metrics.of("timed_out")
        assert s.backends[0].requests == []


def _listener_that_never_accepts() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket whose accept queue is full: further connects get no SYN-ACK
    (the kernel drops their SYNs) and so hang until the connector's timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(4):  # a backlog of 0 still queues one or two; fill it with spares
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    return listener, fillers


async def test_connect_timeout_is_retried_then_502() -> None:
    """A backend whose connects time out: counted (``connect``), retried on a live backend
    with reason ``connect_timeout``; with no live backend, 502 saying it timed out."""
    listener, fillers = _listener_that_never_accepts()
    try:
        port = listener.getsockname()[1]
        metrics = Recorder()
        async with stack(1, connect_timeout=0.2, unhealthy=(0,), metrics=metrics) as s:
            b0 = Backend("b0", "127.0.0.1", s.backends[0].port, healthy=False)
            hole = Backend("hole", "127.0.0.1", port)  # healthy: tried first
            s.holder.table = RouteTable.build([("demo", [])], {"demo": [hole, b0]})
            r = await fetch(s.port, get("/x"))
            assert r.status == 200 and r.json()["id"] == "b0"
            assert {"role": "edge", "kind": "connect"} in metrics.of("timed_out")
            assert {c["reason"] for c in metrics.of("retried")} == {"connect_timeout"}
            s.holder.table = RouteTable.build([("demo", [])], {"demo": [hole]})
            r = await fetch(s.port, get("/y"))
            assert r.status == 502 and b"timed out" in r.body
        assert [q["target"] for q in s.backends[0].requests] == ["/x"]
    finally:
        for sock in (listener, *fillers):
            sock.close()
