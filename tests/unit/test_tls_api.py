"""The /v1/certs API over a real SQLite catalog (in-process ASGI, same event loop)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from roost.api.certs import certs_router
from roost.api.errors import ApiError
from roost.catalog import certs as c
from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.config import parse_config
from roost.proxy.tls import pki

SEAL = c.KeySeal(b"a" * 32)


class Api:
    def __init__(self, http: httpx.AsyncClient, catalog: Catalog, wakes: list[int]) -> None:
        self.http = http
        self.catalog = catalog
        self.wakes = wakes


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = await SqliteStore.open(tmp_path / "catalog.db")
    catalog = Catalog(store)
    config = parse_config('app = "web"\n', filename="roost.toml").config
    await catalog.create_app(r.App(name="web", config=config, counts={}))
    wakes: list[int] = []
    app = FastAPI()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(422, "invalid", str(exc.errors())).body(), status_code=422)

    app.include_router(certs_router(catalog, SEAL, wake=lambda: wakes.append(1)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield Api(http, catalog, wakes)
    await store.close()


def error(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()["error"]
    return body


async def test_add_creates_a_pending_record_and_wakes_the_issuer(api: Api) -> None:
    """POST /v1/certs stores a pending ACME record (lower-cased) and nudges the renewal loop."""
    resp = await api.http.post("/v1/certs", json={"hostname": "WWW.Example.com", "app": "web"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["hostname"] == "www.example.com" and body["status"] == "pending"
    assert body["source"] == "acme" and "key_sealed" not in body and api.wakes == [1]
    cert = await c.get_cert(api.catalog, "www.example.com")
    assert cert is not None and cert.app == "web"


async def test_add_errors(api: Api) -> None:
    """Unknown app 404, duplicate 409, bad or wildcard names 422, in the shared error shape."""
    ok = {"hostname": "a.example.com", "app": "web"}
    assert (await api.http.post("/v1/certs", json=ok)).status_code == 201
    dup = await api.http.post("/v1/certs", json=ok)
    assert dup.status_code == 409 and error(dup)["code"] == "conflict"
    missing = await api.http.post("/v1/certs", json={"hostname": "b.example.com", "app": "nope"})
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    for name in ("bad name.example.com", "*.example.com", "10.0.0.1", "a..b"):
        resp = await api.http.post("/v1/certs", json={"hostname": name, "app": "web"})
        assert resp.status_code == 422, name
        assert error(resp)["fields"][0]["field"] == "hostname"


async def test_self_signed_add_is_ready_at_once(api: Api) -> None:
    """source=self-signed makes the certificate immediately, and never wakes the issuer."""
    resp = await api.http.post(
        "/v1/certs", json={"hostname": "s.example.com", "app": "web", "source": "self-signed"}
    )
    assert resp.status_code == 201 and resp.json()["status"] == "ready"
    assert resp.json()["fingerprint"] and api.wakes == []


async def test_list_show_remove(api: Api) -> None:
    """List and show never include keys; show includes the chain; remove then 404."""
    await api.http.post(
        "/v1/certs", json={"hostname": "l.example.com", "app": "web", "source": "self-signed"}
    )
    listed = (await api.http.get("/v1/certs", params={"app": "web"})).json()
    assert [x["hostname"] for x in listed] == ["l.example.com"]
    assert listed[0]["chain_pem"] is None
    assert (await api.http.get("/v1/certs", params={"app": "other"})).json() == []
    shown = (await api.http.get("/v1/certs/L.example.com")).json()
    assert shown["chain_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in str(shown) and "key_sealed" not in shown
    assert (await api.http.delete("/v1/certs/l.example.com")).status_code == 204
    assert (await api.http.get("/v1/certs/l.example.com")).status_code == 404
    assert (await api.http.delete("/v1/certs/l.example.com")).status_code == 404


async def test_import_checks_and_stores(api: Api) -> None:
    """Import accepts a matching pair covering the name (wildcards too) and seals the key."""
    chain, key = pki.self_signed("*.example.com", time.time())
    body = {"hostname": "*.example.com", "app": "web", "chain_pem": chain.decode()}
    resp = await api.http.post("/v1/certs/import", json={**body, "key_pem": key.decode()})
    assert resp.status_code == 201, resp.text
    assert resp.json()["source"] == "uploaded" and resp.json()["status"] == "ready"
    cert = await c.get_cert(api.catalog, "*.example.com")
    assert cert is not None and "PRIVATE" not in cert.key_sealed
    assert SEAL.open("certs/*.example.com", cert.key_sealed) == key


@pytest.mark.parametrize(
    ("case", "field"),
    [("other_key", "key_pem"), ("wrong_name", "hostname"), ("garbage", "chain_pem"),
     ("expired", "chain_pem"), ("bad_key", "key_pem")],
)  # fmt: skip
async def test_import_rejects(api: Api, case: str, field: str) -> None:
    """Mismatched key, uncovered name, unreadable or expired chain: 422 naming the field."""
    now = time.time()
    chain, key = pki.self_signed("i.example.com", now)
    if case == "other_key":
        key = pki.key_to_pem(pki.generate_key())
    elif case == "wrong_name":
        chain, key = pki.self_signed("other.example.com", now)
    elif case == "garbage":
        chain = b"not a certificate"
    elif case == "expired":
        chain, key = pki.self_signed("i.example.com", now - 10 * 86400, days=1)
    elif case == "bad_key":
        key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    resp = await api.http.post(
        "/v1/certs/import",
        json={"hostname": "i.example.com", "app": "web", "chain_pem": chain.decode(),
              "key_pem": key.decode()},
    )  # fmt: skip
    assert resp.status_code == 422, resp.text
    assert error(resp)["fields"][0]["field"] == field
    assert await c.get_cert(api.catalog, "i.example.com") is None
