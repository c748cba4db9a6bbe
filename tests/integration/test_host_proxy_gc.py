"""The full path (client -> edge -> backhaul -> host proxy -> instance) leaves nothing for
the cyclic garbage collector per request, over HTTP/1.1 and HTTP/2, with the backhaul in
memory and through the socket: everything a request allocated is freed by reference
counting when it ends (an HTTP/2 request used to leave its stream and exchange in a cycle,
and collecting those cost the h2c path about a third of its throughput)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.hostrig import Instance, req, rig
from tests.integration.rig import HOST as DEMO
from tests.integration.rig import RawClient
from tests.integration.test_host_proxy_h2 import h2_client

pytestmark = pytest.mark.integration
BACKHAUL = pytest.mark.parametrize("in_process", [True, False], ids=["memory", "socket"])
REQUESTS = 50


@contextlib.contextmanager
def collector_off() -> Iterator[list[int]]:
    """The collector paused for the block; yields a list that gets what a collection
    found at its end (objects that only the collector could free)."""
    found: list[int] = []
    gc.collect()
    gc.disable()
    try:
        yield found
        found.append(gc.collect())
    finally:
        gc.enable()


async def _measure(one: Callable[[], Awaitable[None]]) -> int:
    for _ in range(10):  # warm up: pools, caches, settings
        await one()
    with collector_off() as found:
        for _ in range(REQUESTS):
            await one()
    return found[0]


@BACKHAUL
async def test_http1_requests_leave_no_cycles(tmp_path: Path, in_process: bool) -> None:
    async with rig(tmp_path, [Instance("a")], in_process=in_process) as r:
        client = await RawClient.open(r.port)

        async def one() -> None:
            client.send(req())
            assert (await client.response()).status == 200

        garbage = await _measure(one)
    assert garbage < REQUESTS, f"{garbage} objects in cycles after {REQUESTS} requests"


@BACKHAUL
async def test_h2_requests_leave_no_cycles(tmp_path: Path, in_process: bool) -> None:
    async with rig(tmp_path, [Instance("a")], in_process=in_process) as r, h2_client(r.port) as c:

        async def one() -> None:
            assert (await c.done(c.request("/", authority=DEMO))).status == 200

        garbage = await _measure(one)
    assert garbage < REQUESTS, f"{garbage} objects in cycles after {REQUESTS} requests"
