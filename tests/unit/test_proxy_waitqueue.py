"""Requests waiting for capacity (pure): bounded per app, FIFO, forced waiters."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.waitqueue import WaitQueues


@dataclass(eq=False)
class W:
    name: str
    forced: str | None = None


def test_fifo_and_bounded() -> None:
    """Waiters come out in arrival order; a full app queue refuses more."""
    q = WaitQueues(2)
    a, b, c = W("a"), W("b"), W("c")
    assert q.push("app", a) and q.push("app", b)
    assert not q.push("app", c)
    assert q.take("app") is a and q.take("app") is b and q.take("app") is None


def test_front_push_always_accepted() -> None:
    """A waiter that lost a race goes back to the front, even when the queue is full."""
    q = WaitQueues(1)
    a, b = W("a"), W("b")
    q.push("app", a)
    assert q.push("app", b, front=True)
    assert q.take("app") is b


def test_apps_are_separate() -> None:
    """One app's full queue does not affect another's."""
    q = WaitQueues(1)
    assert q.push("x", W("1")) and q.push("y", W("2"))
    assert q.waiting("x") == q.waiting("y") == 1 and len(q) == 2


def test_forced_waiter_only_for_its_instance() -> None:
    """A forced waiter is taken only for its instance; general waiters for any."""
    q = WaitQueues(10)
    forced, general = W("f", forced="i1"), W("g")
    q.push("app", forced)
    q.push("app", general)
    assert q.general("app") == 1
    assert q.take("app", "i2") is general
    assert q.take("app", "i2") is None
    assert q.take("app", "i1") is forced


def test_remove() -> None:
    """A timed-out waiter is removed; removing twice is harmless."""
    q = WaitQueues(10)
    a = W("a")
    q.push("app", a)
    assert q.remove("app", a) and not q.remove("app", a)
    assert q.waiting("app") == 0 and q.general("app") == 0 and list(q.apps()) == []


@given(st.lists(st.tuples(st.sampled_from(["push", "take", "remove"]), st.integers(0, 5))))
def test_counts_stay_consistent(ops: list[tuple[str, int]]) -> None:
    """waiting/general always match the queued waiters, never above the bound."""
    q = WaitQueues(3)
    pool = [W(str(i), forced=None if i % 2 else f"i{i}") for i in range(6)]
    queued: list[W] = []
    for op, i in ops:
        w = pool[i]
        if op == "push" and w not in queued:
            if q.push("app", w):
                queued.append(w)
        elif op == "take":
            got = q.take("app", f"i{i}")
            if got is not None:
                queued.remove(got)  # type: ignore[arg-type]
        elif op == "remove" and q.remove("app", w):
            queued.remove(w)
        assert q.waiting("app") == len(queued) <= 3
        assert q.general("app") == sum(1 for x in queued if x.forced is None)
