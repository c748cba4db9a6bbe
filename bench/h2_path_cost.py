"""The edge's CPU per HTTP/2 (h2c) request, in process: no sockets, no load generator.

    .venv/bin/python bench/h2_path_cost.py [--streams 10] [--rounds 15] [--batches 200]

An :class:`~roost.proxy.http2.H2ClientConnection` from a real ``start_edge`` (one app routed
straight to a backend, as ``_edge_child.py`` does) gets fake transports: a client built on
``h2`` writes batches of ``--streams`` concurrent GETs (like ``h2load -m10``), and the edge's
HTTP/1.1 upstream pool is seeded with :class:`~roost.proxy.upstream.UpstreamConnection`\\ s on
fake transports that answer each request with nginx's ``return 200 "ok"`` response (one
``data_received`` per response, as separate reads would be). Only the edge's work is timed:
the client's encoding and decoding happen outside the clock.

Prints the best and median round's µs of CPU (the process's, so a busy machine counts less) per
request (a round: ``--batches`` batches). Use with
py-spy to see where the time goes::

    .venv/bin/py-spy record -r 500 -f raw --function -o out.txt -- \\
        .venv/bin/python bench/h2_path_cost.py --rounds 40
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import h2.config
import h2.connection
import h2.events as ev
import uvloop
from _common import CLIENT_EXTRA, FakeTransport, cost_harness_args, print_rounds

from roost.proxy.edge import start_edge
from roost.proxy.http2 import H2ClientConnection
from roost.proxy.routes import Backend, RouteHolder, RouteTable
from roost.proxy.upstream import UpstreamConnection, pool_key

AUTHORITY = b"bench.localhost"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 05:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


class _UpstreamSide:
    """An upstream connection's transport: a written request queues its response."""

    def __init__(self, conn: UpstreamConnection, due: list[UpstreamConnection]) -> None:
        self.conn, self.due = conn, due

    def write(self, data: bytes) -> None:
        self.due.append(self.conn)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


async def run(args: argparse.Namespace) -> None:
    backend = Backend(instance_id="bench-backend", host="127.0.0.1", port=9)
    holder = RouteHolder(RouteTable.build([("bench", [])], {"bench": [backend]}))
    edge = await start_edge("127.0.0.1", 0, holder, region="bench")
    ctx, pool, due = edge.context, edge.context.pool, []
    key = pool_key(backend)
    for _ in range(args.streams):
        up = UpstreamConnection(pool, key, backend.instance_id)
        up.connection_made(_UpstreamSide(up, due))  # type: ignore[arg-type]
        pool.opened += 1
        pool.release(up)

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    side = FakeTransport(CLIENT_EXTRA)
    conn = H2ClientConnection(ctx, edge.connections)
    conn.connection_made(side)
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", AUTHORITY),
        (b":path", b"/"),
        (b"user-agent", b"h2load nghttp2/1.52.0"),
    ]
    done = 0

    def client_reads() -> None:
        nonlocal done
        data, side.out[:] = b"".join(side.out), []
        for event in client.receive_data(data):
            if isinstance(event, ev.StreamEnded):
                done += 1
            elif isinstance(event, ev.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    async def batch() -> float:
        for _ in range(args.streams):
            client.send_headers(client.get_next_available_stream_id(), headers, end_stream=True)
        request = client.data_to_send()
        t0 = time.process_time()
        conn.data_received(request)
        while due:
            due.pop(0).data_received(RESPONSE)
        await asyncio.sleep(0)  # the end of the loop's turn: the connection writes
        elapsed = time.process_time() - t0
        client_reads()
        return elapsed

    await asyncio.sleep(0)
    client_reads()
    for _ in range(20):  # warm up (SETTINGS exchange, caches)
        await batch()
    rounds = []
    for _ in range(args.rounds):
        before, elapsed = done, 0.0
        for _ in range(args.batches):
            elapsed += await batch()
        if done - before != args.batches * args.streams:
            raise SystemExit(f"only {done - before} responses of {args.batches * args.streams}")
        rounds.append(elapsed / (args.batches * args.streams) * 1e6)
        if args.verbose:
            print(f"  round {len(rounds)}: {rounds[-1]:.1f} µs/request")
        await asyncio.sleep(0.001)  # let the edge's ticker run between rounds
    print_rounds("h2c edge path", args, rounds)
    await edge.close(timeout=1.0)


if __name__ == "__main__":
    parser = cost_harness_args(__doc__.splitlines()[0])
    uvloop.run(run(parser.parse_args()))
