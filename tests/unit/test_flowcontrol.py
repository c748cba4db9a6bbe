"""Adaptive HTTP/2 windows: BDP pings, growth rules, caps, and a simulated 100 ms path."""

from __future__ import annotations

import ast
import heapq
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import roost.proxy
from roost.proxy.flowcontrol import (
    DEFAULT_WINDOW,
    AdaptiveWindow,
    Command,
    IncreaseWindow,
    SendPing,
    UpdateSettings,
)


def ping_of(cmds: list[Command]) -> bytes:
    (cmd,) = cmds
    assert isinstance(cmd, SendPing) and len(cmd.data) == 8
    return cmd.data


def test_first_data_sends_one_ping() -> None:
    """A DATA frame starts a sample with a PING; more DATA while it is out sends none."""
    tuner = AdaptiveWindow()
    data = ping_of(tuner.data_received(1000, 0.0))
    assert tuner.owns(data)
    assert tuner.data_received(1000, 0.01) == []
    assert tuner.data_received(1000, 0.02) == []


def test_foreign_ack_is_ignored() -> None:
    """A PING ACK that is not our outstanding ping changes nothing."""
    tuner = AdaptiveWindow()
    data = ping_of(tuner.data_received(DEFAULT_WINDOW, 0.0))
    assert not tuner.owns(b"12345678")
    assert tuner.ping_acked(b"12345678", 0.1) == []
    assert tuner.owns(data)


def test_window_bound_sample_doubles_the_window() -> None:
    """A full window received in one RTT -> window = 2 * sample (stream + connection)."""
    tuner = AdaptiveWindow()
    data = ping_of(tuner.data_received(16384, 0.0))
    for _ in range(3):
        tuner.data_received(16383, 0.05)
    sample = 16384 + 3 * 16383
    assert tuner.ping_acked(data, 0.1) == [
        UpdateSettings(2 * sample),
        IncreaseWindow(0, 2 * sample - DEFAULT_WINDOW),
    ]
    assert tuner.window == 2 * sample
    assert tuner.rtt == pytest.approx(0.1)


def test_application_limited_sample_keeps_the_window() -> None:
    """A sample under 2/3 of the window means the peer was not window-bound: no growth."""
    tuner = AdaptiveWindow()
    data = ping_of(tuner.data_received(20000, 0.0))
    assert tuner.ping_acked(data, 0.1) == []
    assert tuner.window == DEFAULT_WINDOW


def test_rising_rtt_does_not_grow_the_window() -> None:
    """The same bytes over a longer RTT are less bandwidth than seen before: no growth."""
    tuner = AdaptiveWindow()
    data = ping_of(tuner.data_received(DEFAULT_WINDOW, 0.0))
    assert tuner.ping_acked(data, 0.1)  # grew to 2 * 65535
    window = tuner.window
    data = ping_of(tuner.data_received(window, 1.0))
    assert tuner.ping_acked(data, 2.0) == []  # same bytes, RTT 1 s: lower bandwidth
    assert tuner.window == window


def test_stable_samples_back_off() -> None:
    """After a sample that does not grow the window the next ping waits: 0.1 s, doubling
    up to 10 s; a growth goes back to pinging at once."""
    tuner = AdaptiveWindow()
    data = ping_of(tuner.data_received(1000, 0.0))
    assert tuner.ping_acked(data, 0.001) == []  # small sample: stable
    assert tuner.data_received(1000, 0.05) == []  # within 0.1 s: no ping
    data = ping_of(tuner.data_received(1000, 0.102))
    assert tuner.ping_acked(data, 0.103) == []
    assert tuner.data_received(1000, 0.25) == []  # now 0.2 s
    data = ping_of(tuner.data_received(DEFAULT_WINDOW, 0.31))
    assert tuner.ping_acked(data, 0.311)  # grew
    assert tuner.data_received(1000, 0.312) != []  # no wait after a growth
    tuner.ping_acked(tuner._outstanding or b"", 0.313)  # stable again: 0.1 s
    now, expected = 0.313, 0.1
    for _ in range(10):
        assert tuner.data_received(10, now + expected - 0.001) == []
        data = ping_of(tuner.data_received(10, now + expected))
        now += expected
        assert tuner.ping_acked(data, now) == []
        expected = min(10.0, expected * 2)
    assert expected == 10.0


def test_cap_and_settled() -> None:
    """The window never passes ``max_window``; once there, no more pings."""
    tuner = AdaptiveWindow(max_window=100_000)
    data = ping_of(tuner.data_received(DEFAULT_WINDOW, 0.0))
    assert tuner.ping_acked(data, 0.1) == [
        UpdateSettings(100_000),
        IncreaseWindow(0, 100_000 - DEFAULT_WINDOW),
    ]
    assert tuner.settled
    assert tuner.data_received(DEFAULT_WINDOW, 0.2) == []


def test_disabled_is_a_fixed_window() -> None:
    """``enabled=False``: never a ping, never a change."""
    tuner = AdaptiveWindow(enabled=False)
    assert tuner.start() == []
    assert tuner.data_received(DEFAULT_WINDOW, 0.0) == []
    assert tuner.window == DEFAULT_WINDOW


def test_start_raises_the_connection_window() -> None:
    """The connection window starts at 65 535 whatever SETTINGS say: start() raises it."""
    assert AdaptiveWindow(initial_window=1 << 20).start() == [
        IncreaseWindow(0, (1 << 20) - DEFAULT_WINDOW)
    ]
    assert AdaptiveWindow().start() == []


def test_bad_sizes_are_rejected() -> None:
    """Windows must satisfy 0 < initial <= max <= 2**31-1."""
    with pytest.raises(ValueError):
        AdaptiveWindow(initial_window=0)
    with pytest.raises(ValueError):
        AdaptiveWindow(initial_window=10, max_window=5)
    with pytest.raises(ValueError):
        AdaptiveWindow(max_window=2**31)


# -- a simulated path: window-limited sender, fixed one-way delay, optional capacity -------


def simulate(
    tuner: AdaptiveWindow,
    *,
    rtt: float,
    total: int,
    capacity: float = 1e12,
    frame: int = 16384,
) -> float:
    """Seconds until ``total`` bytes arrived at a receiver driven by ``tuner``.

    The sender sends while it has window; the receiver consumes at once and returns the
    window one-way delay later (as WINDOW_UPDATE); commands travel one-way too; a PING's
    ACK arrives one RTT after it was sent. The link serialises at ``capacity`` bytes/s.
    """
    one_way = rtt / 2
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(at: float, kind: str, what: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, what))

    credit = tuner.window
    sent = received = 0
    link_free = 0.0

    def pump(now: float) -> None:
        nonlocal credit, sent, link_free
        while credit > 0 and sent < total:
            n = min(frame, credit, total - sent)
            link_free = max(now, link_free) + n / capacity
            push(link_free + one_way, "data", n)
            credit -= n
            sent += n

    def run(cmds: list[Command], now: float) -> None:
        for cmd in cmds:
            if isinstance(cmd, SendPing):
                push(now + rtt, "ack", cmd.data)
            elif isinstance(cmd, IncreaseWindow):
                push(now + one_way, "credit", cmd.delta)

    run(tuner.start(), 0.0)
    pump(0.0)
    now = 0.0
    while received < total:
        now, _, kind, what = heapq.heappop(events)
        if kind == "data":
            assert isinstance(what, int)
            received += what
            run(tuner.data_received(what, now), now)
            push(now + one_way, "credit", what)
        elif kind == "credit":
            assert isinstance(what, int)
            credit += what
            pump(now)
        else:
            assert isinstance(what, bytes)
            run(tuner.ping_acked(what, now), now)
    return now


def test_simulated_100ms_path_is_over_five_times_faster() -> None:
    """10 MB over a 100 ms RTT: adaptive windows beat the fixed 64 KiB window >= 5x."""
    total = 10_000_000
    fixed = simulate(AdaptiveWindow(enabled=False), rtt=0.1, total=total)
    adaptive_tuner = AdaptiveWindow()
    adaptive = simulate(adaptive_tuner, rtt=0.1, total=total)
    assert fixed == pytest.approx(total / DEFAULT_WINDOW * 0.1, rel=0.05)
    assert fixed / adaptive >= 5, (fixed, adaptive)
    assert adaptive_tuner.window >= 1 << 20


def test_window_tracks_a_bandwidth_limited_path() -> None:
    """On a 10 MB/s, 50 ms path (BDP 500 kB) the window settles near 2 x BDP, not the cap."""
    tuner = AdaptiveWindow()
    simulate(tuner, rtt=0.05, total=20_000_000, capacity=10e6)
    bdp = 10e6 * 0.05
    assert bdp <= tuner.window <= 2 * (bdp + 2 * 16384)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["data", "ack", "foreign"]),
            st.integers(0, 1 << 20),
            st.floats(0, 1.0),
        ),
        max_size=60,
    ),
    max_window=st.integers(DEFAULT_WINDOW, 1 << 25),
)
def test_invariants(steps: list[tuple[str, int, float]], max_window: int) -> None:
    """Any event order: one ping at a time, window monotone and capped, commands agree."""
    tuner = AdaptiveWindow(max_window=max_window)
    now = 0.0
    outstanding: bytes | None = None
    conn_window = DEFAULT_WINDOW
    for kind, n, dt in steps:
        now += dt
        before = tuner.window
        if kind == "data":
            cmds = tuner.data_received(n, now)
            if cmds:
                assert outstanding is None
                outstanding = ping_of(cmds)
        elif kind == "ack" and outstanding is not None:
            cmds = tuner.ping_acked(outstanding, now)
            outstanding = None
        else:
            cmds = tuner.ping_acked(b"\x00" * 8, now)
            assert cmds == []
        for cmd in cmds:
            if isinstance(cmd, IncreaseWindow):
                assert cmd.stream_id == 0 and cmd.delta > 0
                conn_window += cmd.delta
            elif isinstance(cmd, UpdateSettings):
                assert cmd.initial_window_size == tuner.window
        assert before <= tuner.window <= max_window
        assert conn_window == tuner.window
        assert (outstanding is not None) == (
            tuner.owns(outstanding) if outstanding is not None else False
        )


def test_pure_module() -> None:
    """flowcontrol imports no I/O, clock or randomness."""
    path = Path(roost.proxy.__file__).with_name("flowcontrol.py")
    banned = {"asyncio", "socket", "ssl", "time", "random", "h2"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not {str(n).split(".")[0] for n in names} & banned
