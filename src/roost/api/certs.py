"""The certificates API (``/v1/certs``): request/response types and an ``APIRouter`` factory.

    POST   /v1/certs                  {hostname, app[, source]} -> 201; issued in the background
    GET    /v1/certs[?app=]           list
    GET    /v1/certs/{hostname}       one, with its public chain
    DELETE /v1/certs/{hostname}       204
    POST   /v1/certs/import           {hostname, app, chain_pem, key_pem} -> 201 (checked first)

No response ever carries a private key: keys go into the catalog sealed (``catalog.certs``) and
stay there. Errors use the API's one error body (``api.errors.ApiError``), rendered by the
app's handler. The CLI (``cli.certs``) imports the types below.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import msgspec
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from roost.api.errors import ApiError, invalid, not_found
from roost.api.schema import APP_NAME, Strict
from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.proxy.tls import pki
from roost.proxy.tls.contexts import context_from_pem
from roost.proxy.tls.hostnames import normalize_hostname

HOSTNAME = Field(min_length=1, max_length=253, description="DNS name, e.g. www.example.com")


class AddCertRequest(Strict):
    hostname: str = HOSTNAME
    app: str = Field(pattern=APP_NAME, description="the app this hostname serves")
    source: Literal["acme", "self-signed"] = Field(
        "acme", description="acme: issue from the CA (default); self-signed: make one now"
    )


class ImportCertRequest(Strict):
    hostname: str = Field(min_length=1, max_length=253, description="may be *.example.com")
    app: str = Field(pattern=APP_NAME)
    chain_pem: str = Field(max_length=64 * 1024, description="PEM chain, leaf first")
    key_pem: str = Field(max_length=16 * 1024, description="PEM private key (unencrypted)")


class CertOut(BaseModel):
    hostname: str
    app: str
    source: str
    status: str
    issuer: str
    not_before: float
    not_after: float
    fingerprint: str
    renew_after: float
    last_error: str
    failures: int
    created_at: float
    updated_at: float
    chain_pem: str | None = None  # only from GET /v1/certs/{hostname}


def cert_out(cert: c.Certificate, *, chain: bool = False) -> CertOut:
    data = c.public_view(cert)
    fields = {k: v for k, v in data.items() if k in CertOut.model_fields}
    fields["chain_pem"] = cert.chain_pem if chain else None
    return CertOut(**fields)


def _hostname(value: str, *, wildcard: bool, field: str = "hostname") -> str:
    try:
        ascii_name = value.strip().encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid(field, "not a valid internationalised domain name") from None
    try:
        return normalize_hostname(ascii_name, allow_wildcard=wildcard)
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def certs_router(
    catalog: Catalog,
    seal: c.KeySeal,
    *,
    wake: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The ``/v1/certs`` routes over ``catalog``; ``wake`` nudges the renewal loop after an add."""
    router = APIRouter(prefix="/v1/certs", tags=["certs"])

    async def require_app(name: str) -> None:
        if await catalog.get_app(name) is None:
            raise not_found(f"app {name}")

    @router.post("", response_model=CertOut, status_code=201)
    async def add_cert(body: AddCertRequest) -> CertOut:
        """Ask for a certificate for ``hostname``; ACME issuance runs in the background."""
        if body.hostname.strip().startswith("*."):
            raise invalid(
                "hostname", "wildcards need DNS-01, which Roost does not do: import one instead"
            )
        hostname = _hostname(body.hostname, wildcard=False)
        await require_app(body.app)
        now = clock()
        cert = c.Certificate(hostname=hostname, app=body.app, created_at=now, updated_at=now)
        if body.source == "self-signed":
            chain, key = await asyncio.to_thread(pki.self_signed, hostname, now)
            cert = _with_chain(cert, seal, chain, key, "self-signed")
        if not await c.create_cert(catalog, cert):
            raise ApiError(409, "conflict", f"a certificate for {hostname} already exists")
        if wake is not None and cert.source == "acme":
            wake()
        return cert_out(cert)

    @router.get("", response_model=list[CertOut])
    async def list_certs(app: str | None = Query(None, pattern=APP_NAME)) -> list[CertOut]:
        """Every certificate (or one app's), without chains or keys."""
        certs = await c.list_certs(catalog)
        return [cert_out(x) for x in certs if app is None or x.app == app]

    @router.get("/{hostname}", response_model=CertOut)
    async def show_cert(hostname: str) -> CertOut:
        """One certificate with its public chain (never its key)."""
        name = _hostname(hostname, wildcard=True)
        cert = await c.get_cert(catalog, name)
        if cert is None:
            raise not_found(f"certificate for {name}")
        return cert_out(cert, chain=True)

    @router.delete("/{hostname}", status_code=204)
    async def remove_cert(hostname: str) -> None:
        """Forget a certificate; edges stop serving it at once."""
        name = _hostname(hostname, wildcard=True)
        if not await c.delete_cert(catalog, name):
            raise not_found(f"certificate for {name}")

    @router.post("/import", response_model=CertOut, status_code=201)
    async def import_cert(body: ImportCertRequest) -> CertOut:
        """Store an uploaded chain and key (replacing any record) after checking them."""
        hostname = _hostname(body.hostname, wildcard=True)
        await require_app(body.app)
        chain, key = body.chain_pem.encode(), body.key_pem.encode()
        now = clock()
        try:
            pki.inspect_chain(chain)
        except ValueError as exc:
            raise invalid("chain_pem", str(exc)) from None
        try:
            pki.load_key(key)
        except ValueError as exc:
            raise invalid("key_pem", str(exc)) from None
        try:
            pki.validate_pair(chain, key, hostname, now)
        except ValueError as exc:
            field = "key_pem" if "private key" in str(exc) else "chain_pem"
            if "among the certificate's names" in str(exc):
                field = "hostname"
            raise invalid(field, str(exc)) from None
        try:
            await asyncio.to_thread(context_from_pem, chain, key)
        except ValueError as exc:
            raise invalid("chain_pem", str(exc)) from None
        old = await c.get_cert(catalog, hostname)
        cert = c.Certificate(
            hostname=hostname,
            app=body.app,
            created_at=old.created_at if old else now,
            updated_at=now,
        )
        cert = _with_chain(cert, seal, chain, key, "uploaded")
        await c.put_cert(catalog, cert)
        return cert_out(cert)

    return router


def _with_chain(
    cert: c.Certificate, seal: c.KeySeal, chain: bytes, key: bytes, source: c.CertSource
) -> c.Certificate:
    info = pki.inspect_chain(chain)
    return msgspec.structs.replace(
        cert,
        source=source,
        status="ready",
        chain_pem=chain.decode(),
        key_sealed=seal.seal(c.cert_key(cert.hostname), key),
        issuer=info.issuer,
        not_before=info.not_before,
        not_after=info.not_after,
        fingerprint=info.fingerprint,
        renew_after=info.not_after,  # never renewed by the ACME loop (not an acme source)
    )
