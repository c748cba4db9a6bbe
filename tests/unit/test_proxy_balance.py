"""The balancer: eligibility, the ``closest`` and ``leastload`` orders, and purity."""

from __future__ import annotations

import ast
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import roost.proxy
from roost.proxy.balance import Candidate, Strategy, order_backends, rtt_bucket, select
from roost.proxy.routes import AppRoute, Backend

STRATEGIES: list[Strategy] = ["closest", "leastload"]


def cand(
    i: int,
    rtt: float = 0.0,
    load: int = 0,
    soft: int = 10,
    hard: int | None = 20,
    healthy: bool = True,
    region: str = "ams",
) -> Candidate:
    return Candidate(f"i-{i}", f"n-{i}", region, rtt, load, soft, hard, healthy)


def ids(cs: list[Candidate]) -> list[str]:
    return [c.instance_id for c in cs]


# -- eligibility -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unhealthy_and_full_are_never_tried(strategy: Strategy) -> None:
    """Unhealthy and at/over-hard candidates are left out entirely."""
    cs = [cand(0, healthy=False), cand(1, load=20), cand(2, load=25), cand(3, load=19)]
    assert ids(select(cs, rng=random.Random(1), strategy=strategy)) == ["i-3"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_hard_limit_is_always_eligible(strategy: Strategy) -> None:
    """``hard_limit=None`` means no hard limit, however loaded."""
    cs = [cand(0, load=10**9, hard=None)]
    assert ids(select(cs, rng=random.Random(1), strategy=strategy)) == ["i-0"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n", [1, 4])
def test_accept_filters(strategy: Strategy, n: int) -> None:
    """Candidates ``accept`` rejects (e.g. already tried) are left out."""
    cs = [cand(i) for i in range(n)]
    got = select(cs, rng=random.Random(1), strategy=strategy, accept=lambda c: c.node != "n-0")
    assert sorted(ids(got)) == [f"i-{i}" for i in range(1, n)]


def test_empty_and_unknown_strategy() -> None:
    """No candidates -> empty list; a misspelt strategy is an error, not a default."""
    assert select([], rng=random.Random(1)) == []
    with pytest.raises(ValueError, match="strategy"):
        select([cand(0), cand(1)], rng=random.Random(1), strategy="nearest")  # type: ignore[arg-type]


def test_rtt_buckets() -> None:
    """Same node is its own bucket; then 1 ms buckets; inf/nan are "far"."""
    assert rtt_bucket(0.0) == 0
    assert rtt_bucket(0.0001) == rtt_bucket(0.0009) == 1
    assert rtt_bucket(0.0101) == rtt_bucket(0.0109) == 11
    assert rtt_bucket(math.inf) == rtt_bucket(math.nan) == rtt_bucket(1e9) > rtt_bucket(60.0)


# -- closest -------------------------------------------------------------------------------


def test_closest_prefers_same_node_below_soft() -> None:
    """Below soft, the same node (rtt 0) wins over an idle neighbour 0.3 ms away."""
    cs = [cand(1, rtt=0.0003, load=0), cand(0, rtt=0.0, load=9)]
    for seed in range(20):
        assert ids(select(cs, rng=random.Random(seed)))[0] == "i-0"


def test_closest_far_below_soft_beats_near_over_soft() -> None:
    """A far instance with room beats a near one past its soft limit."""
    cs = [cand(0, rtt=0.0, load=10), cand(1, rtt=0.2, load=3)]
    assert ids(select(cs, rng=random.Random(1))) == ["i-1", "i-0"]


def test_closest_same_bucket_least_loaded_first() -> None:
    """RTTs within the same 1 ms bucket tie; then the least loaded wins."""
    cs = [cand(0, rtt=0.0101, load=5), cand(1, rtt=0.0108, load=2)]
    assert ids(select(cs, rng=random.Random(1))) == ["i-1", "i-0"]


def test_closest_full_ties_are_random() -> None:
    """Same bucket and same load: each candidate comes first sometimes."""
    cs = [cand(i, rtt=0.002, load=1) for i in range(3)]
    rng = random.Random(7)
    firsts = Counter(ids(select(cs, rng=rng))[0] for _ in range(300))
    assert set(firsts) == {"i-0", "i-1", "i-2"}
    assert min(firsts.values()) > 60


def test_closest_all_over_soft_least_loaded_then_closer() -> None:
    """Nobody below soft: least loaded first, equal loads closer first."""
    cs = [cand(0, rtt=0.0, load=15), cand(1, rtt=0.08, load=12), cand(2, rtt=0.03, load=12)]
    assert ids(select(cs, rng=random.Random(1))) == ["i-2", "i-1", "i-0"]


def test_closest_full_attempt_order() -> None:
    """The whole list: below-soft by distance, then over-soft by load."""
    cs = [
        cand(0, rtt=0.0, load=12),  # over soft
        cand(1, rtt=0.05, load=1),
        cand(2, rtt=0.001, load=4),
        cand(3, rtt=0.2, load=11),  # over soft, less loaded
        cand(4, rtt=0.0, load=20),  # at hard: never
    ]
    assert ids(select(cs, rng=random.Random(3))) == ["i-2", "i-1", "i-3", "i-0"]


# -- leastload -----------------------------------------------------------------------------


def test_leastload_full_sample_is_strict_least_loaded() -> None:
    """With ``choices`` >= candidates: least loaded first, equal loads closer first."""
    cs = [cand(0, rtt=0.0, load=4), cand(1, rtt=0.09, load=1), cand(2, rtt=0.02, load=1)]
    got = select(cs, rng=random.Random(1), strategy="leastload", choices=3)
    assert ids(got) == ["i-2", "i-1", "i-0"]


def test_leastload_two_choices_never_picks_the_worst() -> None:
    """Best of two distinct: the most loaded never goes first, the others both do."""
    cs = [cand(0, load=0), cand(1, load=5), cand(2, load=9)]
    rng = random.Random(11)
    firsts = Counter(ids(select(cs, rng=rng, strategy="leastload"))[0] for _ in range(300))
    assert set(firsts) == {"i-0", "i-1"}
    assert firsts["i-0"] > firsts["i-1"] > 0  # i-0 wins 2 of the 3 possible pairs


def test_leastload_rest_by_load_then_distance() -> None:
    """After the sampled pick, the list continues least loaded first."""
    cs = [cand(i, rtt=0.001 * (5 - i), load=i % 3) for i in range(6)]
    for seed in range(30):
        rest = select(cs, rng=random.Random(seed), strategy="leastload")[1:]
        keys = [(c.load, rtt_bucket(c.rtt)) for c in rest]
        assert keys == sorted(keys)


def mean_spread(strategy: Strategy, choices: int, seed: int) -> float:
    """Sequential picks with fresh loads and random completions: mean (max - min) load."""
    rng = random.Random(seed)
    cs = [cand(i, rtt=0.001 * i, load=0, soft=1000, hard=None) for i in range(8)]
    spreads = []
    for step in range(3000):
        chosen = select(cs, rng=rng, strategy=strategy, choices=choices)[0]
        cs = [c if c is not chosen else cand_with(c, c.load + 1) for c in cs]
        if rng.random() < 0.9:  # a uniformly random in-flight request completes
            r = int(rng.random() * sum(c.load for c in cs))
            done = next(c for i, c in enumerate(cs) if r < sum(d.load for d in cs[: i + 1]))
            cs = [c if c is not done else cand_with(c, c.load - 1) for c in cs]
        if step >= 1000:
            spreads.append(max(c.load for c in cs) - min(c.load for c in cs))
    return sum(spreads) / len(spreads)


def cand_with(c: Candidate, load: int) -> Candidate:
    return Candidate(
        c.instance_id, c.node, c.region, c.rtt, load, c.soft_limit, c.hard_limit, c.healthy
    )


def test_leastload_spreads_load() -> None:
    """Seeded statistics: two choices level loads far better than one; closest piles up."""
    two = mean_spread("leastload", 2, seed=5)
    one = mean_spread("leastload", 1, seed=5)  # a single random choice
    piled = mean_spread("closest", 2, seed=5)
    assert two < 6 and two < one / 3, (two, one)
    assert piled > 10 * one, (piled, one)


# -- properties ----------------------------------------------------------------------------

candidates = st.lists(
    st.builds(
        cand,
        i=st.just(0),
        rtt=st.sampled_from([0.0, 0.0002, 0.0009, 0.003, 0.08, 0.2, math.inf]),
        load=st.integers(0, 12),
        soft=st.integers(0, 10),
        hard=st.none() | st.integers(0, 12),
        healthy=st.booleans(),
    ),
    max_size=12,
).map(lambda cs: [cand_renamed(c, i) for i, c in enumerate(cs)])


def cand_renamed(c: Candidate, i: int) -> Candidate:
    return Candidate(
        f"i-{i}", c.node, c.region, c.rtt, c.load, c.soft_limit, c.hard_limit, c.healthy
    )


def eligible(c: Candidate) -> bool:
    return c.healthy and (c.hard_limit is None or c.load < c.hard_limit)


@given(cs=candidates, seed=st.integers(), strategy=st.sampled_from(STRATEGIES))
def test_result_is_permutation_of_eligible(
    cs: list[Candidate], seed: int, strategy: Strategy
) -> None:
    """Property: exactly the eligible candidates, each once."""
    got = select(cs, rng=random.Random(seed), strategy=strategy)
    assert sorted(ids(got)) == sorted(c.instance_id for c in cs if eligible(c))


@given(cs=candidates, seed=st.integers(), banned=st.sets(st.integers(0, 11)))
def test_accept_is_respected(cs: list[Candidate], seed: int, banned: set[int]) -> None:
    """Property: nothing ``accept`` rejects is ever in the list."""
    skip = {f"i-{i}" for i in banned}
    got = select(cs, rng=random.Random(seed), accept=lambda c: c.instance_id not in skip)
    assert not skip & set(ids(got))
    assert sorted(ids(got)) == sorted(
        c.instance_id for c in cs if eligible(c) and c.instance_id not in skip
    )


@given(cs=candidates, seed=st.integers())
def test_closest_order_property(cs: list[Candidate], seed: int) -> None:
    """Property: below-soft by (bucket, load), then over-soft by (load, bucket)."""
    got = select(cs, rng=random.Random(seed))
    tiers = [c.load >= c.soft_limit for c in got]
    assert tiers == sorted(tiers)
    below = [(rtt_bucket(c.rtt), c.load) for c in got if c.load < c.soft_limit]
    over = [(c.load, rtt_bucket(c.rtt)) for c in got if c.load >= c.soft_limit]
    assert below == sorted(below) and over == sorted(over)


@given(cs=candidates, seed=st.integers(), choices=st.integers(1, 4))
def test_leastload_order_property(cs: list[Candidate], seed: int, choices: int) -> None:
    """Property: the pick beats `choices`-1 others or is the best; the rest is sorted."""
    got = select(cs, rng=random.Random(seed), strategy="leastload", choices=choices)
    keys = [(c.load, rtt_bucket(c.rtt)) for c in got]
    assert keys[1:] == sorted(keys[1:])
    if keys:
        no_worse = sum(k >= keys[0] for k in keys[1:])
        assert no_worse >= min(choices, len(keys)) - 1


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 2**16)), max_size=60)


@settings(max_examples=60)
@given(cs=candidates, seed=st.integers(), strategy=st.sampled_from(STRATEGIES), steps=ops)
def test_fresh_load_never_exceeds_hard(
    cs: list[Candidate], seed: int, strategy: Strategy, steps: list[tuple[bool, int]]
) -> None:
    """Property: picking with up-to-date loads never takes an instance past hard."""
    rng = random.Random(seed)
    cs = [c if c.hard_limit is None else cand_with(c, min(c.load, c.hard_limit)) for c in cs]
    for pick, which in steps:
        if pick:
            order = select(cs, rng=rng, strategy=strategy)
            if not order:
                continue  # everything full: the edge waits / answers 503
            chosen = order[0]
            cs = [c if c is not chosen else cand_with(c, c.load + 1) for c in cs]
        elif busy := [c for c in cs if c.load > 0]:
            done = busy[which % len(busy)]
            cs = [c if c is not done else cand_with(c, c.load - 1) for c in cs]
        for c in cs:
            assert c.hard_limit is None or c.load <= c.hard_limit


@given(cs=candidates, seed=st.integers(), strategy=st.sampled_from(STRATEGIES))
def test_same_seed_same_order(cs: list[Candidate], seed: int, strategy: Strategy) -> None:
    """Property: randomness comes only from the rng passed in."""
    one = select(cs, rng=random.Random(seed), strategy=strategy)
    assert one == select(cs, rng=random.Random(seed), strategy=strategy)


# -- the deprecated first cut (forward.py still calls it) ----------------------------------


def backend(i: int, healthy: bool = True) -> Backend:
    return Backend(f"i-{i}", "127.0.0.1", 9000 + i, healthy)


def test_order_backends_still_works() -> None:
    """Deprecated ``order_backends``: healthy first, then least in flight."""
    route = AppRoute("a", (backend(0, healthy=False), backend(1), backend(2)))
    order = order_backends(route, {"i-1": 3, "i-2": 1}, random.Random(1))
    assert [b.instance_id for b in order] == ["i-2", "i-1", "i-0"]


BANNED = {"asyncio", "socket", "ssl", "time", "random", "selectors", "threading", "uvloop"}
PURE = ["routes.py", "balance.py", "loadview.py", "headers.py", "errors.py"]


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
