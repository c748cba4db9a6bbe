"""Compose and run a single Roost node (``roost up``): every role, started and stopped in order.

Start: data dir + lock → edge + host proxy listeners → catalog → token → node record (leased) →
host agent + log collector → route sync (feeds the edge's routes and the host proxy's instance
table) → API → demo deploy → ``api.json`` for the CLI.
Stop (reverse): forget ``api.json`` → stop API → drain and close the edge (in-flight requests
finish, up to ``drain_timeout``) → close the host proxy → stop instances → flush logs → revoke
the node lease → close the catalog.

The request path on one node: client → edge (``http_host:http_port``) → backhaul unix socket
``<data dir>/backhaul.sock`` → host proxy (limits) → instance on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

import roost
from roost.api.app import create_api
from roost.api.auth import load_or_create_token
from roost.api.service import ControlPlane
from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.machines.agent import HostAgent
from roost.machines.drivers.process import ProcessDriver
from roost.machines.logs import LogCollector
from roost.node import datadir
from roost.node.routes import RouteSync
from roost.proxy.admission import TableHolder
from roost.proxy.backhaul import unix_address
from roost.proxy.edge import Edge, start_edge
from roost.proxy.host import HostProxy, start_host_proxy
from roost.proxy.metrics import Metrics
from roost.proxy.routes import RouteHolder, RouteTable

log = logging.getLogger("roost.node")
NODE_LEASE_TTL = 15.0
DEMO_DIR = Path(roost.__file__).resolve().parents[2] / "examples" / "demo"


@dataclass
class NodeOptions:
    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_host: str = "127.0.0.1"
    api_port: int = 4280
    region: str = "local"
    demo: bool = True
    drain_timeout: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    proxy_limits: dict[str, Any] = field(default_factory=dict)  # proxy.forward.Limits fields
    metrics: Metrics | None = None


@dataclass
class NodeInfo:
    node_id: str
    data_dir: Path
    api_url: str
    edge_url: str
    token: str
    demo_instances: list[str] = field(default_factory=list)


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


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield  # the node owns signal handling


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


async def run_node(
    opts: NodeOptions,
    stop: asyncio.Event,
    started: Callable[[NodeInfo], None] | None = None,
) -> None:
    data_dir = datadir.prepare(opts.data_dir)
    try:
        lock_fd = datadir.lock(data_dir)
    except datadir.DataDirError as exc:
        raise StartupError(str(exc)) from None
    api_sock = None
    try:
        api_sock = _bind(opts.api_host, opts.api_port, "API")
        await _run(opts, data_dir, api_sock, stop, started)
    finally:
        if api_sock is not None:
            api_sock.close()
        os.close(lock_fd)


async def _run(
    opts: NodeOptions,
    data_dir: Path,
    api_sock: socket.socket,
    stop: asyncio.Event,
    started: Callable[[NodeInfo], None] | None,
) -> None:
    holder = RouteHolder(RouteTable.build((), {}))
    host_table = TableHolder()
    limits = {"shutdown_timeout": opts.drain_timeout, **opts.proxy_limits}
    try:
        host = await start_host_proxy(
            str(data_dir / "backhaul.sock"), host_table, metrics=opts.metrics, **limits
        )
    except OSError as exc:
        raise StartupError(f"cannot listen for the backhaul in {data_dir}: {exc}") from None
    try:
        edge = await start_edge(
            opts.http_host,
            opts.http_port,
            holder,
            region=opts.region,
            metrics=opts.metrics,
            admission=host.admission,
            **limits,
        )
    except OSError as exc:
        await host.close(timeout=0)
        raise StartupError(
            f"cannot listen for the edge on {opts.http_host}:{opts.http_port}: {exc.strerror}"
        ) from None
    try:
        await _serve(opts, data_dir, api_sock, edge, host, holder, host_table, stop, started)
    finally:
        await edge.close()
        await host.close()


async def _serve(
    opts: NodeOptions,
    data_dir: Path,
    api_sock: socket.socket,
    edge: Edge,
    host_proxy: HostProxy,
    holder: RouteHolder,
    host_table: TableHolder,
    stop: asyncio.Event,
    started: Callable[[NodeInfo], None] | None,
) -> None:
    store = await SqliteStore.open(data_dir / "catalog.db")
    catalog = Catalog(store)
    token = load_or_create_token(data_dir)
    api_url = _url(api_sock)
    host = opts.http_host
    edge_url = f"http://{f'[{host}]' if ':' in host else host}:{edge.port}"
    node = r.Node(
        id=datadir.node_id(data_dir),
        region=opts.region,
        hostname=socket.gethostname(),
        incarnation=uuid.uuid4().hex,
        started_at=time.time(),
        api_url=api_url,
    )
    lease = await store.grant(NODE_LEASE_TTL)
    await catalog.put_node(node, lease=lease)

    tasks: list[asyncio.Task[None]] = []
    agent_stop, logs_stop = asyncio.Event(), asyncio.Event()
    logs = LogCollector(data_dir / "logs")
    agent = HostAgent(catalog, node, ProcessDriver(), logs, data_dir)
    backhaul = unix_address(host_proxy.path)
    routes = RouteSync(
        catalog,
        holder,
        node_id=node.id,
        host_table=host_table,
        backhaul_for=lambda node_id: backhaul if node_id == node.id else None,
    )
    control = ControlPlane(catalog)
    tasks.append(asyncio.ensure_future(agent.run(agent_stop)))
    tasks.append(asyncio.ensure_future(logs.run(logs_stop)))
    tasks.append(asyncio.ensure_future(routes.run()))
    tasks.append(asyncio.ensure_future(_keep_lease(store, lease, catalog, node)))
    api = create_api(control, logs, token, node=node, edge_url=edge_url)
    server = _Uvicorn(uvicorn.Config(api, log_level="warning", lifespan="off", access_log=False))
    api_task = asyncio.ensure_future(server.serve(sockets=[api_sock]))
    try:
        await asyncio.wait_for(agent.ready.wait(), 30)
        await asyncio.wait_for(routes.ready.wait(), 30)
        demo = await deploy_demo(control) if opts.demo else []
        datadir.write_api_info(
            data_dir, {"url": api_url, "edge_url": edge_url, "pid": os.getpid(), "node": node.id}
        )
        if started is not None:
            started(NodeInfo(node.id, data_dir, api_url, edge_url, token, demo))
        await stop.wait()
    finally:
        datadir.remove_api_info(data_dir)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(api_task, 10)
        await edge.close()  # in-flight requests finish before their instances stop
        await host_proxy.close()
        for event, task in ((agent_stop, tasks[0]), (logs_stop, tasks[1])):
            event.set()  # instances stop first, then the collector reads their last lines
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 120)
        for task in tasks[2:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await store.revoke(lease)
        await store.close()


async def _keep_lease(store: SqliteStore, lease: int, catalog: Catalog, node: r.Node) -> None:
    while True:
        await asyncio.sleep(NODE_LEASE_TTL / 3)
        try:
            await store.keepalive(lease)
        except Exception:  # lease lost (e.g. clock jump): register again
            lease = await store.grant(NODE_LEASE_TTL)
            await catalog.put_node(node, lease=lease)
