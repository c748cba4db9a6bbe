"""GET /v1/apps/{app}/usage: 200 with the usage record, 404 in the API's error shape."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from roost.api.usage import usage_router
from roost.proxy.usage import AppUsage, Usage

KNOWN = {"demo", "quiet"}


def make_usage() -> Usage:
    u = Usage(since=1700000000.0)
    u.request_finished("demo", bytes_in=10, bytes_out=2048, duration=0.5)
    u.refused("demo")
    return u


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.get(path)


def sync_app(usage: Usage) -> FastAPI:
    api = FastAPI()
    api.include_router(usage_router(lambda a: usage.snapshot(a) if a in KNOWN else None))
    return api


async def test_known_app_returns_its_usage() -> None:
    """A known app's usage comes back as JSON with every counter and since."""
    resp = await get(sync_app(make_usage()), "/v1/apps/demo/usage")
    assert resp.status_code == 200
    assert resp.json() == {
        "app": "demo",
        "since": 1700000000.0,
        "requests": 1,
        "bytes_in": 10,
        "bytes_out": 2048,
        "request_seconds": 0.5,
        "refusals": 1,
    }


async def test_known_app_without_traffic_returns_zeros() -> None:
    """An app that exists but had no requests gets zeros, not 404."""
    resp = await get(sync_app(make_usage()), "/v1/apps/quiet/usage")
    assert resp.status_code == 200
    assert resp.json()["requests"] == 0


async def test_unknown_app_is_404_in_the_error_shape() -> None:
    """An unknown app is a 404 with the API's error body."""
    resp = await get(sync_app(make_usage()), "/v1/apps/nope/usage")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {"code": "not_found", "message": "app 'nope' not found", "fields": []}
    }


async def test_async_lookup_is_awaited() -> None:
    """get_usage may be a coroutine function (e.g. checking the catalog first)."""
    usage = make_usage()

    async def lookup(app: str) -> AppUsage | None:
        return usage.snapshot(app) if app in KNOWN else None

    api = FastAPI()
    api.include_router(usage_router(lookup))
    assert (await get(api, "/v1/apps/demo/usage")).json()["bytes_out"] == 2048
    assert (await get(api, "/v1/apps/nope/usage")).status_code == 404


async def test_openapi_documents_the_route() -> None:
    """The route is in the OpenAPI schema with its 200 model and 404 error model."""
    api = sync_app(make_usage())
    route = api.openapi()["paths"]["/v1/apps/{app}/usage"]["get"]
    assert {"200", "404"} <= set(route["responses"])
