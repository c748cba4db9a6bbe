"""Keys, CSRs and certificates for the edge (``cryptography``): make them, read them, check them.

ECDSA P-256 is the default key everywhere (fast handshakes, small certificates). Times are
Unix seconds (floats) so records and tests never juggle timezones.

The TLS-ALPN-01 challenge certificate (RFC 8737) is built here too: a self-signed certificate
for exactly the name being validated, carrying the critical ``id-pe-acmeIdentifier`` extension
(OID 1.3.6.1.5.5.7.1.31) whose value is the DER OCTET STRING of SHA-256(key authorization).
The ``acme`` library used to ship a generator for it but removed TLS-ALPN-01 support in 2025,
so it lives here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from roost.proxy.tls.hostnames import name_matches

__all__ = [
    "ACME_IDENTIFIER_OID",
    "CertInfo",
    "generate_key",
    "inspect_chain",
    "key_to_pem",
    "load_key",
    "make_csr",
    "name_matches",
    "self_signed",
    "tls_alpn_challenge_cert",
    "validate_pair",
]

ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
PrivateKey = CertificateIssuerPrivateKeyTypes
_SIGNING_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey,
                 ed448.Ed448PrivateKey)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What matters about a chain's leaf certificate."""

    names: tuple[str, ...]  # DNS subjectAltNames, lower case
    issuer: str
    not_before: float
    not_after: float
    fingerprint: str  # SHA-256 of the leaf's DER, hex
    chain_length: int


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (callers encrypt before storing)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> PrivateKey:
    """Read a PEM private key; ``ValueError`` if it is not one we can sign with."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a readable unencrypted PEM private key ({exc})") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def make_csr(key: PrivateKey, hostnames: list[str]) -> bytes:
    """A PEM CSR naming ``hostnames`` in its subjectAltName (SHA-256 signature)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False
        )
        .sign(key, _digest(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def self_signed(
    hostname: str,
    now: float,
    *,
    days: float = 90.0,
    key: PrivateKey | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> tuple[bytes, bytes]:
    """A self-signed leaf for ``hostname``: ``(chain_pem, key_pem)``, valid from ``now - 1h``."""
    key = key or generate_key()
    start = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(hours=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days, hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    for ext, critical in extensions or []:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(key, _digest(key))
    return cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key)


def tls_alpn_challenge_cert(
    hostname: str, key_authorization: str, now: float
) -> tuple[bytes, bytes]:
    """The RFC 8737 challenge certificate for ``hostname``: ``(cert_pem, key_pem)``."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    value = b"\x04\x20" + digest  # DER: OCTET STRING, 32 bytes
    ext = x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, value)
    return self_signed(hostname, now, days=7, extensions=[(ext, True)])


def inspect_chain(chain_pem: bytes) -> CertInfo:
    """Read a PEM chain (leaf first); ``ValueError`` if it holds no certificate."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate chain ({exc})") from None
    leaf = certs[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        names=names,
        issuer=leaf.issuer.rfc4514_string(),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        chain_length=len(certs),
    )


def validate_pair(chain_pem: bytes, key_pem: bytes, hostname: str, now: float) -> CertInfo:
    """Check an uploaded chain and key belong together and cover ``hostname``.

    ``ValueError`` names the first problem: unreadable PEM, key not matching the leaf, hostname
    not in the leaf's subjectAltNames, or a leaf that is expired or not yet valid.
    """
    info = inspect_chain(chain_pem)
    key = load_key(key_pem)
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        raise ValueError("the private key does not match the certificate")
    if not any(name_matches(n, hostname) for n in info.names):
        names = ", ".join(info.names) or "none"
        raise ValueError(f"{hostname} is not among the certificate's names ({names})")
    if info.not_after <= now:
        raise ValueError("the certificate has expired")
    if info.not_before > now:
        raise ValueError("the certificate is not valid yet")
    return info


def _digest(key: PrivateKey) -> hashes.SHA256 | None:
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
