"""The floor for a Python HTTP/1.1 relay: uvloop + httptools and nothing else.

    .venv/bin/python bench/_bare_relay.py --port P --backend B

A reference point for ``throughput.py`` (peer ``bare-relay``), not a proxy: one upstream
keep-alive connection per client connection, GET without a body only, headers copied as
they came, no routing, balancing, header policy, limits, timeouts or metrics, no error
handling worth the name. What Roost's edge costs beyond this is what those features cost.
Written here (not a library) because it exists only to be measured; never use it for
anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream = None

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body = []
        head = b"HTTP/1.1 %d OK\r\nContent-Length: %d\r\n\r\n"
        if self.client.transport is not None:
            self.client.transport.write(head % (self.parser.get_status_code(), len(body)) + body)


class Client(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: Upstream | None = None
        self.headers: list[bytes] = []
        self.url = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(name + b": " + value + b"\r\n")

    def on_message_complete(self) -> None:
        request = b"GET " + self.url + b" HTTP/1.1\r\n" + b"".join(self.headers) + b"\r\n"
        self.headers = []
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(request)
        else:
            asyncio.get_running_loop().create_task(connect(self, Upstream, request))


async def connect(client: Any, upstream: Callable[[Any], asyncio.Protocol], request: bytes) -> None:
    """Open ``client``'s upstream connection (protocol ``upstream(client)``), then send its
    first request on it. (Shared with ``_policy_relay.py``.)"""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: upstream(client), *client.backend)
    client.upstream = proto
    transport.write(request)


def run(description: str, make_client: Callable[[tuple[str, int]], asyncio.Protocol]) -> None:
    """Parse ``--port P --backend B``, serve ``make_client(backend)`` per connection on
    uvloop until SIGTERM/SIGINT. (Shared with ``_policy_relay.py``.)"""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", type=int, required=True)
    args = parser.parse_args()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        backend = ("127.0.0.1", args.backend)
        server = await loop.create_server(lambda: make_client(backend), "127.0.0.1", args.port)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            server.close()

    uvloop.run(main())


if __name__ == "__main__":
    run(__doc__.splitlines()[0], Client)
