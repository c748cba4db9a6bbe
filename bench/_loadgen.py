"""Open-loop (paced) and closed-loop HTTP/1.1 load in Python, for low rates (<= ~2k req/s).

Open loop: request *i* is due at ``start + i / rate`` whether or not earlier ones have been
answered (no coordinated omission): it takes an idle keep-alive connection or opens a new
one, and its latency is counted from the time it was *due*. Every run is bounded by a
request count, a duration and a per-request timeout; connections are closed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

from _common import HOST, LoadResult, percentile


@dataclass
class Sample:
    status: int  # 0: no response
    latency: float  # seconds from due time to the end of the response
    error: str = ""


@dataclass
class _Pool:
    port: int
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    opened: int = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        self.opened += 1
        return await asyncio.open_connection(HOST, self.port)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _request(pool: _Pool, head: bytes, timeout: float, due: float) -> Sample:
    conn = None
    try:
        async with asyncio.timeout(timeout):
            conn = await pool.get()
            reader, writer = conn
            writer.write(head)
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
                elif name == b"transfer-encoding":
                    close = True  # not expected from these apps; do not reuse
            if length:
                await reader.readexactly(length)
        latency = time.monotonic() - due
        if close:
            writer.close()
        else:
            pool.idle.append(conn)
        return Sample(status, latency)
    except TimeoutError:
        err = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        err = type(exc).__name__
    if conn is not None:
        conn[1].close()
    return Sample(0, time.monotonic() - due, err)


def _head(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: roost-bench\r\n\r\n".encode()


async def open_loop(
    port: int,
    host: str,
    path: str,
    *,
    rate: float,
    duration: float,
    timeout: float = 30.0,
    max_inflight: int = 5000,
) -> list[Sample]:
    """``rate`` req/s for ``duration`` s, paced; waits for the last answers (<= timeout)."""
    pool = _Pool(port)
    head = _head(host, path)
    total = int(rate * duration)
    tasks: set[asyncio.Task[Sample]] = set()
    done: list[Sample] = []
    start = time.monotonic() + 0.05
    try:
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_inflight:
                done.append(Sample(0, 0.0, "generator-overflow"))
                continue
            task = asyncio.ensure_future(_request(pool, head, timeout, due))
            tasks.add(task)
            task.add_done_callback(lambda t: _collect(t, tasks, done))
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout + 5)
    finally:
        for task in list(tasks):
            task.cancel()
            done.append(Sample(0, timeout, "unfinished"))
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        pool.close()
    return done


def _collect(
    task: asyncio.Task[Sample], tasks: set[asyncio.Task[Sample]], done: list[Sample]
) -> None:
    tasks.discard(task)
    if not task.cancelled():
        done.append(task.result())


async def closed_loop(
    ports: list[int],
    host: str,
    path: str,
    *,
    concurrency: int,
    duration: float,
    timeout: float = 30.0,
) -> list[Sample]:
    """``concurrency`` workers, each sending back to back (round-robin over ``ports``)."""
    pools = [_Pool(p) for p in ports]
    head = _head(host, path)
    done: list[Sample] = []
    end = time.monotonic() + duration

    async def worker(n: int) -> None:
        pool = pools[n % len(pools)]
        while time.monotonic() < end:
            done.append(await _request(pool, head, timeout, time.monotonic()))

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(n) for n in range(concurrency))), duration + timeout + 5
        )
    finally:
        for pool in pools:
            pool.close()
    return done


def summarize(samples: list[Sample], duration: float) -> LoadResult:
    """Counts and percentiles: p50/p99 over successful (2xx) responses; errors = no response."""
    statuses = Counter(s.status for s in samples if s.status)
    ok = [s.latency * 1000 for s in samples if 200 <= s.status < 300]
    res = LoadResult("open-loop")
    res.requests = len(samples)
    res.statuses = dict(statuses)
    res.ok = len(ok)
    res.non2xx = sum(n for code, n in statuses.items() if not 200 <= code < 300)
    res.errors = sum(1 for s in samples if not s.status)
    res.duration = duration
    res.rps = res.ok / duration if duration else 0.0
    if ok:
        res.p50 = percentile(ok, 50)
        res.p99 = percentile(ok, 99)
    errs = Counter(s.error for s in samples if s.error)
    res.note = ", ".join(f"{k} {v}" for k, v in errs.most_common())
    return res


def run(coro: object) -> list[Sample]:
    """Run a generator coroutine on uvloop if available."""
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type,no-any-return]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type,no-any-return]
