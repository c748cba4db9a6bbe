"""Backend selection, first cut (pure: no I/O, no clock, randomness passed in).

The edge asks for an *order* rather than one pick: it tries backends in that order and
skips to the next one when an attempt fails in a retry-safe way, so each backend is tried
at most once per request. The order is:

1. healthy backends before unhealthy ones (an unhealthy backend is still a last resort:
   health data can be stale, and a maybe-working instance beats a certain 502);
2. then fewest requests in flight *from this edge* (its own counts, keyed by instance id);
3. ties broken at random, so equal backends share load instead of the first one taking
   every request.

Later the load view (gossiped concurrency) and RTT join the sort key; the simulator
imports this same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from roost.proxy.routes import AppRoute, Backend

__all__ = ["RandomSource", "order_backends"]


class RandomSource(Protocol):
    """What the balancer needs from a random generator (``random.Random`` fits)."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


def order_backends(
    route: AppRoute, inflight: Mapping[str, int], rng: RandomSource
) -> list[Backend]:
    """The order in which to try ``route``'s backends (every backend exactly once)."""
    backends = route.backends
    if len(backends) <= 1:
        return list(backends)
    get = inflight.get
    return sorted(
        backends,
        key=lambda b: (not b.healthy, get(b.instance_id, 0), rng.random()),
    )
