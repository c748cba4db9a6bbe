"""Event-loop lag monitor: how late the loop wakes a task that sleeps a fixed interval.

A busy or blocked loop (a long callback, a synchronous call, a CPU-bound handler) delays every
timer and every socket read on the node. The monitor sleeps ``interval`` seconds again and again
and reports ``woke_at - (slept_at + interval)`` to ``sink.loop_lag(seconds)`` — a lower bound
on how long any ready callback waited during that interval. ``PrometheusMetrics`` exports the
samples as ``roost_event_loop_lag_seconds`` (histogram) and ``..._last_seconds`` (gauge).

It runs until ``stop`` is set (checked without waiting out the interval), like every long loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

DEFAULT_INTERVAL = 0.25


class LoopLagSink(Protocol):
    """Receives one lag sample (seconds, ≥ 0) per interval."""

    def loop_lag(self, seconds: float) -> None: ...


async def monitor_loop_lag(
    sink: LoopLagSink, stop: asyncio.Event, *, interval: float = DEFAULT_INTERVAL
) -> None:
    """Report the loop's lag to ``sink`` every ``interval`` seconds until ``stop`` is set."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            slept_at = time.monotonic()  # not loop.time(): uvloop caches it
            await asyncio.wait((stopped,), timeout=interval)
            if stopped.done():
                break
            sink.loop_lag(max(0.0, time.monotonic() - slept_at - interval))
    finally:
        if not stopped.done():
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped
