"""Hostname rules, certificate helpers, key sealing, the TLS policy and the ACME responders."""

from __future__ import annotations

import hashlib
import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from roost.catalog import certs as c
from roost.proxy.tls import pki
from roost.proxy.tls.challenges import Http01Responder, TlsAlpn01Responder
from roost.proxy.tls.contexts import base_context, context_from_pem
from roost.proxy.tls.hostnames import lookup_names, name_matches, normalize_hostname


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.EXAMPLE.COM", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("www.example.com", "WWW.example.com", True),
        ("www.example.com", "w.example.com", False),
    ],
)
def test_name_matches(pattern: str, name: str, matches: bool) -> None:
    """One-level, case-insensitive wildcard matching."""
    assert name_matches(pattern, name) is matches


def test_lookup_names_and_normalize() -> None:
    """Exact first, then the one-level wildcard; two-label names have no wildcard."""
    assert lookup_names("a.b.example.com") == ("a.b.example.com", "*.b.example.com")
    assert lookup_names("example.com") == ("example.com",)
    assert normalize_hostname("*.Example.com", allow_wildcard=True) == "*.example.com"
    for bad in ("*.com", "a.*.example.com", "*.example.com"):
        with pytest.raises(ValueError):
            normalize_hostname(bad, allow_wildcard=bad != "*.example.com")


def test_csr_and_default_keys_are_p256() -> None:
    """Keys are ECDSA P-256 and the CSR names the host in its SAN."""
    key = pki.generate_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr(pki.make_csr(key, ["x.example.com"]))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["x.example.com"] and csr.is_signature_valid


def test_tls_alpn_challenge_certificate() -> None:
    """RFC 8737: exactly the name, critical acmeIdentifier = OCTET STRING(SHA-256(keyauth))."""
    cert_pem, _ = pki.tls_alpn_challenge_cert("v.example.com", "tok.thumb", time.time())
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["v.example.com"]
    ext = cert.extensions.get_extension_for_oid(pki.ACME_IDENTIFIER_OID)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()  # type: ignore[attr-defined]


def test_seal_round_trip_and_binding(tmp_path: Path) -> None:
    """Sealed keys open only with the same secret and the same record name."""
    secret = c.load_or_create_secret(tmp_path)
    assert c.load_or_create_secret(tmp_path) == secret and len(secret) == 32
    assert stat.S_IMODE((tmp_path / c.SECRET_FILE).stat().st_mode) == 0o600
    seal = c.KeySeal(secret)
    token = seal.seal("certs/a.example.com", b"PRIVATE")
    assert (
        b"PRIVATE" not in token.encode() and seal.open("certs/a.example.com", token) == b"PRIVATE"
    )
    with pytest.raises(ValueError):
        seal.open("certs/b.example.com", token)  # moved to another record
    with pytest.raises(ValueError):
        c.KeySeal(b"o" * 32).open("certs/a.example.com", token)  # another node secret
    with pytest.raises(ValueError):
        seal.open("certs/a.example.com", token[:-4] + "AAAA")


def test_public_view_has_no_key() -> None:
    """What the API shows never includes the sealed key."""
    view = c.public_view(c.Certificate(hostname="a.example.com", key_sealed="v1:xx"))
    assert "key_sealed" not in view and view["hostname"] == "a.example.com"


def test_policy_refuses_old_tls_and_weak_ciphers() -> None:
    """The server context allows TLS >= 1.2, AEAD suites only, and offers h2 then http/1.1."""
    ctx = base_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    names = {cipher["name"] for cipher in ctx.get_ciphers()}
    assert names and all(
        n.startswith(("ECDHE-", "TLS_")) and ("GCM" in n or "CHACHA20" in n) for n in names
    )
    assert not ctx.options & ssl.OP_NO_TICKET


def test_context_from_pem_rejects_mismatched_pairs() -> None:
    """A chain with the wrong key does not load."""
    chain, _ = pki.self_signed("a.example.com", time.time())
    with pytest.raises(ValueError):
        context_from_pem(chain, pki.key_to_pem(pki.generate_key()))


def test_responders() -> None:
    """HTTP-01 answers only its tokens; TLS-ALPN-01 answers exact names only, acme-tls/1 ALPN."""
    http01 = Http01Responder()
    http01.add("tok", "tok.thumb")
    assert http01.response_for("/.well-known/acme-challenge/tok") == b"tok.thumb"
    assert http01.response_for("/.well-known/acme-challenge/other") is None
    assert http01.response_for("/tok") is None
    http01.remove("tok")
    assert http01.response_for("/.well-known/acme-challenge/tok") is None
    tls = TlsAlpn01Responder()
    tls.add("V.example.com", "tok.thumb")
    assert tls.context_for("v.example.com") is not None
    assert tls.context_for("w.example.com") is None and tls.context_for(None) is None
    tls.remove("v.example.com")
    assert tls.context_for("v.example.com") is None
