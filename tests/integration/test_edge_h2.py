"""The HTTP/2 edge over real sockets: requests, multiplexing, bodies, trailers, backpressure.

Clients: an h2-based client (:class:`~tests.integration.test_edge_h2_rig.H2Client`), curl
``--http2-prior-knowledge``, ``nghttp`` and ``h2load`` (Debian ``nghttp2-client``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil

import pytest
import uvloop
from hyperframe.frame import GoAwayFrame

from roost.proxy.h2limits import H2Limits
from roost.proxy.http2 import H2Options
from tests.integration.test_edge_h2_rig import AUTHORITY, H2Client, h2_edge, wait_stable

pytestmark = pytest.mark.integration


async def run(*argv: str, timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(timeout):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_get_is_relayed_as_http1() -> None:
    """A GET becomes an HTTP/1.1 request with Host from :authority and the edge's headers."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        reply = await client.done(client.request("/hello?x=1", headers=[("x-app", "v")]))
        assert reply.status == 200
        seen = reply.json()
        assert (seen["method"], seen["target"]) == ("GET", "/hello?x=1")
        got = {n.lower(): v for n, v in seen["headers"]}
        assert got["host"] == AUTHORITY and got["x-app"] == "v"
        assert got["x-forwarded-for"] == "127.0.0.1" and got["x-forwarded-proto"] == "http"
        assert got["roost-request-id"] == reply.header(b"roost-request-id").decode()
        assert reply.header(b"via") == b"1.1 roost"
        names = [n for n, _ in reply.headers]
        assert names == [n.lower() for n in names]
        assert b"x-hop" not in names and b"connection" not in names
        assert b"roost-secret" not in names
        await client.close()


async def test_multiplexed_streams_get_their_own_responses() -> None:
    """Fifty concurrent streams on one connection each get the answer to their request."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        sids = {client.request(f"/n/{i}"): i for i in range(50)}
        for sid, i in sids.items():
            reply = await client.done(sid)
            assert reply.status == 200 and reply.json()["target"] == f"/n/{i}"
        await client.close()


async def test_large_bodies_both_ways_at_once() -> None:
    """An 8 MiB upload and an 8 MiB download share one connection intact."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        payload = os.urandom(8 << 20)
        down = client.request("/stream/8388608")
        up = client.request(
            "/upload", method="POST", headers=[("content-length", str(len(payload)))], end=False
        )
        await client.upload(up, payload)
        down_reply, up_reply = await client.done(down, 30), await client.done(up, 30)
        assert len(down_reply.body) == 8 << 20 and down_reply.ended
        seen = up_reply.json()
        assert seen["body_len"] == len(payload)
        assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()
        await client.close()


async def test_body_without_length_goes_chunked() -> None:
    """A request body without content-length is sent upstream chunked."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        sid = client.request("/up", method="POST", end=False)
        await client.upload(sid, b"x" * 100_000)
        seen = (await client.done(sid)).json()
        assert seen["body_len"] == 100_000
        assert ["transfer-encoding", "chunked"] in seen["headers"]
        await client.close()


async def test_response_trailers() -> None:
    """Chunked trailers from the instance arrive as a trailing HEADERS (roost-* dropped)."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        reply = await client.done(client.request("/trailers", headers=[("te", "trailers")]))
        assert bytes(reply.body) == b"body"
        assert reply.trailers == [(b"x-sum", b"abc")]
        await client.close()


async def test_edge_errors_are_h2_responses() -> None:
    """Routing failures are answered on the stream; the connection carries on."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        reply = await client.done(client.request("/", authority="other.localhost"))
        assert reply.status == 404 and b"no app" in bytes(reply.body)
        assert reply.header(b"roost-request-id")
        assert (await client.done(client.request("/after"))).status == 200
        await client.close()


async def test_instance_down_is_a_502_on_the_stream() -> None:
    """Connecting to the instance fails: 502 from the edge, on that stream only."""
    async with h2_edge() as rig:
        assert rig.backend.server is not None
        rig.backend.server.close()
        await rig.backend.server.wait_closed()
        client = await H2Client.open(rig.port)
        reply = await client.done(client.request("/"))
        assert reply.status == 502 and reply.header(b"content-type") is not None
        assert (await client.done(client.request("/again"))).status == 502


async def test_head_has_length_and_no_body() -> None:
    """HEAD: the instance's headers (content-length kept), no DATA, the stream ends."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        reply = await client.done(client.request("/stream/5000", method="HEAD"))
        assert reply.status == 200 and reply.header(b"content-length") == b"5000"
        assert reply.ended and not reply.body


async def test_download_backpressure_stops_the_instance() -> None:
    """A client that returns no window makes the edge stop reading the instance."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        client.ack = False
        sid = client.request(f"/stream/{256 << 20}")
        await client.until(lambda: len(client.replies[sid].body) >= 65535 - 16384)
        sent = await wait_stable(lambda: rig.backend.sent)
        assert sent < 64 << 20  # socket buffers + a 64 KiB queue, not 256 MiB
        assert len(client.replies[sid].body) <= 65535
        await client.close()


async def test_upload_backpressure_stops_the_client() -> None:
    """An instance that reads nothing: the edge stops returning window to the client."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        sid = client.request("/hold", method="POST", end=False)
        body = b"u" * (64 << 20)
        uploading = asyncio.create_task(client.upload(sid, body, timeout=60))
        uploaded = await wait_stable(lambda: client.uploaded.get(sid, 0))
        assert not uploading.done() and uploaded < 32 << 20
        assert client.conn.local_flow_control_window(sid) == 0
        rig.backend.gate.set()
        await uploading
        seen = (await client.done(sid, 60)).json()
        assert seen["body_len"] == len(body)
        await client.close()


async def test_windows_grow_with_bdp() -> None:
    """Uploading raises the edge's advertised stream window (BDP pings) beyond 64 KiB."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        sid = client.request("/big", method="POST", end=False)
        await client.upload(sid, b"b" * (16 << 20))
        await client.done(sid, 30)
        assert client.conn.remote_settings.initial_window_size > 65535
        assert client.conn.outbound_flow_control_window > 65535
        await client.close()


async def test_fixed_window_stays() -> None:
    """With adaptive windows off the edge never changes its 64 KiB window."""
    async with h2_edge(H2Options(adaptive_window=False)) as rig:
        client = await H2Client.open(rig.port)
        sid = client.request("/big", method="POST", end=False)
        await client.upload(sid, b"b" * (2 << 20))
        await client.done(sid, 30)
        assert client.conn.remote_settings.initial_window_size == 65535
        await client.close()


async def test_graceful_close_sends_goaway_and_finishes_streams() -> None:
    """Edge close: GOAWAY(2^31-1), then GOAWAY(last stream); in-flight streams complete."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        sid = client.request("/gated/1000")
        await client.until(lambda: client.replies[sid].status == 200)
        closing = asyncio.create_task(rig.edge.close(timeout=10))
        await client.until(lambda: len(client.goaways) >= 2)
        assert [g.error_code for g in client.goaways] == [0, 0]
        assert client.goaways[0].last_stream_id == 2**31 - 1
        assert client.goaways[1].last_stream_id == sid
        rig.backend.gate.set()
        reply = await client.done(sid)
        assert len(reply.body) == 1000
        await client.wait_closed()
        await closing


async def test_idle_connection_is_closed_with_goaway() -> None:
    """No streams for keepalive_timeout -> GOAWAY(NO_ERROR) and close."""
    async with h2_edge(keepalive_timeout=0.4) as rig:
        client = await H2Client.open(rig.port)
        await client.done(client.request("/"))
        await client.wait_closed(5)
        assert client.goaways and client.goaways[-1].error_code == 0
        assert client.goaways[-1].last_stream_id == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing")
async def test_curl_h2_and_http1_share_the_port() -> None:
    """curl with prior knowledge and plain HTTP/1.1 curl both work on the same port."""
    async with h2_edge() as rig:
        url = f"http://127.0.0.1:{rig.port}/c"
        fmt = ["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-H"]
        code, out = await run("curl", "--http2-prior-knowledge", *fmt, f"Host: {AUTHORITY}", url)
        assert (code, out) == (0, "2 200")
        code, out = await run("curl", *fmt, f"Host: {AUTHORITY}", url)
        assert (code, out) == (0, "1.1 200")


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load missing")
async def test_h2load_multiplexed() -> None:
    """h2load: 2 connections x 50 concurrent streams, 1000 requests, all 2xx."""
    async with h2_edge() as rig:
        url = f"http://127.0.0.1:{rig.port}/load"
        code, out = await run(
            "h2load", "-n", "1000", "-c", "2", "-m", "50", "-H", f":authority: {AUTHORITY}", url
        )
        assert code == 0, out
        assert "1000 succeeded" in out and "1000 2xx" in out, out


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp missing")
async def test_nghttp_upload(tmp_path: os.PathLike[str]) -> None:
    """nghttp uploads 3 MB with its own flow control; the instance gets every byte."""
    data = os.urandom(3_000_000)
    path = os.path.join(tmp_path, "body")
    with open(path, "wb") as f:
        f.write(data)
    async with h2_edge(H2Options(limits=H2Limits())) as rig:
        url = f"http://127.0.0.1:{rig.port}/nghttp"
        code, out = await run("nghttp", "-d", path, "-H", f":authority: {AUTHORITY}", url)
        assert code == 0, out
        assert rig.backend.requests[-1]["body_sha256"] == hashlib.sha256(data).hexdigest()


UVLOOP_SCENARIOS = {
    f.__name__: f
    for f in (
        test_get_is_relayed_as_http1,
        test_multiplexed_streams_get_their_own_responses,
        test_large_bodies_both_ways_at_once,
        test_download_backpressure_stops_the_instance,
        test_upload_backpressure_stops_the_client,
        test_graceful_close_sends_goaway_and_finishes_streams,
        test_curl_h2_and_http1_share_the_port,
    )
}


@pytest.mark.parametrize("name", sorted(UVLOOP_SCENARIOS))
def test_under_uvloop(name: str) -> None:
    """Key scenarios pass on uvloop too (the loop the edge runs on in production; its
    transports take ``set_protocol`` for the h2c hand-over)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(UVLOOP_SCENARIOS[name]())


async def test_client_goaway_lets_open_streams_finish() -> None:
    """A client's GOAWAY(NO_ERROR) with a request in flight: the response still arrives."""
    async with h2_edge() as rig:
        client = await H2Client.open(rig.port)
        sid = client.request("/gated/5000")
        await client.until(lambda: client.replies[sid].status == 200)
        client.send_raw(GoAwayFrame(0, last_stream_id=0).serialize())
        rig.backend.gate.set()
        reply = await client.done(sid)
        assert len(reply.body) == 5000
        await client.wait_closed()
