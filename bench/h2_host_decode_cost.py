"""The host proxy's CPU per request receiving the edge's HTTP/2 backhaul requests, in process.

    .venv/bin/python bench/h2_host_decode_cost.py [--streams 10] [--rounds 15] [--batches 200]

A real edge side -- an :class:`~roost.proxy.h2backhaul.H2BackhaulPool` with one
:class:`~roost.proxy.h2backhaul.BackhaulConnection` on a fake transport -- sends batches of
``--streams`` GETs (the header block an h2 client's GET becomes at the edge, a new request
id every time, ``roost-instance`` appended as the edge's exchange does) to the host side's
connection: :func:`roost.proxy.h2wire.new_connection` with the host's HTTP/2 configuration
(``http2``'s) and the backhaul's header list limit. Two things are timed, nothing else:

- **receive**: the host connection's ``receive_data`` of a batch (frames parsed, header
  blocks decoded, h2's state machines, events);
- **decode**: the same header blocks, in the same order, decoded by a second
  :class:`~roost.proxy.h2hpack.CachingDecoder` (the HPACK part of *receive* alone).

The host's answers (``:status`` and four fields, two bytes of body) and the edge's reading
of them happen outside the clock. Prints the best and median round's µs of CPU per request
for each (a round: ``--batches`` batches). With py-spy::

    .venv/bin/py-spy record -r 500 -f raw --function -o out.txt -- \\
        .venv/bin/python bench/h2_host_decode_cost.py --rounds 40
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import h2.config
import h2.events as ev
import uvloop
from _common import cost_harness_args, print_rounds
from _h2backhaul import RESPONSE, Sink, edge_connection, request_fields

from roost.proxy import h2wire
from roost.proxy.h2backhaul import request_block
from roost.proxy.host import BACKHAUL_H2

INSTANCE = (b"roost-instance", b"i-0123456789ab")
HOST_CONFIG = h2.config.H2Configuration(  # http2._CONFIG: the host's backhaul listener
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
_FRAME = struct.Struct(">HBBBL")


def header_blocks(data: bytes) -> list[bytes]:
    """The header blocks of the HEADERS frames in ``data`` (the edge's: unpadded, no
    priority, no CONTINUATION for blocks this small)."""
    blocks, at = [], 0
    while at < len(data):
        hi, lo, ftype, flags, _ = _FRAME.unpack_from(data, at)
        length = hi << 8 | lo
        if ftype == 0x1:
            assert flags & 0x4 and not flags & 0x28, "unexpected HEADERS framing"
            blocks.append(data[at + 9 : at + 9 + length])
        at += 9 + length
    return blocks


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    backend, pool, conn, side = edge_connection(loop)

    limit = BACKHAUL_H2.limits.max_header_list_size
    host = h2wire.new_connection(HOST_CONFIG)
    host.initiate_connection()
    host.decoder.max_header_list_size = limit
    shadow = h2wire.CachingDecoder(limit)  # fed the same blocks in the same order
    fields = request_fields()
    ids = itertools.count()

    def edge_writes() -> bytes:
        data, side.out[:] = b"".join(side.out), []
        return data

    def host_answers(events: list[Any]) -> bytes:
        for event in events:
            if isinstance(event, ev.RequestReceived):
                h2wire.send_headers(host, event.stream_id, RESPONSE, False)
                h2wire.send_data(host, event.stream_id, b"ok", True)
        return host.data_to_send()

    async def batch() -> tuple[float, float]:
        for _ in range(args.streams):
            rid = b"%016x" % next(ids)
            block = request_block(b"GET", b"/", [*fields[:-1], (fields[-1][0], rid)])
            stream = pool.take(backend)
            assert stream is not None
            stream.send_request(
                Sink(), [*block, INSTANCE], chunked=False, has_body=False, head_req=False
            )
            stream.flush()
        await asyncio.sleep(0)  # the end of the loop's turn: the edge's connection writes
        data = edge_writes()
        t0 = time.process_time()
        events = host.receive_data(data)
        received = time.process_time() - t0
        blocks = header_blocks(data)
        t0 = time.process_time()
        for block in blocks:
            shadow.decode(block, raw=True)
        decoded = time.process_time() - t0
        conn.data_received(host_answers(events))
        await asyncio.sleep(0)
        host.receive_data(edge_writes())  # WINDOW_UPDATEs
        return received, decoded

    await asyncio.sleep(0)
    host.receive_data(edge_writes())  # the edge's preface and SETTINGS
    conn.data_received(host.data_to_send())
    await asyncio.sleep(0)
    host.receive_data(edge_writes())
    for _ in range(20):  # warm up (caches)
        await batch()
    receive, decode = [], []
    for _ in range(args.rounds):
        before, r_sum, d_sum = Sink.done, 0.0, 0.0
        for _ in range(args.batches):
            r, d = await batch()
            r_sum += r
            d_sum += d
        n = args.batches * args.streams
        if Sink.done - before != n:
            raise SystemExit(f"only {Sink.done - before} of {n}")
        receive.append(r_sum / n * 1e6)
        decode.append(d_sum / n * 1e6)
        if args.verbose:
            print(f"  round {len(receive)}: {receive[-1]:.1f} / {decode[-1]:.1f} µs/request")
    print_rounds("h2 backhaul, host receive", args, receive)
    print_rounds("h2 backhaul, host HPACK decode", args, decode)
    pool.close()


if __name__ == "__main__":
    parser = cost_harness_args(__doc__.splitlines()[0])
    uvloop.run(run(parser.parse_args()))
