"""CreditLedger: when received bytes are handed back as WINDOW_UPDATEs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy.flowcontrol import AdaptiveWindow, CreditLedger, IncreaseWindow

WINDOW = 65_535
HALF = WINDOW >> 1


def ledger(budget: int = 1 << 20) -> CreditLedger:
    return CreditLedger(AdaptiveWindow(enabled=False), budget)


def test_credit_goes_back_in_half_windows() -> None:
    """Nothing until half a window is owed; then stream and connection updates."""
    led = ledger()
    led.received(1, HALF - 1, hold=False, credit=True)
    assert led.updates() == []
    led.received(1, 1, hold=False, credit=True)
    assert led.updates() == [IncreaseWindow(1, HALF), IncreaseWindow(0, HALF)]


def test_paused_stream_holds_only_its_own_credit() -> None:
    """A held stream gets no stream credit, but the connection's still flows."""
    led = ledger()
    led.received(1, WINDOW, hold=True, credit=True)
    assert led.updates() == [IncreaseWindow(0, WINDOW)]
    assert led.held == WINDOW
    led.received(3, HALF, hold=False, credit=True)
    assert led.updates() == [IncreaseWindow(3, HALF), IncreaseWindow(0, HALF)]
    led.release(1)
    assert led.updates() == [IncreaseWindow(1, WINDOW)]
    assert led.held == 0


def test_held_budget_stops_the_connection_too() -> None:
    """Beyond held_budget held bytes, connection credit waits (memory bound)."""
    led = ledger(budget=WINDOW)
    led.received(1, WINDOW + 1, hold=True, credit=True)
    assert led.updates() == []
    led.forget(1)
    assert led.updates() == [IncreaseWindow(0, WINDOW + 1)]


def test_unwanted_bytes_credit_the_connection_only() -> None:
    """credit=False (ended or unknown stream): connection credit, never stream credit."""
    led = ledger()
    led.received(5, WINDOW, hold=False, credit=False)
    assert led.updates() == [IncreaseWindow(0, WINDOW)]


events = st.lists(
    st.tuples(
        st.sampled_from(["recv", "recv_held", "recv_dead", "release", "forget", "updates"]),
        st.sampled_from([1, 3, 5]),
        st.integers(0, 40_000),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps=events, budget=st.integers(0, 200_000))
def test_never_more_credit_than_bytes(steps: list[tuple[str, int, int]], budget: int) -> None:
    """Credit handed back never exceeds bytes received (per stream and in all); held
    credit is never handed back before release; the connection is never starved by held
    streams while they hold no more than the budget."""
    led = ledger(budget)
    got = {1: 0, 3: 0, 5: 0}
    given_back = {0: 0, 1: 0, 3: 0, 5: 0}
    total = 0
    held = {1: False, 3: False, 5: False}
    for kind, sid, n in steps:
        if kind.startswith("recv"):
            hold = kind == "recv_held"
            live = kind != "recv_dead"
            led.received(sid, n, hold=hold, credit=live)
            total += n
            if live:
                got[sid] += n
                held[sid] = held[sid] or hold
        elif kind == "release":
            led.release(sid)
            held[sid] = False
        elif kind == "forget":
            led.forget(sid)
        else:
            for cmd in led.updates():
                given_back[cmd.stream_id] += cmd.delta
                assert cmd.delta > 0
    for cmd in led.updates():
        given_back[cmd.stream_id] += cmd.delta
    assert given_back[0] <= total
    for sid in (1, 3, 5):
        assert given_back[sid] <= got[sid]
    if led.held <= budget:
        assert total - given_back[0] < HALF
