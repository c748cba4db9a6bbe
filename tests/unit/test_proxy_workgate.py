"""The work gate (pure): a congested app gets ``batch`` requests per loop turn, FIFO,
round-robin with other congested apps; parked idle connections read again in turns; a
queue left when congestion ends is released at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roost.proxy.workgate import WorkGate


class Conn:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.held = False

    def gate_hold(self) -> None:
        self.held = True

    def gate_release(self) -> None:
        self.held = False
        self.log.append(self.name)


class Loop:
    """``call_soon`` collected; :meth:`turn` runs what was scheduled (one loop turn)."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.ready.append(fn)

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for fn in ready:
            fn()


def make(congested: set[str], batch: int = 2) -> tuple[WorkGate, Loop, list[str]]:
    loop = Loop()
    return WorkGate(loop.call_soon, congested.__contains__, batch=batch), loop, []


def test_a_congested_app_gets_batch_per_turn_in_order() -> None:
    gate, loop, log = make({"a"}, batch=2)
    conns = [Conn(f"a{i}", log) for i in range(5)]
    assert [gate.admit("a", c) for c in conns] == [True, True, False, False, False]
    assert [c.held for c in conns] == [False, False, True, True, True]
    assert gate.waiting("a") == 3 and gate.held == 3
    loop.turn()  # next turn: the next two, in arrival order
    assert log == ["a2", "a3"]
    assert gate.waiting("a") == 1
    # this turn's budget went to the released ones: a new arrival waits behind a4
    assert not gate.admit("a", Conn("a5", log))
    loop.turn()
    assert log == ["a2", "a3", "a4", "a5"]
    loop.turn()  # budgets reset; nothing left: the gate stops scheduling itself
    assert loop.ready == [] and gate.waiting() == 0
    assert gate.admit("a", Conn("a6", log))


def test_every_hold_is_reported_with_its_app() -> None:
    """``on_hold`` (the gate-held metric) hears of held requests and parked connections."""
    loop, log, heard = Loop(), [], []
    gate = WorkGate(loop.call_soon, {"a"}.__contains__, batch=1, on_hold=heard.append)
    assert gate.admit("a", Conn("a0", log))
    assert not gate.admit("a", Conn("a1", log))  # held: over this turn's batch
    assert gate.park("a", Conn("a2", log))  # parked: idle connection of a congested app
    assert not gate.park("b", Conn("b0", log))  # not congested: neither held nor reported
    assert heard == ["a", "a"] and gate.held == 2


def test_other_apps_are_not_held_by_one_apps_queue() -> None:
    gate, _loop, log = make({"a", "b"}, batch=1)
    assert gate.admit("a", Conn("a0", log))
    assert not gate.admit("a", Conn("a1", log))
    assert gate.admit("b", Conn("b0", log))  # its own budget
    assert gate.waiting("b") == 0 and gate.waiting("a") == 1


def test_congested_apps_take_turns() -> None:
    gate, loop, log = make({"a", "c"}, batch=1)
    for i in range(3):
        gate.admit("a", Conn(f"a{i}", log))
        gate.admit("c", Conn(f"c{i}", log))
    loop.turn()
    assert log == ["a1", "c1"]
    loop.turn()
    assert log == ["a1", "c1", "a2", "c2"]


def test_a_queue_is_released_at_once_when_congestion_ends() -> None:
    congested = {"a"}
    gate, loop, log = make(congested, batch=1)
    for i in range(6):
        gate.admit("a", Conn(f"a{i}", log))
    congested.clear()
    loop.turn()
    assert log == [f"a{i}" for i in range(1, 6)]
    assert gate.waiting() == 0


def test_parked_idle_connections_read_again_in_turns() -> None:
    gate, loop, log = make({"a"}, batch=2)
    conns = [Conn(f"a{i}", log) for i in range(3)]
    assert all(gate.park("a", c) for c in conns)
    assert all(c.held for c in conns) and gate.waiting("a") == 3
    loop.turn()
    assert [c.held for c in conns] == [False, False, True]
    loop.turn()
    assert not conns[2].held and gate.waiting() == 0


def test_park_is_a_no_op_for_an_uncongested_app() -> None:
    gate, loop, log = make(set())
    conn = Conn("b", log)
    assert not gate.park("b", conn)
    assert not conn.held and loop.ready == []


def test_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WorkGate(lambda fn: None, lambda app: True, batch=0)


def test_a_key_with_its_own_batch_is_always_capped() -> None:
    """``batches`` (new connections' key): capped per turn whether or not ``congested``
    says so, with its own size; other keys keep ``batch`` and the congestion rule."""
    loop, log = Loop(), []
    gate = WorkGate(loop.call_soon, set().__contains__, batch=1, batches={"_new": 3})
    conns = [Conn(f"n{i}", log) for i in range(7)]
    assert [gate.admit("_new", c) for c in conns] == [True] * 3 + [False] * 4
    loop.turn()
    assert log == ["n3", "n4", "n5"]  # three per turn although nothing is "congested"
    loop.turn()
    assert log == ["n3", "n4", "n5", "n6"] and gate.waiting() == 0
    with pytest.raises(ValueError):
        WorkGate(loop.call_soon, set().__contains__, batches={"_new": 0})


def test_before_turn_runs_before_a_batch_is_released() -> None:
    """Work already waiting for the loop (other apps' bytes on the in-process backhaul)
    goes before the flooded app's next batch; with nothing held, the hook is not called."""
    loop, log = Loop(), []
    gate = WorkGate(
        loop.call_soon, {"a"}.__contains__, batch=1, before_turn=lambda: log.append("due")
    )
    conns = [Conn(f"a{i}", log) for i in range(3)]
    assert [gate.admit("a", c) for c in conns] == [True, False, False]
    loop.turn()
    loop.turn()
    assert log == ["due", "a1", "due", "a2"]
    loop.turn()  # the queue is empty: budgets reset, no hook
    assert log == ["due", "a1", "due", "a2"]
