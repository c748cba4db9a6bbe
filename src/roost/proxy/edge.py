"""The edge: assemble the HTTP/1.1 proxy stack and run it on a listening socket.

:func:`start_edge` is the one place the pieces are put together::

    RouteHolder (swapped by the catalog watcher)
        -> EdgeContext (limits, region, balancer inputs, wait queues, backhaul pool)
        -> ClientConnection per accepted socket (http1), or HTTP/2 (preface / ALPN h2)
        -> EdgeExchange per request (forward) -> UpstreamConnection to a host proxy
           (or straight to an instance for backends without backhaul)

Load and wake-ups on one node: ``loads`` is the host proxy's live count per instance and
``admission`` the host proxy's :class:`~roost.proxy.admission.Admission`, whose releases
wake requests waiting for capacity. Across nodes the load view (mesh) plays both parts.

With ``tls`` a second listener terminates TLS (:mod:`roost.proxy.tls.terminate`: peek the
ClientHello, pick the certificate by SNI or answer a TLS-ALPN-01 validation, or relay it
untouched to a passthrough app) and hands the decrypted stream to the same codecs: ALPN ``h2``
-> HTTP/2, anything else -> the preface sniffer (HTTP/1.1). The plain port answers ACME
HTTP-01 tokens and ``force_https`` redirects before routing (:mod:`roost.proxy.tls.sites`).

Shutdown: see :class:`~roost.proxy.server.ProxyServer`; the TLS listener stops accepting first.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.proxy.admission import Admission, TableHolder
from roost.proxy.edge_context import EdgeContext, Limits
from roost.proxy.forwarding import RequestIds
from roost.proxy.h2conn import H2Options
from roost.proxy.http1 import ClientConnection
from roost.proxy.http2 import H2ClientConnection
from roost.proxy.metrics import Metrics, NullMetrics
from roost.proxy.passthrough import Passthrough, Slots, unlimited
from roost.proxy.preface import PrefaceSniffer
from roost.proxy.routes import RouteHolder
from roost.proxy.server import ConnectionRegistry, ProxyServer
from roost.proxy.tls.certcache import CertCache, choose_context
from roost.proxy.tls.challenges import Http01Responder, TlsAlpn01Responder
from roost.proxy.tls.clienthello import ACME_TLS_ALPN, ClientHello
from roost.proxy.tls.sites import Sites, plain_http_intercept
from roost.proxy.tls.terminate import TlsListener
from roost.proxy.upstream_pool import UpstreamPool

__all__ = ["ConnectionRegistry", "Edge", "EdgeTls", "Limits", "start_edge"]


@dataclass
class EdgeTls:
    """The edge's HTTPS listener: where, which certificates, who answers TLS-ALPN-01."""

    host: str
    port: int  # 0: any free port
    cache: CertCache
    tls_alpn01: TlsAlpn01Responder | None = None
    hello_timeout: float = 10.0
    handshake_timeout: float = 10.0


class Edge(ProxyServer):
    """A running edge listener; see :func:`start_edge`."""

    context: EdgeContext

    def __init__(
        self,
        server: asyncio.Server,
        context: EdgeContext,
        connections: ConnectionRegistry,
        admission: Admission | None = None,
        tls: TlsListener | None = None,
        passthrough: Passthrough | None = None,
    ) -> None:
        super().__init__(server, context, connections)
        self._port = int(server.sockets[0].getsockname()[1])
        self._admission = admission
        self.tls = tls
        self.passthrough = passthrough

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return self._port

    @property
    def https_port(self) -> int | None:
        """The TLS listener's port, or None without one."""
        return None if self.tls is None else self.tls.port

    async def close(self, timeout: float | None = None) -> None:
        """Stop the TLS listener, then drain as usual; passthrough relays drain alongside
        (same timeout) and the ones still open then are aborted."""
        if self.tls is not None:
            self.tls.close()
        if self.passthrough is None:
            await super().close(timeout)
            return
        deadline = self.context.limits.shutdown_timeout if timeout is None else timeout
        await asyncio.gather(super().close(timeout), self.passthrough.drain(deadline))

    def _closed_hook(self) -> None:
        if self._admission is not None:
            self._admission.unsubscribe(self.context.capacity_freed)

    async def __aenter__(self) -> Edge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_edge(
    host: str,
    port: int,
    routes: RouteHolder,
    *,
    region: str,
    metrics: Metrics | None = None,
    admission: Admission | None = None,
    loads: Callable[[str], int] | None = None,
    rtt: Callable[[str], float] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    h2: H2Options | None = None,
    tls: EdgeTls | None = None,
    http01: Http01Responder | None = None,
    sites: Sites | None = None,
    host_table: TableHolder | None = None,
    **limits: Any,
) -> Edge:
    """Listen on ``host:port`` (``0`` = any free port) and proxy HTTP/1.x by ``routes``.

    ``limits`` are the fields of :class:`~roost.proxy.forward.Limits` (sizes, timeouts);
    an unknown name raises TypeError. ``region`` is stamped as ``Roost-Region``.
    ``admission``: a host proxy's counts on this node -- its load feeds the balancer and its
    releases wake waiting requests (``loads`` overrides where load is read from). ``rtt``:
    node id -> seconds from this edge (default 0.0: everything is on this node).
    ``tls``: also listen for HTTPS (see :class:`EdgeTls`). ``http01``: answer ACME HTTP-01
    tokens on the plain port. ``sites``: per-app policy (``force_https``, passthrough).
    ``host_table`` (with ``admission``): this node's instances as the host proxy knows them;
    a passthrough relay takes one of its instance's ``hard_limit`` slots while open.
    """
    loop = loop or asyncio.get_running_loop()
    config = Limits(**limits)
    metrics = metrics if metrics is not None else NullMetrics()
    assert metrics is not None
    pool = UpstreamPool(
        loop,
        max_idle=config.upstream_max_idle,
        idle_timeout=config.upstream_idle_timeout,
        connect_timeout=config.connect_timeout,
        backhaul_max_idle=config.backhaul_max_idle,
        backhaul_idle_timeout=config.backhaul_idle_timeout,
    )
    metrics.register_pool("edge_backhaul", pool)
    if loads is None and admission is not None:
        loads = admission.load
    request_ids = RequestIds(os.urandom(4).hex().encode("ascii"))
    context = EdgeContext(
        loop,
        routes,
        pool,
        config,
        region,
        request_ids,
        random.Random(),
        metrics=metrics,
        loads=loads,
        rtt=rtt,
    )
    if admission is not None:
        admission.subscribe(context.capacity_freed)
    connections = ConnectionRegistry(loop, config.tick, context)
    h2_options = h2 if h2 is not None else H2Options()

    def make_h2() -> asyncio.Protocol:
        return H2ClientConnection(context, connections, h2_options)

    listener = passthrough = None
    if tls is not None:
        if sites is not None:
            passthrough = Passthrough(
                loop,
                sites.passthrough_targets,
                connect_timeout=config.connect_timeout,
                slots=None if admission is None else _slots(admission, host_table),
            )
        listener = _tls_listener(loop, tls, make_h2, context, connections, passthrough)
    intercept = plain_http_intercept(sites, http01, None if listener is None else listener.port)

    def accept() -> asyncio.Protocol:
        # one port serves HTTP/1.x and HTTP/2 with prior knowledge (h2c), told apart by preface
        return PrefaceSniffer(
            ClientConnection(context, connections, intercept),
            make_h2,
            context.gate,
            context.first_bytes_key,
        )

    try:
        server = await loop.create_server(accept, host, port, backlog=1024)
    except BaseException:
        if listener is not None:
            listener.close()
        raise
    connections.start()
    return Edge(server, context, connections, admission, listener, passthrough)


def _tls_listener(
    loop: asyncio.AbstractEventLoop,
    tls: EdgeTls,
    make_h2: Callable[[], asyncio.Protocol],
    context: EdgeContext,
    connections: ConnectionRegistry,
    passthrough: Passthrough | None,
) -> TlsListener:
    async def select(hello: ClientHello) -> ssl.SSLContext | None:
        return await choose_context(hello, tls.cache, tls.tls_alpn01)

    def accepted(alpn: str | None) -> asyncio.Protocol | None:
        if alpn == ACME_TLS_ALPN:
            return None  # a TLS-ALPN-01 validation ends with its handshake
        if alpn == "h2":
            return make_h2()
        return PrefaceSniffer(ClientConnection(context, connections), make_h2)

    family = socket.AF_INET6 if ":" in tls.host else socket.AF_INET
    sock = socket.create_server((tls.host, tls.port), family=family, backlog=1024)
    return TlsListener(
        loop,
        sock,
        select,
        accepted,
        passthrough=passthrough,
        hello_timeout=tls.hello_timeout,
        handshake_timeout=tls.handshake_timeout,
    )


def _slots(admission: Admission, table: TableHolder | None) -> Slots:
    """A passthrough relay's slot on an instance: ``admission`` counts it against the
    instance's hard limit (an instance the host proxy does not know yet: no limit known)."""

    def slot(instance_id: str) -> Callable[[], None] | None:
        target = None if table is None else table.table.get(instance_id)
        if target is None:
            return unlimited
        if not admission.try_acquire(target):
            return None
        return lambda: admission.release(target)

    return slot
