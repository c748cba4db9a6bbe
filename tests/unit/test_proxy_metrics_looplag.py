"""The event-loop lag monitor: reports how late the loop woke it, stops on its event."""

from __future__ import annotations

import asyncio
import time

import pytest

from roost.node.looplag import monitor_loop_lag
from roost.proxy.prometheus import PrometheusMetrics
from tests.helpers import await_until

INTERVAL = 0.02
BLOCK = 0.3


class Samples:
    def __init__(self) -> None:
        self.values: list[float] = []

    def loop_lag(self, seconds: float) -> None:
        self.values.append(seconds)


def busy(seconds: float) -> None:
    """Block the event loop (a CPU-bound callback) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_blocked_loop_is_reported_as_lag() -> None:
    """Blocking the loop for 300 ms yields a sample of at least 300 ms minus one interval."""
    sink, stop = Samples(), asyncio.Event()
    task = asyncio.ensure_future(monitor_loop_lag(sink, stop, interval=INTERVAL))

    async def sampled(n: int) -> bool:
        return len(sink.values) >= n

    await await_until(lambda: sampled(2), what="first lag samples")
    before = len(sink.values)
    busy(BLOCK)
    await await_until(lambda: sampled(before + 1), what="a sample after the block")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert max(sink.values[before:]) >= BLOCK - INTERVAL - 0.005
    assert all(v >= 0 for v in sink.values)


async def test_idle_loop_reports_small_lag() -> None:
    """On an idle loop the samples stay far below the interval-sized block test."""
    sink, stop = Samples(), asyncio.Event()
    task = asyncio.ensure_future(monitor_loop_lag(sink, stop, interval=INTERVAL))

    async def sampled() -> bool:
        return len(sink.values) >= 5

    await await_until(sampled, what="five samples")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert min(sink.values) < 0.1


async def test_stop_ends_the_monitor_without_waiting_out_the_interval() -> None:
    """Setting stop returns promptly even with a long interval."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(monitor_loop_lag(Samples(), stop, interval=60.0))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_feeds_prometheus_metrics() -> None:
    """PrometheusMetrics is a valid sink: lag lands in its histogram and gauge."""
    m, stop = PrometheusMetrics(process_metrics=False), asyncio.Event()
    task = asyncio.ensure_future(monitor_loop_lag(m, stop, interval=INTERVAL))

    async def sampled() -> bool:
        return m.lag_last > 0 or sum(m._lag) >= 2

    await await_until(sampled, what="a lag sample")
    busy(0.1)

    async def blocked_seen() -> bool:
        return m.lag_max >= 0.1 - INTERVAL - 0.005

    await await_until(blocked_seen, what="the block in lag_max")
    stop.set()
    await asyncio.wait_for(task, 5)


def test_interval_must_be_positive() -> None:
    """A zero interval is refused."""
    with pytest.raises(ValueError):
        asyncio.run(monitor_loop_lag(Samples(), asyncio.Event(), interval=0))
