"""Admission on the host proxy (pure): counting in flight, the hard limit, release events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.admission import Admission, HostTarget, InstanceTable


def target(iid: str = "i1", hard: int | None = 2) -> HostTarget:
    return HostTarget(iid, "demo", 8000, hard_limit=hard)


def test_admits_up_to_hard_limit_then_refuses() -> None:
    """The hard limit is the most requests admitted at once."""
    adm, t = Admission(), target(hard=2)
    assert adm.try_acquire(t) and adm.try_acquire(t)
    assert not adm.try_acquire(t)
    assert adm.load("i1") == 2


def test_release_makes_room_and_tells_listeners() -> None:
    """A release frees a slot and every listener hears (app, instance, count)."""
    adm, t = Admission(), target(hard=1)
    heard: list[tuple[str, str, int]] = []
    adm.subscribe(lambda *a: heard.append(a))
    assert adm.try_acquire(t)
    adm.release(t)
    assert heard == [("demo", "i1", 0)] and adm.load("i1") == 0
    assert adm.try_acquire(t)


def test_no_hard_limit_admits_everything() -> None:
    """hard_limit None never refuses."""
    adm, t = Admission(), target(hard=None)
    assert all(adm.try_acquire(t) for _ in range(1000))


def test_unsubscribed_listener_is_not_called() -> None:
    """unsubscribe stops notifications."""
    adm, t = Admission(), target()
    heard: list[object] = []

    def listener(*a: object) -> None:
        heard.append(a)

    adm.subscribe(listener)
    adm.unsubscribe(listener)
    adm.try_acquire(t)
    adm.release(t)
    assert heard == []


@given(st.integers(1, 5), st.lists(st.booleans(), max_size=200))
def test_count_never_exceeds_hard_limit(hard: int, ops: list[bool]) -> None:
    """Any sequence of acquires and releases keeps 0 <= load <= hard."""
    adm, t = Admission(), target(hard=hard)
    held = 0
    for acquire in ops:
        if acquire:
            held += adm.try_acquire(t)
        elif held:
            adm.release(t)
            held -= 1
        assert 0 <= adm.load("i1") == held <= hard


def test_instance_table_lookup() -> None:
    """The table maps ids to targets; each target carries its backend address."""
    table = InstanceTable([target("a"), target("b")])
    found = table.get("a")
    assert found is not None and found.backend.port == 8000 and table.get("c") is None
    assert len(table) == 2 and {t.instance_id for t in table} == {"a", "b"}
