"""The first-cut balancer: healthy first, then least in-flight, random tie-break."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import roost.proxy
from roost.proxy.balance import order_backends
from roost.proxy.routes import AppRoute, Backend


def backend(i: int, healthy: bool = True) -> Backend:
    return Backend(f"i-{i}", "127.0.0.1", 9000 + i, healthy)


def test_healthy_before_unhealthy() -> None:
    """An unhealthy backend comes last even when it is idle."""
    route = AppRoute("a", (backend(0, healthy=False), backend(1)))
    order = order_backends(route, {"i-1": 50}, random.Random(1))
    assert [b.instance_id for b in order] == ["i-1", "i-0"]


def test_least_inflight_first() -> None:
    """Among healthy backends, fewer in-flight requests wins."""
    route = AppRoute("a", tuple(backend(i) for i in range(3)))
    order = order_backends(route, {"i-0": 3, "i-1": 1, "i-2": 2}, random.Random(1))
    assert [b.instance_id for b in order] == ["i-1", "i-2", "i-0"]


def test_ties_broken_at_random() -> None:
    """Equal backends are not always taken in the same order."""
    route = AppRoute("a", tuple(backend(i) for i in range(3)))
    rng = random.Random(7)
    firsts = {order_backends(route, {}, rng)[0].instance_id for _ in range(100)}
    assert firsts == {"i-0", "i-1", "i-2"}


def test_same_seed_same_order() -> None:
    """Randomness comes only from the rng passed in."""
    route = AppRoute("a", tuple(backend(i) for i in range(8)))
    one = order_backends(route, {}, random.Random(42))
    two = order_backends(route, {}, random.Random(42))
    assert one == two


@pytest.mark.parametrize("n", [0, 1])
def test_trivial_routes(n: int) -> None:
    """Zero or one backend: nothing to choose."""
    route = AppRoute("a", tuple(backend(i) for i in range(n)))
    assert order_backends(route, {}, random.Random()) == list(route.backends)


@given(
    healthy=st.lists(st.booleans(), min_size=0, max_size=12),
    loads=st.lists(st.integers(0, 5), min_size=12, max_size=12),
    seed=st.integers(),
)
def test_order_is_a_sorted_permutation(healthy: list[bool], loads: list[int], seed: int) -> None:
    """Property: every backend exactly once, sorted by (unhealthy, in-flight)."""
    route = AppRoute("a", tuple(backend(i, h) for i, h in enumerate(healthy)))
    inflight = {f"i-{i}": loads[i] for i in range(len(healthy))}
    order = order_backends(route, inflight, random.Random(seed))
    assert sorted(order, key=lambda b: b.instance_id) == sorted(
        route.backends, key=lambda b: b.instance_id
    )
    keys = [(not b.healthy, inflight[b.instance_id]) for b in order]
    assert keys == sorted(keys)


BANNED = {"asyncio", "socket", "ssl", "time", "random", "selectors", "threading", "uvloop"}
PURE = ["routes.py", "balance.py", "headers.py", "errors.py"]


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    """The pure cores import no I/O, clock or randomness (they are passed in)."""
    path = Path(roost.proxy.__file__).parent / name
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & BANNED
