"""Edge timeouts with real sockets: each gives a clear status and a ``timed_out`` call.

The header-section deadline (408) and the response-head timeout (504) are covered in
``test_edge_http1``; here: the request body minimum rate, the keep-alive idle timeout and
its exception for a slow reader still draining a large response, and connect failures.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

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
