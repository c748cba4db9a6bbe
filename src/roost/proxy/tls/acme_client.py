"""Getting a certificate from an ACME CA (RFC 8555) with the ``acme`` library.

One :meth:`AcmeIssuer.issue` call: account (registered once per CA directory and kept, sealed,
in the catalog) -> new order for one hostname -> for each pending authorization, publish the
chosen challenge in the edge's responder (TLS-ALPN-01 first, then HTTP-01), answer it, poll ->
finalize with a CSR for a fresh ECDSA P-256 key -> the full chain and the key.

``acme`` is synchronous (``requests``), so the network part runs in a worker thread; catalog
reads and writes stay on the event loop. Nothing here writes ``certs/``: the renewal manager
(:mod:`.manager`) decides when to call ``issue`` and stores the result.

Errors come out as :class:`IssueError` with a one-line ``reason`` fit for ``last_error``
(the CA's problem detail, e.g. a validation failure with the address it tried).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests
from acme import challenges, client, errors, messages
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

import roost
from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.proxy.tls import pki
from roost.proxy.tls.challenges import TLSALPN01, Http01Responder, TlsAlpn01Responder

log = logging.getLogger("roost.proxy.tls.acme")

CHALLENGE_TYPES = ("tls-alpn-01", "http-01")


class IssueError(Exception):
    """Issuance failed; ``reason`` is one line for ``Certificate.last_error``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Issued:
    """A new certificate: PEM chain (leaf first), PEM key, and what the leaf says."""

    chain_pem: bytes
    key_pem: bytes
    info: pki.CertInfo


class AcmeIssuer:
    """Issues certificates for single hostnames from one ACME directory."""

    def __init__(
        self,
        catalog: Catalog,
        seal: c.KeySeal,
        directory_url: str,
        *,
        http01: Http01Responder | None = None,
        tls_alpn01: TlsAlpn01Responder | None = None,
        challenge_types: Sequence[str] = CHALLENGE_TYPES,
        contact: Sequence[str] = (),
        verify: bool | str = True,
        timeout: float = 90.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.seal = seal
        self.directory_url = directory_url
        self.http01 = http01
        self.tls_alpn01 = tls_alpn01
        self.challenge_types = tuple(
            t
            for t in challenge_types
            if (t != "http-01" or http01 is not None)
            and (t != "tls-alpn-01" or tls_alpn01 is not None)
        )
        if not self.challenge_types:
            raise ValueError("no challenge responder to validate with")
        self.contact = tuple(contact)
        self.verify = verify
        self.timeout = timeout
        self.wall = wall
        self._account_lock = asyncio.Lock()

    async def issue(self, hostname: str) -> Issued:
        """Get a certificate for ``hostname``; ``IssueError`` says why not."""
        try:
            account_pem, regr = await self._account()
            cert_key = pki.generate_key()
            jwk = JWKEC(key=pki.load_key(account_pem))
            chain, new_regr = await asyncio.to_thread(
                self._issue_sync, hostname, jwk, regr, cert_key
            )
        except IssueError:
            raise
        except Exception as exc:
            raise IssueError(describe(exc)) from exc
        if new_regr is not None:
            await self._save_account(account_pem, new_regr)
        chain_pem = chain.encode()
        try:
            info = pki.inspect_chain(chain_pem)
        except ValueError as exc:
            raise IssueError(f"the CA returned an unreadable chain: {exc}") from None
        return Issued(chain_pem, pki.key_to_pem(cert_key), info)

    # -- account --------------------------------------------------------------------------------
    async def _account(self) -> tuple[bytes, messages.RegistrationResource]:
        """The account key (PEM) and registration, registering once per directory."""
        async with self._account_lock:  # concurrent first issuances share one registration
            stored = await c.get_account(self.catalog, self.directory_url)
            if stored is not None:
                context = c.account_key(self.directory_url)
                try:
                    key_pem = self.seal.open(context, stored.key_sealed)
                    regr = messages.RegistrationResource.json_loads(stored.registration)
                    return key_pem, regr
                except (ValueError, DeserializationError) as exc:
                    log.warning("stored ACME account unusable (%s); registering a new one", exc)
            key_pem = pki.key_to_pem(pki.generate_key())
            jwk = JWKEC(key=pki.load_key(key_pem))
            regr = await asyncio.to_thread(self._register_sync, jwk)
            await self._save_account(key_pem, regr)
            return key_pem, regr

    async def _save_account(self, key_pem: bytes, regr: messages.RegistrationResource) -> None:
        context = c.account_key(self.directory_url)
        account = c.AcmeAccount(
            directory=self.directory_url,
            uri=regr.uri or "",
            registration=regr.json_dumps(),
            key_sealed=self.seal.seal(context, key_pem),
            contact=self.contact,
            created_at=self.wall(),
        )
        await c.put_account(self.catalog, account)

    # -- the protocol (worker thread) -----------------------------------------------------------
    def _client(self, jwk: JWKEC) -> client.ClientV2:
        net = client.ClientNetwork(
            jwk,
            alg=ES256,
            verify_ssl=self.verify,  # type: ignore[arg-type]  # requests takes a CA path too
            user_agent=f"roost/{roost.__version__}",
            timeout=30,
        )
        return client.ClientV2(client.ClientV2.get_directory(self.directory_url, net), net)

    def _register_sync(self, jwk: JWKEC) -> messages.RegistrationResource:
        return self._register(self._client(jwk))

    def _issue_sync(
        self,
        hostname: str,
        jwk: JWKEC,
        regr: messages.RegistrationResource,
        cert_key: pki.PrivateKey,
    ) -> tuple[str, messages.RegistrationResource | None]:
        acme = self._client(jwk)
        acme.net.account = regr
        new_regr = None
        csr = pki.make_csr(cert_key, [hostname])
        try:
            order = acme.new_order(csr)
        except messages.Error as exc:
            if exc.code != "accountDoesNotExist":
                raise
            new_regr = self._register(acme)  # the CA forgot us (e.g. a test CA restarted)
            order = acme.new_order(csr)
        cleanups: list[Callable[[], None]] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                cleanups.append(self._answer(acme, jwk, authz))
            deadline = dt.datetime.now() + dt.timedelta(seconds=self.timeout)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for cleanup in cleanups:
                cleanup()
        if not order.fullchain_pem:
            raise IssueError("the CA finalized the order without a certificate")
        return order.fullchain_pem, new_regr

    def _register(self, acme: client.ClientV2) -> messages.RegistrationResource:
        emails = [m.removeprefix("mailto:") for m in self.contact]
        body = messages.NewRegistration.from_data(
            email=",".join(emails) or None, terms_of_service_agreed=True
        )
        return acme.new_account(body)

    def _answer(
        self, acme: client.ClientV2, jwk: JWKEC, authz: messages.AuthorizationResource
    ) -> Callable[[], None]:
        """Publish and answer one challenge of ``authz``; returns how to unpublish it."""
        name = authz.body.identifier.value
        offered = {ch.chall.typ: ch for ch in authz.body.challenges}
        typ = next((t for t in self.challenge_types if t in offered), None)
        if typ is None:
            raise IssueError(
                f"the CA offers {', '.join(sorted(offered))} for {name}; "
                f"we answer {', '.join(self.challenge_types)}"
            )
        challb = offered[typ]
        chall = challb.chall
        if typ == TLSALPN01.typ and self.tls_alpn01 is not None:
            assert isinstance(chall, challenges.KeyAuthorizationChallenge)
            responder = self.tls_alpn01
            responder.add(name, chall.key_authorization(jwk))

            def cleanup() -> None:
                responder.remove(name)

        elif isinstance(chall, challenges.HTTP01) and self.http01 is not None:
            http01 = self.http01
            token = chall.encode("token")
            http01.add(token, chall.validation(jwk))

            def cleanup() -> None:
                http01.remove(token)

        else:  # pragma: no cover - challenge_types only lists what we can answer
            raise IssueError(f"cannot answer {typ}")
        log.info("answering %s for %s", typ, name)
        acme.answer_challenge(challb, chall.response(jwk))
        return cleanup


def describe(exc: BaseException) -> str:
    """One line on why issuance failed, from the CA's problem documents where there are some."""
    if isinstance(exc, errors.ValidationError):
        details = []
        for authzr in exc.failed_authzrs:
            for ch in authzr.body.challenges:
                if ch.error is not None:
                    name = authzr.body.identifier.value
                    details.append(f"{name}: {ch.chall.typ}: {_problem(ch.error)}")
        return "validation failed: " + ("; ".join(details) or "no detail from the CA")
    if isinstance(exc, messages.Error):
        return _problem(exc)
    if isinstance(exc, errors.TimeoutError):
        return "timed out waiting for the CA"
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the ACME CA: {type(exc).__name__}: {exc}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def _problem(err: messages.Error) -> str:
    code = err.code or (err.typ or "error").rsplit(":", 1)[-1]
    return f"{code}: {err.detail or err.title or 'no detail'}"[:500]
