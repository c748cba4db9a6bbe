"""The admin server over a real socket: /metrics in Prometheus text, /healthz, errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from roost.node.admin import start_admin
from roost.proxy.prometheus import PrometheusMetrics

pytestmark = pytest.mark.integration


def finished(m: PrometheusMetrics, status: int = 200) -> None:
    m.request_finished(
        role="edge",
        app="demo",
        status=status,
        protocol="http/1.1",
        time_to_headers=0.001,
        request_body_time=0.0,
        response_body_time=0.0,
        bytes_in=0,
        bytes_out=5,
        duration=0.002,
    )


async def test_metrics_served_over_a_socket() -> None:
    """GET /metrics returns the registry in text format, and reflects later calls."""
    m = PrometheusMetrics()
    finished(m)
    admin = await start_admin("127.0.0.1", 0, m)
    try:
        url = f"http://127.0.0.1:{admin.port}"
        async with httpx.AsyncClient(base_url=url) as client:
            resp = await client.get("/metrics")
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            names = {
                s.name: s
                for f in text_string_to_metric_families(resp.text)
                for s in f.samples
                if s.labels.get("status_class") == "2xx"
            }
            assert names["roost_proxy_requests_total"].value == 1
            assert "process_cpu_seconds_total" in resp.text
            finished(m, status=500)
            again = await client.get("/metrics?name=ignored")
            assert 'status_class="5xx"' in again.text
    finally:
        await admin.close()


async def test_any_registry_is_served() -> None:
    """An object with only a registry (no frozen()) is rendered directly."""

    class Plain:
        def __init__(self) -> None:
            self.registry = CollectorRegistry()
            Counter("plain_things", "things", registry=self.registry).inc(3)

    admin = await start_admin("127.0.0.1", 0, Plain())
    try:
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{admin.port}/metrics")
        assert "plain_things_total 3.0" in resp.text
    finally:
        await admin.close()


async def test_healthz_and_errors() -> None:
    """/healthz is ok (or 503 when the health check fails); other paths and methods fail."""
    healthy = True
    admin = await start_admin("127.0.0.1", 0, PrometheusMetrics(), health=lambda: healthy)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin.port}") as client:
            resp = await client.get("/healthz")
            assert (resp.status_code, resp.text) == (200, "ok\n")
            head = await client.head("/metrics")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) > 0
            assert (await client.get("/nope")).status_code == 404
            post = await client.post("/metrics")
            assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
            healthy = False
            assert (await client.get("/healthz")).status_code == 503
    finally:
        await admin.close()


async def test_garbage_and_oversized_heads() -> None:
    """A malformed request line is a 400; a head past the limit is a 431."""
    admin = await start_admin("127.0.0.1", 0, PrometheusMetrics(process_metrics=False))
    try:
        for request, status in (
            (b"NONSENSE\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
            writer.write(request)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line.split(b" ")[1] == status
            writer.close()
            await writer.wait_closed()
    finally:
        await admin.close()


async def test_close_ends_idle_connections_and_frees_the_port() -> None:
    """close() returns with a client connected but silent, and the port can be bound again."""
    admin = await start_admin("127.0.0.1", 0, PrometheusMetrics(process_metrics=False))
    port = admin.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.wait_for(admin.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    again = await start_admin("127.0.0.1", port, PrometheusMetrics(process_metrics=False))
    await again.close()


async def test_port_in_use_raises_oserror() -> None:
    """Binding a taken port raises OSError (the node turns it into a startup error)."""
    admin = await start_admin("127.0.0.1", 0, PrometheusMetrics(process_metrics=False))
    try:
        with pytest.raises(OSError):
            await start_admin("127.0.0.1", admin.port, PrometheusMetrics(process_metrics=False))
    finally:
        await admin.close()
