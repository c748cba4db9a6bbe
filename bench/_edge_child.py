"""Roost's edge alone, on uvloop, routing one app straight to a backend (the "edge path").

    .venv/bin/python bench/_edge_child.py --port P --backend B [--app bench]

Requests for ``Host: <app>.localhost`` go to ``127.0.0.1:B`` with no host proxy and no
catalog: the edge's own per-request cost. Runs until SIGTERM/SIGINT, then closes the edge.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop

from roost.proxy.edge import start_edge
from roost.proxy.routes import Backend, RouteHolder, RouteTable


async def main(args: argparse.Namespace) -> None:
    backend = Backend(instance_id="bench-backend", host="127.0.0.1", port=args.backend)
    holder = RouteHolder(RouteTable.build([(args.app, [])], {args.app: [backend]}))
    edge = await start_edge("127.0.0.1", args.port, holder, region="bench")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await edge.close(timeout=2.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", type=int, required=True)
    parser.add_argument("--app", default="bench")
    uvloop.run(main(parser.parse_args()))
