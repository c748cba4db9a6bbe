"""The edge proxy over real sockets: routing, keep-alive, framing, streaming, failures.

Backends are small h11 servers on 127.0.0.1:0 that echo what they received (a parser
independent of the edge's httptools; see :mod:`tests.integration.rig`); clients are raw
sockets, httpx and curl. Every
scenario is a plain coroutine with no fixtures, so ``test_under_uvloop`` can run a
selection of them again on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvloop

from roost.proxy import Backend, RouteHolder, RouteTable, start_edge
from roost.proxy.edge import Edge
from tests.integration.hostrig import Recorder
from tests.integration.rig import (
    HOST,
    RawClient,
    check_bodiless_responses,
    check_early_final_answer,
    check_expect_continue,
    close_all,
    fetch,
    get,
    stack,
    wait_for,
    wait_stable,
)

pytestmark = pytest.mark.integration

CURL = "/usr/bin/curl"


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


def headers_of(seen: dict[str, Any]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        result.setdefault(name.lower(), []).append(value)
    return result


# -- routing -----------------------------------------------------------------------------


async def test_routes_by_host_header() -> None:
    """A request reaches the app named by its Host, by <app>.localhost or a hostname."""
    async with stack() as s:
        for host in (HOST, "DEMO.localhost:8080", "demo.example.com."):
            r = await fetch(s.port, get("/hello?x=1", host=host))
            assert r.status == 200
            seen = r.json()
            assert (seen["id"], seen["method"], seen["target"]) == ("b0", "GET", "/hello?x=1")


async def test_unknown_host_gets_404() -> None:
    """An unknown Host is answered by the edge with 404 and a short plain body."""
    async with stack() as s:
        r = await fetch(s.port, get(host="x.localhost"))
        assert r.status == 404
        assert r.body == b'no app for host "x.localhost"\n'
        assert r.header("content-type") == "text/plain; charset=utf-8"
        assert r.header("roost-request-id")
        assert s.backends[0].requests == []


async def test_app_without_instances_gets_503() -> None:
    """An app with no backends is answered with 503."""
    async with stack() as s:
        r = await fetch(s.port, get(host="idle.localhost"))
        assert r.status == 503
        assert r.body == b'app "idle" has no running instances\n'


async def test_edge_answer_before_body_keeps_or_closes_connection() -> None:
    """Answered before its body was read: a small body is discarded and the connection
    kept; a large one (or one awaiting 100 Continue) closes the connection."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        small = b"POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 5000\r\n\r\n"
        client.send(small)
        r = await client.response()
        assert r.status == 404 and r.header("connection") is None
        client.send(b"y" * 5000 + get("/after"))
        assert (await client.response()).json()["target"] == "/after"
        big = b"POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 5000000\r\n\r\n"
        client.send(big)
        r = await client.response()
        assert r.status == 404 and r.header("connection") == "close"
        await client.wait_closed()


async def test_route_table_swap_takes_effect() -> None:
    """Storing a new table in the holder reroutes the next request."""
    async with stack() as s:
        assert (await fetch(s.port, get(host="new.localhost"))).status == 404
        s.holder.table = RouteTable.build([("new", [])], {"new": [s.backends[0].backend]})
        r = await fetch(s.port, get(host="new.localhost"))
        assert r.status == 200 and r.json()["id"] == "b0"


async def test_force_instance_header() -> None:
    """Roost-Force-Instance-Id picks that instance; an unknown id is a clear 404."""
    async with stack(3) as s:
        for _ in range(5):
            r = await fetch(s.port, get(extra="Roost-Force-Instance-Id: b2\r\n"))
            assert r.json()["id"] == "b2"
            assert "roost-force-instance-id" not in headers_of(r.json())
        r = await fetch(s.port, get(extra="Roost-Force-Instance-Id: nope\r\n"))
        assert r.status == 404 and b'no instance "nope"' in r.body


# -- headers -----------------------------------------------------------------------------


async def test_forwarding_headers_are_set_and_client_roost_headers_stripped() -> None:
    """roost-* from clients never arrive; X-Forwarded-For is appended to, not trusted."""
    async with stack() as s:
        extra = (
            "X-Forwarded-For: 1.2.3.4\r\nRoost-Foo: evil\r\nROOST-CLIENT-IP: 6.6.6.6\r\n"
            "X-Forwarded-Proto: https\r\nConnection: keep-alive, X-Private\r\n"
            "X-Private: secret\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
        )
        r = await fetch(s.port, get(extra=extra))
        h = headers_of(r.json())
        assert h["x-forwarded-for"] == ["1.2.3.4, 127.0.0.1"]
        assert h["roost-client-ip"] == ["127.0.0.1"]
        assert "roost-foo" not in h
        assert h["x-forwarded-proto"] == ["http"]
        assert h["x-forwarded-port"] == [str(s.port)]
        assert h["via"] == ["1.1 roost"]
        assert h["roost-region"] == ["tst"]
        for hop in ("connection", "x-private", "keep-alive", "te"):
            assert hop not in h
        assert h["roost-request-id"] == [r.header("roost-request-id")]


async def test_response_headers_cleaned_and_request_id_added() -> None:
    """Responses lose hop-by-hop and roost-* headers and carry Roost-Request-Id and Via."""
    async with stack() as s:
        r = await fetch(s.port, get())
        assert r.header("x-hop") is None and r.header("roost-secret") is None
        assert r.header("via") == "1.1 roost"
        ids = {(await fetch(s.port, get())).header("roost-request-id") for _ in range(5)}
        assert len(ids) == 5 and all(ids)


# -- connections -------------------------------------------------------------------------


async def test_keep_alive_reuses_upstream_connection() -> None:
    """N sequential requests on one client connection use one backend connection."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        for i in range(20):
            client.send(get(f"/{i}"))
            r = await client.response()
            assert r.status == 200 and r.json()["target"] == f"/{i}"
            assert r.header("connection") is None
        await client.close()
        # a second client connection reuses the pooled backend connection too
        assert (await fetch(s.port, get())).status == 200
        assert s.backends[0].connections == 1


async def test_pipelined_requests_answered_in_order() -> None:
    """Pipelined requests sent in one write get their responses in order."""
    async with stack(2) as s:
        client = await RawClient.open(s.port)
        client.send(b"".join(get(f"/p{i}") for i in range(10)) + get("/slow/0"))
        responses = await client.read_responses(11)
        assert [r.json()["target"] for r in responses] == [f"/p{i}" for i in range(10)] + [
            "/slow/0"
        ]
        await client.close()


async def test_pipelined_with_bodies() -> None:
    """Pipelined POSTs with bodies keep their bodies apart."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        reqs = b"".join(
            f"POST /{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {i + 1}\r\n\r\n".encode()
            + bytes([65 + i]) * (i + 1)
            for i in range(5)
        )
        client.send(reqs)
        responses = await client.read_responses(5)
        assert [r.json()["body"] for r in responses] == [chr(65 + i) * (i + 1) for i in range(5)]
        await client.close()


async def test_pipelined_mix_of_edge_answers_and_proxied() -> None:
    """Pipelined requests the edge answers itself (404/503) stay in order with proxied ones."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        hosts = [HOST, "nope.localhost", HOST, "idle.localhost", HOST]
        client.send(b"".join(get(f"/{i}", host=h) for i, h in enumerate(hosts)))
        responses = await client.read_responses(5)
        assert [r.status for r in responses] == [200, 404, 200, 503, 200]
        assert [responses[i].json()["target"] for i in (0, 2, 4)] == ["/0", "/2", "/4"]
        client.send(get("/again"))
        assert (await client.response()).status == 200
        await client.close()


async def test_pipelined_upload_behind_slow_response() -> None:
    """A big upload pipelined behind a slow response waits its turn and arrives intact."""
    async with stack() as s:
        payload = os.urandom(3 * 1024 * 1024)
        client = await RawClient.open(s.port)
        client.send(get(f"/gated/{2 * 1024 * 1024}"))
        client.send(
            f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await client.read_until(lambda: client.partial_body() >= 1 << 20)
        s.backends[0].gate.set()
        first, second = await client.read_responses(2, timeout=30)
        assert len(first.body) == 2 * 1024 * 1024
        assert second.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()
        await client.close()


async def test_connection_close_request_closes_after_response() -> None:
    """A client's Connection: close is honoured after its response (later input ignored)."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get("/a", extra="Connection: close\r\n") + get("/b"))
        await client.wait_closed()
        assert [r.json()["target"] for r in client.responses] == ["/a"]
        assert client.responses[0].header("connection") == "close"
        assert [q["target"] for q in s.backends[0].requests] == ["/a"]


async def test_http10_client() -> None:
    """HTTP/1.0: closed after the response unless keep-alive; chunked is un-chunked."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(f"GET /chunked/5000 HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        await client.wait_closed()
        r = client.responses[0]
        assert r.status == 200 and len(r.body) == 5000
        assert r.header("transfer-encoding") is None
        client = await RawClient.open(s.port)
        client.send(f"GET /a HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n".encode())
        r = await client.response()
        assert r.header("connection") == "keep-alive"
        client.send(f"GET /b HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        await client.wait_closed()
        assert [r.json()["target"] for r in client.responses] == ["/a", "/b"]


async def test_client_half_close_still_gets_response() -> None:
    """A client that shuts down its write side after the request still gets the answer."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get("/half"))
        client.writer.write_eof()
        await client.wait_closed()
        assert [r.json()["target"] for r in client.responses] == ["/half"]


# -- bodies and streaming ------------------------------------------------------------------


async def test_chunked_request_body_streamed_intact() -> None:
    """A 5 MB chunked upload arrives intact, and reaches the backend before it ends."""
    async with stack() as s:
        payload = os.urandom(5 * 1024 * 1024)
        client = await RawClient.open(s.port)
        client.send(
            f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        half = len(payload) // 2
        for off in range(0, half, 65536):
            piece = payload[off : min(off + 65536, half)]
            client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        await wait_for(lambda: s.backends[0].body_progress >= half, what="first half upstream")
        for off in range(half, len(payload), 100_000):
            piece = payload[off : off + 100_000]
            client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        client.send(b"0\r\nX-Trailer: 1\r\n\r\n")
        seen = (await client.response(timeout=30)).json()
        assert seen["body_len"] == len(payload)
        assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()
        assert "chunked" in headers_of(seen)["transfer-encoding"]
        await client.close()


async def test_content_length_body_with_httpx() -> None:
    """httpx POSTs with Content-Length and gets its body's hash back."""
    async with stack() as s, httpx.AsyncClient(base_url=s.url, headers={"Host": HOST}) as c:
        payload = os.urandom(1_000_000)
        r = await c.post("/cl", content=payload)
        assert r.status_code == 200
        assert r.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()
        assert headers_of(r.json())["content-length"] == [str(len(payload))]


async def test_large_response_streamed() -> None:
    """A response bigger than any buffer streams through before the backend finishes."""
    async with stack() as s:
        size = 32 * 1024 * 1024
        client = await RawClient.open(s.port)
        client.send(get(f"/gated/{size}"))
        await client.read_until(lambda: client.partial_body() >= 1 << 20)
        assert not s.backends[0].finished_sending  # the edge forwards as it receives
        s.backends[0].gate.set()
        r = await client.response(timeout=30)
        assert r.complete and len(r.body) == size
        assert r.body[:65536] == bytes(range(256)) * 256
        await client.close()


async def test_chunked_response_forwarded_chunked() -> None:
    """A chunked response reaches an HTTP/1.1 client chunked and complete."""
    async with stack() as s:
        r = await fetch(s.port, get("/chunked/300000"))
        assert r.header("transfer-encoding") == "chunked"
        assert len(r.body) == 300000


async def test_response_trailers_forwarded_but_filtered() -> None:
    """Trailers of a chunked response reach the client, minus roost-* fields."""
    async with stack() as s:
        r = await fetch(s.port, get("/trailers"))
        assert r.body == b"body" and r.header("x-checksum") == "abc"
        assert r.header("roost-bad") is None


async def test_close_delimited_response_rechunked() -> None:
    """A close-delimited response is re-framed as chunked, keeping the client connection."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get("/eof/7000"))
        r = await client.response()
        assert r.body == b"e" * 7000 and r.header("transfer-encoding") == "chunked"
        client.send(get("/after"))
        assert (await client.response()).json()["target"] == "/after"
        await client.close()


async def test_backpressure_from_slow_client() -> None:
    """A client that does not read stalls the backend instead of filling edge memory."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get(f"/stream/{512 * 1024 * 1024}"))
        b = s.backends[0]
        await wait_stable(lambda: b.sent, what="backend stalled by backpressure")
        edge_conn = next(iter(s.edge.connections.connections))
        assert edge_conn.transport is not None
        assert not b.finished_sending
        assert edge_conn.transport.get_write_buffer_size() < 4 * 1024 * 1024
        client.writer.transport.abort()


async def test_head_204_304_have_no_body() -> None:
    """HEAD, 204 and 304 responses end at their head and the connection goes on."""
    async with stack() as s:
        await check_bodiless_responses(s.port)
        assert s.backends[0].connections == 1


async def test_expect_100_continue_forwarded() -> None:
    """Expect: 100-continue goes to the app, whose 100 Continue comes back; curl works."""
    async with stack() as s:
        await check_expect_continue(s.port)
        code, out, err = await curl(
            "-H",
            f"Host: {HOST}",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "x" * 2000,
            s.url + "/curl",
        )
        assert code == 0, err
        assert json.loads(out)["body_len"] == 2000


async def test_early_final_response_closes_connection() -> None:
    """An app answering before reading the body: client gets it with Connection: close."""
    async with stack() as s:
        await check_early_final_answer(s.port)


async def test_with_curl() -> None:
    """curl (one connection for two URLs) gets both answers through one upstream conn."""
    async with stack() as s:
        code, out, err = await curl("-H", f"Host: {HOST}", s.url + "/one", s.url + "/two")
        assert code == 0, err
        first, end = json.JSONDecoder().raw_decode(out.decode())
        second = json.loads(out[end:])
        assert [first["target"], second["target"]] == ["/one", "/two"]
        assert s.backends[0].connections == 1


# -- failures ------------------------------------------------------------------------------


async def test_dead_backend_is_skipped() -> None:
    """A backend refusing connections is skipped; every request reaches the live one."""
    async with stack(1, dead=2) as s:
        for i in range(10):
            r = await fetch(s.port, get(f"/{i}"))
            assert r.status == 200 and r.json()["id"] == "b0"
        assert s.edge.context.inflight == {}


async def test_all_backends_dead_gives_502() -> None:
    """When every backend refuses, the client gets 502 naming the app."""
    async with stack(0, dead=3) as s:
        r = await fetch(s.port, get())
        assert r.status == 502
        assert b'could not reach any instance of app "demo" (3 tried' in r.body
        assert r.header("roost-request-id")


async def test_attempts_are_bounded() -> None:
    """With seven backends refusing connections, a request gives up after max_attempts (5):
    502 saying five were tried."""
    async with stack(0, dead=7) as s:
        r = await fetch(s.port, get())
        assert r.status == 502
        assert b'could not reach any instance of app "demo" (5 tried' in r.body
    async with stack(0, dead=7, max_attempts=2) as s:
        r = await fetch(s.port, get())
        assert b"(2 tried" in r.body


async def test_reset_before_response_is_never_retried() -> None:
    """An instance that read a request and dropped the connection may have acted on it: 502,
    GET or POST alike, and no other instance gets it (DESIGN.md: never replay)."""
    async with stack(2, drop=(0,), unhealthy=(1,)) as s:  # b0 (healthy) is tried first
        post = f"POST /p HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\r\nhi".encode()
        for request in (get("/g"), post):
            r = await fetch(s.port, request)
            assert r.status == 502 and b"closed a new connection before responding" in r.body
        assert s.backends[0].dropped == ["/g", "/p"]  # each read once
        assert s.backends[1].requests == [] and s.backends[1].dropped == []


async def test_reset_on_reused_connection() -> None:
    """A reused connection dying before any response byte: 502, not replayed elsewhere."""
    async with stack(2, unhealthy=(1,)) as s:
        s.backends[0].drop_after = 1  # b0 answers once per connection, then hangs up
        assert (await fetch(s.port, get("/1"))).json()["id"] == "b0"
        r = await fetch(s.port, get("/2"))  # on b0's reused connection, which it drops
        assert r.status == 502 and b"closed a reused connection before responding" in r.body
        assert (await fetch(s.port, get("/3"))).json()["id"] == "b0"  # on a new connection
        assert [q["target"] for q in s.backends[0].requests] == ["/1", "/3"]
        assert s.backends[0].dropped == ["/2"]
        assert s.backends[1].requests == []


async def test_upstream_closing_mid_body_closes_client() -> None:
    """A response the backend cuts short closes the client connection (no keep-alive lie)."""
    async with stack() as s:
        for path, complete_len in (("/truncate", 100000), ("/truncate-chunked", None)):
            client = await RawClient.open(s.port)
            client.send(get(path))
            await client.wait_closed()
            assert len(client.responses) == 1
            r = client.responses[0]
            assert not r.complete
            if complete_len:
                assert len(r.body) < complete_len
        assert (await fetch(s.port, get("/ok"))).status == 200


async def test_response_timeout_gives_504() -> None:
    """A backend that never answers yields 504 after response_timeout, counted as a
    ``response_headers`` timeout."""
    writers: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    holder = RouteHolder(
        RouteTable.build([("demo", [])], {"demo": [Backend("s", "127.0.0.1", port)]})
    )
    metrics = Recorder()
    edge = await start_edge(
        "127.0.0.1", 0, holder, region="tst", response_timeout=0.2, metrics=metrics
    )
    try:
        r = await fetch(edge.port, get())
        assert r.status == 504
        assert metrics.of("timed_out") == [{"role": "edge", "kind": "response_headers"}]
    finally:
        await edge.close(timeout=1)
        silent.close()
        for w in writers:
            w.close()
        await silent.wait_closed()


async def raw_backend_edge(
    reply: bytes, *, then: bytes = b"", sent: list[int] | None = None, **limits: Any
) -> tuple[Edge, asyncio.Server]:
    """An edge whose only backend answers every request head with ``reply`` and closes --
    or, given ``then``, goes on sending ``then`` over and over (4 MiB at most) until the
    edge drops the connection; what it managed to send after ``reply`` goes to ``sent``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        if then:  # what it "sent" is then what the edge read, give or take this buffer
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024
            )
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            while then and total < 4 * 1024 * 1024:
                writer.write(then)
                await writer.drain()
                total += len(then)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        if sent is not None:
            sent.append(total)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    table = RouteTable.build([("demo", [])], {"demo": [Backend("r", "127.0.0.1", port)]})
    edge = await start_edge("127.0.0.1", 0, RouteHolder(table), region="tst", **limits)
    return edge, server


@pytest.mark.parametrize(
    ("head", "then"),
    [
        (b"5\r\nhello\r\n5;name=", b"v" * 8192),  # a chunk extension that never ends
        (b"5\r\nhello\r\n0\r\n", b"X-T: " + b"v" * 1000 + b"\r\n"),  # endless trailers
    ],
    ids=["chunk_extension", "trailers"],
)
async def test_endless_response_framing_is_cut_off(head: bytes, then: bytes) -> None:
    """An instance streaming an endless chunk extension or trailer section (bytes that are
    never body data, so no backpressure slows them): the edge drops it soon after the
    bound, and the client's response, already started, is cut off -- never completed."""
    sent: list[int] = []
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + head
    edge, server = await raw_backend_edge(reply, then=then, sent=sent)
    try:
        client = await RawClient.open(edge.port)
        client.send(get())
        await client.wait_closed(timeout=10)
        [r] = client.responses
        assert r.status == 200 and r.body == b"hello" and not r.complete
        await wait_for(lambda: sent, what="the backend's connection dropped")
        assert sent[0] < 1024 * 1024  # cut off near the bound (16 KiB + 64 KiB), not at 4 MiB
    finally:
        await close_all(RawClient.opened)
        await edge.close(timeout=1)
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
    ids=["garbage", "switching", "te_gzip", "two_cl"],
)
async def test_invalid_upstream_response_gives_502(reply: bytes) -> None:
    """A response the edge cannot relay faithfully becomes a 502 of its own."""
    edge, server = await raw_backend_edge(reply)
    try:
        r = await fetch(edge.port, get())
        assert r.status == 502
        assert r.body.startswith(b'instance "r" sent an invalid response')
    finally:
        await edge.close(timeout=1)
        server.close()
        await server.wait_closed()


async def test_header_timeout_gives_408() -> None:
    """A client that starts a request head and stalls gets 408 and is closed."""
    async with stack(header_timeout=0.2) as s:
        client = await RawClient.open(s.port)
        client.send(b"GET / HTTP/1.1\r\nHost: demo.local")
        await client.wait_closed()
        assert [r.status for r in client.responses] == [408]


async def test_idle_keepalive_connection_closed() -> None:
    """An idle keep-alive connection is closed after keepalive_timeout, quietly."""
    async with stack(keepalive_timeout=0.2) as s:
        client = await RawClient.open(s.port)
        client.send(get())
        await client.response()
        await client.wait_closed()
        assert len(client.responses) == 1


async def test_http_version_other_than_1x_refused() -> None:
    """HTTP/2.0 spoken as text (or 0.9) gets 505."""
    async with stack() as s:
        r = await fetch(s.port, f"GET / HTTP/2.0\r\nHost: {HOST}\r\n\r\n".encode())
        assert r.status == 505


async def test_client_gone_mid_response_drops_upstream() -> None:
    """When the client vanishes mid-response the upstream connection is not reused."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get(f"/gated/{4 * 1024 * 1024}"))
        await client.read_until(lambda: client.partial_body() > 0)
        client.writer.transport.abort()
        await wait_for(lambda: not s.edge.connections.connections, what="edge conn closed")
        assert s.edge.context.inflight == {}
        s.backends[0].gate.set()
        assert (await fetch(s.port, get("/next"))).status == 200
        assert s.backends[0].connections == 2


async def test_client_gone_mid_upload_drops_upstream() -> None:
    """A client that disconnects mid-body leaves no half-sent request on a pooled conn."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(
            f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000000\r\n\r\n".encode()
        )
        client.send(b"x" * 5000)
        await wait_for(lambda: s.backends[0].body_progress >= 5000, what="upload started")
        client.writer.transport.abort()
        await wait_for(lambda: s.edge.context.inflight == {}, what="attempt ended")
        assert (await fetch(s.port, get("/next"))).json()["target"] == "/next"
        assert s.backends[0].connections == 2


async def test_http10_client_gets_no_100_continue() -> None:
    """HTTP/1.0 clients never see a 1xx; Expect is not forwarded for them."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(
            f"POST /x HTTP/1.0\r\nHost: {HOST}\r\nContent-Length: 2\r\n"
            "Expect: 100-continue\r\n\r\nhi".encode()
        )
        await client.wait_closed()
        assert client.interim == []
        seen = client.responses[0].json()
        assert seen["body"] == "hi" and "expect" not in headers_of(seen)


# -- strict framing ------------------------------------------------------------------------

BAD_REQUESTS = {
    "cl_and_te": "POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "double_cl_same": "POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\n"
    "Content-Length: 3\r\n\r\nabc",
    "double_cl_diff": "POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\n"
    "Content-Length: 4\r\n\r\nabcd",
    "te_gzip": "POST / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "te_gzip_chunked": "POST / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    "0\r\n\r\n",
    "obs_fold": "GET / HTTP/1.1\r\nHost: {h}\r\nX-A: b\r\n c\r\n\r\n",
    "space_before_colon": "GET / HTTP/1.1\r\nHost: {h}\r\nX-A : b\r\n\r\n",
    "bad_chunk_size": "POST / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
    "zz\r\nabc\r\n0\r\n\r\n",
    "two_hosts": "GET / HTTP/1.1\r\nHost: {h}\r\nHost: other.localhost\r\n\r\n",
    "no_host": "GET / HTTP/1.1\r\n\r\n",
    "bare_lf": "GET / HTTP/1.1\nHost: {h}\n\n",
    "nul_in_value": "GET / HTTP/1.1\r\nHost: {h}\r\nX-A: a\x00b\r\n\r\n",
    "bad_host": "GET / HTTP/1.1\r\nHost: de mo/x\r\n\r\n",
    "bare_cr": "GET / HTTP/1.1\r\nHost: {h}\r\nX-A: a\rb\r\n\r\n",
    "te_xchunked": "POST / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_identity": "POST / HTTP/1.1\r\nHost: {h}\r\n"
    "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_chunked_twice": "POST / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_negative": "POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: -1\r\n\r\n",
    "cl_list": "POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1,1\r\n\r\na",
    "cl_plus": "POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: +1\r\n\r\na",
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
async def test_ambiguous_framing_rejected(name: str) -> None:
    """Ambiguous or malformed requests get 400 + close and never reach a backend."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(BAD_REQUESTS[name].format(h=HOST).encode("latin-1") + get("/smuggled"))
        await client.wait_closed()
        assert [r.status for r in client.responses] == [400]
        assert client.responses[0].header("connection") == "close"
        assert s.backends[0].requests == [] and s.backends[0].connections == 0


async def test_endless_chunk_extension_gets_400() -> None:
    """A chunk-size line whose extension never ends (no limit would count it: httptools
    reports no extensions) gets 400 and the connection closes, long before the client is
    done; the body's normal chunks before it went through."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(
            f"POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n5;name=".encode()
        )
        sent = await client.send_until_closed(b"v" * 8192, limit=4 * 1024 * 1024)
        assert [r.status for r in client.responses] == [400]
        assert b"chunked framing too long" in client.responses[0].body
        assert sent < 1024 * 1024  # cut off near the limit (16 KiB + trailers' 64 KiB)
        # many small chunks with short extensions stay within the bound
        body = b"".join(b"1;k=v\r\nx\r\n" for _ in range(20000)) + b"0\r\n\r\n"
        head = f"POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
        r = await fetch(s.port, head.encode() + body)
        assert r.status == 200 and r.json()["body_len"] == 20000


async def test_bad_request_after_good_one_answered_in_order() -> None:
    """A valid request then garbage: the valid one is answered, then 400, then close."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get("/fine") + b"GARBAGE\r\n\r\n")
        await client.wait_closed()
        assert [r.status for r in client.responses] == [200, 400]


async def test_oversized_header_section_gets_431() -> None:
    """A header section over 64 KiB is refused with 431."""
    async with stack() as s:
        many = "".join(f"X-H{i}: {'v' * 1000}\r\n" for i in range(70))
        client = await RawClient.open(s.port)
        client.send(get(extra=many))
        await client.wait_closed()
        assert [r.status for r in client.responses] == [431]
        one = "X-Big: " + "v" * 70000 + "\r\n"
        r = await fetch(s.port, get(extra=one))
        assert r.status == 431
        lines = "".join(f"X-{i}: v\r\n" for i in range(129))  # max_headers: 128 lines
        r = await fetch(s.port, get(extra=lines))
        assert r.status == 431
        assert s.backends[0].requests == []


async def test_long_uri_gets_414() -> None:
    """A request target over 8 KiB is refused with 414."""
    async with stack() as s:
        r = await fetch(s.port, get("/" + "a" * 9000))
        assert r.status == 414 and r.header("connection") == "close"
        r = await fetch(s.port, get("/" + "a" * 8000))
        assert r.status == 200


async def test_connect_method_refused() -> None:
    """CONNECT is not proxied: 405."""
    async with stack() as s:
        r = await fetch(
            s.port, b"CONNECT demo.localhost:443 HTTP/1.1\r\nHost: demo.localhost\r\n\r\n"
        )
        assert r.status == 405


async def test_declined_upgrade_goes_on_as_http() -> None:
    """An upgrade the instance declines (200) is a plain exchange; what follows is parsed."""
    async with stack() as s:
        client = await RawClient.open(s.port)
        client.send(get("/u", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n") + get("/v"))
        responses = await client.read_responses(2)
        assert [r.json()["target"] for r in responses] == ["/u", "/v"]
        seen = headers_of(responses[0].json())
        assert seen["upgrade"] == ["websocket"] and seen["connection"] == ["upgrade"]
        await client.close()


async def test_h2c_upgrade_ignored() -> None:
    """``Upgrade: h2c`` is dropped: the client just gets HTTP/1.1."""
    async with stack() as s:
        r = await fetch(s.port, get("/h", extra="Connection: Upgrade\r\nUpgrade: h2c\r\n"))
        assert r.status == 200 and "upgrade" not in headers_of(r.json())


async def test_absolute_form_target() -> None:
    """An absolute-form target routes by its authority and is sent on in origin-form."""
    async with stack() as s:
        r = await fetch(s.port, b"GET http://demo.localhost/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.status == 200
        seen = r.json()
        assert seen["target"] == "/abs?q=1" and headers_of(seen)["host"] == ["demo.localhost"]


# -- lifecycle -----------------------------------------------------------------------------


async def test_close_waits_for_in_flight_and_drops_idle() -> None:
    """Edge.close lets an in-flight response finish, closes idle connections."""
    async with stack() as s:
        idle = await RawClient.open(s.port)
        idle.send(get("/warm"))
        await idle.response()
        busy = await RawClient.open(s.port)
        busy.send(get(f"/gated/{2 * 1024 * 1024}"))
        await wait_for(lambda: s.backends[0].sent >= 1 << 20, what="backend streaming")
        closing = asyncio.ensure_future(s.edge.close(timeout=10))
        await idle.wait_closed()
        assert not closing.done()
        s.backends[0].gate.set()
        r = await busy.response()
        assert r.complete and len(r.body) == 2 * 1024 * 1024
        await closing
        await busy.wait_closed()  # closed once its response was complete
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", s.port)


# -- the same scenarios on uvloop -----------------------------------------------------------

UVLOOP_SCENARIOS: dict[str, Callable[[], Awaitable[None]]] = {
    f.__name__: f
    for f in (
        test_routes_by_host_header,
        test_keep_alive_reuses_upstream_connection,
        test_pipelined_requests_answered_in_order,
        test_chunked_request_body_streamed_intact,
        test_large_response_streamed,
        test_dead_backend_is_skipped,
        test_upstream_closing_mid_body_closes_client,
        test_head_204_304_have_no_body,
        test_expect_100_continue_forwarded,
        test_close_waits_for_in_flight_and_drops_idle,
        test_backpressure_from_slow_client,
        test_reset_on_reused_connection,
        test_pipelined_upload_behind_slow_response,
        test_bad_request_after_good_one_answered_in_order,
        test_client_gone_mid_upload_drops_upstream,
    )
}


@pytest.mark.parametrize("name", sorted(UVLOOP_SCENARIOS))
def test_under_uvloop(name: str) -> None:
    """Key scenarios pass on uvloop too (the loop the edge runs on in production)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(UVLOOP_SCENARIOS[name]())
