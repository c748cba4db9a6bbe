"""Observability of a real `roost up` node: the admin server's Prometheus ``/metrics`` and
the API's ``GET /v1/apps/{app}/usage`` after real traffic through the edge.

The node is the suite's module-scoped ``demo_node`` (the demo app, 3 instances) plus a tiny
app this module deploys, ``meter`` (1 instance, hard_limit 2), which reads request bodies,
can answer 404/500, and can hold requests until a file appears (to fill its wait queue).
Counters are read before and after each test's traffic: assertions are on exact deltas.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from roost.proxy.context import Limits
from tests.helpers import await_until, wait_until

pytestmark = pytest.mark.integration

METER = "meter"
METER_HOST = "meter.localhost"
DEMO_HOST = "demo.localhost"
PATH_MARK = "zq7path"  # in every request path this module sends: it must reach no label

METER_TOML = f"""\
app = "{METER}"
kill_signal = "SIGTERM"
kill_timeout = 5

[processes]
app = "python3 server.py"

[http_service]
internal_port = 8080

[http_service.concurrency]
type = "requests"
soft_limit = 1
hard_limit = 2

[scale]
count = 1
"""

METER_SERVER = """\
import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go in two writes: no 40 ms stall

    def do_POST(self):  # echo the body, reversed
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(200, body[::-1])

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path.startswith("/hold"):  # until ?release=FILE exists (at most 20 s)
            release, deadline = parse_qs(url.query)["release"][0], time.monotonic() + 20
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.01)
            self.answer(200, b"released")
        elif url.path.startswith("/boom"):
            self.answer(500, b"boom")
        elif url.path.startswith("/missing"):
            self.answer(404, b"no such page")
        else:
            self.answer(200, b"ok")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def node(demo_node: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo node with ``meter`` deployed and routed, and the demo's 3 instances up."""
    app_dir = tmp_path_factory.mktemp("meter")
    (app_dir / "roost.toml").write_text(METER_TOML)
    (app_dir / "server.py").write_text(METER_SERVER)
    demo_node.cli("deploy", str(app_dir), timeout=90)
    wait_until(lambda: demo_node.started(METER, 1), 30, what="meter started")
    wait_until(lambda: demo_node.started("demo", 3), 30, what="3 demo instances")
    wait_until(lambda: get(demo_node, METER_HOST, "/").status_code == 200, 20, what="meter routed")
    return demo_node  # (the module's node is stopped after the module, meter with it)


def get(node: Any, host: str, path: str) -> httpx.Response:
    return node.edge.get(path, headers={"Host": host})


def scrape(node: Any) -> Samples:
    """Every sample of the admin server's /metrics, parsed as Prometheus text."""
    resp = httpx.get(f"{node.info['admin_url']}/metrics", trust_env=False, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def val(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter nothing has touched yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def usage(node: Any, app: str) -> dict[str, Any]:
    resp = node.api.get(f"/v1/apps/{app}/usage")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_metrics_count_edge_traffic_by_app_and_status_class(node: Any) -> None:
    """Known traffic (demo 2xx/4xx, meter 2xx with bodies and 5xx, an unknown host) moves
    the status-class counters, the latency histograms and the body histograms by exactly
    what was sent, for the edge and (routed requests) the host proxy."""
    before = scrape(node)
    for _ in range(6):
        assert get(node, DEMO_HOST, "/").status_code == 200
    for i in range(3):
        assert get(node, DEMO_HOST, f"/{PATH_MARK}/{i}").status_code == 404
    for i in range(2):
        assert get(node, f"nobody-{i}.localhost", f"/{PATH_MARK}").status_code == 404
    for size in (10, 100, 1000, 10_000):
        resp = node.edge.post(f"/{PATH_MARK}", content=b"x" * size, headers={"Host": METER_HOST})
        assert resp.status_code == 200 and len(resp.content) == size
    for _ in range(2):
        assert get(node, METER_HOST, f"/boom/{PATH_MARK}").status_code == 500
    after = scrape(node)

    def delta(name: str, **labels: str) -> float:
        return val(after, name, **labels) - val(before, name, **labels)

    requests = "roost_proxy_requests_total"
    for role in ("edge", "host"):  # one node: every routed request crosses both proxies
        assert delta(requests, role=role, app="demo", status_class="2xx") == 6
        assert delta(requests, role=role, app="demo", status_class="4xx") == 3
        assert delta(requests, role=role, app="demo", status_class="5xx") == 0
        assert delta(requests, role=role, app=METER, status_class="2xx") == 4
        assert delta(requests, role=role, app=METER, status_class="5xx") == 2
    assert delta(requests, role="edge", app="_none", status_class="4xx") == 2
    assert delta(requests, role="host", app="_none", status_class="4xx") == 0

    for app, n, with_body in (("demo", 9, 0), (METER, 6, 4)):
        for hist in ("time_to_headers", "request_duration", "response_body"):
            name = f"roost_proxy_{hist}_seconds"
            assert delta(f"{name}_count", role="edge", app=app) == n, (hist, app)
            assert delta(f"{name}_bucket", role="edge", app=app, le="+Inf") == n, (hist, app)
            if hist != "response_body":  # a body sent in one write takes 0 s: sum may be 0
                assert delta(f"{name}_sum", role="edge", app=app) > 0, (hist, app)
        body = "roost_proxy_request_body_seconds_count"
        assert delta(body, role="edge", app=app) == with_body  # GETs have no body time
        assert val(after, "roost_proxy_inflight_requests", role="edge", app=app) == 0


def test_metrics_export_loop_lag_and_pool_stats(node: Any) -> None:
    """The event-loop lag histogram keeps gaining samples (the monitor runs), and the edge's
    and host proxy's connection pools export their stats, with connections opened."""
    first = scrape(node)
    lag = "roost_event_loop_lag_seconds_count"
    assert val(first, lag) > 0
    assert val(first, "roost_event_loop_lag_seconds_bucket", le="+Inf") == val(first, lag)
    assert ("roost_event_loop_lag_last_seconds", ()) in first
    wait_until(lambda: val(scrape(node), lag) > val(first, lag), 5, what="a new lag sample")

    assert get(node, DEMO_HOST, "/").status_code == 200
    samples = scrape(node)
    for pool in ("edge_backhaul", "host_instances"):
        for stat in ("idle", "active", "opened", "closed", "reused"):
            assert (f"roost_pool_{stat}", (("pool", pool),)) in samples, (pool, stat)
        assert val(samples, "roost_pool_opened", pool=pool) >= 1, pool
    assert val(samples, "roost_pool_stats_errors_total") == 0


def test_metric_labels_are_bounded(node: Any) -> None:
    """After traffic with marked paths, no label value of any sample holds a request path or
    an instance id; app labels are only deployed apps and the no-route bucket."""
    assert get(node, DEMO_HOST, f"/{PATH_MARK}/labels?q={PATH_MARK}").status_code == 404
    assert get(node, f"{PATH_MARK}.localhost", f"/{PATH_MARK}").status_code == 404
    ids = {i["id"] for app in ("demo", METER) for i in node.instances(app)}
    assert len(ids) == 4 and all(len(i) >= 6 for i in ids)
    samples = scrape(node)
    values = {v for _, labels in samples for _, v in labels}
    assert not [v for v in values if PATH_MARK in v or "/" in v]
    assert not [v for v in values if any(i in v for i in ids)]
    apps = {v for _, labels in samples for k, v in labels if k == "app"}
    assert apps == {"demo", METER, "_none"}


def test_usage_api_counts_requests_and_bytes(node: Any) -> None:
    """`GET /v1/apps/meter/usage` (with the token) moves by exactly the requests and body
    bytes sent and received; the roost_app_* metrics agree; no token, a wrong token -> 401;
    an unknown app -> 404."""
    url = f"{node.info['url']}/v1/apps/{METER}/usage"
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        resp = httpx.get(url, headers=headers, trust_env=False)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized" and "requests" not in resp.text
    assert node.api.get("/v1/apps/no-such-app/usage").status_code == 404

    before = usage(node, METER)
    sent = received = 0
    for size in (1, 512, 4096, 65_536):
        body = bytes(range(256)) * (size // 256) + b"y" * (size % 256)
        resp = node.edge.post(f"/{PATH_MARK}", content=body, headers={"Host": METER_HOST})
        assert resp.status_code == 200 and resp.content == body[::-1]
        sent, received = sent + size, received + len(resp.content)
    resp = get(node, METER_HOST, f"/missing/{PATH_MARK}")
    assert resp.status_code == 404
    received += len(resp.content)
    after = usage(node, METER)

    assert after["app"] == METER and after["since"] == before["since"]
    assert time.time() - 3600 < after["since"] <= time.time()
    assert after["requests"] - before["requests"] == 5
    assert after["bytes_in"] - before["bytes_in"] == sent == 70_145
    assert after["bytes_out"] - before["bytes_out"] == received == 70_145 + len(b"no such page")
    assert after["request_seconds"] > before["request_seconds"]
    assert after["refusals"] == before["refusals"]

    samples = scrape(node)  # the same counters, exported (nothing else reaches meter now)
    for field in ("requests", "bytes_in", "bytes_out", "refusals"):
        assert val(samples, f"roost_app_{field}_total", app=METER) == after[field], field


async def test_usage_counts_refusals_when_the_queue_is_full(node: Any, tmp_path: Path) -> None:
    """Both of meter's slots held, its wait queue filled (Limits.queue_max), then more: each
    extra request is refused at once (503), and usage counts exactly those refusals (and
    every request, refusals included); the metrics' refusal reasons agree."""
    queue_max, extra = Limits().queue_max, 8
    total = 2 + queue_max + extra  # hard_limit 2 + the queue + the ones with no room
    release = tmp_path / "release"
    before, metrics_before = usage(node, METER), scrape(node)
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=total + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=node.info["edge_url"], trust_env=False, timeout=30, limits=limits
    ) as client:

        async def one(i: int) -> None:
            resp = await client.get(
                f"/hold/{i}", params={"release": str(release)}, headers={"Host": METER_HOST}
            )
            statuses.append(resp.status_code)

        tasks = [asyncio.create_task(one(i)) for i in range(total)]
        try:

            async def refused() -> bool:
                return statuses.count(503) >= extra

            await await_until(refused, 15, what=f"{extra} requests refused")
            assert len(statuses) == extra  # nothing else answered while the slots are held
            release.touch()
            async with asyncio.timeout(20):
                await asyncio.gather(*tasks)
        finally:
            release.touch()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert statuses.count(503) == extra and statuses.count(200) == total - extra

    after = usage(node, METER)
    assert after["refusals"] - before["refusals"] == extra
    assert after["requests"] - before["requests"] == total
    samples = scrape(node)
    refusals = "roost_proxy_refusals_total"
    labels = {"role": "edge", "app": METER}
    assert (
        val(samples, refusals, reason="queue_full", **labels)
        - val(metrics_before, refusals, reason="queue_full", **labels)
        == extra
    )
    assert val(samples, refusals, reason="at_capacity", **labels) == val(
        metrics_before, refusals, reason="at_capacity", **labels
    )
    assert val(samples, "roost_app_refusals_total", app=METER) == after["refusals"]
