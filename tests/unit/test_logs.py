"""The log collector: tailing instance log files into per-app JSONL and live subscribers."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from roost.machines.drivers.process import LaunchSpec, ProcessDriver
from roost.machines.logs import MAX_LINE_BYTES, LogCollector, LogLine, split_lines

DEADLINE = 10.0


class Clock:
    """A settable clock: ``now`` is returned until changed."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(log_dir: Path, stream: str, data: bytes) -> None:
    """Append ``data`` to an instance's stream file, as the child would."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{stream}.log", "ab") as fh:
        fh.write(data)


def texts(lines: list[LogLine]) -> list[str]:
    return [ln.line for ln in lines]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def collector(tmp_path: Path, clock: Clock) -> LogCollector:
    return LogCollector(tmp_path / "logs", clock=clock)


def test_lines_are_tagged_and_timestamped(
    collector: LogCollector, clock: Clock, tmp_path: Path
) -> None:
    """Each line carries app, instance, stream and the time the collector read it."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"hello\nworld\r\n")
    write(d, "stderr", b"oops\n")
    assert collector.poll() == 3
    clock.now = 2000.0
    write(d, "stdout", b"later\n")
    collector.poll()
    assert collector.tail("web", 10) == [
        LogLine(1000.0, "web", "i-1", "stdout", "hello"),
        LogLine(1000.0, "web", "i-1", "stdout", "world"),
        LogLine(1000.0, "web", "i-1", "stderr", "oops"),
        LogLine(2000.0, "web", "i-1", "stdout", "later"),
    ]
    stored = (tmp_path / "logs" / "web.jsonl").read_text().splitlines()
    assert json.loads(stored[0]) == {
        "ts": 1000.0,
        "app": "web",
        "instance_id": "i-1",
        "stream": "stdout",
        "line": "hello",
    }


def test_partial_line_waits_for_its_newline(collector: LogCollector, tmp_path: Path) -> None:
    """An unterminated line is not emitted until the rest of it arrives."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"one\npar")
    assert collector.poll() == 1
    assert collector.poll() == 0
    write(d, "stdout", b"tial\n")
    assert collector.poll() == 1
    assert texts(collector.tail("web", 10)) == ["one", "partial"]


def test_invalid_utf8_is_replaced(collector: LogCollector, tmp_path: Path) -> None:
    """Bytes that are not UTF-8 become U+FFFD instead of breaking the line."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"caf\xc3\xa9 \xff\xfe ok\n")
    collector.poll()
    assert texts(collector.tail("web", 1)) == ["café \ufffd\ufffd ok"]


def test_overlong_line_is_split(collector: LogCollector, tmp_path: Path) -> None:
    """A line without newline longer than 64 KiB is emitted in 64 KiB pieces."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"x" * (MAX_LINE_BYTES + 10))
    assert collector.poll() == 1
    write(d, "stdout", b"\n")
    assert collector.poll() == 1
    assert [len(t) for t in texts(collector.tail("web", 10))] == [MAX_LINE_BYTES, 10]


def test_split_does_not_cut_utf8_sequences() -> None:
    """Splitting an overlong line backs off to a UTF-8 character boundary."""
    data = b"a" + "é".encode() * MAX_LINE_BYTES
    lines, used = split_lines(data, flush=True)
    assert used == len(data)
    assert all(piece.decode("utf-8") for piece in lines)
    assert b"".join(lines) == data


def test_unfollow_flushes_rest_and_stops(collector: LogCollector, tmp_path: Path) -> None:
    """unfollow() collects what is left, an unterminated last line included, then stops."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"a\nlast words")
    collector.unfollow("i-1")
    write(d, "stdout", b"\nafter\n")
    assert collector.poll() == 0
    assert texts(collector.tail("web", 10)) == ["a", "last words"]


def test_follow_is_idempotent(collector: LogCollector, tmp_path: Path) -> None:
    """Following an instance twice does not duplicate its lines."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"once\n")
    collector.poll()
    assert texts(collector.tail("web", 10)) == ["once"]


def test_new_collector_continues_from_saved_offsets(tmp_path: Path, clock: Clock) -> None:
    """A collector created again (platform restart) neither repeats nor loses lines."""
    d = tmp_path / "i-1"
    first = LogCollector(tmp_path / "logs", clock=clock)
    first.follow("web", "i-1", d)
    write(d, "stdout", b"1\n2\n")
    write(d, "stderr", b"e1\n")
    first.poll()
    write(d, "stdout", b"3\npart")  # "3" is collected; "part" is pending when we "crash"
    first.poll()
    write(d, "stdout", b"ial\n4\n")  # written while no collector runs
    write(d, "stderr", b"e2\n")

    second = LogCollector(tmp_path / "logs", clock=clock)
    second.follow("web", "i-1", d)
    second.poll()
    lines = second.tail("web", 100)
    assert [t for t in lines if t.stream == "stdout"] == [
        LogLine(clock.now, "web", "i-1", "stdout", s) for s in ["1", "2", "3", "partial", "4"]
    ]
    assert texts([t for t in lines if t.stream == "stderr"]) == ["e1", "e2"]


def test_rotation_and_tail_across_files(tmp_path: Path, clock: Clock) -> None:
    """The app file rotates to .jsonl.1 past max_file_bytes; tail() reads both, in order."""
    collector = LogCollector(tmp_path / "logs", clock=clock, max_file_bytes=1000)
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    for i in range(30):
        write(d, "stdout", f"line {i}\n".encode())
        collector.poll()
    current = tmp_path / "logs" / "web.jsonl"
    assert (tmp_path / "logs" / "web.jsonl.1").exists()
    assert current.stat().st_size <= 1000
    got = texts(collector.tail("web", 15))
    assert got == [f"line {i}" for i in range(15, 30)]
    assert len(current.read_text().splitlines()) < 15  # so tail() did read .jsonl.1 too


def test_tail_filters_by_instance(collector: LogCollector, tmp_path: Path) -> None:
    """tail() can be restricted to one instance and returns at most n lines."""
    collector.follow("web", "i-1", tmp_path / "i-1")
    collector.follow("web", "i-2", tmp_path / "i-2")
    collector.follow("api", "i-3", tmp_path / "i-3")
    for i in range(5):
        write(tmp_path / "i-1", "stdout", f"one {i}\n".encode())
        write(tmp_path / "i-2", "stdout", f"two {i}\n".encode())
        write(tmp_path / "i-3", "stdout", f"three {i}\n".encode())
    collector.poll()
    assert texts(collector.tail("web", 2, instance_id="i-2")) == ["two 3", "two 4"]
    assert len(collector.tail("web", 100)) == 10
    assert collector.tail("web", 0) == []
    assert collector.tail("nothing-yet", 5) == []
    with pytest.raises(ValueError):
        collector.tail("../etc", 5)


def test_collected_source_is_truncated(tmp_path: Path, clock: Clock) -> None:
    """A big, fully read instance log is truncated; the writer's O_APPEND fd keeps working."""
    collector = LogCollector(tmp_path / "logs", clock=clock, max_file_bytes=100)
    d = tmp_path / "i-1"
    d.mkdir()
    collector.follow("web", "i-1", d)
    with open(d / "stdout.log", "ab", buffering=0) as child_fd:
        child_fd.write(b"x" * 150 + b"\n")
        collector.poll()
        assert (d / "stdout.log").stat().st_size == 0
        child_fd.write(b"after truncation\n")
        collector.poll()
    assert [len(t) for t in texts(collector.tail("web", 10))] == [150, 16]
    again = LogCollector(tmp_path / "logs", clock=clock, max_file_bytes=100)
    again.follow("web", "i-1", d)
    assert again.poll() == 0


def test_externally_truncated_source_is_read_from_start(
    collector: LogCollector, tmp_path: Path
) -> None:
    """A stream that became shorter than the saved offset is read again from its start."""
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    write(d, "stdout", b"a fairly long first line\n")
    collector.poll()
    (d / "stdout.log").write_bytes(b"new\n")
    collector.poll()
    assert texts(collector.tail("web", 10)) == ["a fairly long first line", "new"]


async def test_subscribe_receives_new_lines(tmp_path: Path) -> None:
    """A subscriber gets the lines collected by run() after it subscribed, for its app only."""
    collector = LogCollector(tmp_path / "logs", poll_interval=0.01)
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    collector.follow("api", "i-2", tmp_path / "i-2")
    write(d, "stdout", b"before\n")
    collector.poll()
    stop = asyncio.Event()
    runner = asyncio.create_task(collector.run(stop))
    sub = collector.subscribe("web")
    write(tmp_path / "i-2", "stdout", b"other app\n")
    write(d, "stderr", b"first\n")
    first = await asyncio.wait_for(anext(sub), DEADLINE)
    assert (first.stream, first.line, first.instance_id) == ("stderr", "first", "i-1")
    write(d, "stdout", b"second\n")
    assert (await asyncio.wait_for(anext(sub), DEADLINE)).line == "second"
    stop.set()
    await asyncio.wait_for(runner, DEADLINE)
    assert [ln async for ln in sub] == []  # run() ended: the subscription is closed
    assert sub.dropped == 0


async def test_subscription_drops_oldest_when_full(tmp_path: Path) -> None:
    """A slow subscriber loses the oldest lines, counted in ``dropped``."""
    collector = LogCollector(tmp_path / "logs", subscriber_queue=3)
    d = tmp_path / "i-1"
    collector.follow("web", "i-1", d)
    async with collector.subscribe("web") as sub:
        write(d, "stdout", b"".join(f"{i}\n".encode() for i in range(5)))
        collector.poll()
        assert sub.dropped == 2
        assert [(await anext(sub)).line for _ in range(3)] == ["2", "3", "4"]
    assert [ln async for ln in sub] == []


async def test_collects_a_real_process(tmp_path: Path) -> None:
    """Output of an instance started by the process driver reaches the app's log."""
    driver = ProcessDriver()
    collector = LogCollector(tmp_path / "logs")
    log_dir = tmp_path / "i-1"
    code = (
        "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nprint('no newline', end='')"
    )
    handle = await driver.start(LaunchSpec("i-1", (sys.executable, "-c", code), {}, None, log_dir))
    collector.follow("web", "i-1", log_dir)
    assert await asyncio.wait_for(driver.wait(handle), DEADLINE) == 0
    collector.unfollow("i-1")
    got = {(ln.stream, ln.line) for ln in collector.tail("web", 10, instance_id="i-1")}
    assert got == {("stdout", "to out"), ("stderr", "to err"), ("stdout", "no newline")}
