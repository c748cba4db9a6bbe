"""TLS certificates in the catalog: one ``Certificate`` record per hostname, private keys sealed.

Keys::

    certs/<hostname>                 Certificate (chain PEM, sealed key, dates, status)
    acme/accounts/<directory id>     AcmeAccount (one ACME account per CA directory URL)

``hostname`` is lower case; a wildcard is stored as ``certs/*.example.com``.

**Private keys at rest.** A record never holds a key in clear: ``key_sealed`` is
``v1:`` + base64(nonce || AES-256-GCM ciphertext), with the hostname (or account id) as
associated data so a sealed key copied into another record does not open. The AES key is
derived with HKDF-SHA256 from a 32-byte node secret kept in ``<data dir>/certs.secret``
(mode 0600, created on first start). Why this choice: the catalog (SQLite file, later etcd) is
read by every node and copied into backups, while the secret stays a file on the edges; a leak of
the catalog alone reveals no key. In a cluster every edge needs the same secret file, exactly
like the backhaul's mTLS material. The API never returns keys (``public_view``).

Status of a record: ``pending`` (asked for, not tried yet) -> ``issuing`` (claimed by a node's
issuer until ``claim_until``) -> ``ready`` (chain present) | ``failed`` (``last_error`` says why;
retried at ``renew_after`` with backoff). A ``ready`` ACME certificate is renewed from
``renew_after`` (30 days before ``not_after``); while renewing it keeps serving its old chain.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.store import CompareFailed

CertSource = Literal["acme", "uploaded", "self-signed"]
CertStatus = Literal["pending", "issuing", "ready", "failed"]

CERTS_PREFIX = "certs/"
ACCOUNTS_PREFIX = "acme/accounts/"
SECRET_FILE = "certs.secret"
_SEAL_INFO = b"roost catalog private-key seal v1"


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    """One hostname's certificate: what the edge serves and what the issuer works on."""

    hostname: str
    app: str = ""
    source: CertSource = "acme"
    status: CertStatus = "pending"
    chain_pem: str = ""  # leaf first, then intermediates
    key_sealed: str = ""  # see module doc; never the clear key
    issuer: str = ""
    not_before: float = 0.0
    not_after: float = 0.0
    fingerprint: str = ""  # SHA-256 of the leaf, hex
    renew_after: float = 0.0  # when the issuer should next act on it (renewal or retry)
    last_error: str = ""
    failures: int = 0  # consecutive failed attempts (drives the backoff)
    claimed_by: str = ""  # node whose issuer is working on it
    claim_until: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def servable(self) -> bool:
        """True when it has a chain and a key the edge can load."""
        return bool(self.chain_pem and self.key_sealed)


class AcmeAccount(msgspec.Struct, frozen=True, kw_only=True):
    """An ACME account: its URI at the CA, its registration (JSON) and its sealed key (PEM)."""

    directory: str
    uri: str
    registration: str  # acme.messages.RegistrationResource as JSON
    key_sealed: str
    contact: tuple[str, ...] = ()
    created_at: float = 0.0


def cert_key(hostname: str) -> str:
    return f"{CERTS_PREFIX}{hostname}"


def hostname_of(key: str) -> str:
    """``certs/<hostname>`` -> ``<hostname>``."""
    return key[len(CERTS_PREFIX) :]


def account_key(directory: str) -> str:
    return f"{ACCOUNTS_PREFIX}{hashlib.sha256(directory.encode()).hexdigest()[:16]}"


def decode_cert(data: bytes) -> Certificate:
    return r.decode(data, Certificate)


def public_view(cert: Certificate) -> dict[str, Any]:
    """The record as the API shows it: everything but the sealed key."""
    data = msgspec.to_builtins(cert)
    data.pop("key_sealed", None)
    return dict(data)


# -- sealing private keys -----------------------------------------------------------------------
class KeySeal:
    """Seals and opens private keys with a key derived from the node secret (AES-256-GCM)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the certificate secret must be at least 32 bytes")
        key = HKDF(hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(secret)
        self._aead = AESGCM(key)

    def seal(self, context: str, plaintext: bytes) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def open(self, context: str, token: str) -> bytes:
        """The clear bytes; ``ValueError`` if the token is damaged or sealed for another record."""
        if not token.startswith("v1:"):
            raise ValueError("unknown sealed-key format")
        try:
            raw = base64.b64decode(token[3:], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except Exception as exc:  # binascii.Error, InvalidTag
            raise ValueError("sealed key does not open with this node's secret") from exc


def load_or_create_secret(data_dir: Path) -> bytes:
    """The node's certificate secret (``<data dir>/certs.secret``), created 0600 on first use."""
    path = data_dir / SECRET_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


# -- typed access -------------------------------------------------------------------------------
async def get_cert(catalog: Catalog, hostname: str) -> Certificate | None:
    entry = await catalog.store.get(cert_key(hostname))
    return None if entry is None else decode_cert(entry.value)


async def list_certs(catalog: Catalog) -> list[Certificate]:
    entries, _ = await catalog.store.range(CERTS_PREFIX)
    return [decode_cert(e.value) for e in entries]


async def create_cert(catalog: Catalog, cert: Certificate) -> bool:
    """Store ``cert`` if its hostname has no record yet; False if one exists."""
    try:
        await catalog.store.put(cert_key(cert.hostname), r.encode(cert), prev_revision=0)
    except CompareFailed:
        return False
    return True


async def put_cert(catalog: Catalog, cert: Certificate) -> None:
    await catalog.store.put(cert_key(cert.hostname), r.encode(cert))


async def update_cert(
    catalog: Catalog,
    hostname: str,
    fn: Callable[[Certificate], Certificate | None],
    *,
    attempts: int = 50,
) -> Certificate | None:
    """Compare-and-set ``fn`` over the record; None if there is none (or ``fn`` declined).

    ``fn`` returns the new record, or None to leave it as it is (then None is returned too,
    so callers can tell "I changed it" from "I did not").
    """
    key = cert_key(hostname)
    for _ in range(attempts):
        entry = await catalog.store.get(key)
        if entry is None:
            return None
        new = fn(decode_cert(entry.value))
        if new is None:
            return None
        try:
            await catalog.store.put(key, r.encode(new), prev_revision=entry.mod_revision)
        except CompareFailed:
            continue
        return new
    raise RuntimeError(f"catalog: too many conflicting writes to {key}")


async def delete_cert(catalog: Catalog, hostname: str) -> bool:
    return await catalog.store.delete(cert_key(hostname))


async def get_account(catalog: Catalog, directory: str) -> AcmeAccount | None:
    entry = await catalog.store.get(account_key(directory))
    return None if entry is None else r.decode(entry.value, AcmeAccount)


async def put_account(catalog: Catalog, account: AcmeAccount) -> None:
    await catalog.store.put(account_key(account.directory), r.encode(account))
