"""The simulator: deterministic runs of the live balancer, and routing invariants."""

from __future__ import annotations

import dataclasses

import pytest

import roost.proxy.balance
import roost.sim.model
from roost.proxy.balance import Strategy
from roost.sim import Scenario, run
from roost.sim.__main__ import LIGHT, NRT_OVERLOADED, main, three_regions

STRATEGIES: list[Strategy] = ["closest", "leastload"]


def short(rates: dict[str, float]) -> Scenario:
    return three_regions(rates, duration=2.0)


def test_simulator_runs_the_live_balancer() -> None:
    """The simulator calls the edge's own ``select``, not a copy."""
    assert roost.sim.model.select is roost.proxy.balance.select


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_result(strategy: Strategy) -> None:
    """A run is a pure function of scenario, strategy and seed."""
    one = run(short(NRT_OVERLOADED), strategy, seed=3)
    two = run(short(NRT_OVERLOADED), strategy, seed=3)
    assert one == two
    assert one != run(short(NRT_OVERLOADED), strategy, seed=4)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("rates", [LIGHT, NRT_OVERLOADED, {"nrt": 900.0, "hkg": 500.0}])
def test_no_instance_above_hard_and_every_request_accounted(
    strategy: Strategy, rates: dict[str, float]
) -> None:
    """Invariants: in-flight never exceeds hard; every request is served or refused."""
    sc = short(rates)
    result = run(sc, strategy, seed=1)
    hard = {spec.id: spec.hard_limit for spec in sc.instances}
    assert result.max_load.keys() == hard.keys()
    for iid, peak in result.max_load.items():
        limit = hard[iid]
        assert limit is None or peak <= limit, iid
    assert result.served + result.refused == result.offered > 0


def test_overload_beyond_capacity_is_refused_not_queued() -> None:
    """Offered load far above total capacity ends in 503s, still within hard limits."""
    result = run(short({"nrt": 900.0, "hkg": 500.0}), "closest", seed=1)
    assert result.refused > 0
    assert max(result.max_load.values()) == 25


def test_closest_keeps_traffic_in_region_when_there_is_room() -> None:
    """With room in every region, closest serves every request in its own region."""
    result = run(short(LIGHT), "closest", seed=1)
    assert result.in_region_share == 1.0
    assert result.retries == 0 and result.refused == 0


def test_closest_overflows_to_nearest_region() -> None:
    """Tokyo's overflow goes abroad; Tokyo's own instances are used up to their limits."""
    result = run(short(NRT_OVERLOADED), "closest", seed=1)
    assert 0.5 < result.in_region_share < 1.0
    assert result.max_load["nrt-1"] >= 20  # past soft before anything leaves the region


def test_leastload_spreads_across_regions() -> None:
    """leastload sends most traffic out of region and keeps peaks below closest's."""
    sc = short(LIGHT)
    spread = run(sc, "leastload", seed=1)
    near = run(sc, "closest", seed=1)
    assert spread.in_region_share < 0.6
    assert max(spread.max_load.values()) < max(near.max_load.values())
    assert min(spread.max_load.values()) > 0


def test_soft_limit_change_changes_overflow() -> None:
    """A lower soft limit sends more of closest's traffic to other instances."""
    base = short(LIGHT)
    low = dataclasses.replace(
        base, instances=tuple(dataclasses.replace(i, soft_limit=4) for i in base.instances)
    )
    assert run(low, "closest").max_load["sin-2"] > run(base, "closest").max_load["sin-2"]


def test_main_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m roost.sim`` prints a row per strategy for each workload."""
    assert main() == 0
    out = capsys.readouterr().out
    assert out.count("closest ") == 2 and out.count("leastload ") == 2
