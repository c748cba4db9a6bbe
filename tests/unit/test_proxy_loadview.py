"""The load view: incarnations, sequence numbers and expiry of gossiped load."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.loadview import RETIRED_KEPT, LoadReport, LoadView, effective_load


def report(
    seq: int, sent_at: float, loads: dict[str, int], inc: str = "a", node: str = "n1"
) -> LoadReport:
    return LoadReport(node, inc, seq, sent_at, loads)


def test_fresh_report_is_applied() -> None:
    """A first report sets the loads of the node's instances."""
    view = LoadView()
    assert view.apply(report(1, 10.0, {"i-1": 4, "i-2": 0}), now=10.1)
    assert view.load("i-1", 10.2) == 4
    assert view.load("i-2", 10.2) == 0
    assert view.load("i-3", 10.2) is None


def test_out_of_order_seq_dropped() -> None:
    """Within an incarnation, a lower or equal seq is ignored."""
    view = LoadView()
    assert view.apply(report(5, 10.0, {"i-1": 4}), now=10.0)
    assert not view.apply(report(4, 10.5, {"i-1": 9}), now=10.6)
    assert not view.apply(report(5, 10.5, {"i-1": 9}), now=10.6)
    assert view.load("i-1", 10.7) == 4
    assert view.apply(report(6, 11.0, {"i-1": 1}), now=11.0)
    assert view.load("i-1", 11.1) == 1


def test_new_incarnation_replaces_all_loads() -> None:
    """A restarted node's report replaces every load it reported before, seq restarting."""
    view = LoadView()
    view.apply(report(90, 10.0, {"i-1": 4, "i-2": 7}, inc="a"), now=10.0)
    assert view.apply(report(1, 11.0, {"i-3": 2}, inc="b"), now=11.0)
    assert view.load("i-1", 11.1) is None
    assert view.load("i-2", 11.1) is None
    assert view.load("i-3", 11.1) == 2


def test_old_incarnation_dropped() -> None:
    """After a restart, late reports of the previous run are ignored, whatever their seq."""
    view = LoadView()
    view.apply(report(90, 10.0, {"i-1": 4}, inc="a"), now=10.0)
    view.apply(report(1, 11.0, {"i-1": 0}, inc="b"), now=11.0)
    assert not view.apply(report(91, 11.5, {"i-1": 20}, inc="a"), now=11.6)
    assert view.load("i-1", 11.7) == 0


def test_unseen_older_incarnation_arriving_late_dropped() -> None:
    """A report of a run never seen, sent before the current run's newest, is dropped."""
    view = LoadView()
    view.apply(report(3, 11.0, {"i-1": 0}, inc="b"), now=11.0)
    assert not view.apply(report(77, 10.5, {"i-1": 20}, inc="a"), now=11.2)
    assert view.load("i-1", 11.3) == 0


def test_new_run_with_clock_behind_takes_over_after_expiry() -> None:
    """A new run whose clock stepped back wins once the old run's data has expired."""
    view = LoadView(max_age=3.0)
    view.apply(report(9, 100.0, {"i-1": 20}, inc="a"), now=100.0)
    assert not view.apply(report(1, 99.0, {"i-1": 1}, inc="b"), now=101.5)
    assert view.apply(report(2, 102.5, {"i-1": 1}, inc="b"), now=103.0)
    assert view.load("i-1", 103.1) == 1


def test_expired_report_reads_as_unknown() -> None:
    """After max_age without a newer report, loads are None (stale load never pins)."""
    view = LoadView(max_age=3.0)
    view.apply(report(1, 10.0, {"i-1": 20}), now=10.0)
    assert view.load("i-1", 12.9) == 20
    assert view.load("i-1", 13.0) is None


def test_age_counts_from_earlier_of_sent_and_applied() -> None:
    """A delayed report expires by its send time; a sender clock ahead gains nothing."""
    view = LoadView(max_age=3.0)
    view.apply(report(1, 10.0, {"i-1": 5}), now=12.0)  # 2 s in transit
    assert view.load("i-1", 12.9) == 5
    assert view.load("i-1", 13.0) is None
    view.apply(report(2, 50.0, {"i-1": 6}), now=20.0)  # sender 30 s ahead
    assert view.load("i-1", 22.9) == 6
    assert view.load("i-1", 23.0) is None


def test_report_too_old_on_arrival_dropped() -> None:
    """A report already max_age old when it arrives is ignored."""
    view = LoadView(max_age=3.0)
    assert not view.apply(report(1, 10.0, {"i-1": 5}), now=13.0)
    assert view.load("i-1", 13.0) is None


def test_instance_missing_from_newer_report_is_unknown() -> None:
    """Reports are full snapshots: an instance left out is no longer known."""
    view = LoadView()
    view.apply(report(1, 10.0, {"i-1": 5, "i-2": 1}), now=10.0)
    view.apply(report(2, 11.0, {"i-2": 1}), now=11.0)
    assert view.load("i-1", 11.0) is None


def test_forget_node() -> None:
    """Forgetting a node drops its loads; other nodes keep theirs."""
    view = LoadView()
    view.apply(report(1, 10.0, {"i-1": 5}, node="n1"), now=10.0)
    view.apply(report(1, 10.0, {"i-2": 3}, node="n2"), now=10.0)
    view.forget_node("n1")
    view.forget_node("n-unknown")
    assert view.load("i-1", 10.1) is None
    assert view.load("i-2", 10.1) == 3


def test_retired_incarnations_bounded() -> None:
    """Only the last few retired incarnations are remembered per node."""
    view = LoadView()
    for k in range(RETIRED_KEPT + 5):
        assert view.apply(report(1, 10.0 + k, {"i-1": k}, inc=f"r{k}"), now=10.0 + k)
    assert not view.apply(report(2, 30.0, {"i-1": 0}, inc=f"r{RETIRED_KEPT}"), now=30.0)


def test_candidate_helper_uses_effective_load() -> None:
    """``candidate`` builds a balancer Candidate; unknown load = this edge's own count."""
    view = LoadView()
    view.apply(report(1, 10.0, {"i-1": 5}), now=10.0)
    c = view.candidate(
        "i-1", "n1", "ams", rtt=0.01, soft_limit=10, hard_limit=20, now=10.5, local=2
    )
    assert (c.instance_id, c.node, c.region, c.load, c.hard_limit) == ("i-1", "n1", "ams", 5, 20)
    expired = view.candidate("i-1", "n1", "ams", rtt=0.01, soft_limit=10, hard_limit=20, now=99)
    assert expired.load == 0
    assert effective_load(None, 3) == 3 and effective_load(1, 3) == 3


reports = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 20),
        st.floats(0, 20),
        st.floats(0, 2),
        st.integers(0, 50),
    ),
    max_size=40,
)


@given(reports)
def test_never_serves_expired_or_replaced_data(
    rs: list[tuple[str, int, float, float, int]],
) -> None:
    """Property: a load read back is from the newest applied report and not expired."""
    view = LoadView(max_age=3.0)
    now = 0.0
    last: tuple[float, int] | None = None  # (born, value) of the last applied report
    seen_seq: dict[str, int] = {}
    for inc, seq, sent_at, delay, value in rs:
        now = max(now, sent_at + delay)
        if view.apply(report(seq, sent_at, {"i-1": value}, inc=inc), now=now):
            assert seq > seen_seq.get(inc, -1)
            seen_seq[inc] = seq
            last = (min(sent_at, now), value)
        got = view.load("i-1", now)
        if last is None or now - last[0] >= 3.0:
            assert got is None
        else:
            assert got == last[1]
