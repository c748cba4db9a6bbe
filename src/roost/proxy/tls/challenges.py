"""ACME challenge responders the edge consults, and the TLS-ALPN-01 challenge type for ``acme``.

Two responders, filled by the issuer while an authorization is pending and emptied after:

- :class:`Http01Responder` answers ``GET /.well-known/acme-challenge/<token>`` on a plain-HTTP
  port with the key authorization (``response_for(path)``; None means "not a challenge of
  ours": the edge routes the request as usual).
- :class:`TlsAlpn01Responder` gives the RFC 8737 challenge certificate for *exactly* the name
  being validated (``context_for(server_name)``). The edge calls it when a ClientHello offers only
  ALPN ``acme-tls/1`` and never falls back to the cert cache or a wildcard for such a handshake;
  a name with no pending challenge gets ``None`` (answer with an alert).

Both are plain dicts behind small methods: the issuer (in a worker thread) writes them, the event
loop reads them; single dict operations are atomic under the GIL.

The ``acme`` library dropped TLS-ALPN-01 in 2025 (certbot issue 10274), so the challenge and
response types are registered here under ``tls-alpn-01`` (only if the library has none).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

from acme import challenges
from josepy.jwk import JWK

from roost.proxy.tls import pki
from roost.proxy.tls.clienthello import ACME_TLS_ALPN
from roost.proxy.tls.contexts import context_from_pem

__all__ = ["ACME_PREFIX", "TLSALPN01", "Http01Responder", "TLSALPN01Response", "TlsAlpn01Responder"]

ACME_PREFIX = "/.well-known/acme-challenge/"


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """Response to a tls-alpn-01 challenge (posted as ``{}``: the proof is the certificate)."""

    typ = "tls-alpn-01"


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """The tls-alpn-01 challenge (RFC 8737)."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **kwargs: Any) -> str:
        """The key authorization, whose SHA-256 goes into the challenge certificate."""
        return self.key_authorization(account_key)


if TLSALPN01.typ not in challenges.Challenge.TYPES:
    challenges.ChallengeResponse.register(TLSALPN01Response)
    challenges.Challenge.register(TLSALPN01)


class Http01Responder:
    """Key authorizations by token, for ``/.well-known/acme-challenge/<token>``."""

    def __init__(self) -> None:
        self._tokens: dict[str, bytes] = {}

    def add(self, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization.encode()

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    def response_for(self, path: str) -> bytes | None:
        """The body to answer ``GET path`` with (200, text/plain), or None if not ours."""
        if not path.startswith(ACME_PREFIX):
            return None
        return self._tokens.get(path[len(ACME_PREFIX) :].split("?", 1)[0])

    def __len__(self) -> int:
        return len(self._tokens)


class TlsAlpn01Responder:
    """Challenge ``SSLContext``s (ALPN ``acme-tls/1`` only) by exact, lower-case hostname."""

    def __init__(self, *, wall: Callable[[], float] = time.time) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.wall = wall

    def add(self, hostname: str, key_authorization: str) -> None:
        """Make and publish the challenge certificate for ``hostname`` (blocking, ~10 ms)."""
        cert, key = pki.tls_alpn_challenge_cert(hostname, key_authorization, self.wall())
        self._contexts[hostname.lower()] = context_from_pem(cert, key, (ACME_TLS_ALPN,))

    def remove(self, hostname: str) -> None:
        self._contexts.pop(hostname.lower(), None)

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The challenge context for exactly ``server_name``; never a wildcard or a real cert."""
        return None if server_name is None else self._contexts.get(server_name.lower())

    def __len__(self) -> int:
        return len(self._contexts)
