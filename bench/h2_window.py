"""Adaptive HTTP/2 windows vs the fixed 64 KiB window over a 100 ms round trip.

    .venv/bin/python bench/h2_window.py [--size 10000000] [--delay 0.05] [--no-upload]

Three processes (so CPU contention does not pass for window limits), 127.0.0.1 only:

    this process: HTTP/2 client (roost.proxy.h2backhaul)
      --> child 1: delaying relay
      --> child 2: edge (roost.proxy.http2 listener) --> HTTP/1.1 backend

The relay holds every chunk ``--delay`` seconds in each direction (50 ms each way = a
100 ms round trip; the kernel here has no netem), in order, without limiting bandwidth.

1. **Download** (the issue's benchmark): a ``--size`` response; the *client's* receive
   windows are fixed at 64 KiB, then adaptive (BDP pings). A 64 KiB window allows 64 KiB
   per round trip (~0.64 MB/s here), whatever the link could do.
2. **Upload** (the edge's own receive windows): the same size sent to the edge, whose
   windows are fixed, then adaptive.

Prints each time and the ratio fixed/adaptive (target >= 5x). One run per mode, each
bounded by ``--timeout``; about 45 s in all. Children exit when their stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from roost.proxy import Backend, RouteHolder, RouteTable, start_edge
from roost.proxy.h2backhaul import H2BackhaulPool
from roost.proxy.h2conn import H2Options
from roost.proxy.headers import ResponseInfo, prepare_response
from roost.proxy.http2 import H2ClientConnection

HOST = "bench.localhost"


class _Pipe(asyncio.Protocol):
    """One direction of the relay: every chunk goes out ``delay`` seconds after it came."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.pending: list[bytes] = []  # data that came before the peer connected

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._later(data)

    def eof_received(self) -> bool:
        self._later(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()

    def _later(self, data: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        self.queue.append((loop.time() + self.delay, data))
        if self.timer is None:
            self.timer = loop.call_at(self.queue[0][0], self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = None
        now = loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if self.peer is None or self.peer.is_closing():
                continue
            if data is None:
                self.peer.close()  # the other side closed: so do we, after the delay
            else:
                self.peer.write(data)
        if self.queue:
            self.timer = loop.call_at(self.queue[0][0], self._release)


async def start_relay(target_port: int, delay: float) -> asyncio.Server:
    """A TCP relay on 127.0.0.1:0 to ``target_port`` adding ``delay`` each way."""
    loop = asyncio.get_running_loop()

    def accept() -> _Pipe:
        inbound = _Pipe(delay)

        async def dial() -> None:
            _, outbound = await loop.create_connection(
                lambda: _Pipe(delay), "127.0.0.1", target_port
            )
            assert inbound.transport is not None and outbound.transport is not None
            inbound.peer, outbound.peer = outbound.transport, inbound.transport

        task = loop.create_task(dial())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return inbound

    tasks: set[asyncio.Task[None]] = set()
    return await loop.create_server(accept, "127.0.0.1", 0)


async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1: ``GET /N`` answers N bytes; a POST is read and answered with its size."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            received = 0
            while received < length:
                received += len(await reader.read(min(1 << 20, length - received)))
            if method == b"POST":
                body = b"%d" % received
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                size = int(target[1:])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                block = b"x" * (1 << 16)
                for start in range(0, size, len(block)):
                    writer.write(block[: min(len(block), size - start)])
                    await writer.drain()
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        writer.close()  # (cancelled at exit: swallowed, as 3.11's start_server logs it)


class Sink:
    """The UpstreamSink the backhaul stream reports to: counts bytes, signals the end."""

    replayable = True

    def __init__(self) -> None:
        self.status = 0
        self.size = 0
        self.body = b""
        self.error: Exception | None = None
        self.done = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    def upstream_interim(self, *args: Any) -> None:
        pass

    def upstream_head(self, status: int, reason: bytes, headers: Any) -> ResponseInfo:
        self.status = status
        return prepare_response(headers, None)[1]

    def upstream_body(self, data: bytes) -> None:
        self.size += len(data)
        if len(self.body) < 32:
            self.body += data[:32]

    def upstream_end(self, trailers: Any) -> None:
        self.done.set()

    def upstream_failed(self, err: Exception) -> None:
        self.error = err
        self.done.set()

    def upstream_flush(self) -> None:
        pass

    def upstream_write_paused(self) -> None:
        self.writable.clear()

    def upstream_write_resumed(self) -> None:
        self.writable.set()


async def transfer(port: int, size: int, *, upload: bool, adaptive: bool, timeout: float) -> float:
    """Seconds to download (or upload) ``size`` bytes through a new client connection."""
    loop = asyncio.get_running_loop()
    pool = H2BackhaulPool(loop, options=H2Options(adaptive_window=adaptive))
    stream = await pool.connect(Backend("bench", "127.0.0.1", port))
    sink = Sink()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            if upload:
                head = f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n"
                stream.send_request(
                    sink, head.encode(), chunked=False, has_body=True, head_req=False
                )
                block, sent = b"u" * (1 << 16), 0
                while sent < size:
                    await sink.writable.wait()
                    stream.send_body(block[: min(len(block), size - sent)])
                    sent += min(len(block), size - sent)
                    stream.flush()
                stream.send_end()
            else:
                head = f"GET /{size} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
                stream.send_request(
                    sink, head.encode(), chunked=False, has_body=False, head_req=False
                )
            stream.flush()
            await sink.done.wait()
    finally:
        pool.close()
    elapsed = time.perf_counter() - started
    if sink.error is not None or sink.status != 200:
        raise RuntimeError(f"transfer failed: {sink.status} {sink.error!r}")
    if (int(sink.body) if upload else sink.size) != size:
        raise RuntimeError(f"wrong size: {sink.body[:20]!r} / {sink.size}")
    return elapsed


async def serve_edge(adaptive: bool) -> tuple[Any, list[asyncio.Server]]:
    """The backend, an edge routing HOST to it, and the edge's HTTP/2 listener (last)."""
    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    route = Backend("b", "127.0.0.1", back.sockets[0].getsockname()[1])
    table = RouteTable.build([("bench", [HOST])], {"bench": [route]})
    edge = await start_edge("127.0.0.1", 0, RouteHolder(table), region="bench")
    ctx, registry, opts = edge.context, edge.connections, H2Options(adaptive_window=adaptive)
    h2 = await asyncio.get_running_loop().create_server(
        lambda: H2ClientConnection(ctx, registry, opts), "127.0.0.1", 0
    )
    return edge, [back, h2]


async def child(args: argparse.Namespace) -> int:
    """Serve (edge or relay), print the port, run until stdin closes."""
    if args.child == "edge":
        edge, servers = await serve_edge(args.adaptive)
    else:
        edge, servers = None, [await start_relay(args.target, args.delay)]
    print(servers[-1].sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    if edge is not None:
        await edge.close(timeout=1)
    return 0


async def spawn(*argv: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        port = int(await proc.stdout.readline())
    return proc, port


async def stop(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        async with asyncio.timeout(5):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def main(args: argparse.Namespace) -> int:
    rows: list[tuple[str, float, float]] = []
    cases = [("download", False)] + ([("upload", True)] if args.upload else [])
    rtt_ms = 2 * args.delay * 1000
    print(f"{args.size / 1e6:g} MB over a {rtt_ms:g} ms round trip (relay on 127.0.0.1)")
    for name, upload in cases:
        times = {}
        for adaptive in (False, True):
            # download: the client's windows vary; upload: the edge's windows vary
            edge_adaptive = "1" if adaptive or not upload else "0"
            edge, edge_port = await spawn("--child", "edge", "--adaptive", edge_adaptive)
            relay, port = await spawn(
                "--child", "relay", "--target", str(edge_port), "--delay", str(args.delay)
            )
            try:
                times[adaptive] = await transfer(
                    port,
                    args.size,
                    upload=upload,
                    adaptive=adaptive or upload,
                    timeout=args.timeout,
                )
            finally:
                await stop(relay)
                await stop(edge)
            label = "adaptive" if adaptive else "fixed 64 KiB"
            print(f"  {name:8s} {label:13s} {times[adaptive]:7.2f} s", flush=True)
        rows.append((name, times[False], times[True]))
    print()
    ok = True
    for name, fixed, adaptive in rows:
        ratio = fixed / adaptive
        ok = ok and ratio >= 5
        print(f"{name:8s} fixed {fixed:6.2f} s  adaptive {adaptive:6.2f} s  ratio {ratio:5.1f}x")
    print("target >= 5x:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each way")
    parser.add_argument("--timeout", type=float, default=60.0, help="per transfer")
    parser.add_argument("--no-upload", dest="upload", action="store_false")
    parser.add_argument("--child", choices=["edge", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--adaptive", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, default=0, help=argparse.SUPPRESS)
    options = parser.parse_args()
    sys.exit(asyncio.run(child(options) if options.child else main(options)))
