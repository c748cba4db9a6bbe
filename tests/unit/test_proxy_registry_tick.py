"""The connection registry's deadline walk goes a slice of connections per loop callback:
10,000 idle keep-alive connections must not stall the loop for ~10 ms once a second."""

from __future__ import annotations

import asyncio

import pytest

from roost.proxy.server import ConnectionRegistry
from tests.helpers import await_until


class Conn:
    def __init__(self, checked: list[Conn]) -> None:
        self.checked = checked

    def check_deadlines(self, now: float) -> None:
        self.checked.append(self)


def registry(n: int, slice: int) -> tuple[ConnectionRegistry, list[Conn], list[Conn]]:
    reg = ConnectionRegistry(asyncio.get_running_loop(), 3600.0, slice=slice)
    checked: list[Conn] = []
    conns = [Conn(checked) for _ in range(n)]
    for conn in conns:
        reg.add(conn)  # type: ignore[arg-type]
    reg.start()  # the next automatic tick is an hour away: the test drives _tick()
    return reg, conns, checked


async def _true(value: bool) -> bool:
    return value


async def test_a_tick_checks_one_slice_per_callback_and_every_connection_once() -> None:
    reg, conns, checked = registry(250, slice=100)
    reg._tick()
    assert len(checked) == 100  # the rest waits for later callbacks: the loop runs between
    await await_until(lambda: _true(len(checked) == 250), 5, what="the whole walk")
    assert sorted(map(id, checked)) == sorted(map(id, conns))  # each exactly once
    assert isinstance(reg._ticker, asyncio.TimerHandle)  # then the next tick is scheduled
    reg.stop()


async def test_connections_closed_during_the_walk_are_skipped_and_stop_ends_it() -> None:
    reg, conns, checked = registry(300, slice=100)
    reg._tick()
    gone = next(c for c in conns if c not in checked)  # one the walk has not reached
    reg.discard(gone)  # type: ignore[arg-type]
    await await_until(lambda: _true(len(checked) == 299), 5, what="the walk")
    assert gone not in checked
    reg._tick()
    reg.stop()  # mid-walk: nothing more is checked, however often the loop turns
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(checked) == 299 + 100


async def test_small_registries_are_walked_in_one_callback() -> None:
    reg, _conns, checked = registry(50, slice=512)
    reg._tick()
    assert len(checked) == 50
    reg.stop()


async def test_slice_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slice"):
        ConnectionRegistry(asyncio.get_running_loop(), 1.0, slice=0)
