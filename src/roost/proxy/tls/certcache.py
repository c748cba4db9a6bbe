"""The edge's SNI certificate cache: ready ``SSLContext``s per name, kept fresh by the catalog.

How a TLS connection uses it. ``ssl``'s SNI callback is synchronous and cannot wait for the
catalog, and OpenSSL calls it before it looks at ALPN, so the edge peeks first::

    hello = ClientHelloReader().feed(...)        # SNI and ALPN; nothing consumed by TLS yet
    ctx = await choose_context(hello, cache, tls_alpn_responder)
    #   acme-tls/1 only -> the TLS-ALPN-01 challenge context for exactly that name (never cache)
    #   otherwise       -> await cache.prepare(sni): the name's own context, loaded if needed
    # None -> send alert unrecognized_name; else start TLS with ctx, replaying hello.raw

Callers that cannot peek may use ``cache.server_context`` (TLS policy, no certificate): its
``sni_callback`` swaps ``ssl_object.context`` to whatever ``lookup`` finds without I/O, so it
serves names already in the cache (``warm=True`` loads every certificate at start) and answers
others with ``unrecognized_name``; it cannot answer TLS-ALPN-01.

Rules:

- Names are looked up exact first, then as the one-level wildcard (``a.example.com`` ->
  ``*.example.com``; ``a.b.example.com`` never matches ``*.example.com``), case-insensitively.
  The exact name must be known (present or known-missing) before the wildcard is used.
- A record is served only if it has a chain and a key that open and load and is not expired.
  A missing record, a catalog error, a key that does not open or a chain that does not load
  becomes a *negative* entry that expires after ``negative_ttl`` seconds: it is never served
  and never mistaken for a valid one (no poisoning).
- The cache follows ``certs/`` in the catalog: any put or delete of a name drops that name's
  entry at once (so a replaced certificate is never served again), drops self-signed stand-ins
  it covers, and reloads names that were in use in the background. A load that raced with a
  change is discarded and redone. Renewals are therefore served as soon as the watch delivers
  them (milliseconds with SQLite), with no restart.
- The LRU holds at most ``max_entries`` names (positive, negative and self-signed together).
- Self-signed fallback: when ``self_signed(name)`` says so (a service opted in with
  ``default_self_signed``), a name with no certificate gets a fresh in-memory self-signed one
  instead of an alert. It is not written to the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Protocol

from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.catalog.store import Compacted
from roost.proxy.tls import pki
from roost.proxy.tls.clienthello import ClientHello
from roost.proxy.tls.contexts import DEFAULT_ALPN, base_context, context_from_pem
from roost.proxy.tls.hostnames import host_error, lookup_names, name_matches

log = logging.getLogger("roost.proxy.tls")
_SELF = "~"  # key prefix of self-signed stand-ins (never a valid hostname character)


class ChallengeContexts(Protocol):
    """What the TLS-ALPN-01 responder offers the edge (see ``challenges.TlsAlpn01Responder``)."""

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None: ...


async def choose_context(
    hello: ClientHello, cache: CertCache, tls_alpn01: ChallengeContexts | None = None
) -> ssl.SSLContext | None:
    """The context to start TLS with for ``hello``, or None (answer ``unrecognized_name``).

    An ``acme-tls/1``-only hello is a TLS-ALPN-01 validation: it gets the challenge context for
    exactly its name or nothing, never a cached or wildcard certificate.
    """
    if hello.is_acme_tls_alpn:
        return None if tls_alpn01 is None else tls_alpn01.context_for(hello.server_name)
    return await cache.prepare(hello.server_name)


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached name: a context to serve, or a negative entry with its expiry."""

    context: ssl.SSLContext | None
    revision: int = 0  # catalog mod_revision it was built from (0: none)
    fingerprint: str = ""
    not_after: float = math.inf  # wall clock; positive entries stop serving after this
    expires: float = math.inf  # monotonic; negative entries are forgotten after this
    error: str = ""


class CertCache:
    """Bounded LRU of ready ``SSLContext``s, filled on demand, invalidated by the catalog watch."""

    def __init__(
        self,
        catalog: Catalog,
        seal: c.KeySeal,
        *,
        max_entries: int = 1024,
        negative_ttl: float = 2.0,
        self_signed: Callable[[str], bool] | None = None,
        default_name: str | None = None,
        warm: bool = False,
        alpn: Sequence[str] = DEFAULT_ALPN,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.seal = seal
        self.max_entries = max_entries
        self.negative_ttl = negative_ttl
        self.self_signed = self_signed
        self.default_name = default_name
        self.warm = warm
        self.alpn = tuple(alpn)
        self.clock = clock
        self.wall = wall
        self.ready = asyncio.Event()  # set once the catalog watch is established
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Entry]] = {}
        self._raced: set[str] = set()
        self._background: set[asyncio.Task[object]] = set()
        self.server_context = self._make_server_context()

    # -- the handshake side (synchronous, no I/O) ------------------------------------------------
    def lookup(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for ``server_name`` if the cache already knows it; never does I/O."""
        name = self._name(server_name)
        if name is None:
            return None
        for candidate in lookup_names(name):
            entry = self._get(candidate)
            if entry is None:
                return self._get_self_signed(name)
            if entry.context is not None:
                return entry.context
        return self._get_self_signed(name)

    async def prepare(self, server_name: str | None) -> ssl.SSLContext | None:
        """Make sure the cache knows ``server_name`` (loading from the catalog); its context."""
        name = self._name(server_name)
        if name is None:
            return None
        for candidate in lookup_names(name):
            entry = self._get(candidate) or await self._load(candidate)
            if entry.context is not None:
                return entry.context
        if self.self_signed is not None and self.self_signed(name):
            return self._get_self_signed(name) or await self._make_self_signed(name)
        return None

    def rotate_ticket_keys(self) -> None:
        """Fresh session-ticket keys: new base context, every cached context rebuilt.

        OpenSSL keeps ticket keys per ``SSLContext``, so rotating means new contexts. Cached
        names keep serving their current context until the rebuilt one replaces it; tickets
        issued before the rotation stop resuming (those clients do one full handshake).
        Call it from a timer (e.g. every 12 h).
        """
        self.server_context = self._make_server_context()
        for name, entry in list(self._entries.items()):
            if entry.context is not None and not name.startswith(_SELF):
                self._spawn(self._load(name))

    def _make_server_context(self) -> ssl.SSLContext:
        ctx = base_context(self.alpn)
        ctx.sni_callback = self._sni_callback
        return ctx

    def _sni_callback(
        self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        target = self.lookup(server_name)
        if target is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_obj.context = target
        return None

    def _name(self, server_name: str | None) -> str | None:
        name = (server_name or self.default_name or "").lower()
        return name if name and host_error(name) is None else None

    def _get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.context is None and entry.expires <= self.clock():
            del self._entries[key]
            return None
        if entry.context is not None and entry.not_after <= self.wall():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: str, entry: Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    # -- filling from the catalog ---------------------------------------------------------------
    async def _load(self, name: str) -> Entry:
        future = self._inflight.get(name)
        if future is None:
            future = asyncio.ensure_future(self._fill(name))
            self._inflight[name] = future
            future.add_done_callback(lambda f: self._done(name, f))
        return await asyncio.shield(future)

    def _done(self, name: str, future: asyncio.Future[Entry]) -> None:
        if self._inflight.get(name) is future:
            del self._inflight[name]

    async def _fill(self, name: str) -> Entry:
        entry = Entry(None)
        for _ in range(5):
            self._raced.discard(name)
            entry = await self._fetch(name)
            if name not in self._raced:
                self._put(name, entry)
                return entry
        return entry  # changing faster than it loads: serve this once, cache nothing

    async def _fetch(self, name: str) -> Entry:
        expires = self.clock() + self.negative_ttl
        try:
            record = await self.catalog.store.get(c.cert_key(name))
            if record is None:
                return Entry(None, expires=expires, error="no certificate")
            cert = c.decode_cert(record.value)
            if not cert.servable:
                return Entry(None, record.mod_revision, expires=expires, error=cert.status)
            if cert.not_after and cert.not_after <= self.wall():
                return Entry(None, record.mod_revision, expires=expires, error="expired")
            key_pem = self.seal.open(c.cert_key(name), cert.key_sealed)
            ctx = await asyncio.get_running_loop().run_in_executor(
                None, context_from_pem, cert.chain_pem.encode(), key_pem, self.alpn
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # catalog down, key does not open, chain does not load
            log.warning("certificate for %s is not usable: %s", name, exc)
            return Entry(None, expires=expires, error=str(exc) or type(exc).__name__)
        return Entry(
            ctx,
            record.mod_revision,
            cert.fingerprint,
            cert.not_after or math.inf,
        )

    # -- self-signed stand-ins ------------------------------------------------------------------
    def _get_self_signed(self, name: str) -> ssl.SSLContext | None:
        entry = self._get(_SELF + name)
        return None if entry is None else entry.context

    async def _make_self_signed(self, name: str) -> ssl.SSLContext:
        def build() -> tuple[ssl.SSLContext, pki.CertInfo]:
            chain, key = pki.self_signed(name, self.wall())
            return context_from_pem(chain, key, self.alpn), pki.inspect_chain(chain)

        ctx, info = await asyncio.get_running_loop().run_in_executor(None, build)
        self._put(_SELF + name, Entry(ctx, 0, info.fingerprint, info.not_after))
        return ctx

    # -- following the catalog ------------------------------------------------------------------
    async def run(self) -> None:
        """Follow ``certs/`` until cancelled; every change invalidates the names it touches."""
        try:
            while True:
                entries, revision = await self.catalog.store.range(c.CERTS_PREFIX)
                self.invalidate_all()
                if self.warm:
                    for entry in entries[: self.max_entries]:
                        self._spawn(self._load(c.hostname_of(entry.key)))
                self.ready.set()
                try:
                    async for ev in self.catalog.store.watch(c.CERTS_PREFIX, revision + 1):
                        self.invalidate(c.hostname_of(ev.key))
                except Compacted:
                    continue
                return
        finally:
            for task in list(self._background):
                task.cancel()

    def invalidate(self, name: str) -> None:
        """Forget ``name`` (a certificate name) now; reload it in the background if it was used."""
        if name in self._inflight:
            self._raced.add(name)
        old = self._entries.pop(name, None)
        for key in [k for k in self._entries if k.startswith(_SELF)]:
            if name_matches(name, key[1:]):
                del self._entries[key]
        if old is not None and old.context is not None:
            self._spawn(self._load(name))

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def invalidate_all(self) -> None:
        self._raced.update(self._inflight)
        self._entries.clear()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
