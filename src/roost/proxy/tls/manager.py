"""The renewal loop: issues pending ACME certificates and renews them before they expire.

Data flow: ``certs/`` in the catalog --(watch wakes the loop)--> :func:`plan` picks the names
due now --> claim each with compare-and-set (``claimed_by``/``claim_until``, so two nodes never
work on one name; a crashed node's claim simply expires) --> :class:`AcmeIssuer` --> the new
chain and sealed key are written back; the edges' cert caches see the write through their own
watch and serve it at once.

Timing: a new certificate is renewed from ``not_after - min(30 days, lifetime / 3)``. A failed
attempt keeps the old chain serving (status stays ``ready``) or marks the record ``failed``,
stores the reason in ``last_error`` and retries after 1 min, 2, 4, ... capped at 6 h.
Run it on nodes whose edge answers the challenges (the responders given to the issuer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable

import msgspec

from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.catalog.store import Compacted
from roost.proxy.tls.acme_client import AcmeIssuer, IssueError, describe

log = logging.getLogger("roost.proxy.tls.manager")

RENEW_BEFORE = 30 * 86400.0


def renew_time(not_before: float, not_after: float, renew_before: float = RENEW_BEFORE) -> float:
    """When to start renewing: ``renew_before`` ahead of expiry, or at 2/3 of a short lifetime."""
    lifetime = max(0.0, not_after - not_before)
    return not_after - min(renew_before, lifetime / 3)


def is_due(cert: c.Certificate, now: float, node_id: str) -> bool:
    """True if ``node_id`` should work on ``cert`` now."""
    if cert.source != "acme" or cert.hostname.startswith("*."):
        return False
    if cert.claimed_by and cert.claim_until > now and cert.claimed_by != node_id:
        return False
    if cert.status in ("pending", "issuing"):
        return cert.status == "pending" or cert.claim_until <= now
    return cert.renew_after <= now


def plan(certs: Iterable[c.Certificate], now: float, node_id: str) -> tuple[list[str], float]:
    """Names due now, and the earliest later time something may become due (inf if never)."""
    due: list[str] = []
    next_at = math.inf
    for cert in certs:
        if cert.source != "acme" or cert.hostname.startswith("*."):
            continue
        if is_due(cert, now, node_id):
            due.append(cert.hostname)
        elif cert.claimed_by and cert.claim_until > now:
            next_at = min(next_at, cert.claim_until)  # in case its worker died
        elif cert.status in ("ready", "failed"):
            next_at = min(next_at, cert.renew_after)
    return due, next_at


class CertManager:
    """Keeps every ACME certificate in the catalog issued and fresh."""

    def __init__(
        self,
        catalog: Catalog,
        issuer: AcmeIssuer,
        node_id: str,
        *,
        renew_before: float = RENEW_BEFORE,
        claim_ttl: float = 600.0,
        backoff_base: float = 60.0,
        backoff_max: float = 6 * 3600.0,
        concurrency: int = 4,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.issuer = issuer
        self.seal = issuer.seal
        self.node_id = node_id
        self.renew_before = renew_before
        self.claim_ttl = claim_ttl
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.wall = wall
        self._limit = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._working: set[str] = set()

    def wake(self) -> None:
        """Look at the catalog again now (e.g. right after ``certs add``)."""
        self._wake.set()

    async def run(self) -> None:
        """Issue and renew until cancelled (the node cancels it on shutdown)."""
        follower = asyncio.ensure_future(self._follow())
        try:
            while True:
                self._wake.clear()
                now = self.wall()
                due, next_at = plan(await c.list_certs(self.catalog), now, self.node_id)
                due = [name for name in due if name not in self._working]
                if due:
                    await asyncio.gather(*(self._bounded(name) for name in due))
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(max(next_at - now, 0.05), 3600))
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _follow(self) -> None:
        while True:
            _, revision = await self.catalog.store.range(c.CERTS_PREFIX)
            self._wake.set()
            try:
                async for _ in self.catalog.store.watch(c.CERTS_PREFIX, revision + 1):
                    self._wake.set()
            except Compacted:
                continue
            return

    async def _bounded(self, hostname: str) -> None:
        async with self._limit:
            try:
                await self.attempt(hostname)
            except Exception:  # a catalog hiccup must not end the loop
                log.exception("certificate attempt for %s failed unexpectedly", hostname)

    async def attempt(self, hostname: str) -> c.Certificate | None:
        """Claim ``hostname``, issue, store the outcome; None if it was not ours to do."""
        if hostname in self._working:
            return None
        self._working.add(hostname)
        try:
            return await self._attempt(hostname)
        finally:
            self._working.discard(hostname)

    async def _attempt(self, hostname: str) -> c.Certificate | None:
        now = self.wall()

        def claim(cert: c.Certificate) -> c.Certificate | None:
            if not is_due(cert, now, self.node_id):
                return None
            status = cert.status if cert.servable else "issuing"
            return _replace(
                cert, status=status, claimed_by=self.node_id, claim_until=now + self.claim_ttl,
                updated_at=now,
            )  # fmt: skip

        if await c.update_cert(self.catalog, hostname, claim) is None:
            return None
        try:
            issued = await self.issuer.issue(hostname)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, IssueError) else describe(exc)
            log.warning("certificate for %s not issued: %s", hostname, reason)
            return await self._store_failure(hostname, reason)
        info = issued.info
        sealed = self.seal.seal(c.cert_key(hostname), issued.key_pem)
        done = self.wall()

        def store(cert: c.Certificate) -> c.Certificate | None:
            if cert.claimed_by != self.node_id or cert.source != "acme":
                return None  # replaced (import, delete + add) while we worked: theirs wins
            return _replace(
                cert,
                status="ready",
                chain_pem=issued.chain_pem.decode(),
                key_sealed=sealed,
                issuer=info.issuer,
                not_before=info.not_before,
                not_after=info.not_after,
                fingerprint=info.fingerprint,
                renew_after=renew_time(info.not_before, info.not_after, self.renew_before),
                last_error="",
                failures=0,
                claimed_by="",
                claim_until=0.0,
                updated_at=done,
            )

        stored = await c.update_cert(self.catalog, hostname, store)
        if stored is not None:
            log.info("certificate for %s issued by %s", hostname, info.issuer)
        return stored

    async def _store_failure(self, hostname: str, reason: str) -> c.Certificate | None:
        now = self.wall()

        def fail(cert: c.Certificate) -> c.Certificate | None:
            if cert.claimed_by != self.node_id:
                return None
            failures = cert.failures + 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** min(failures - 1, 30))
            return _replace(
                cert,
                status="ready" if cert.servable else "failed",
                last_error=reason,
                failures=failures,
                renew_after=now + delay,
                claimed_by="",
                claim_until=0.0,
                updated_at=now,
            )

        return await c.update_cert(self.catalog, hostname, fail)


def _replace(cert: c.Certificate, **changes: object) -> c.Certificate:
    return msgspec.structs.replace(cert, **changes)
