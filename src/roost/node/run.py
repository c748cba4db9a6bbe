"""Compose and run a single Roost node (``roost up``): every role, started and stopped in order.

``run_node`` is the one function that assembles a node. Each role is entered into an
``AsyncExitStack`` right after it starts, so a failure part-way unwinds exactly what started,
and a normal stop runs the same steps in reverse:

    start: data dir lock → API socket → metrics + admin server → catalog → token → node record
           (leased) → log collector → host agent → route sync → host proxy (backhaul) → edge →
           API → demo deploy (waits until its instances are healthy) → ``api.json``
    stop:  forget ``api.json`` → stop API → drain and close the edge (in-flight requests finish,
           up to ``drain_timeout``) → close the host proxy → stop route sync → stop instances →
           flush logs → revoke the node lease → close the catalog → admin server → unlock

The request path on one node: client → edge (``http_host:http_port``, or TLS on
``http_host:https_port``) → backhaul unix socket ``<data dir>/backhaul.sock`` → host proxy
(limits) → instance on 127.0.0.1.

TLS: the edge's cert cache follows ``certs/`` (started before the edge, stopped after it). With
``acme_directory`` a :class:`~roost.proxy.tls.manager.CertManager` issues and renews ACME
certificates, answering validations through the edge itself (TLS-ALPN-01 on the HTTPS port,
HTTP-01 on the HTTP port); ``roost certs add`` wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

import roost
from roost.api.app import create_api
from roost.api.auth import load_or_create_token
from roost.api.certs import certs_router
from roost.api.service import ControlPlane
from roost.api.usage import usage_router
from roost.catalog import certs as catalog_certs
from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.machines.agent import HostAgent
from roost.machines.drivers.process import ProcessDriver
from roost.machines.logs import LogCollector
from roost.node import datadir
from roost.node.admin import start_admin
from roost.node.looplag import monitor_loop_lag
from roost.node.routes import RouteSync
from roost.proxy.admission import TableHolder
from roost.proxy.backhaul import unix_address
from roost.proxy.edge import EdgeTls, start_edge
from roost.proxy.host import start_host_proxy
from roost.proxy.metrics import Metrics
from roost.proxy.prometheus import PrometheusMetrics
from roost.proxy.routes import RouteHolder, RouteTable
from roost.proxy.tls.acme_client import CHALLENGE_TYPES, AcmeIssuer
from roost.proxy.tls.certcache import CertCache
from roost.proxy.tls.certroutes import CertRoutes
from roost.proxy.tls.challenges import Http01Responder, TlsAlpn01Responder
from roost.proxy.tls.manager import CertManager
from roost.proxy.tls.sites import Sites
from roost.proxy.usage import AppUsage

log = logging.getLogger("roost.node")
NODE_LEASE_TTL = 15.0
TICKET_KEY_LIFETIME = 12 * 3600.0
DEMO_HEALTHY_TIMEOUT = 30.0
DEMO_DIR = Path(roost.__file__).resolve().parents[2] / "examples" / "demo"
T = TypeVar("T")


@dataclass
class NodeOptions:
    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    https_port: int | None = 8443  # edge TLS port; None = no HTTPS listener
    acme_directory: str | None = None  # ACME directory URL; None = no issuance on this node
    acme_ca_bundle: str | None = None  # CA file to trust the ACME server's API with
    acme_email: str | None = None
    acme_challenges: tuple[str, ...] = CHALLENGE_TYPES  # in order of preference
    api_host: str = "127.0.0.1"
    api_port: int = 4280
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 9280  # Prometheus /metrics + /healthz; None = no admin server
    region: str = "local"
    demo: bool = True
    drain_timeout: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    proxy_limits: dict[str, Any] = field(default_factory=dict)  # proxy.context.Limits fields
    metrics: Metrics | None = None  # default: a new PrometheusMetrics


@dataclass
class NodeInfo:
    node_id: str
    data_dir: Path
    api_url: str
    edge_url: str
    token: str
    demo_instances: list[str] = field(default_factory=list)
    admin_url: str | None = None
    https_url: str | None = None


class StartupError(Exception):
    """The node could not start (port taken, data dir locked, ...): one clear line."""


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen for the {what} on {host}:{port}: {exc.strerror}"
        ) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


async def _listening(what: str, where: str, starting: Awaitable[T]) -> T:
    try:
        return await starting
    except OSError as exc:
        reason = exc.strerror or exc
        raise StartupError(f"cannot listen for the {what} on {where}: {reason}") from None


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield  # the node owns signal handling


def _background(stack: contextlib.AsyncExitStack, coro: Awaitable[None]) -> asyncio.Task[None]:
    """Run ``coro`` until the stack unwinds to this point, then cancel it."""
    task = asyncio.ensure_future(coro)

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    stack.push_async_callback(cancel)
    return task


def _until_stopped(
    stack: contextlib.AsyncExitStack, run: Callable[[asyncio.Event], Awaitable[None]]
) -> asyncio.Task[None]:
    """Run ``run(stop)``; on unwind set ``stop`` and let it finish by itself (bounded)."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(run(stop))

    async def finish() -> None:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 120)

    stack.push_async_callback(finish)
    return task


async def deploy_demo(control: ControlPlane, demo_dir: Path = DEMO_DIR) -> list[str]:
    """Deploy the demo app unless it already exists (a restart must not replace instances)."""
    if await control.catalog.get_app("demo") is not None:
        return []
    config = demo_dir / "roost.toml"
    if not config.is_file():
        log.warning("demo app not found at %s; skipping it", demo_dir)
        return []
    result = await control.deploy(config.read_text(), filename=str(config), workdir=str(demo_dir))
    return list(result.created)


async def wait_healthy(catalog: Catalog, app: str, ids: list[str], timeout: float) -> bool:
    """Wait (watching the catalog, no polling) until the instances ``ids`` are healthy."""
    deadline = time.monotonic() + timeout
    prefix = r.instances_prefix(app)
    while True:
        entries, revision = await catalog.store.range(prefix)
        healthy = {i.id for e in entries if (i := r.decode(e.value, r.Instance)).healthy}
        remaining = deadline - time.monotonic()
        if set(ids) <= healthy:
            return True
        if remaining <= 0:
            return False
        await catalog.wait_change(prefix, revision, remaining)


async def run_node(
    opts: NodeOptions,
    stop: asyncio.Event,
    started: Callable[[NodeInfo], None] | None = None,
) -> None:
    data_dir = datadir.prepare(opts.data_dir)
    async with contextlib.AsyncExitStack() as stack:
        try:
            stack.callback(os.close, datadir.lock(data_dir))
        except datadir.DataDirError as exc:
            raise StartupError(str(exc)) from None
        api_sock = _bind(opts.api_host, opts.api_port, "API")
        stack.callback(api_sock.close)

        # observability first, so it sees the whole life of the node (and its drain)
        metrics = opts.metrics if opts.metrics is not None else PrometheusMetrics()
        prom = metrics if isinstance(metrics, PrometheusMetrics) else None
        admin_url = None
        if prom is not None:
            _until_stopped(stack, lambda stop: monitor_loop_lag(prom, stop))
            if opts.admin_port is not None:
                admin = await _listening(
                    "admin server",
                    f"{opts.admin_host}:{opts.admin_port}",
                    start_admin(opts.admin_host, opts.admin_port, prom),
                )
                stack.push_async_callback(admin.close)
                admin_url = _url(opts.admin_host, admin.port)

        # the catalog and this node's record in it
        store = await SqliteStore.open(data_dir / "catalog.db")
        stack.push_async_callback(store.close)
        catalog = Catalog(store)
        token = load_or_create_token(data_dir)
        node = r.Node(
            id=datadir.node_id(data_dir),
            region=opts.region,
            hostname=socket.gethostname(),
            incarnation=uuid.uuid4().hex,
            started_at=time.time(),
            api_url=_url(*api_sock.getsockname()[:2]),
        )
        lease = await store.grant(NODE_LEASE_TTL)
        await catalog.put_node(node, lease=lease)
        stack.push_async_callback(_revoke, store, lease)
        _background(stack, _keep_lease(store, lease, catalog, node))

        # instances: the collector outlives the agent, so it reads their last lines
        logs = LogCollector(data_dir / "logs")
        _until_stopped(stack, logs.run)
        agent = HostAgent(catalog, node, ProcessDriver(), logs, data_dir)
        _until_stopped(stack, agent.run)

        # the data plane: route sync feeds the edge's routes and the host proxy's table
        holder, host_table = RouteHolder(RouteTable.build((), {})), TableHolder()
        limits = {"shutdown_timeout": opts.drain_timeout, **opts.proxy_limits}
        path = str(data_dir / "backhaul.sock")
        host = await _listening(
            "backhaul", path, start_host_proxy(path, host_table, metrics=metrics, **limits)
        )
        backhaul = unix_address(host.path)
        cert_routes = CertRoutes(holder)  # certificate hostnames route to their apps
        _background(stack, cert_routes.run(catalog))
        routes = RouteSync(
            catalog,
            cert_routes,
            node_id=node.id,
            host_table=host_table,
            backhaul_for=lambda node_id: backhaul if node_id == node.id else None,
        )
        _background(stack, routes.run())
        stack.push_async_callback(host.close)

        # TLS: certificates by SNI, ACME challenge answers, per-app policy (force_https, ...)
        seal = catalog_certs.KeySeal(catalog_certs.load_or_create_secret(data_dir))
        sites = Sites(holder, routes)
        cache = CertCache(catalog, seal, self_signed=sites.self_signed)
        stack.push_async_callback(cache.close)
        _background(stack, cache.run())
        _background(stack, _rotate_tickets(cache))
        http01, tls_alpn01 = Http01Responder(), TlsAlpn01Responder()
        tls = None
        if opts.https_port is not None:
            tls = EdgeTls(opts.http_host, opts.https_port, cache, tls_alpn01)
        ports = f"{opts.http_port}" + ("" if tls is None else f" and {opts.https_port}")
        edge = await _listening(
            "edge",
            f"{opts.http_host}:{ports}",
            start_edge(
                opts.http_host,
                opts.http_port,
                holder,
                region=opts.region,
                metrics=metrics,
                admission=host.admission,
                host_table=host_table,
                tls=tls,
                http01=http01 if opts.acme_directory else None,
                sites=sites,
                **limits,
            ),
        )
        stack.push_async_callback(edge.close)  # in-flight requests finish before instances stop
        edge_url = _url(opts.http_host, edge.port)
        https_url = (
            None if edge.https_port is None else _url(opts.http_host, edge.https_port, "https")
        )
        manager = None
        if opts.acme_directory:
            issuer = AcmeIssuer(
                catalog,
                seal,
                opts.acme_directory,
                http01=http01,
                tls_alpn01=None if tls is None else tls_alpn01,
                challenge_types=opts.acme_challenges,
                contact=(f"mailto:{opts.acme_email}",) if opts.acme_email else (),
                verify=opts.acme_ca_bundle or True,
            )
            manager = CertManager(catalog, issuer, node.id)
            _background(stack, manager.run())

        # the control plane
        control = ControlPlane(catalog)
        routers = [certs_router(catalog, seal, wake=None if manager is None else manager.wake)]
        if prom is not None:
            usage = prom.usage

            async def app_usage(app: str) -> AppUsage | None:
                if await catalog.get_app(app) is None:
                    return None  # 404; an app with no traffic yet gets zeros
                return usage.snapshot(app)

            routers.append(usage_router(app_usage))
        api = create_api(control, logs, token, node=node, edge_url=edge_url, routers=routers)
        server = _Uvicorn(
            uvicorn.Config(api, log_level="warning", lifespan="off", access_log=False)
        )
        api_task = asyncio.ensure_future(server.serve(sockets=[api_sock]))
        stack.push_async_callback(_stop_api, server, api_task)

        # settled, not just ready: a record left "started, healthy" by a run that died must
        # not make the demo look healthy (and the banner appear) before it is checked
        await asyncio.wait_for(agent.settled(), 30)
        await asyncio.wait_for(routes.ready.wait(), 30)
        demo = await deploy_demo(control) if opts.demo else []
        if demo and not await wait_healthy(catalog, "demo", demo, DEMO_HEALTHY_TIMEOUT):
            log.warning("demo instances not healthy after %ss", DEMO_HEALTHY_TIMEOUT)
        datadir.write_api_info(
            data_dir,
            {
                "url": node.api_url,
                "edge_url": edge_url,
                "https_url": https_url,
                "admin_url": admin_url,
                "pid": os.getpid(),
                "node": node.id,
            },
        )
        stack.callback(datadir.remove_api_info, data_dir)
        if started is not None:
            started(
                NodeInfo(
                    node.id, data_dir, node.api_url, edge_url, token, demo, admin_url, https_url
                )
            )
        await stop.wait()


async def _stop_api(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)


async def _revoke(store: SqliteStore, lease: int) -> None:
    with contextlib.suppress(Exception):
        await store.revoke(lease)


async def _rotate_tickets(cache: CertCache) -> None:
    """Fresh session-ticket keys every ``TICKET_KEY_LIFETIME`` (forward secrecy for tickets)."""
    while True:
        await asyncio.sleep(TICKET_KEY_LIFETIME)
        cache.rotate_ticket_keys()


async def _keep_lease(store: SqliteStore, lease: int, catalog: Catalog, node: r.Node) -> None:
    while True:
        await asyncio.sleep(NODE_LEASE_TTL / 3)
        try:
            await store.keepalive(lease)
        except Exception:  # lease lost (e.g. clock jump): register again
            lease = await store.grant(NODE_LEASE_TTL)
            await catalog.put_node(node, lease=lease)
