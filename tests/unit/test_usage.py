"""Per-app usage accounting: the math, the cap, snapshots."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.usage import OVERFLOW_APP, AppUsage, Usage


def test_requests_bytes_and_request_seconds_add_up() -> None:
    """Each finished request adds one request, its bytes and its duration."""
    u = Usage(since=1700.0)
    u.request_finished("a", bytes_in=10, bytes_out=100, duration=0.25)
    u.request_finished("a", bytes_in=5, bytes_out=0, duration=1.5)
    u.request_finished("b", bytes_in=0, bytes_out=7, duration=0.1)
    u.refused("a")
    assert u.snapshot("a") == AppUsage(
        app="a",
        since=1700.0,
        requests=2,
        bytes_in=15,
        bytes_out=100,
        request_seconds=1.75,
        refusals=1,
    )
    assert u.snapshot("b").requests == 1 and u.snapshot("b").refusals == 0


def test_unseen_app_snapshot_is_zero_and_get_is_none() -> None:
    """snapshot() of an app without traffic is all zeros; get() says it was never seen."""
    u = Usage(since=5.0)
    assert u.get("quiet") is None
    assert u.snapshot("quiet") == AppUsage(app="quiet", since=5.0)


def test_snapshot_is_a_frozen_copy() -> None:
    """A snapshot does not change with later traffic and cannot be mutated."""
    u = Usage(since=0.0)
    u.request_finished("a", bytes_in=1, bytes_out=1, duration=1.0)
    snap = u.snapshot("a")
    u.request_finished("a", bytes_in=1, bytes_out=1, duration=1.0)
    assert snap.requests == 1 and u.snapshot("a").requests == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.requests = 5  # type: ignore[misc]


def test_apps_beyond_the_cap_fold_into_overflow() -> None:
    """Past max_apps, new apps count under "_other"; known apps keep counting."""
    u = Usage(since=0.0, max_apps=2)
    for app in ("a", "b", "c", "d", "a"):
        u.request_finished(app, bytes_in=0, bytes_out=0, duration=0.0)
    assert u.snapshot("a").requests == 2
    assert u.snapshot(OVERFLOW_APP).requests == 2
    assert u.get("c") is None
    assert len(u) == 3  # a, b and the overflow bucket


def test_forget_drops_an_app() -> None:
    """A destroyed app's counters can be dropped."""
    u = Usage(since=0.0)
    u.refused("gone")
    u.forget("gone")
    assert u.get("gone") is None
    assert list(u.items()) == []


def test_max_apps_must_be_positive() -> None:
    """A cap below one is refused."""
    with pytest.raises(ValueError):
        Usage(since=0.0, max_apps=0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 1 << 30),
            st.integers(0, 1 << 30),
            st.floats(0, 100, allow_nan=False),
        ),
        max_size=50,
    )
)
def test_totals_equal_the_sums_of_what_was_fed(events: list[tuple[str, int, int, float]]) -> None:
    """For any sequence of requests, each app's totals are the sums of its requests."""
    u = Usage(since=0.0)
    for app, bin_, bout, dur in events:
        u.request_finished(app, bytes_in=bin_, bytes_out=bout, duration=dur)
    for app in ("a", "b", "c"):
        mine = [e for e in events if e[0] == app]
        snap = u.snapshot(app)
        assert snap.requests == len(mine)
        assert snap.bytes_in == sum(e[1] for e in mine)
        assert snap.bytes_out == sum(e[2] for e in mine)
        assert math.isclose(snap.request_seconds, sum(e[3] for e in mine), abs_tol=1e-9)
