"""Server-side ``ssl.SSLContext``s with Roost's TLS policy, built from PEM bytes in memory.

Policy (Mozilla "intermediate", minus DHE and CBC): TLS 1.2 and 1.3 only; TLS 1.2 suites are
ECDHE with AES-GCM or ChaCha20-Poly1305 (forward secret AEADs), TLS 1.3 suites are OpenSSL's
defaults (all AEAD); no compression, no renegotiation; ALPN ``h2`` then ``http/1.1``; session
tickets on (TLS 1.2 tickets and two TLS 1.3 tickets per handshake).

Ticket keys live inside each ``SSLContext`` (OpenSSL makes them at random when the context is
created). With the SNI callback design every handshake starts on the one base context of the
cert cache, so tickets are issued and checked with the base context's keys and resume across
hostnames; rotating the keys means replacing the base context (``CertCache.rotate_ticket_keys``).

``ssl`` can only load certificates from files, so the chain goes to a temporary file and the key
to another one *encrypted* with a one-time random password (the clear key never touches a
disk, not even tmpfs); both are deleted before this returns.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization

from roost.proxy.tls import pki

__all__ = ["DEFAULT_ALPN", "TLS12_CIPHERS", "base_context", "context_from_pem"]

DEFAULT_ALPN = ("h2", "http/1.1")
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def base_context(alpn: Sequence[str] = DEFAULT_ALPN) -> ssl.SSLContext:
    """A server context with the policy above and no certificate (yet)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options &= ~ssl.OP_NO_TICKET
    ctx.num_tickets = 2
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def context_from_pem(
    chain_pem: bytes, key_pem: bytes, alpn: Sequence[str] = DEFAULT_ALPN
) -> ssl.SSLContext:
    """A policy context serving ``chain_pem`` with ``key_pem``; ``ValueError`` if they do not load.

    Blocking (~10 ms: file writes plus the key's password derivation): call it from a thread
    when an event loop is running.
    """
    ctx = base_context(alpn)
    password = secrets.token_bytes(24)
    key = pki.load_key(key_pem)
    sealed = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="roost-tls-", dir=_TMP_DIR) as tmp:
        chain_path, key_path = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((chain_path, chain_pem), (key_path, sealed)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(chain_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise ValueError(f"certificate and key do not load: {exc.reason or exc}") from None
    return ctx
