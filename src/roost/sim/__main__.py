"""``python -m roost.sim``: closest vs leastload on a 3-region scenario, as a table.

Topology: Tokyo (``nrt``), Hong Kong (``hkg``) and Singapore (``sin``), two nodes with
one instance each per region (soft 20, hard 25, 8 workers, 50 ms mean service: ~160
req/s per instance), each region's edge on its first node.  Two workloads:

* ``room everywhere``: every region's clients fit in their region's instances;
* ``nrt overloaded``: Tokyo's clients offer more than Tokyo's instances can serve, so
  its overflow must go abroad; the other regions have some room to spare.
"""

from __future__ import annotations

import sys
import time

from roost.proxy.balance import Strategy
from roost.sim.model import InstanceSpec, Result, Scenario, run

__all__ = ["main", "three_regions"]

STRATEGIES: tuple[Strategy, ...] = ("closest", "leastload")


LIGHT = {"nrt": 150.0, "hkg": 150.0, "sin": 110.0}
NRT_OVERLOADED = {"nrt": 420.0, "hkg": 150.0, "sin": 110.0}


def three_regions(rates: dict[str, float] = LIGHT, duration: float = 8.0) -> Scenario:
    """The demo topology with ``rates`` (req/s per region); also used by the tests."""
    regions = ("nrt", "hkg", "sin")
    instances = tuple(
        InstanceSpec(f"{r}-{k}", f"{r}-n{k}", r, soft_limit=20, hard_limit=25)
        for r in regions
        for k in (1, 2)
    )
    return Scenario(
        instances=instances,
        rates=rates,
        edge_nodes={r: f"{r}-n1" for r in regions},
        rtt={("nrt", "hkg"): 0.050, ("nrt", "sin"): 0.070, ("hkg", "sin"): 0.035},
        duration=duration,
    )


def table(results: list[Result]) -> str:
    """The comparison table, one row per strategy."""
    head = f"{'strategy':<10} {'served':>7} {'503s':>5} {'retries':>7} {'p50 ms':>7} "
    head += f"{'p99 ms':>7} {'in-region':>9}  max in-flight per instance (hard 25)"
    rows = [head]
    for r in results:
        loads = " ".join(f"{i}={n}" for i, n in r.max_load.items())
        rows.append(
            f"{r.strategy:<10} {r.served:>7} {r.refused:>5} {r.retries:>7} "
            f"{r.p(50) * 1e3:>7.1f} {r.p(99) * 1e3:>7.1f} {r.in_region_share:>9.1%}  {loads}"
        )
    return "\n".join(rows)


def main() -> int:
    """Run both strategies on the same workloads and print the tables."""
    started = time.perf_counter()
    for name, rates in (("room everywhere", LIGHT), ("nrt overloaded", NRT_OVERLOADED)):
        sc = three_regions(rates)
        results = [run(sc, s, seed=1) for s in STRATEGIES]
        offered = ", ".join(f"{r} {v:.0f}/s" for r, v in sc.rates.items())
        print(f"\n{name}: {sc.duration:.0f} s of arrivals ({offered}), seed 1")
        print(table(results))
    print(f"\n(simulated in {time.perf_counter() - started:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
