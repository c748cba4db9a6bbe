"""The edge's CPU per request on its HTTP/2 backhaul, in process: no sockets, no host proxy.

    .venv/bin/python bench/h2_backhaul_cost.py [--streams 10] [--rounds 15] [--batches 200]

An :class:`~roost.proxy.h2backhaul.H2BackhaulPool` gets one
:class:`~roost.proxy.h2backhaul.BackhaulConnection` on a fake transport, answered by a plain
h2 server connection driven here (standing in for the host proxy). A batch: ``--streams``
requests, each ``pool.take`` -> ``send_request`` (the header block an h2 client's GET
becomes at the edge, a new request id every time) -> ``flush``, the loop's turn ends (the
connection writes); then the server's responses (nginx's ``return 200 "ok"`` after the host
proxy: ``:status``, four fields, two bytes of body) arrive in one read and each stream's sink
gets its head, body and end, and the loop's turn ends again (WINDOW_UPDATEs go out). Only the
edge's side is timed: the server's work happens outside the clock.

Prints the best and median round's µs of CPU (the process's) per request (a round:
``--batches`` batches). Use with py-spy to see where the time goes::

    .venv/bin/py-spy record -r 500 -f raw --function -o out.txt -- \\
        .venv/bin/python bench/h2_backhaul_cost.py --rounds 40
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import h2.config
import h2.events as ev
import uvloop
from _common import cost_harness_args, print_rounds
from _h2backhaul import RESPONSE, Sink, edge_connection, request_fields

from roost.proxy import h2wire
from roost.proxy.h2backhaul import request_block


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    backend, pool, conn, side = edge_connection(loop)

    server = h2wire.new_connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    fields = request_fields()
    ids = itertools.count()

    def server_reads() -> bytes:
        data, side.out[:] = b"".join(side.out), []
        for event in server.receive_data(data):
            if isinstance(event, ev.RequestReceived):
                h2wire.send_headers(server, event.stream_id, RESPONSE, False)
                h2wire.send_data(server, event.stream_id, b"ok", True)
            elif isinstance(event, ev.DataReceived):  # (none: GETs)
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        return server.data_to_send()

    async def batch() -> float:
        blocks = []
        for _ in range(args.streams):
            rid = b"%016x" % next(ids)
            blocks.append(request_block(b"GET", b"/", [*fields[:-1], (fields[-1][0], rid)]))
        t0 = time.process_time()
        for block in blocks:
            stream = pool.take(backend)
            assert stream is not None
            stream.send_request(Sink(), block, chunked=False, has_body=False, head_req=False)
            stream.flush()
        await asyncio.sleep(0)  # the end of the loop's turn: the connection writes
        elapsed = time.process_time() - t0
        reply = server_reads()
        t0 = time.process_time()
        conn.data_received(reply)
        await asyncio.sleep(0)
        elapsed += time.process_time() - t0
        server_reads()  # WINDOW_UPDATEs
        return elapsed

    await asyncio.sleep(0)
    conn.data_received(server_reads())  # SETTINGS exchange
    await asyncio.sleep(0)
    server_reads()
    for _ in range(20):  # warm up (caches)
        await batch()
    rounds = []
    for _ in range(args.rounds):
        before, elapsed = Sink.done, 0.0
        for _ in range(args.batches):
            elapsed += await batch()
        if Sink.done - before != args.batches * args.streams:
            raise SystemExit(f"only {Sink.done - before} of {args.batches * args.streams}")
        rounds.append(elapsed / (args.batches * args.streams) * 1e6)
        if args.verbose:
            print(f"  round {len(rounds)}: {rounds[-1]:.1f} µs/request")
    print_rounds("h2 backhaul client path", args, rounds)
    pool.close()


if __name__ == "__main__":
    parser = cost_harness_args(__doc__.splitlines()[0])
    uvloop.run(run(parser.parse_args()))
