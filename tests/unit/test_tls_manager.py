"""The renewal loop's decisions (pure ``plan``) and its catalog writes, with a fake issuer."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.proxy.tls import pki
from roost.proxy.tls.acme_client import Issued, IssueError
from roost.proxy.tls.manager import CertManager, is_due, plan, renew_time
from tests.helpers import await_until

DAY = 86400.0
NOW = 1_800_000_000.0


def cert(name: str = "a.example.com", **kw: object) -> c.Certificate:
    return msgspec.structs.replace(c.Certificate(hostname=name), **kw)


class FakeIssuer:
    """Issues self-signed certificates, or fails with ``reason``; counts calls."""

    def __init__(self) -> None:
        self.seal = c.KeySeal(b"m" * 32)
        self.reason: str | None = None
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def issue(self, hostname: str) -> Issued:
        self.calls.append(hostname)
        if self.gate is not None:
            await self.gate.wait()
        if self.reason is not None:
            raise IssueError(self.reason)
        chain, key = pki.self_signed(hostname, NOW, days=90)
        return Issued(chain, key, pki.inspect_chain(chain))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[Catalog]:
    store = await SqliteStore.open(tmp_path / "catalog.db")
    yield Catalog(store)
    await store.close()


def test_renew_time_is_30_days_before_or_a_third_of_short_lives() -> None:
    """90-day certs renew 30 days early; a 6-day cert renews with 2 days left."""
    assert renew_time(NOW, NOW + 90 * DAY) == NOW + 60 * DAY
    assert renew_time(NOW, NOW + 6 * DAY) == NOW + 4 * DAY


@pytest.mark.parametrize(
    ("record", "due"),
    [
        (cert(), True),  # pending
        (cert(source="uploaded"), False),
        (cert(source="self-signed", status="ready"), False),
        (cert("*.example.com"), False),  # wildcards need DNS-01
        (cert(status="ready", renew_after=NOW + 1), False),
        (cert(status="ready", renew_after=NOW), True),
        (cert(status="failed", renew_after=NOW + 60), False),
        (cert(status="failed", renew_after=NOW - 1), True),
        (cert(status="issuing", claimed_by="other", claim_until=NOW + 10), False),
        (cert(status="issuing", claimed_by="other", claim_until=NOW - 1), True),  # worker died
        (cert(status="ready", renew_after=0, claimed_by="other", claim_until=NOW + 5), False),
        (cert(status="ready", renew_after=0, claimed_by="me", claim_until=NOW + 5), True),
    ],
)
def test_is_due(record: c.Certificate, due: bool) -> None:
    """Which records this node works on now."""
    assert is_due(record, NOW, "me") is due


def test_plan_next_wakeup() -> None:
    """plan returns the due names and the earliest later moment anything may become due."""
    certs = [
        cert("a.example.com"),
        cert("b.example.com", status="ready", renew_after=NOW + 100),
        cert("c.example.com", status="issuing", claimed_by="x", claim_until=NOW + 50),
        cert("d.example.com", source="uploaded", status="ready", renew_after=NOW + 1),
    ]
    assert plan(certs, NOW, "me") == (["a.example.com"], NOW + 50)
    assert plan([], NOW, "me") == ([], math.inf)


async def test_attempt_stores_the_certificate(catalog: Catalog) -> None:
    """A successful attempt stores chain, sealed key, dates and renew_after; clears the claim."""
    issuer, clock = FakeIssuer(), Clock()
    manager = CertManager(catalog, issuer, "me", wall=clock)  # type: ignore[arg-type]
    await c.create_cert(catalog, cert())
    stored = await manager.attempt("a.example.com")
    assert stored is not None and stored.status == "ready" and stored.chain_pem
    assert stored.renew_after == renew_time(stored.not_before, stored.not_after)
    assert not stored.claimed_by and not stored.last_error and stored.failures == 0
    assert pki.load_key(issuer.seal.open("certs/a.example.com", stored.key_sealed))


async def test_failures_back_off_and_keep_serving(catalog: Catalog) -> None:
    """Failures record the reason, double the delay, and keep an existing chain serving."""
    issuer, clock = FakeIssuer(), Clock()
    manager = CertManager(catalog, issuer, "me", backoff_base=60, wall=clock)  # type: ignore[arg-type]
    await c.create_cert(catalog, cert())
    issuer.reason = "validation failed: connection refused"
    first = await manager.attempt("a.example.com")
    assert first is not None and first.status == "failed" and first.renew_after == NOW + 60
    assert await manager.attempt("a.example.com") is None  # not due yet: no call
    clock.now = first.renew_after
    second = await manager.attempt("a.example.com")
    assert second is not None and second.failures == 2 and second.renew_after == clock.now + 120
    issuer.reason = None
    clock.now = second.renew_after
    ready = await manager.attempt("a.example.com")
    assert ready is not None and ready.status == "ready" and ready.failures == 0
    issuer.reason = "rateLimited: too many"
    await c.update_cert(
        catalog, "a.example.com", lambda x: msgspec.structs.replace(x, renew_after=0)
    )
    renewal = await manager.attempt("a.example.com")
    assert renewal is not None and renewal.status == "ready"  # still serving the old chain
    assert renewal.chain_pem == ready.chain_pem and renewal.last_error == "rateLimited: too many"


async def test_import_during_issuance_wins(catalog: Catalog) -> None:
    """If the record is replaced (e.g. imported) while issuing, the issued cert is dropped."""
    issuer = FakeIssuer()
    issuer.gate = asyncio.Event()
    manager = CertManager(catalog, issuer, "me")  # type: ignore[arg-type]
    await c.create_cert(catalog, cert())
    attempt = asyncio.ensure_future(manager.attempt("a.example.com"))
    await await_until(lambda: _now(bool(issuer.calls)), what="issuance to start")
    await c.put_cert(catalog, cert(source="uploaded", status="ready", chain_pem="x"))
    issuer.gate.set()
    assert await attempt is None
    stored = await c.get_cert(catalog, "a.example.com")
    assert stored is not None and stored.source == "uploaded" and stored.chain_pem == "x"


async def test_run_issues_new_records_when_woken(catalog: Catalog) -> None:
    """The loop picks up a record added while it runs (through the catalog watch)."""
    issuer = FakeIssuer()
    manager = CertManager(catalog, issuer, "me")  # type: ignore[arg-type]
    task = asyncio.ensure_future(manager.run())
    try:
        await c.create_cert(catalog, cert("new.example.com"))

        async def issued() -> bool:
            got = await c.get_cert(catalog, "new.example.com")
            return got is not None and got.status == "ready"

        await await_until(issued, timeout=5, what="the loop to issue")
        assert issuer.calls == ["new.example.com"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _now(value: bool) -> bool:
    return value
