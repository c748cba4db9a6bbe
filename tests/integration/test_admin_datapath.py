"""PrometheusMetrics behind the real data plane: edge -> host proxy -> instance, scraped
from the admin server, with the usage record matching what the client sent and received."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from roost.node.admin import start_admin
from roost.proxy.prometheus import PrometheusMetrics
from tests.integration.hostrig import Instance, rig

pytestmark = pytest.mark.integration


async def test_requests_through_the_data_plane_show_in_metrics_and_usage(tmp_path: Path) -> None:
    """Three POSTs through edge and host proxy: counted per role, usage counts the edge only."""
    m = PrometheusMetrics()
    async with rig(tmp_path, [Instance("a")], metrics=m) as r:
        admin = await start_admin("127.0.0.1", 0, m)
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(3):
                    resp = await client.post(
                        f"http://127.0.0.1:{r.port}/",
                        content=b"x" * 100,
                        headers={"Host": "demo.localhost"},
                    )
                    assert resp.status_code == 200 and resp.content == b"a"
                text = (await client.get(f"http://127.0.0.1:{admin.port}/metrics")).text
        finally:
            await admin.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def val(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    requests = "roost_proxy_requests_total"
    assert val(requests, role="edge", app="demo", status_class="2xx") == 3
    assert val(requests, role="host", app="demo", status_class="2xx") == 3
    assert val("roost_proxy_request_body_seconds_count", role="edge", app="demo") == 3
    assert val("roost_proxy_inflight_requests", role="edge", app="demo") == 0
    assert val("roost_app_requests_total", app="demo") == 3
    assert val("roost_app_bytes_in_total", app="demo") == 300
    assert val("roost_app_bytes_out_total", app="demo") == 3
    assert any(name.startswith("roost_pool_") for name, _ in samples)
    usage = m.usage.snapshot("demo")
    assert (usage.requests, usage.bytes_in, usage.bytes_out) == (3, 300, 3)
    assert usage.request_seconds > 0
