"""The floor for Roost's edge *policy* in Python: the bare relay plus the per-request header
work issue 3 mandates, done by Roost's own functions.

    .venv/bin/python bench/_policy_relay.py --port P --backend B

A reference point for ``throughput.py`` (peer ``policy-relay``), not a proxy. It is
``_bare_relay.py`` (uvloop + httptools, one upstream keep-alive connection per client
connection, GETs without a body; its ``connect`` and ``run`` serve here too) plus, per
request, what every request through the edge must get whatever the implementation:

- the request head checked and rewritten (:func:`roost.proxy.headers.prepare_head`: framing
  checks, client ``roost-*`` stripped, ``X-Forwarded-*``, ``Via``, ``Roost-Client-IP``,
  ``Roost-Region``, ``Roost-Request-Id``) with a fresh request id
  (:class:`roost.proxy.forwarding.RequestIds`);
- routed by Host (:meth:`roost.proxy.routes.RouteTable.lookup`);
- the response head checked and rewritten (:func:`roost.proxy.headers.prepare_response`:
  hop-by-hop and ``roost-*`` stripped, framing read, ``Roost-Request-Id`` added) and
  encoded (:func:`roost.proxy.headers.encode_head`).

No balancing, limits, retries, waits, timeouts, metrics, usage accounting, pipelining or
backpressure, no error handling worth the name: what the edge costs beyond this is what those
cost. Written here because it exists only to be measured; never use it for anything else.
"""

from __future__ import annotations

import asyncio

import httptools
from _bare_relay import connect, run

from roost.proxy.forwarding import RequestIds, forwarding_tail
from roost.proxy.headers import encode_head, prepare_head, prepare_response
from roost.proxy.routes import RouteTable

ROUTES = RouteTable.build([("bench", [])], {"bench": []})
IDS = RequestIds(b"7e57")


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream = None

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        client = self.client
        if client.out and client.transport is not None:
            client.transport.write(b"".join(client.out))
            client.out.clear()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        fields, _info = prepare_response(self.headers, self.client.request_id)
        self.headers = []
        status = self.parser.get_status_code()
        self.client.out.append(encode_head(b"HTTP/1.1 %d OK\r\n" % status, fields))

    def on_body(self, body: bytes) -> None:
        self.client.out.append(body)


class Client(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: Upstream | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.transport: asyncio.Transport | None = None
        self.fwd_tail: tuple[tuple[bytes, bytes], ...] = ()
        self.client_ip = b""
        self.request_id = b""
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client_ip = transport.get_extra_info("peername")[0].encode("ascii")
        port = str(transport.get_extra_info("sockname")[1]).encode("ascii")
        self.fwd_tail = forwarding_tail(self.client_ip, b"http", port, b"bench")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.request_id = rid = IDS.next()
        head, info = prepare_head(
            parser.get_method(),
            parser.get_http_version(),
            self.url,
            self.headers,
            self.fwd_tail,
            self.client_ip,
            rid,
        )
        self.headers = []
        if ROUTES.lookup((info.host or b"").decode("latin-1")) is None:
            raise SystemExit(f"no route for {info.host!r}")
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(head)
        else:
            asyncio.get_running_loop().create_task(connect(self, Upstream, head))


if __name__ == "__main__":
    run(__doc__.splitlines()[0], Client)
