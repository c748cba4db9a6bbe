"""PrometheusMetrics: the exposition text after data-plane calls, label caps, pools, usage."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from roost.proxy.metrics import Metrics, NullMetrics
from roost.proxy.prometheus import BUCKETS, PrometheusMetrics


def scrape(m: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample in the exposition text: (name, sorted labels) -> value."""
    text = generate_latest(m.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def finish(m: Metrics, app: str = "demo", role: str = "edge", **kw: Any) -> None:
    args: dict[str, Any] = dict(
        role=role,
        app=app,
        status=200,
        protocol="http/1.1",
        time_to_headers=0.002,
        request_body_time=0.0,
        response_body_time=0.0,
        bytes_in=0,
        bytes_out=0,
        duration=0.003,
    )
    args.update(kw)
    m.request_finished(**args)


def metrics(**kw: Any) -> PrometheusMetrics:
    return PrometheusMetrics(process_metrics=False, clock=lambda: 1000.0, **kw)


def test_requests_counted_by_role_app_and_status_class() -> None:
    """Requests appear as roost_proxy_requests_total by role, app and status class."""
    m = metrics()
    finish(m, status=200)
    finish(m, status=204)
    finish(m, status=503)
    finish(m, role="host", status=404)
    s = scrape(m)
    name = "roost_proxy_requests_total"
    assert val(s, name, role="edge", app="demo", status_class="2xx") == 2
    assert val(s, name, role="edge", app="demo", status_class="5xx") == 1
    assert val(s, name, role="host", app="demo", status_class="4xx") == 1
    assert val(s, name, role="edge", app="demo", status_class="4xx") is None


def test_histograms_have_buckets_sum_and_count() -> None:
    """time-to-headers lands in the first bucket ≥ the value; _sum and _count add up."""
    m = metrics()
    finish(m, time_to_headers=0.002, duration=0.004)
    finish(m, time_to_headers=0.2, duration=0.5)
    s = scrape(m)
    name = "roost_proxy_time_to_headers_seconds"
    labels = {"role": "edge", "app": "demo"}
    assert val(s, f"{name}_bucket", le="0.001", **labels) == 0
    assert val(s, f"{name}_bucket", le="0.0025", **labels) == 1
    assert val(s, f"{name}_bucket", le="0.25", **labels) == 2
    assert val(s, f"{name}_bucket", le="+Inf", **labels) == 2
    assert val(s, f"{name}_count", **labels) == 2
    assert math.isclose(val(s, f"{name}_sum", **labels) or 0, 0.202)
    dur = "roost_proxy_request_duration_seconds"
    assert val(s, f"{dur}_bucket", le="0.5", **labels) == 2
    assert val(s, f"{dur}_bucket", le="0.25", **labels) == 1


def test_bucket_bounds_span_half_a_millisecond_to_a_minute() -> None:
    """The latency buckets run from 0.5 ms to 60 s; a value past the last goes to +Inf."""
    assert BUCKETS[0] == 0.0005 and BUCKETS[-1] == 60.0
    m = metrics()
    finish(m, duration=120.0)
    s = scrape(m)
    dur = "roost_proxy_request_duration_seconds_bucket"
    assert val(s, dur, role="edge", app="demo", le="60.0") == 0
    assert val(s, dur, role="edge", app="demo", le="+Inf") == 1


def test_body_times_only_count_requests_with_a_body() -> None:
    """A request without a body adds nothing to the request-body histogram."""
    m = metrics()
    finish(m, bytes_in=0, bytes_out=100, response_body_time=0.03)
    finish(m, bytes_in=10, request_body_time=0.7, bytes_out=100, response_body_time=0.01)
    s = scrape(m)
    labels = {"role": "edge", "app": "demo"}
    assert val(s, "roost_proxy_request_body_seconds_count", **labels) == 1
    assert val(s, "roost_proxy_request_body_seconds_bucket", le="0.5", **labels) == 0
    assert val(s, "roost_proxy_request_body_seconds_bucket", le="1.0", **labels) == 1
    assert val(s, "roost_proxy_response_body_seconds_count", **labels) == 2
    assert math.isclose(val(s, "roost_proxy_response_body_seconds_sum", **labels) or 0, 0.04)


def test_retries_refusals_timeouts_and_queue_waits() -> None:
    """Each counter shows up with its labels; queue waits have a histogram and outcomes."""
    m = metrics()
    m.retried(app="demo", reason="refused")
    m.retried(app="demo", reason="refused")
    m.retried(app="demo", reason="connect_failed")
    m.refused(role="host", app="demo", reason="hard_limit")
    m.refused(role="edge", app="demo", reason="capacity")
    m.timed_out(role="edge", kind="header_deadline")
    m.queue_wait(app="demo", seconds=0.3, outcome="served")
    m.queue_wait(app="demo", seconds=5.0, outcome="timeout")
    m.gate_held(app="demo")
    m.gate_held(app="demo")
    s = scrape(m)
    assert val(s, "roost_proxy_retries_total", app="demo", reason="refused") == 2
    assert val(s, "roost_proxy_retries_total", app="demo", reason="connect_failed") == 1
    refusals = "roost_proxy_refusals_total"
    assert val(s, refusals, role="host", app="demo", reason="hard_limit") == 1
    assert val(s, refusals, role="edge", app="demo", reason="capacity") == 1
    assert val(s, "roost_proxy_timeouts_total", role="edge", kind="header_deadline") == 1
    assert val(s, "roost_proxy_queue_wait_seconds_count", app="demo") == 2
    assert val(s, "roost_proxy_queue_wait_seconds_bucket", app="demo", le="0.5") == 1
    assert val(s, "roost_proxy_queue_outcomes_total", app="demo", outcome="timeout") == 1
    assert val(s, "roost_proxy_gate_held_total", app="demo") == 2
    assert val(s, "roost_proxy_gate_held_total", app="other") is None


def test_inflight_gauge_goes_up_and_down() -> None:
    """The in-flight gauge follows the deltas, per role and app."""
    m = metrics()
    for _ in range(3):
        m.inflight(role="edge", app="demo", delta=1)
    m.inflight(role="edge", app="demo", delta=-1)
    m.inflight(role="host", app="demo", delta=1)
    m.gate_held(app="demo")
    s = scrape(m)
    assert val(s, "roost_proxy_inflight_requests", role="edge", app="demo") == 2
    assert val(s, "roost_proxy_inflight_requests", role="host", app="demo") == 1


def test_app_labels_are_capped() -> None:
    """Past max_apps distinct apps, later apps share app="_other"; earlier ones keep theirs."""
    m = metrics(max_apps=2)
    for app in ("a", "b", "c", "d", "a"):
        finish(m, app=app)
        m.inflight(role="edge", app=app, delta=1)
    s = scrape(m)
    name = "roost_proxy_requests_total"
    assert val(s, name, role="edge", app="a", status_class="2xx") == 2
    assert val(s, name, role="edge", app="b", status_class="2xx") == 1
    assert val(s, name, role="edge", app="_other", status_class="2xx") == 2
    assert val(s, name, role="edge", app="c", status_class="2xx") is None
    assert val(s, "roost_proxy_inflight_requests", role="edge", app="_other") == 2
    assert val(s, "roost_metrics_app_labels") == 2
    assert val(s, "roost_metrics_app_labels_max") == 2
    apps = {dict(k[1]).get("app") for k in s if dict(k[1]).get("app")}
    assert apps == {"a", "b", "_other"}
    assert val(s, "roost_app_requests_total", app="_other") == 2  # usage folds the same way
    assert m.usage.snapshot("c").requests == 1  # but keeps exact names for the API


def test_forget_app_frees_its_label() -> None:
    """After forget_app, a new app takes the freed slot instead of "_other"."""
    m = metrics(max_apps=1)
    finish(m, app="old")
    m.forget_app("old")
    finish(m, app="new")
    s = scrape(m)
    assert val(s, "roost_proxy_requests_total", role="edge", app="new", status_class="2xx") == 1
    assert val(s, "roost_proxy_requests_total", role="edge", app="old", status_class="2xx") is None
    assert m.usage.get("old") is None


def test_unrouted_requests_use_the_none_label_and_no_usage() -> None:
    """An empty app name (no route) is labelled "_none" and is not usage of any app."""
    m = metrics()
    finish(m, app="", status=404)
    s = scrape(m)
    assert val(s, "roost_proxy_requests_total", role="edge", app="_none", status_class="4xx") == 1
    assert len(m.usage) == 0


def test_histogram_labels_have_their_own_smaller_cap() -> None:
    """Past histogram_apps, histograms share app="_other" while counters stay per app."""
    m = metrics(histogram_apps=1)
    finish(m, app="a")
    finish(m, app="b")
    finish(m, app="c")
    s = scrape(m)
    dur = "roost_proxy_request_duration_seconds_count"
    assert val(s, dur, role="edge", app="a") == 1
    assert val(s, dur, role="edge", app="_other") == 2
    assert val(s, dur, role="edge", app="b") is None
    assert val(s, "roost_proxy_requests_total", role="edge", app="b", status_class="2xx") == 1


def test_histogram_apps_zero_shares_one_histogram() -> None:
    """With histogram_apps=0 every app's histograms are app="_other"."""
    m = metrics(histogram_apps=0)
    finish(m, app="a")
    finish(m, app="b")
    s = scrape(m)
    assert val(s, "roost_proxy_request_duration_seconds_count", role="edge", app="_other") == 2


def test_frozen_scrape_renders_a_copy_in_another_thread() -> None:
    """frozen() copies now; rendering it in a thread shows that moment, not later calls."""
    m = metrics()
    finish(m)
    frozen = m.frozen()
    finish(m, status=500)  # after the copy: not in this scrape
    with ThreadPoolExecutor(1) as pool:
        text = pool.submit(generate_latest, frozen).result().decode()
    assert 'status_class="2xx"' in text and 'status_class="5xx"' not in text
    assert 'status_class="5xx"' in generate_latest(m.registry).decode()


def test_reason_values_are_capped() -> None:
    """A caller passing many distinct refusal reasons cannot grow the series without bound."""
    m = metrics()
    for i in range(100):
        m.refused(role="edge", app="demo", reason=f"r{i}")
    s = scrape(m)
    reasons = {dict(k[1])["reason"] for k in s if k[0] == "roost_proxy_refusals_total"}
    assert len(reasons) <= 33 and "_other" in reasons


class Pool:
    def __init__(self, **stats: int) -> None:
        self.values = stats
        self.calls = 0

    def stats(self) -> dict[str, int]:
        self.calls += 1
        return dict(self.values)


class BrokenPool:
    def stats(self) -> dict[str, int]:
        raise RuntimeError("boom")


def test_pool_stats_are_read_at_scrape_time() -> None:
    """Each registered pool's stats() is called per scrape and exported per pool name."""
    m = metrics()
    edge, h2 = Pool(idle=3, active=5, opened_total=120), Pool(idle=1, active=0, opened_total=2)
    m.register_pool("backhaul_h1", edge)
    m.register_pool("backhaul_h2", h2)
    m.register_pool("broken", BrokenPool())
    edge.values["idle"] = 4  # changed after registration: the scrape reads it now
    s = scrape(m)
    assert edge.calls == 1
    assert val(s, "roost_pool_idle", pool="backhaul_h1") == 4
    assert val(s, "roost_pool_active", pool="backhaul_h1") == 5
    assert val(s, "roost_pool_opened_total", pool="backhaul_h1") == 120
    assert val(s, "roost_pool_idle", pool="backhaul_h2") == 1
    assert val(s, "roost_pool_stats_errors_total") == 1
    types = {
        f.name: f.type for f in text_string_to_metric_families(generate_latest(m.registry).decode())
    }
    assert types["roost_pool_idle"] == "gauge"
    assert types["roost_pool_opened"] == "counter"
    m.unregister_pool("backhaul_h2")
    assert val(scrape(m), "roost_pool_idle", pool="backhaul_h2") is None


def test_usage_is_exported_as_app_metrics() -> None:
    """roost_app_*_total follow the usage counters of the usage role (edge) only."""
    m = metrics()
    finish(m, bytes_in=100, bytes_out=2000, duration=0.5)
    finish(m, role="host", bytes_in=100, bytes_out=2000, duration=0.5)  # same request, host side
    m.refused(role="edge", app="demo", reason="capacity")
    m.refused(role="host", app="demo", reason="hard_limit")  # retried elsewhere: not usage
    s = scrape(m)
    assert val(s, "roost_app_requests_total", app="demo") == 1
    assert val(s, "roost_app_bytes_in_total", app="demo") == 100
    assert val(s, "roost_app_bytes_out_total", app="demo") == 2000
    assert val(s, "roost_app_request_seconds_total", app="demo") == 0.5
    assert val(s, "roost_app_refusals_total", app="demo") == 1
    assert m.usage.snapshot("demo").since == 1000.0


def test_loop_lag_samples_are_exported() -> None:
    """loop_lag feeds a histogram and a last-value gauge."""
    m = metrics()
    m.loop_lag(0.0)
    m.loop_lag(0.3)
    s = scrape(m)
    assert val(s, "roost_event_loop_lag_seconds_count") == 2
    assert val(s, "roost_event_loop_lag_seconds_bucket", le="0.25") == 1
    assert val(s, "roost_event_loop_lag_last_seconds") == 0.3


def test_own_registry_and_process_metrics() -> None:
    """Each instance has its own registry (two can coexist) with process metrics."""
    a, b = PrometheusMetrics(), PrometheusMetrics()
    assert a.registry is not b.registry
    assert val(scrape(a), "process_cpu_seconds_total") is not None


@pytest.mark.parametrize("impl", [NullMetrics, metrics])
def test_implementations_accept_the_protocol_calls(impl: Any) -> None:
    """Both implementations take every Metrics call with the Protocol's keyword names."""
    m: Metrics = impl()
    finish(m)
    m.retried(app="demo", reason="connect_timeout")
    m.refused(role="edge", app="demo", reason="capacity")
    m.queue_wait(app="demo", seconds=0.1, outcome="queue_full")
    m.timed_out(role="host", kind="keepalive_idle")
    m.register_pool("p", Pool(idle=1))
    m.inflight(role="host", app="demo", delta=1)
