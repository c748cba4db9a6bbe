"""Per-app usage accounting (pure): requests, bytes in/out, request-seconds, refusals.

Fed by the same observability calls the data plane makes (``Metrics.request_finished`` and
``Metrics.refused``, through :class:`roost.proxy.prometheus.PrometheusMetrics`), read by the API
(``GET /v1/apps/{app}/usage``) and exported as ``roost_app_*_total`` metrics.

What counts (one role only, the client-facing one — the edge on a node that has one — so a
request that crosses edge and host proxy in one process is not counted twice):

- ``requests``: every request answered to a client, refusals (503) included;
- ``bytes_in`` / ``bytes_out``: request / response *body* bytes from / to the client;
- ``request_seconds``: sum of request durations (head received → response complete);
- ``refusals``: requests refused for capacity (edge 503 at capacity or per-app cap).

Counters live in memory and start at zero when the process starts: ``since`` says when. No clock
of its own: the start time is passed in. Calls come from the event-loop thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

OVERFLOW_APP = "_other"  # not a valid app name, so it cannot collide with one


@dataclass(frozen=True, slots=True)
class AppUsage:
    """One app's usage since ``since`` (unix seconds)."""

    app: str
    since: float
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    request_seconds: float = 0.0
    refusals: int = 0


class AppCounters:
    """The mutable counters behind one app's :class:`AppUsage` (the hot path adds to these)."""

    __slots__ = ("bytes_in", "bytes_out", "refusals", "request_seconds", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.request_seconds = 0.0
        self.refusals = 0


class Usage:
    """Usage counters for every app seen, bounded by ``max_apps`` (beyond it: ``_other``).

    ``since`` is the time (unix seconds) counting began. Apps are keyed by their real name;
    names of apps are bounded by the catalog, the cap only guards against a caller bug.
    """

    def __init__(self, since: float, *, max_apps: int = 100_000) -> None:
        if max_apps < 1:
            raise ValueError("max_apps must be at least 1")
        self.since = since
        self.max_apps = max_apps
        self._apps: dict[str, AppCounters] = {}

    def counters(self, app: str) -> AppCounters:
        """The live counters of ``app`` (created on first use; ``_other`` beyond the cap)."""
        found = self._apps.get(app)
        if found is not None:
            return found
        if len(self._apps) >= self.max_apps:
            app = OVERFLOW_APP
            found = self._apps.get(app)
            if found is not None:
                return found
        found = self._apps[app] = AppCounters()
        return found

    def request_finished(self, app: str, *, bytes_in: int, bytes_out: int, duration: float) -> None:
        """Count one answered request of ``app``."""
        c = self.counters(app)
        c.requests += 1
        c.bytes_in += bytes_in
        c.bytes_out += bytes_out
        c.request_seconds += duration

    def refused(self, app: str) -> None:
        """Count one refusal of ``app``."""
        self.counters(app).refusals += 1

    def get(self, app: str) -> AppUsage | None:
        """``app``'s usage, or None when it has not been seen since ``since``."""
        c = self._apps.get(app)
        return None if c is None else self._record(app, c)

    def snapshot(self, app: str) -> AppUsage:
        """``app``'s usage; all zeros when it has not been seen (it had no traffic)."""
        return self.get(app) or AppUsage(app=app, since=self.since)

    def forget(self, app: str) -> None:
        """Drop ``app``'s counters (it was destroyed)."""
        self._apps.pop(app, None)

    def items(self) -> Iterator[tuple[str, AppCounters]]:
        """Every (app, live counters) pair; safe against apps added while iterating."""
        return iter(list(self._apps.items()))

    def _record(self, app: str, c: AppCounters) -> AppUsage:
        return AppUsage(
            app=app,
            since=self.since,
            requests=c.requests,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            request_seconds=c.request_seconds,
            refusals=c.refusals,
        )

    def __len__(self) -> int:
        return len(self._apps)
