"""The host proxy: the proxy role on an instance's node; limits are enforced here only.

Edges reach it over the backhaul (:mod:`roost.proxy.backhaul`): on one node a unix socket
``<data dir>/backhaul.sock`` (mode 0600 inside the 0700 data dir, so the filesystem
authenticates the local hop); across nodes later TCP + mTLS (the listener is the seam:
:func:`start_host_proxy` takes the path; a TCP listener would take an SSL context).

Per request (:class:`HostExchange`)::

    backhaul request head --backhaul.prepare_host_head--> Roost-Instance read and dropped
      --InstanceTable.get--> HostTarget            (unknown -> refusal "unknown")
      --Admission.try_acquire--> counted in flight (at hard limit -> refusal "full":
                                                    nothing reached the instance)
      --UpstreamPool (127.0.0.1:port)--> request streamed to the instance, response back
      --Admission.release--> on completion, failure or cancel (listeners wake edge waiters)

The backhaul listener speaks HTTP/1.1 and HTTP/2 (prior knowledge) on one socket, told
apart by :class:`~roost.proxy.preface.PrefaceSniffer`: the edge's backhaul follows its
client's protocol. At the hard limit an HTTP/1.1 request is answered ``503`` with
``Roost-Refused: full``; an HTTP/2 stream is reset with ``REFUSED_STREAM`` (the HTTP/2
codec does that for a ``full`` refusal on the host role) -- either way before any byte
reached the instance. The backhaul's HTTP/2 limits (:data:`BACKHAUL_H2`) are those of a
trusted peer: edges multiplex many streams and cancel many of them.

A connect failure to the instance is refused as ``unreachable`` (the instance never saw
it). Instances' ``roost-*`` response fields are stripped, so an app cannot forge a
refusal; responses get neither ``Via`` nor a request id here (the edge adds them).

The instance table comes from the catalog (``node/routes.py``), swapped into a
:class:`~roost.proxy.admission.TableHolder`; :attr:`HostProxy.admission` is the live
per-instance load the edge's balancer reads on the same node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from roost.proxy import backhaul, errors, localpipe
from roost.proxy.admission import Admission, HostTarget, TableHolder
from roost.proxy.context import Limits, RelayContext
from roost.proxy.exchange import Downstream, Exchange
from roost.proxy.forwarding import RequestIds
from roost.proxy.h2conn import H2Options
from roost.proxy.h2limits import H2Limits, Rate
from roost.proxy.headers import Headers, RequestInfo
from roost.proxy.metrics import Metrics, NullMetrics
from roost.proxy.server import ConnectionRegistry, ProxyServer
from roost.proxy.upstream_pool import UpstreamPool

__all__ = ["BACKHAUL_H2", "HostContext", "HostExchange", "HostProxy", "start_host_proxy"]

_UNLIMITED = Rate(1e9, 1 << 30)
BACKHAUL_H2 = H2Options(
    limits=H2Limits(
        max_concurrent_streams=1000,  # the edge's own per-connection limit is lower
        stream_churn=_UNLIMITED,  # refusals and cancellations are normal here
        settings=_UNLIMITED,
        pings=_UNLIMITED,
        empty_frames=_UNLIMITED,
        window_updates=_UNLIMITED,
        control=_UNLIMITED,
    )
)
""":class:`H2Options` of the host proxy's HTTP/2 backhaul listener (a trusted peer)."""


class HostContext(RelayContext):
    """Everything the exchanges of one host proxy share."""

    role = "host"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: TableHolder,
        admission: Admission,
        pool: UpstreamPool,
        limits: Limits,
        request_ids: RequestIds,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(loop, pool, limits, "", request_ids, metrics)
        self.table = table
        self.admission = admission

    def new_exchange(
        self,
        down: Downstream,
        method: bytes,
        version: str,
        target: bytes,
        headers: Headers,
        fwd_tail: tuple[tuple[bytes, bytes], ...],
        client_ip: bytes,
        request_id: bytes,
        upgrade: bool,
        *,
        protocol: str = "http/1.1",
    ) -> Exchange:
        head, info = backhaul.prepare_host_head(method, version, target, headers)
        ex = HostExchange(self, down, method, head, info, "", request_id)
        ex.protocol = protocol
        return ex


class HostExchange(Exchange):
    """One backhaul request: admit, forward to the instance, release."""

    role = "host"
    __slots__ = ("_target",)

    _ctx: HostContext

    def __init__(
        self,
        ctx: HostContext,
        down: Downstream,
        method: bytes,
        head: bytes,
        info: RequestInfo,
        host: str,
        request_id: bytes,
    ) -> None:
        super().__init__(ctx, down, method, head, info, host, request_id)
        self._target: HostTarget | None = None  # set while admitted

    def start(self, *, flush: bool = True) -> None:
        """Admit against the instance's hard limit, then forward."""
        ctx = self._ctx
        raw = self.info.instance
        if raw is None:
            return self._fail(errors.bad_request("backhaul request without Roost-Instance"))
        iid = raw.decode("latin-1")
        target = ctx.table.table.get(iid)
        if target is None:
            return self._fail(backhaul.refusal(backhaul.UNKNOWN, iid))
        self.app = target.app
        ctx.metrics.inflight(role="host", app=target.app, delta=1)
        if not ctx.admission.try_acquire(target):
            ctx.metrics.refused(role="host", app=target.app, reason="full")
            return self._fail(backhaul.refusal(backhaul.FULL, iid))
        self._target = target
        self._send_to(target.backend, self._head, flush=flush)

    def _response_id(self) -> bytes | None:
        return None

    def _retry_or_fail(self, err: errors.ProxyError) -> None:
        target = self._target
        if target is None:
            return self._fail(err)
        if err.reason == "upstream_connect_failed":
            return self._fail(backhaul.refusal(backhaul.UNREACHABLE, target.instance_id))
        self._fail(err)

    def _finish(self, status: int) -> None:
        super()._finish(status)
        target, self._target = self._target, None
        if target is not None:
            self._ctx.admission.release(target)


class HostProxy(ProxyServer):
    """A running host proxy; see :func:`start_host_proxy`."""

    context: HostContext

    def __init__(
        self,
        server: asyncio.Server,
        context: HostContext,
        connections: ConnectionRegistry,
        path: str,
        accept: localpipe.Factory | None = None,
    ) -> None:
        super().__init__(server, context, connections)
        self.path = path
        self.address = backhaul.unix_address(path)
        self._accept = accept  # also serving this process's edges in memory (localpipe)

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting (the socket and in-process connections), then drain as usual."""
        if self._accept is not None:
            localpipe.unlisten(self.path, self._accept)
        await super().close(timeout)

    @property
    def admission(self) -> Admission:
        """Live in-flight counts per instance (the node's load)."""
        return self.context.admission

    def load(self, instance_id: str) -> int:
        """In-flight requests to ``instance_id`` now (a ``loads`` source for the edge)."""
        return self.context.admission.load(instance_id)

    def _closed_hook(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _bind_unix(path: str) -> socket.socket:
    """A listening unix socket at ``path`` with mode 0600 from the start (bound under a
    temporary name, chmod-ed, then renamed into place)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of a previous run (the data dir lock is ours)
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sock


async def start_host_proxy(
    path: str,
    table: TableHolder,
    *,
    admission: Admission | None = None,
    metrics: Metrics | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    h2: H2Options = BACKHAUL_H2,
    in_process: bool = True,
    **limits: Any,
) -> HostProxy:
    """Listen on the unix socket ``path`` and serve backhaul requests (HTTP/1.1 and h2c)
    for ``table``'s instances. ``limits`` are :class:`~roost.proxy.forward.Limits` fields
    (its connect, response, keep-alive and upstream pool settings apply here); ``h2``: the
    HTTP/2 settings of backhaul connections. ``in_process``: edges of this process that
    connect to ``unix:<path>`` are served in memory (:mod:`roost.proxy.localpipe`)."""
    from roost.proxy.http1 import ClientConnection
    from roost.proxy.http2 import H2ClientConnection
    from roost.proxy.preface import PrefaceSniffer

    loop = loop or asyncio.get_running_loop()
    config = Limits(**limits)
    metrics = metrics if metrics is not None else NullMetrics()
    assert metrics is not None
    pool = UpstreamPool(
        loop,
        max_idle=config.upstream_max_idle,
        idle_timeout=config.upstream_idle_timeout,
        connect_timeout=config.connect_timeout,
    )
    metrics.register_pool("host_instances", pool)
    request_ids = RequestIds(b"h" + os.urandom(3).hex().encode("ascii"))
    context = HostContext(loop, table, admission or Admission(), pool, config, request_ids, metrics)
    connections = ConnectionRegistry(loop, config.tick, context)
    sock = _bind_unix(path)

    def accept() -> asyncio.Protocol:
        return PrefaceSniffer(
            ClientConnection(context, connections),
            lambda: H2ClientConnection(context, connections, h2),
        )

    server = await loop.create_unix_server(accept, sock=sock, backlog=1024)
    connections.start()
    if in_process:
        localpipe.listen(path, loop, accept)
    return HostProxy(server, context, connections, path, accept if in_process else None)
