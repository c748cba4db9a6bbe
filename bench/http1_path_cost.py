"""The edge's CPU per HTTP/1.1 keep-alive request, in process: no sockets, no load generator.

    .venv/bin/python bench/http1_path_cost.py [--requests 50000] [--metrics prometheus]

A :class:`~roost.proxy.http1.ClientConnection` from a real ``start_edge`` (one app routed
straight to a backend, as ``_edge_child.py`` does) gets a fake transport; the edge's upstream
pool is seeded with one :class:`~roost.proxy.upstream.UpstreamConnection` on a fake transport.
Per request: the client's bytes go to ``data_received``, the upstream write is checked, nginx's
``return 200 "ok"`` response goes to the upstream's ``data_received``, the response written to
the client is checked. So this is the Python work of one request without any syscall (compare
``throughput.py``'s CPU µs/request, which adds the kernel's side and the event loop's).

Prints the best of 9 batches (a busy machine makes batches slower, never faster). With py-spy::

    .venv/bin/py-spy record -r 500 -f raw --function -o out.txt -- \\
        .venv/bin/python bench/http1_path_cost.py --requests 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import uvloop
from _common import CLIENT_EXTRA, FakeTransport

from roost.proxy.edge import start_edge
from roost.proxy.http1 import ClientConnection
from roost.proxy.prometheus import PrometheusMetrics
from roost.proxy.routes import Backend, RouteHolder, RouteTable
from roost.proxy.upstream import UpstreamConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 05:11:31 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


async def main(args: argparse.Namespace) -> None:
    backend = Backend(instance_id="bench-backend", host="127.0.0.1", port=9)
    holder = RouteHolder(RouteTable.build([("bench", [])], {"bench": [backend]}))
    metrics = PrometheusMetrics() if args.metrics == "prometheus" else None
    edge = await start_edge("127.0.0.1", 0, holder, region="bench", metrics=metrics)
    ctx = edge.context
    client = ClientConnection(ctx, edge.connections)
    down = FakeTransport(CLIENT_EXTRA)
    client.connection_made(down)  # type: ignore[arg-type]
    upstream = UpstreamConnection(ctx.pool, ("127.0.0.1", 9), "bench-backend")
    up = FakeTransport()
    upstream.connection_made(up)  # type: ignore[arg-type]
    ctx.pool.release(upstream)

    def one() -> None:
        client.data_received(REQUEST)
        if not up.out:
            raise SystemExit("the request did not reach the upstream")
        up.out.clear()
        upstream.data_received(RESPONSE)
        if not down.out or not down.out[0].startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"unexpected response: {down.out!r}")
        down.out.clear()

    for _ in range(2000):
        one()
    batch = max(1, args.requests // 10)
    best = float("inf")
    for _ in range(9):
        start = time.process_time()
        for _ in range(batch):
            one()
        best = min(best, (time.process_time() - start) / batch)
    print(f"HTTP/1.1 edge path, {args.metrics} metrics: {best * 1e6:.2f} µs/request (best of 9)")
    await edge.close(timeout=1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--metrics", choices=("null", "prometheus"), default="null")
    uvloop.run(main(parser.parse_args()))
