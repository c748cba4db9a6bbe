"""ACME against a real pebble (Debian ``pebble``): HTTP-01, TLS-ALPN-01, renewal, curl by SNI.

The module starts ``pebble-challtestsrv`` as pebble's DNS server (every A query -> 127.0.0.1)
and ``pebble`` with its own TLS certificate, validating on two ports reserved here; each test
runs its own small asyncio challenge servers on those ports. Both processes stop at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.proxy.tls import pki
from roost.proxy.tls.acme_client import AcmeIssuer, IssueError
from roost.proxy.tls.certcache import CertCache, choose_context
from roost.proxy.tls.challenges import Http01Responder, TlsAlpn01Responder
from roost.proxy.tls.clienthello import ClientHello
from roost.proxy.tls.manager import CertManager
from roost.proxy.tls.standalone import serve_http01, serve_tls
from tests.helpers import await_until, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None,
        reason="needs Debian's pebble package (apt-get install -y pebble)",
    ),
]
SECRET = b"k" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pebble_cert() -> tuple[bytes, bytes]:
    """pebble's own API certificate, for 127.0.0.1 and localhost."""
    key = pki.generate_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "pebble")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), pki.key_to_pem(key)


@dataclass
class Pebble:
    directory: str  # ACME directory URL
    ca_cert: Path  # pebble's own TLS certificate (to talk to its API)
    root: Path  # the root that issued certificates chain to
    http_port: int  # where pebble validates HTTP-01
    tls_port: int  # where pebble validates TLS-ALPN-01


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    tmp = tmp_path_factory.mktemp("pebble")
    cert, key = pebble_cert()
    (tmp / "cert.pem").write_bytes(cert)
    (tmp / "key.pem").write_bytes(key)
    ports = {n: free_port() for n in ("acme", "mgmt", "http", "tls", "dns", "dnsmgmt")}
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{ports['acme']}",
            "managementListenAddress": f"127.0.0.1:{ports['mgmt']}",
            "certificate": str(tmp / "cert.pem"),
            "privateKey": str(tmp / "key.pem"),
            "httpPort": ports["http"],
            "tlsPort": ports["tls"],
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (tmp / "pebble.json").write_text(json.dumps(config))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(tmp / name, "wb") for name in ("dns.log", "pebble.log")]  # noqa: SIM115
    try:
        procs.append(
            subprocess.Popen(
                ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", f"127.0.0.1:{ports['dns']}", "-http01", "", "-https01", "",
                 "-tlsalpn01", "", "-management", f"127.0.0.1:{ports['dnsmgmt']}"],
                stdout=logs[0], stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                ["pebble", "-config", str(tmp / "pebble.json"),
                 "-dnsserver", f"127.0.0.1:{ports['dns']}"],
                stdout=logs[1], stderr=subprocess.STDOUT, env=env, cwd=tmp,
            )
        )  # fmt: skip
        directory = f"https://127.0.0.1:{ports['acme']}/dir"
        verify = ssl.create_default_context(cafile=str(tmp / "cert.pem"))

        def up() -> bytes | None:
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{proc.args[0]} exited: {(tmp / 'pebble.log').read_text()}"
                    )
            try:
                httpx.get(directory, verify=verify, timeout=2).raise_for_status()
                root = httpx.get(f"https://127.0.0.1:{ports['mgmt']}/roots/0", verify=verify)
                return root.raise_for_status().content
            except httpx.HTTPError:
                return None

        (tmp / "root.pem").write_bytes(wait_until(up, 30, what="pebble to answer"))
        yield Pebble(directory, tmp / "cert.pem", tmp / "root.pem", ports["http"], ports["tls"])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in logs:
            log.close()


@dataclass
class Setup:
    catalog: Catalog
    seal: c.KeySeal
    http01: Http01Responder
    tls_alpn01: TlsAlpn01Responder
    cache: CertCache
    hellos: list[ClientHello] = field(default_factory=list)  # every hello the TLS server saw


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = await SqliteStore.open(tmp_path / "catalog.db")
    catalog = Catalog(store)
    seal = c.KeySeal(SECRET)
    cache = CertCache(catalog, seal)
    task = asyncio.ensure_future(cache.run())
    await asyncio.wait_for(cache.ready.wait(), 5)
    yield Setup(catalog, seal, Http01Responder(), TlsAlpn01Responder(), cache)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await cache.close()
    await store.close()


@contextlib.asynccontextmanager
async def servers(s: Setup, http_port: int | None, tls_port: int | None) -> AsyncIterator[int]:
    """HTTP-01 and TLS (ALPN responder + cert cache) servers; yields the TLS server's port."""

    async def select(hello: ClientHello) -> ssl.SSLContext | None:
        s.hellos.append(hello)
        return await choose_context(hello, s.cache, s.tls_alpn01)

    started = []
    if http_port is not None:
        started.append(await serve_http01(s.http01, "127.0.0.1", http_port))
    started.append(await serve_tls("127.0.0.1", tls_port or 0, select))
    try:
        yield started[-1].sockets[0].getsockname()[1]
    finally:
        for server in started:
            server.close()
            await server.wait_closed()


def issuer(s: Setup, pebble: Pebble, types: tuple[str, ...]) -> AcmeIssuer:
    return AcmeIssuer(
        s.catalog, s.seal, pebble.directory, http01=s.http01, tls_alpn01=s.tls_alpn01,
        challenge_types=types, verify=str(pebble.ca_cert), timeout=30,
    )  # fmt: skip


def check_issued(chain_pem: bytes, key_pem: bytes, hostname: str, pebble: Pebble) -> None:
    """The chain names ``hostname``, matches the key and chains to pebble's root."""
    info = pki.validate_pair(chain_pem, key_pem, hostname, time.time())
    assert info.chain_length >= 2 and "Pebble Intermediate" in info.issuer
    leaf, intermediate = x509.load_pem_x509_certificates(chain_pem)[:2]
    leaf.verify_directly_issued_by(intermediate)
    root = x509.load_pem_x509_certificate(pebble.root.read_bytes())
    intermediate.verify_directly_issued_by(root)


def peer_fingerprint(port: int, name: str, root: Path) -> str:
    """Handshake as a verifying client with SNI ``name``; the leaf's SHA-256 fingerprint."""
    ctx = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()


async def test_issue_via_http01(pebble: Pebble, setup: Setup) -> None:
    """HTTP-01: pebble fetches the token from our HTTP server and issues the certificate."""
    acme = issuer(setup, pebble, ("http-01",))
    async with servers(setup, pebble.http_port, None):
        issued = await acme.issue("h1.roost.test")
        account = await c.get_account(setup.catalog, pebble.directory)
        again = await acme.issue("h2.roost.test")
    check_issued(issued.chain_pem, issued.key_pem, "h1.roost.test", pebble)
    check_issued(again.chain_pem, again.key_pem, "h2.roost.test", pebble)
    assert len(setup.http01) == 0  # the tokens were withdrawn afterwards
    assert account is not None and account.uri.startswith("https://")
    assert "PRIVATE" not in account.key_sealed
    assert await c.get_account(setup.catalog, pebble.directory) == account  # reused


async def test_issue_via_tls_alpn01(pebble: Pebble, setup: Setup) -> None:
    """TLS-ALPN-01: an acme-tls/1 handshake gets the challenge cert, never the wildcard."""
    wild_chain, wild_key = pki.self_signed("*.roost.test", time.time())
    await c.put_cert(
        setup.catalog,
        c.Certificate(
            hostname="*.roost.test", source="uploaded", status="ready",
            chain_pem=wild_chain.decode(),
            key_sealed=setup.seal.seal("certs/*.roost.test", wild_key),
        ),
    )  # fmt: skip
    async with servers(setup, None, pebble.tls_port):
        issued = await issuer(setup, pebble, ("tls-alpn-01",)).issue("t1.roost.test")
    check_issued(issued.chain_pem, issued.key_pem, "t1.roost.test", pebble)
    assert len(setup.tls_alpn01) == 0
    validations = [h for h in setup.hellos if h.is_acme_tls_alpn]
    assert validations and all(h.server_name == "t1.roost.test" for h in validations)


async def test_failure_reason_and_backoff_are_stored(pebble: Pebble, setup: Setup) -> None:
    """With nothing answering the challenge, the record says why and when it will retry."""
    manager = CertManager(
        setup.catalog, issuer(setup, pebble, ("http-01",)), "node-a", backoff_base=120
    )
    await c.create_cert(setup.catalog, c.Certificate(hostname="down.roost.test"))
    before = time.time()
    cert = await manager.attempt("down.roost.test")  # no HTTP-01 server is listening
    assert cert is not None and cert.status == "failed" and cert.failures == 1
    assert "validation failed" in cert.last_error and "down.roost.test" in cert.last_error
    assert before + 120 <= cert.renew_after <= time.time() + 121
    assert not cert.claimed_by


async def test_manager_issues_renews_and_serves_by_sni(pebble: Pebble, setup: Setup) -> None:
    """Pending names are issued, served by SNI to curl, and a renewal replaces the served cert."""
    names = ("a.roost.test", "b.roost.test")
    for name in names:
        await c.create_cert(setup.catalog, c.Certificate(hostname=name, app="web"))
    manager = CertManager(setup.catalog, issuer(setup, pebble, ("tls-alpn-01", "http-01")), "n1")
    async with servers(setup, pebble.http_port, pebble.tls_port):
        task = asyncio.ensure_future(manager.run())
        try:

            async def all_ready() -> bool:
                certs = await c.list_certs(setup.catalog)
                return len(certs) == 2 and all(x.status == "ready" for x in certs)

            await await_until(all_ready, timeout=60, interval=0.1, what="both certs issued")
            async with servers(setup, None, None) as port:
                for name in names:
                    cert = await c.get_cert(setup.catalog, name)
                    assert cert is not None
                    out = await curl(name, port, pebble.root)
                    assert out == f"{name} http/1.1\n"
                    fp = await asyncio.to_thread(peer_fingerprint, port, name, pebble.root)
                    assert fp == cert.fingerprint
                old = (await c.get_cert(setup.catalog, "a.roost.test")).fingerprint  # type: ignore[union-attr]
                await c.update_cert(
                    setup.catalog, "a.roost.test", lambda x: pki_replace(x, renew_after=0.0)
                )

                async def renewed() -> bool:
                    cert = await c.get_cert(setup.catalog, "a.roost.test")
                    fp = await asyncio.to_thread(
                        peer_fingerprint, port, "a.roost.test", pebble.root
                    )
                    return cert is not None and fp == cert.fingerprint != old

                await await_until(renewed, timeout=60, interval=0.1, what="renewed cert served")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def curl(name: str, port: int, root: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http1.1", "--max-time", "10", "--cacert", str(root),
        "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def pki_replace(cert: c.Certificate, **changes: object) -> c.Certificate:
    import msgspec

    return msgspec.structs.replace(cert, **changes)


def test_issue_error_is_one_line() -> None:
    """IssueError carries its reason as given."""
    assert IssueError("x: y").reason == "x: y"
