"""The SNI cert cache over a real SQLite catalog: freshness, no poisoning, wildcards, LRU bound."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.catalog.store import Entry
from roost.proxy.tls import pki
from roost.proxy.tls.certcache import CertCache, choose_context
from roost.proxy.tls.challenges import TlsAlpn01Responder
from roost.proxy.tls.clienthello import ClientHello
from tests.helpers import await_until

SECRET = b"s" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedStore:
    """Wraps a store; ``get`` can fail, or wait on a gate after reading (to force races)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.fail_next = 0
        self.gate: asyncio.Event | None = None
        self.gets = 0

    async def get(self, key: str) -> Entry | None:
        self.gets += 1
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("catalog unavailable")
        entry = await self.inner.get(key)
        if self.gate is not None:
            await self.gate.wait()
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[GatedStore]:
    inner = await SqliteStore.open(tmp_path / "catalog.db")
    yield GatedStore(inner)
    await inner.close()


@pytest.fixture
def catalog(store: GatedStore) -> Catalog:
    return Catalog(store)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(catalog: Catalog, clock: FakeClock) -> AsyncIterator[CertCache]:
    cache = CertCache(catalog, c.KeySeal(SECRET), max_entries=16, negative_ttl=2.0, clock=clock)
    task = asyncio.ensure_future(cache.run())
    await asyncio.wait_for(cache.ready.wait(), 5)
    yield cache
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await cache.close()


async def store_cert(
    catalog: Catalog, name: str, *, san: str | None = None, days: float = 90, seal: bytes = SECRET
) -> str:
    """Put a self-signed certificate for ``san`` under ``certs/<name>``; its fingerprint."""
    chain, key = pki.self_signed(san or name, time.time(), days=days)
    info = pki.inspect_chain(chain)
    cert = c.Certificate(
        hostname=name,
        source="uploaded",
        status="ready",
        chain_pem=chain.decode(),
        key_sealed=c.KeySeal(seal).seal(c.cert_key(name), key),
        not_before=info.not_before,
        not_after=info.not_after,
        fingerprint=info.fingerprint,
    )
    await c.put_cert(catalog, cert)
    return info.fingerprint


def served(ctx: ssl.SSLContext | None, sni: str) -> str | None:
    """Handshake in memory with ``ctx`` as server; the fingerprint the client saw (None: failed)."""
    if ctx is None:
        return None
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=sni)
    server = ctx.wrap_bio(bios[2], bios[3], server_side=True)
    done = {id(client): False, id(server): False}
    for _ in range(10):
        for obj, out_bio, peer_in in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
            try:
                obj.do_handshake()
                done[id(obj)] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return None
            peer_in.write(out_bio.read())
        if all(done.values()):
            der = client.getpeercert(binary_form=True)
            return hashlib.sha256(der).hexdigest() if der else None
    return None


async def test_prepared_name_is_served(catalog: Catalog, cache: CertCache) -> None:
    """A stored certificate is loaded on demand and served for its name."""
    fp = await store_cert(catalog, "www.example.com")
    assert cache.lookup("www.example.com") is None  # not loaded until prepared
    assert served(await cache.prepare("www.example.com"), "www.example.com") == fp
    assert served(cache.lookup("WWW.Example.COM"), "www.example.com") == fp


async def test_stale_after_renewal_is_never_served(catalog: Catalog, cache: CertCache) -> None:
    """After a renewal lands, the old certificate is dropped at once and the new one served."""
    old = await store_cert(catalog, "renew.example.com")
    assert served(await cache.prepare("renew.example.com"), "renew.example.com") == old
    start = time.monotonic()
    new = await store_cert(catalog, "renew.example.com")
    seen: list[str | None] = []

    async def new_served() -> bool:
        fp = served(await cache.prepare("renew.example.com"), "renew.example.com")
        seen.append(fp)
        return fp == new

    await await_until(new_served, timeout=1.0, interval=0.005, what="renewed cert served")
    assert time.monotonic() - start < 1.0
    for _ in range(20):  # once the new one is out, the old never comes back
        assert served(cache.lookup("renew.example.com"), "renew.example.com") == new
        assert served(await cache.prepare("renew.example.com"), "renew.example.com") == new
    assert old not in seen[seen.index(new) :]


async def test_load_racing_a_renewal_is_redone(
    catalog: Catalog, store: GatedStore, cache: CertCache
) -> None:
    """A load that read the old record while a renewal landed is discarded, not installed."""
    old = await store_cert(catalog, "race.example.com")
    store.gate = asyncio.Event()
    pending = asyncio.ensure_future(cache.prepare("race.example.com"))
    await await_until(lambda: _true(store.gets >= 1), what="the load to read the old record")
    new = await store_cert(catalog, "race.example.com")
    await await_until(lambda: _true("race.example.com" in cache._raced), what="the watch event")
    store.gate.set()
    ctx = await asyncio.wait_for(pending, 5)
    assert served(ctx, "race.example.com") == new != old
    assert served(cache.lookup("race.example.com"), "race.example.com") == new


async def test_failed_lookup_then_success_is_served(
    catalog: Catalog, store: GatedStore, cache: CertCache, clock: FakeClock
) -> None:
    """A catalog error is cached only as a short negative entry, never as a valid one."""
    fp = await store_cert(catalog, "flaky.example.com")
    store.fail_next = 1
    assert await cache.prepare("flaky.example.com") is None
    assert cache.lookup("flaky.example.com") is None
    clock.now += 2.5  # the negative entry expires quickly
    assert served(await cache.prepare("flaky.example.com"), "flaky.example.com") == fp


async def test_missing_then_added_is_served_without_waiting(
    catalog: Catalog, cache: CertCache
) -> None:
    """A name with no certificate yet is served as soon as one is stored (watch clears it)."""
    assert await cache.prepare("late.example.com") is None
    fp = await store_cert(catalog, "late.example.com")

    async def ready() -> bool:
        return served(await cache.prepare("late.example.com"), "late.example.com") == fp

    await await_until(ready, timeout=1.0, interval=0.005, what="new cert served")


async def test_negative_entries_expire(
    catalog: Catalog, store: GatedStore, cache: CertCache, clock: FakeClock
) -> None:
    """A missing name is not asked again within the TTL, and is asked again after it."""
    assert await cache.prepare("nothing.example.com") is None
    gets = store.gets
    assert await cache.prepare("nothing.example.com") is None
    assert store.gets == gets
    clock.now += 2.5
    assert await cache.prepare("nothing.example.com") is None
    assert store.gets > gets


async def test_wildcard_rules(catalog: Catalog, cache: CertCache) -> None:
    """``*.example.com`` covers one label only; an exact certificate wins over the wildcard."""
    wild = await store_cert(catalog, "*.example.com")
    exact = await store_cert(catalog, "www.example.com")
    assert served(await cache.prepare("a.example.com"), "a.example.com") == wild
    assert served(await cache.prepare("A.Example.COM"), "a.example.com") == wild
    assert served(await cache.prepare("www.example.com"), "www.example.com") == exact
    assert await cache.prepare("a.b.example.com") is None
    assert await cache.prepare("example.com") is None


async def test_lru_is_bounded(catalog: Catalog, clock: FakeClock) -> None:
    """The cache never holds more than ``max_entries`` names; the least recently used go first."""
    cache = CertCache(catalog, c.KeySeal(SECRET), max_entries=3, clock=clock)
    for i in range(5):
        await store_cert(catalog, f"n{i}.example.com")
    for i in range(3):
        assert await cache.prepare(f"n{i}.example.com") is not None
    assert cache.lookup("n0.example.com") is not None  # n0 is now the most recent
    for i in (3, 4):
        assert await cache.prepare(f"n{i}.example.com") is not None
        assert len(cache._entries) <= 3
    assert cache.lookup("n1.example.com") is None and cache.lookup("n2.example.com") is None
    assert cache.lookup("n0.example.com") is not None
    assert cache.lookup("n4.example.com") is not None


async def test_expired_or_unopenable_certificates_are_not_served(
    catalog: Catalog, cache: CertCache
) -> None:
    """An expired chain, or a key sealed with another secret, is never served."""
    await store_cert(catalog, "other.example.com", seal=b"x" * 32)
    assert await cache.prepare("other.example.com") is None
    chain, key = pki.self_signed("old.example.com", time.time() - 10 * 86400, days=1)
    info = pki.inspect_chain(chain)
    await c.put_cert(
        catalog,
        c.Certificate(
            hostname="old.example.com",
            status="ready",
            chain_pem=chain.decode(),
            key_sealed=c.KeySeal(SECRET).seal("certs/old.example.com", key),
            not_after=info.not_after,
        ),
    )
    assert await cache.prepare("old.example.com") is None


async def test_self_signed_fallback_is_opt_in(catalog: Catalog, clock: FakeClock) -> None:
    """Opted-in names get a self-signed stand-in until a real certificate replaces it."""
    cache = CertCache(catalog, c.KeySeal(SECRET), self_signed=lambda n: n.endswith(".opt.test"))
    task = asyncio.ensure_future(cache.run())
    await asyncio.wait_for(cache.ready.wait(), 5)
    try:
        assert await cache.prepare("x.other.test") is None
        stand_in = served(await cache.prepare("a.opt.test"), "a.opt.test")
        assert stand_in is not None
        real = await store_cert(catalog, "a.opt.test")

        async def replaced() -> bool:
            return served(await cache.prepare("a.opt.test"), "a.opt.test") == real

        await await_until(replaced, timeout=1.0, interval=0.005, what="real cert served")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_sni_callback_context(catalog: Catalog, cache: CertCache) -> None:
    """The shared server context swaps in the prepared name's context; unknown names fail."""
    fp = await store_cert(catalog, "cb.example.com")
    await cache.prepare("cb.example.com")
    assert served(cache.server_context, "cb.example.com") == fp
    assert served(cache.server_context, "unknown.example.com") is None


async def test_acme_tls_alpn_never_uses_the_cache(catalog: Catalog, cache: CertCache) -> None:
    """An acme-tls/1 hello gets only the challenge context for its exact name."""
    await store_cert(catalog, "*.example.com")
    responder = TlsAlpn01Responder()

    def hello(name: str, alpn: tuple[str, ...]) -> ClientHello:
        return ClientHello(name, alpn, (0x0304,), 0x0303, (0x1301,), (0, 16), b"")

    assert await choose_context(hello("v.example.com", ("acme-tls/1",)), cache, responder) is None
    responder.add("v.example.com", "token.thumbprint")
    ctx = await choose_context(hello("v.example.com", ("acme-tls/1",)), cache, responder)
    assert ctx is responder.context_for("v.example.com") and ctx is not None
    assert await choose_context(hello("w.example.com", ("acme-tls/1",)), cache, responder) is None
    normal = await choose_context(hello("v.example.com", ("h2",)), cache, responder)
    assert normal is not None and normal is not ctx


def _true(value: bool) -> Any:
    async def check() -> bool:
        return value

    return check()


async def test_rotating_ticket_keys_rebuilds_contexts(catalog: Catalog, cache: CertCache) -> None:
    """Rotation swaps in new contexts (new ticket keys) that serve the same certificate."""
    fp = await store_cert(catalog, "rot.example.com")
    before = await cache.prepare("rot.example.com")
    base = cache.server_context
    cache.rotate_ticket_keys()
    assert cache.server_context is not base
    assert cache.lookup("rot.example.com") is before  # still serving while rebuilding

    async def rebuilt() -> bool:
        return cache.lookup("rot.example.com") not in (None, before)

    await await_until(rebuilt, timeout=5, what="context rebuilt")
    assert served(cache.lookup("rot.example.com"), "rot.example.com") == fp


def resumed_handshakes(ctx: ssl.SSLContext, sni: str) -> bool:
    """Two in-memory handshakes; True if the second resumed the first one's session."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    session = None
    for _ in range(2):
        bios = [ssl.MemoryBIO() for _ in range(4)]
        client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=sni, session=session)
        server = ctx.wrap_bio(bios[2], bios[3], server_side=True)
        for _ in range(6):
            for obj, out_bio, peer_in in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
                with contextlib.suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
                peer_in.write(out_bio.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            client.read(1)  # take the TLS 1.3 tickets the server sent after the handshake
        if session is not None:
            return client.session_reused
        session = client.session
    return False


async def test_sessions_resume(catalog: Catalog, cache: CertCache) -> None:
    """A returning client resumes with a session ticket (no full handshake)."""
    await store_cert(catalog, "res.example.com")
    ctx = await cache.prepare("res.example.com")
    assert ctx is not None and resumed_handshakes(ctx, "res.example.com")
