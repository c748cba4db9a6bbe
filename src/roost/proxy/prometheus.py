"""Prometheus metrics for the data plane: the :class:`~roost.proxy.metrics.Metrics` implementation.

How it stays cheap on the hot path: each (role, app) resolves once to a small record of plain
ints and lists (status-class counters, histogram buckets, the app's usage counters), cached in a
dict; a call is a dict lookup, a ``bisect`` per histogram and a few ``+=``. Nothing calls
prometheus-client per request (its ``Histogram.observe`` costs ~1.4 µs here: a lock per value).
A custom collector (``prometheus_export``) turns the records into metric families at scrape
time, in this object's own ``CollectorRegistry`` (never the global one). Calls come from the
event-loop thread, and a scrape copies the records there first (``state()``, below).

Series (``role`` ∈ edge|host; ``app`` capped, see below):

- ``roost_proxy_requests_total{role,app,status_class}`` (``1xx``..``5xx``, ``other``)
- ``roost_proxy_time_to_headers_seconds{role,app}``, ``roost_proxy_request_duration_seconds``,
  ``roost_proxy_request_body_seconds`` / ``roost_proxy_response_body_seconds`` (histograms; the
  body ones only count requests whose body had bytes: a GET has no body time)
- ``roost_proxy_inflight_requests{role,app}``, ``roost_proxy_refusals_total{role,app,reason}``,
  ``roost_proxy_retries_total{app,reason}``, ``roost_proxy_timeouts_total{role,kind}``
- ``roost_proxy_queue_wait_seconds{app}`` + ``roost_proxy_queue_outcomes_total{app,outcome}``
- ``roost_proxy_gate_held_total{app}`` (the edge's work gate held a request or an idle
  connection of an app at capacity until a later loop turn; ``app="_new"``: a new
  connection's first bytes, beyond the turn's batch of new connections)
- ``roost_pool_<stat>{pool}`` read from each registered pool's ``stats()`` at scrape time
  (gauges; a stat named ``*_total`` is a counter)
- ``roost_event_loop_lag_seconds`` (histogram) + ``roost_event_loop_lag_last_seconds``
- ``roost_app_{requests,bytes_in,bytes_out,request_seconds,refusals}_total{app}`` (usage)
- ``process_*``, ``python_gc_*``, ``python_info`` (prometheus-client's own collectors)

Bounded labels: never instance ids or paths. The first ``max_apps`` (default 1000) distinct app
names keep their own label on counters and gauges; later ones share ``app="_other"`` (not a valid
app name, so no clash); an empty app name (no route) is ``_none``. Histograms are costlier
(19 series each), so only the first ``histogram_apps`` (default 100) apps get their own; the rest
share ``_other`` (``histogram_apps=0``: all do). Worst case, 2 roles: 1000 apps x ~8 counter
series + 101 x 5 histograms x 19 ≈ 27k series (measured). ``forget_app`` frees a destroyed
app's slots. Usage itself keeps exact per-app names (the API needs them).

Scrapes: ``state()`` copies everything on the loop (≤ 10 ms at the caps, well under 1 ms for
tens of apps); turning the copy into text costs ~1-1.5 s of CPU per 100k series (~0.4 s at the
default caps), so the admin server renders ``frozen()`` in a worker thread.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from roost.proxy.metrics import PoolStats, RetryReason, Role, TimeoutKind
from roost.proxy.prometheus_export import (
    BUCKETS,
    DURATION,
    LAG_BUCKETS,
    MAX_REASONS,
    NB,
    NONE,
    OTHER,
    QUEUE,
    REQ_BODY,
    RESP_BODY,
    Exporter,
    FrozenScrape,
    Hists,
    Series,
    State,
)
from roost.proxy.usage import AppCounters, Usage

log = logging.getLogger("roost.metrics")
_REQ_BODY_AT, _RESP_BODY_AT, _DURATION_AT = REQ_BODY * NB, RESP_BODY * NB, DURATION * NB


class AppLabels:
    """Maps app names to label values, keeping at most ``max_apps`` distinct ones."""

    def __init__(self, max_apps: int) -> None:
        self.max_apps = max_apps
        self._labels: dict[str, str] = {}

    def label(self, app: str) -> str:
        """The label for ``app``, assigning it one if there is room."""
        found = self._labels.get(app)
        if found is not None:
            return found
        if not app:
            return NONE
        if len(self._labels) >= self.max_apps:
            return OTHER
        self._labels[app] = app
        return app

    def peek(self, app: str) -> str:
        """The label ``app`` has (or would share) without assigning one."""
        return self._labels.get(app) or (NONE if not app else OTHER)

    def forget(self, app: str) -> None:
        self._labels.pop(app, None)

    def __len__(self) -> int:
        return len(self._labels)


class _Hot:
    """What one (role, app) resolves to: its series, histograms and usage counters."""

    __slots__ = ("counts", "series", "status", "sums", "usage")

    def __init__(self, series: Series, hists: Hists, usage: AppCounters | None) -> None:
        self.series = series
        self.status = series.status  # the hot path reads these directly
        self.counts = hists.counts
        self.sums = hists.sums
        self.usage = usage


def _bump(counts: dict[str, int], key: str) -> None:
    if key not in counts and len(counts) >= MAX_REASONS:
        key = OTHER
    counts[key] = counts.get(key, 0) + 1


class PrometheusMetrics:
    """Data-plane metrics and per-app usage, exported through ``self.registry``.

    ``usage_role`` is the role whose requests and refusals count as usage (``"edge"``; a node
    without an edge would pass ``"host"``). ``clock`` gives wall time for ``usage.since``.
    """

    def __init__(
        self,
        *,
        max_apps: int = 1000,
        histogram_apps: int = 100,
        usage_role: Role = "edge",
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.labels = AppLabels(max_apps)
        self.hist_labels = AppLabels(min(histogram_apps, max_apps))
        self.usage = Usage(clock())
        self.usage_role = usage_role
        self._series: dict[tuple[str, str], Series] = {}
        self._hists: dict[tuple[str, str], Hists] = {}
        self._hot: dict[tuple[str, str], _Hot] = {}
        self._hot_cap = 4 * max_apps + 16
        self._timeouts: dict[tuple[str, str], int] = {}
        self._pools: dict[str, PoolStats] = {}
        self.pool_errors = 0
        self._lag = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        self.lag_last = 0.0
        self.lag_max = 0.0
        self.registry.register(Exporter(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # -- the Metrics protocol (hot path) ----------------------------------------------------
    def request_finished(
        self,
        *,
        role: Role,
        app: str,
        status: int,
        protocol: str,
        time_to_headers: float,
        request_body_time: float,
        response_body_time: float,
        bytes_in: int,
        bytes_out: int,
        duration: float,
    ) -> None:
        hot = self._hot.get((role, app)) or self._resolve(role, app)
        k = status // 100
        hot.status[k if 0 < k < 6 else 0] += 1
        counts = hot.counts
        sums = hot.sums
        counts[bisect_left(BUCKETS, time_to_headers)] += 1
        sums[0] += time_to_headers  # slot TTH
        if bytes_in:
            counts[_REQ_BODY_AT + bisect_left(BUCKETS, request_body_time)] += 1
            sums[1] += request_body_time  # slot REQ_BODY
        if bytes_out:
            counts[_RESP_BODY_AT + bisect_left(BUCKETS, response_body_time)] += 1
            sums[2] += response_body_time  # slot RESP_BODY
        counts[_DURATION_AT + bisect_left(BUCKETS, duration)] += 1
        sums[3] += duration  # slot DURATION
        usage = hot.usage
        if usage is not None:
            usage.requests += 1
            usage.bytes_in += bytes_in
            usage.bytes_out += bytes_out
            usage.request_seconds += duration

    def inflight(self, *, role: Role, app: str, delta: int) -> None:
        hot = self._hot.get((role, app)) or self._resolve(role, app)
        hot.series.inflight += delta

    def refused(self, *, role: Role, app: str, reason: str) -> None:
        hot = self._hot.get((role, app)) or self._resolve(role, app)
        _bump(hot.series.refusals, reason)
        if hot.usage is not None:
            hot.usage.refusals += 1

    def retried(self, *, app: str, reason: RetryReason) -> None:
        hot = self._hot.get(("edge", app)) or self._resolve("edge", app)
        _bump(hot.series.retries, reason)

    def queue_wait(self, *, app: str, seconds: float, outcome: str) -> None:
        hot = self._hot.get(("edge", app)) or self._resolve("edge", app)
        hot.counts[QUEUE * NB + bisect_left(BUCKETS, seconds)] += 1
        hot.sums[QUEUE] += seconds
        _bump(hot.series.outcomes, outcome)

    def gate_held(self, *, app: str) -> None:
        hot = self._hot.get(("edge", app)) or self._resolve("edge", app)
        hot.series.gate_held += 1

    def timed_out(self, *, role: Role, kind: TimeoutKind) -> None:
        key = (role, kind)
        self._timeouts[key] = self._timeouts.get(key, 0) + 1

    def register_pool(self, name: str, pool: PoolStats) -> None:
        """Read ``pool.stats()`` at every scrape (a later pool of the same name replaces it)."""
        self._pools[name] = pool

    # -- additions ---------------------------------------------------------------------------
    def unregister_pool(self, name: str) -> None:
        self._pools.pop(name, None)

    def loop_lag(self, seconds: float) -> None:
        """Record how late the event loop woke a sleeper (fed by ``node.looplag``)."""
        self._lag[bisect_left(LAG_BUCKETS, seconds)] += 1
        self._lag_sum += seconds
        self.lag_last = seconds
        self.lag_max = max(self.lag_max, seconds)

    def forget_app(self, app: str) -> None:
        """Drop a destroyed app's series, usage and label (its label slot is free again)."""
        label = self.labels.peek(app)
        for role in ("edge", "host"):
            self._hot.pop((role, app), None)
            if label not in (OTHER, NONE):
                self._series.pop((role, label), None)
            if self.hist_labels.peek(app) not in (OTHER, NONE):
                self._hists.pop((role, label), None)
        if label not in (OTHER, NONE):
            self.labels.forget(app)
            self.hist_labels.forget(app)
        self.usage.forget(app)

    # -- scraping ----------------------------------------------------------------------------
    def state(self) -> State:
        """Copy what a scrape shows; call on the event-loop thread (it reads pools too)."""
        pools = []
        for name, pool in list(self._pools.items()):
            try:
                pools.append((name, dict(pool.stats())))
            except Exception:
                self.pool_errors += 1
                log.exception("pool %s: stats() failed", name)
        usage: dict[str, list[float]] = {}
        for app, c in self.usage.items():
            t = usage.setdefault(self.labels.peek(app), [0, 0, 0, 0.0, 0])
            t[0] += c.requests
            t[1] += c.bytes_in
            t[2] += c.bytes_out
            t[3] += c.request_seconds
            t[4] += c.refusals
        return State(
            owner=self,
            series=[(key, s.copy()) for key, s in list(self._series.items())],
            hists=[(key, list(h.counts), list(h.sums)) for key, h in list(self._hists.items())],
            timeouts=list(self._timeouts.items()),
            pools=pools,
            pool_errors=self.pool_errors,
            lag=list(self._lag),
            lag_sum=self._lag_sum,
            lag_last=self.lag_last,
            app_labels=len(self.labels),
            max_apps=self.labels.max_apps,
            usage=usage,
        )

    def frozen(self) -> FrozenScrape:
        """The registry as of now (copied on this thread) for ``generate_latest`` in a worker
        thread, so rendering large expositions does not stall the event loop."""
        return FrozenScrape(self)

    def _resolve(self, role: str, app: str) -> _Hot:
        label = self.labels.label(app)
        series = self._series.get((role, label))
        if series is None:
            series = self._series[(role, label)] = Series()
        hkey = (role, label if label in (OTHER, NONE) else self.hist_labels.label(app))
        hists = self._hists.get(hkey)
        if hists is None:
            hists = self._hists[hkey] = Hists()
        usage = self.usage.counters(app) if role == self.usage_role and app else None
        hot = _Hot(series, hists, usage)
        if len(self._hot) < self._hot_cap:  # beyond: correct, only slower (no cache)
            self._hot[(role, app)] = hot
        return hot
