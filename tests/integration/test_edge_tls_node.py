"""TLS at the edge of a real ``roost up``, with certificates from a real pebble ACME server.

pebble validates on the two ports its fixture reserved; the node's edge listens on exactly those
(HTTP-01 on the plain port, TLS-ALPN-01 on the HTTPS port), so every validation goes through the
real edge. ``curl --resolve`` then checks the served chain against pebble's root by SNI.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from roost.proxy.tls import pki
from tests.helpers import wait_until
from tests.integration.test_acme_pebble import Pebble, pebble  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("pebble") is None or shutil.which("curl") is None,
        reason="needs Debian's pebble and curl",
    ),
]
NAME = "www.roost-edge.test"


def _node(make_node, pebble: Pebble, challenge: str, name: str):  # noqa: F811
    args = (
        "--http-port", str(pebble.http_port), "--https-port", str(pebble.tls_port),
        "--acme-directory", pebble.directory, "--acme-ca-bundle", str(pebble.ca_cert),
        "--acme-challenge", challenge,
    )  # fmt: skip
    return make_node(name, demo=True, args=args).start()


def _served(port: int, name: str) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _curl(port: int, name: str, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"{name}:{port}:127.0.0.1",
         "--cacert", str(root), "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
         *extra, f"https://{name}:{port}/"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


def _issue(node, name: str) -> None:
    node.cli("certs", "add", name, "--app", "demo", "--wait", "--wait-timeout", "60", timeout=90)
    shown = node.cli("certs", "show", name).stdout
    assert "ready" in shown and "Pebble" in shown, shown


def test_tls_alpn01_issuance_through_the_edge_then_curl_sees_the_chain(make_node, pebble):  # noqa: F811
    """certs add -> pebble validates TLS-ALPN-01 on the edge's port -> curl verifies by SNI."""
    node = _node(make_node, pebble, "tls-alpn-01", "alpn")
    _issue(node, NAME)
    res = _curl(pebble.tls_port, NAME, pebble.root)
    assert res.stdout == "200 2", res.stderr
    res = _curl(pebble.tls_port, NAME, pebble.root, "--http1.1")
    assert res.stdout == "200 1.1", res.stderr


def test_http01_issuance_through_the_edge_plain_port(make_node, pebble):  # noqa: F811
    """With only HTTP-01, pebble's validation is answered by the edge's plain HTTP port."""
    node = _node(make_node, pebble, "http-01", "http01")
    _issue(node, "h1." + NAME)
    assert _curl(pebble.tls_port, "h1." + NAME, pebble.root).stdout == "200 2"


def test_replaced_certificate_served_within_a_second(make_node, pebble, tmp_path):  # noqa: F811
    """An imported replacement is what the edge serves within 1 s, with no restart."""
    node = _node(make_node, pebble, "tls-alpn-01", "replace")
    _issue(node, NAME)
    first = _served(pebble.tls_port, NAME)
    chain, key = pki.self_signed(NAME, time.time())
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    node.cli("certs", "import", NAME, "--app", "demo", "--cert", str(tmp_path / "chain.pem"),
             "--key", str(tmp_path / "key.pem"))  # fmt: skip
    replaced = time.monotonic()
    new = x509.load_pem_x509_certificate(chain)
    served = wait_until(
        lambda: _served(pebble.tls_port, NAME) == new, 5, 0.02, what="the replacement"
    )
    assert served and time.monotonic() - replaced < 1.0
    assert first != new


def test_unknown_sni_is_a_handshake_failure(make_node, pebble):  # noqa: F811
    """A name with no certificate gets an unrecognized_name alert, not some other cert."""
    node = _node(make_node, pebble, "tls-alpn-01", "unknown")
    res = _curl(int(node.info["https_url"].rsplit(":", 1)[1]), "nobody.test", pebble.root)
    assert res.returncode == 35 and "unrecognized name" in res.stderr, res.stderr
