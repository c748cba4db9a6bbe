"""Scrape-time exposition for :mod:`roost.proxy.prometheus`: bucket layout and the collectors.

The hot path keeps plain ints and lists (:class:`Series`, :class:`Hists`). A scrape first copies
them into a :class:`State` (on the event-loop thread, the one that writes them: ≤ 10 ms even at
the label cap; pools' ``stats()`` are called then too), then turns the copy into metric families
and text, which is the expensive part (~1-1.5 s of CPU per 100k series) and may run in a worker
thread: :class:`FrozenScrape` is the registry with the state copied at its creation, so
``generate_latest(frozen)`` is safe in any thread and the loop only pays for the copy.

Histogram buckets are stored per bucket (not cumulative) and summed here; a histogram's count is
the sum of its buckets.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from roost.proxy.prometheus import PrometheusMetrics

log = logging.getLogger("roost.metrics")

# latency buckets: 0.5 ms .. 60 s (a request can wait 5 s for capacity; a slow body, longer)
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
BUCKETS += (1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NB = len(BUCKETS) + 1  # slots per histogram (the last one is +Inf)
TTH, REQ_BODY, RESP_BODY, DURATION, QUEUE = range(5)  # histogram slots in Hists
HISTOGRAMS = (
    (TTH, "time_to_headers", "request head received -> response head sent"),
    (REQ_BODY, "request_body", "first -> last request body byte received (requests with a body)"),
    (RESP_BODY, "response_body", "first -> last response body byte sent (responses with a body)"),
    (DURATION, "request_duration", "request head received -> response complete"),
)
STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
OTHER, NONE = "_other", "_none"
MAX_REASONS = 32  # distinct reason/outcome values per series; beyond -> "_other"


class Series:
    """Counters of one (role, app label)."""

    __slots__ = ("gate_held", "inflight", "outcomes", "refusals", "retries", "status")

    def __init__(self) -> None:
        self.status = [0] * len(STATUS_CLASSES)
        self.inflight = 0
        self.gate_held = 0
        self.refusals: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}

    def copy(self) -> Series:
        other = Series()
        other.status = list(self.status)
        other.inflight = self.inflight
        other.gate_held = self.gate_held
        other.refusals = dict(self.refusals)
        other.retries = dict(self.retries)
        other.outcomes = dict(self.outcomes)
        return other


class Hists:
    """Histogram buckets (non-cumulative) and sums of one (role, app label)."""

    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts = [0] * (NB * 5)
        self.sums = [0.0] * 5


_LE = [repr(float(b)) for b in BUCKETS] + ["+Inf"]
_LAG_LE = [repr(float(b)) for b in LAG_BUCKETS] + ["+Inf"]
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")
_USAGE = (
    ("requests", "Requests answered to clients (usage)"),
    ("bytes_in", "Request body bytes from clients (usage)"),
    ("bytes_out", "Response body bytes to clients (usage)"),
    ("request_seconds", "Sum of request durations in seconds (usage)"),
    ("refusals", "Requests refused for capacity (usage)"),
)
_scrape = threading.local()  # .state: the State a FrozenScrape hands to Exporter in its thread


@dataclass(slots=True)
class State:
    """A copy of everything a scrape shows, taken at one moment on the event-loop thread."""

    owner: object
    series: list[tuple[tuple[str, str], Series]]
    hists: list[tuple[tuple[str, str], list[int], list[float]]]
    timeouts: list[tuple[tuple[str, str], int]]
    pools: list[tuple[str, dict[str, int]]]
    pool_errors: int
    lag: list[int]
    lag_sum: float
    lag_last: float
    app_labels: int
    max_apps: int
    usage: dict[str, list[float]]  # app label -> [requests, bytes in, bytes out, seconds, refusals]


class Exporter(Collector):
    """The collector in a PrometheusMetrics' registry: renders its state (copied now, or the
    copy a :class:`FrozenScrape` made on the loop)."""

    def __init__(self, m: PrometheusMetrics) -> None:
        self.m = m

    def describe(self) -> list[Metric]:
        return []  # families vary with pools; nothing to check for name clashes up front

    def collect(self) -> Iterator[Metric]:
        state = getattr(_scrape, "state", None)
        if state is None or state.owner is not self.m:
            state = self.m.state()
        return render(state)


class FrozenScrape(Collector):
    """``m.registry`` as of now: pass to ``generate_latest`` in any thread."""

    def __init__(self, m: PrometheusMetrics) -> None:
        self.registry = m.registry
        self.state = m.state()

    def collect(self) -> Iterator[Metric]:
        _scrape.state = self.state
        try:
            yield from self.registry.collect()
        finally:
            _scrape.state = None


def render(state: State) -> Iterator[Metric]:
    """Every roost metric family of ``state``."""
    yield from _proxy(state)
    yield from _histograms(state)
    yield from _pools(state)
    yield from _loop(state)
    yield from _usage(state)


def _cumulative(counts: list[int], les: list[str]) -> list[tuple[str, float]]:
    total, out = 0, []
    for le, n in zip(les, counts, strict=True):
        total += n
        out.append((le, float(total)))
    return out


def _proxy(state: State) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "roost_proxy_requests",
        "Requests answered, by role, app and status class",
        labels=["role", "app", "status_class"],
    )
    inflight = GaugeMetricFamily(
        "roost_proxy_inflight_requests", "Requests in flight", labels=["role", "app"]
    )
    refusals = CounterMetricFamily(
        "roost_proxy_refusals", "Requests refused for capacity", labels=["role", "app", "reason"]
    )
    retries = CounterMetricFamily(
        "roost_proxy_retries", "Edge attempts retried elsewhere", labels=["app", "reason"]
    )
    outcomes = CounterMetricFamily(
        "roost_proxy_queue_outcomes",
        "Requests that waited for capacity, by outcome",
        labels=["app", "outcome"],
    )
    held = CounterMetricFamily(
        "roost_proxy_gate_held",
        "Requests and idle connections of an app at capacity that the edge's work gate held "
        "back until a later loop turn",
        labels=["app"],
    )
    for (role, app), s in state.series:
        for cls, n in zip(STATUS_CLASSES, s.status, strict=True):
            if n:
                requests.add_metric([role, app, cls], n)
        inflight.add_metric([role, app], s.inflight)
        for reason, n in s.refusals.items():
            refusals.add_metric([role, app, reason], n)
        for reason, n in s.retries.items():
            retries.add_metric([app, reason], n)
        for outcome, n in s.outcomes.items():
            outcomes.add_metric([app, outcome], n)
        if s.gate_held:
            held.add_metric([app], s.gate_held)
    timeouts = CounterMetricFamily(
        "roost_proxy_timeouts", "Timeouts, by role and kind", labels=["role", "kind"]
    )
    for (role, kind), n in state.timeouts:
        timeouts.add_metric([role, kind], n)
    yield from (requests, inflight, refusals, retries, outcomes, held, timeouts)


def _histograms(state: State) -> Iterator[Metric]:
    for slot, name, doc in HISTOGRAMS:
        family = HistogramMetricFamily(
            f"roost_proxy_{name}_seconds", f"Seconds from {doc}", labels=["role", "app"]
        )
        for (role, app), counts, sums in state.hists:
            mine = counts[slot * NB : (slot + 1) * NB]
            if any(mine):
                family.add_metric([role, app], _cumulative(mine, _LE), sums[slot])
        yield family
    queue = HistogramMetricFamily(
        "roost_proxy_queue_wait_seconds", "Seconds a request waited for capacity", labels=["app"]
    )
    for (role, app), counts, sums in state.hists:
        mine = counts[QUEUE * NB :]
        if role == "edge" and any(mine):
            queue.add_metric([app], _cumulative(mine, _LE), sums[QUEUE])
    yield queue


def _pools(state: State) -> Iterator[Metric]:
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
    for name, stats in state.pools:
        for key, value in stats.items():
            stat = _NAME_BAD.sub("_", key)
            family = families.get(stat)
            if family is None:
                doc = f"Connection pool stat {key!r}"
                if stat.endswith("_total"):
                    family = CounterMetricFamily(f"roost_pool_{stat}", doc, labels=["pool"])
                else:
                    family = GaugeMetricFamily(f"roost_pool_{stat}", doc, labels=["pool"])
                families[stat] = family
            family.add_metric([name], value)
    errors = CounterMetricFamily("roost_pool_stats_errors", "Pool stats() calls that raised")
    errors.add_metric([], state.pool_errors)
    yield from families.values()
    yield errors


def _loop(state: State) -> Iterator[Metric]:
    lag = HistogramMetricFamily(
        "roost_event_loop_lag_seconds", "How late the event loop woke a periodic sleeper"
    )
    lag.add_metric([], _cumulative(state.lag, _LAG_LE), state.lag_sum)
    last = GaugeMetricFamily(
        "roost_event_loop_lag_last_seconds", "Event-loop lag at the last measurement"
    )
    last.add_metric([], state.lag_last)
    labels = GaugeMetricFamily("roost_metrics_app_labels", "Distinct app label values in use")
    labels.add_metric([], state.app_labels)
    cap = GaugeMetricFamily(
        "roost_metrics_app_labels_max", 'App label cap (later apps are app="_other")'
    )
    cap.add_metric([], state.max_apps)
    yield from (lag, last, labels, cap)


def _usage(state: State) -> Iterator[Metric]:
    for i, (name, doc) in enumerate(_USAGE):
        family = CounterMetricFamily(f"roost_app_{name}", doc, labels=["app"])
        for app, totals in state.usage.items():
            family.add_metric([app], totals[i])
        yield family
