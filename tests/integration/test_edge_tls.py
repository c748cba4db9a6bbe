"""The edge's TLS listener over real sockets, in process: termination, policy, passthrough.

An echo backend answers with the request head it got (to see ``X-Forwarded-Proto``); a second
"TLS backend" is a plain TCP server recording the bytes it receives (to see that passthrough
forwards the ClientHello untouched). Certificates are self-signed, put into a real SQLite catalog
that the cert cache follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from roost.catalog import certs as c
from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.config.model import AppConfig, Concurrency, Service, ServicePort
from roost.node.routes import build_instance_table
from roost.proxy import Backend, RouteHolder, RouteTable, start_edge
from roost.proxy.admission import Admission, TableHolder
from roost.proxy.edge import Edge, EdgeTls
from roost.proxy.tls import pki
from roost.proxy.tls.certcache import CertCache
from roost.proxy.tls.challenges import Http01Responder
from roost.proxy.tls.sites import Sites
from tests.helpers import await_until

pytestmark = pytest.mark.integration
WEB, SELF, RAW, HELD = "web.test", "self.test", "raw.test", "held.test"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:-2]
            body = json.dumps(dict(line.split(": ", 1) for line in lines)).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    writer.close()


@dataclass
class View:
    apps: dict[str, r.App] = field(default_factory=dict)
    instances: dict[str, r.Instance] = field(default_factory=dict)


@dataclass
class Rig:
    edge: Edge
    catalog: Catalog
    seal: c.KeySeal
    http01: Http01Responder
    raw_bytes: bytearray
    admission: Admission
    held_accepted: list[int]

    @property
    def https(self) -> int:
        assert self.edge.https_port is not None
        return self.edge.https_port

    async def put_cert(self, name: str) -> bytes:
        chain, key = await asyncio.to_thread(pki.self_signed, name, time.time())
        info = pki.inspect_chain(chain)
        cert = c.Certificate(
            hostname=name, app="web", source="uploaded", status="ready", chain_pem=chain.decode(),
            key_sealed=self.seal.seal(c.cert_key(name), key), not_after=info.not_after,
        )  # fmt: skip
        await c.put_cert(self.catalog, cert)
        return chain


def _app(name: str, *services: Service) -> r.App:
    return r.App(name=name, config=AppConfig(app=name, services=services), counts={})


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    raw_bytes = bytearray()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw_bytes.extend(await reader.read(65536))
        writer.close()

    raw = await asyncio.start_server(record, "127.0.0.1", 0)

    held_accepted = [0]

    async def echo_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held_accepted[0] += 1
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    held = await asyncio.start_server(echo_raw, "127.0.0.1", 0)
    store = await SqliteStore.open(tmp_path / "catalog.db")
    catalog, seal = Catalog(store), c.KeySeal(b"k" * 32)
    port = echo.sockets[0].getsockname()[1]
    web_http = Service(name="http_service", force_https=True, ports=(ServicePort(port=80),))
    view = View(
        apps={
            "web": _app("web", web_http),
            "self": _app("self", Service(name="http_service", default_self_signed=True)),
            "raw": _app("raw", Service(name="services.0", internal_port=9443,
                                       ports=(ServicePort(port=443),))),
            "held": _app("held", Service(name="services.0", internal_port=9443,
                                         ports=(ServicePort(port=443),),
                                         concurrency=Concurrency(hard_limit=1))),
        },
        instances={
            "i1": r.Instance(id="i1", app="raw", node="n", region="local", process_group="app",
                             app_version=1, state="started", healthy=True,
                             ports={"9443": raw.sockets[0].getsockname()[1]}),
            "i2": r.Instance(id="i2", app="held", node="n", region="local", process_group="app",
                             app_version=1, state="started", healthy=True,
                             port=held.sockets[0].getsockname()[1],
                             ports={"9443": held.sockets[0].getsockname()[1]}),
        },
    )  # fmt: skip
    backends = {name: [Backend(f"{name}-1", "127.0.0.1", port)] for name in ("web", "self")}
    holder = RouteHolder(
        RouteTable.build(
            [("web", [WEB]), ("self", [SELF]), ("raw", [RAW]), ("held", [HELD])], backends
        )
    )
    sites = Sites(holder, view)
    cache = CertCache(catalog, seal, self_signed=sites.self_signed)
    follow = asyncio.ensure_future(cache.run())
    await asyncio.wait_for(cache.ready.wait(), 5)
    http01 = Http01Responder()
    tls = EdgeTls("127.0.0.1", 0, cache)
    # the host proxy's view of this node: "held" has hard_limit 1 (from its TLS service)
    admission = Admission()
    host_table = TableHolder(build_instance_table(view.apps, view.instances, "n"))
    edge = await start_edge(
        "127.0.0.1", 0, holder, region="test", tls=tls, http01=http01, sites=sites,
        admission=admission, host_table=host_table,
    )  # fmt: skip
    rig = Rig(edge, catalog, seal, http01, raw_bytes, admission, held_accepted)
    await rig.put_cert(WEB)
    yield rig
    await edge.close(1.0)
    follow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follow
    await cache.close()
    await store.close()
    for server in (echo, raw, held):
        server.close()
        await server.wait_closed()


async def _get(rig: Rig, name: str) -> httpx.Response:
    """GET / over TLS with SNI ``name`` (connecting to 127.0.0.1)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", rig.https, ssl=ctx, server_hostname=name
    )
    try:
        tls = writer.get_extra_info("ssl_object")
        assert tls.selected_alpn_protocol() == "http/1.1"
        writer.write(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return httpx.Response(int(head.split()[1]), content=body)


async def test_https_request_reaches_the_app_with_forwarded_proto_https(rig: Rig) -> None:
    """HTTP/1.1 over TLS: routed by Host, ``X-Forwarded-Proto: https`` added."""
    resp = await _get(rig, WEB)
    assert resp.status_code == 200
    assert resp.json()["X-Forwarded-Proto"] == "https"


async def test_alpn_h2_goes_to_the_http2_codec(rig: Rig) -> None:
    """A client offering h2 gets h2 by ALPN, and the HTTP/2 codec answers its preface."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", rig.https, ssl=ctx, server_hostname=WEB
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9 - 5) + b"\x04\x00" + bytes(4))
    frame = await asyncio.wait_for(reader.readexactly(9), 5)
    assert frame[3] == 4  # the server's SETTINGS
    writer.close()


async def test_unknown_sni_gets_an_alert(rig: Rig) -> None:
    """No certificate and no self-signed opt-in: the handshake fails with unrecognized_name."""
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        await _get(rig, "nobody.test")


async def test_self_signed_fallback_for_opted_in_app(rig: Rig) -> None:
    """``default_self_signed``: a name of that app with no certificate still gets TLS."""
    resp = await _get(rig, SELF)
    assert resp.status_code == 200


async def test_split_client_hello_is_read_without_spinning(rig: Rig) -> None:
    """A ClientHello arriving in two pieces is still parsed (SO_RCVLOWAT waits for the rest)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=WEB)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.https)
    writer.write(hello[:7])
    await writer.drain()
    await await_until(
        lambda: _async(any(p.seen == 7 for p in rig.edge.tls.pending)), 5, what="first piece"
    )  # type: ignore[union-attr]
    writer.write(hello[7:])
    data = await asyncio.wait_for(reader.read(5), 5)
    assert data[0] == 22  # a handshake record: the ServerHello
    writer.close()


async def _async(value: bool) -> bool:
    return value


async def test_force_https_redirects_plain_http(rig: Rig) -> None:
    """``force_https``: the plain port answers 301 to the HTTPS port, path kept."""
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(f"http://127.0.0.1:{rig.edge.port}/a/b?c=1", headers={"Host": WEB})
    assert resp.status_code == 301
    assert resp.headers["location"] == f"https://{WEB}:{rig.https}/a/b?c=1"


async def test_acme_http01_answered_before_routing_and_not_redirected(rig: Rig) -> None:
    """A pending HTTP-01 token is answered on the plain port even for a force_https app."""
    rig.http01.add("tok123", "tok123.thumb")
    async with httpx.AsyncClient(trust_env=False) as client:
        url = f"http://127.0.0.1:{rig.edge.port}/.well-known/acme-challenge/tok123"
        resp = await client.get(url, headers={"Host": WEB})
    assert resp.status_code == 200 and resp.text.strip() == "tok123.thumb"


async def test_replaced_certificate_is_served_without_restart(rig: Rig) -> None:
    """A new certificate in the catalog is what the next handshake gets."""
    new = await rig.put_cert(WEB)
    new_der = ssl.PEM_cert_to_DER_cert(new.decode())

    async def served() -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        _, writer = await asyncio.open_connection(
            "127.0.0.1", rig.https, ssl=ctx, server_hostname=WEB
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return bool(der == new_der)

    await await_until(served, 1.0, what="the new certificate")


def _client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def test_passthrough_forwards_the_client_hello_untouched(rig: Rig) -> None:
    """A no-handler port 443 app: the backend receives the exact ClientHello bytes."""
    hello = _client_hello(RAW)
    with socket.create_connection(("127.0.0.1", rig.https)) as sock:
        sock.sendall(hello)
        await await_until(lambda: _async(len(rig.raw_bytes) >= len(hello)), 5, what="relay")
    assert bytes(rig.raw_bytes) == hello


async def _open_relay(rig: Rig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A passthrough relay to the echoing backend, up (its ClientHello came back)."""
    hello = _client_hello(HELD)
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.https)
    writer.write(hello)
    assert await asyncio.wait_for(reader.readexactly(len(hello)), 5) == hello
    return reader, writer


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:  # refused, or reset: accepted by a listener that then closed
        return True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return False


async def test_shutdown_lets_an_open_passthrough_relay_finish(rig: Rig) -> None:
    """SIGTERM's drain covers passthrough: the listener stops accepting, an open relay keeps
    relaying, and the edge is closed once its client is done (not at the drain timeout)."""
    reader, writer = await _open_relay(rig)
    closing = asyncio.ensure_future(rig.edge.close(30.0))
    await await_until(lambda: _refused(rig.https), 5, what="the TLS listener to stop")
    writer.write(b"still here")
    assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
    assert not closing.done()
    writer.close()
    await asyncio.wait_for(closing, 10)  # far less than the 30 s drain timeout


async def test_shutdown_aborts_a_passthrough_relay_left_open_at_the_drain_timeout(
    rig: Rig,
) -> None:
    reader, writer = await _open_relay(rig)
    await asyncio.wait_for(rig.edge.close(0.2), 10)
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_passthrough_relay_holds_a_slot_of_its_instance_hard_limit(rig: Rig) -> None:
    """A relay is a connection to the instance: with hard_limit 1 a second one is closed
    before anything reaches the instance, and the slot is free again once the first ends."""
    _, writer = await _open_relay(rig)
    assert rig.admission.load("i2") == 1 and rig.held_accepted == [1]
    second_r, second_w = await asyncio.open_connection("127.0.0.1", rig.https)
    second_w.write(_client_hello(HELD))
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(second_r.read(), 5) == b""  # closed: no room
    second_w.close()
    assert rig.held_accepted == [1]  # the instance never saw the second one
    writer.close()
    await await_until(lambda: _async(rig.admission.load("i2") == 0), 5, what="slot released")
    _, third_w = await _open_relay(rig)
    assert rig.held_accepted == [2]
    third_w.close()
