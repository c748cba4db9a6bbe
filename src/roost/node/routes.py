"""Keeps the edge's route table and the host proxy's instance table in step with the catalog.

One watcher (:class:`RouteSync`) follows ``apps/`` (names, hostnames, service concurrency)
and ``instances/`` (node, state, port, health); after every batch of changes it builds two
immutable snapshots and swaps them in:

- the **route table** (edge): every routable instance of every app, each a ``Backend``
  carrying its node, region, limits and the backhaul address of its node's host proxy;
- the **instance table** (host proxy): the routable instances *of this node*, with the
  port, app and concurrency limits the host proxy enforces.

Only instances that are started (and meant to be) and have a port are routable. Instances
on other nodes are routed only when ``backhaul_for(node)`` knows how to reach that node's
host proxy (the mesh issue adds that; today it is this node's unix socket only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.store import Compacted
from roost.config.model import Concurrency
from roost.proxy.admission import HostTarget, InstanceTable, TableHolder
from roost.proxy.routes import Backend, RouteHolder, RouteTable

BackhaulFor = Callable[[str], str | None]
"""node id -> backhaul address of that node's host proxy, or None (unreachable)."""


def _routable(inst: r.Instance) -> bool:
    return inst.desired == "started" and inst.state == "started" and bool(inst.port)


def _concurrency(app: r.App, inst: r.Instance) -> Concurrency:
    service = app.config.http_service_for(inst.process_group)
    if service is None:  # e.g. only a TLS passthrough service: its limits count the relays
        service = next(iter(app.config.services_for(inst.process_group)), None)
    return service.concurrency if service is not None else Concurrency()


def build_table(
    apps: dict[str, r.App],
    instances: dict[str, r.Instance],
    backhaul_for: BackhaulFor | None = None,
) -> RouteTable:
    """The edge's routes. Without ``backhaul_for`` backends are the instances themselves
    (an edge with no host proxy); with it, only instances whose node is reachable."""
    backends: dict[str, list[Backend]] = {name: [] for name in apps}
    for inst in instances.values():
        app = apps.get(inst.app)
        if app is None or not _routable(inst):
            continue
        address = None
        if backhaul_for is not None:
            address = backhaul_for(inst.node)
            if address is None:
                continue
        limits = _concurrency(app, inst)
        assert inst.port is not None
        backends[inst.app].append(
            Backend(
                instance_id=inst.id,
                host="127.0.0.1",
                port=inst.port,
                healthy=inst.healthy,
                node=inst.node,
                region=inst.region,
                backhaul=address,
                soft_limit=limits.soft_limit,
                hard_limit=limits.hard_limit,
            )
        )
    return RouteTable.build(((name, app.config.hostnames) for name, app in apps.items()), backends)


def build_instance_table(
    apps: dict[str, r.App], instances: dict[str, r.Instance], node_id: str
) -> InstanceTable:
    """The host proxy's instances: the routable ones on ``node_id``."""
    targets = []
    for inst in instances.values():
        app = apps.get(inst.app)
        if app is None or inst.node != node_id or not _routable(inst):
            continue
        limits = _concurrency(app, inst)
        assert inst.port is not None
        targets.append(
            HostTarget(
                instance_id=inst.id,
                app=inst.app,
                port=inst.port,
                concurrency=limits.type,
                soft_limit=limits.soft_limit,
                hard_limit=limits.hard_limit,
            )
        )
    return InstanceTable(targets)


class RouteSync:
    """Follows the catalog; swaps fresh tables into the edge's and host proxy's holders."""

    def __init__(
        self,
        catalog: Catalog,
        holder: RouteHolder,
        *,
        node_id: str = "",
        host_table: TableHolder | None = None,
        backhaul_for: BackhaulFor | None = None,
    ) -> None:
        self.catalog = catalog
        self.holder = holder
        self.node_id = node_id
        self.host_table = host_table
        self.backhaul_for = backhaul_for
        self.apps: dict[str, r.App] = {}
        self.instances: dict[str, r.Instance] = {}
        self._dirty = asyncio.Event()
        self.ready = asyncio.Event()
        self._loaded: set[str] = set()

    def rebuild(self) -> None:
        """Build and swap both tables from the current view."""
        # the host table first: a backend the edge sees is known to its host proxy
        if self.host_table is not None:
            self.host_table.table = build_instance_table(self.apps, self.instances, self.node_id)
        self.holder.table = build_table(self.apps, self.instances, self.backhaul_for)

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self._follow("apps/")),
            asyncio.ensure_future(self._follow("instances/")),
        ]
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                self.rebuild()
                if len(self._loaded) == 2:
                    self.ready.set()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _follow(self, prefix: str) -> None:
        while True:
            entries, revision = await self.catalog.store.range(prefix)
            self._replace(prefix, {e.key: e.value for e in entries})
            self._loaded.add(prefix)
            self._dirty.set()
            try:
                async for ev in self.catalog.store.watch(prefix, revision + 1):
                    self._apply(prefix, ev.key, ev.value if ev.type == "put" else None)
                    self._dirty.set()
            except Compacted:
                continue
            return

    def _replace(self, prefix: str, values: dict[str, bytes]) -> None:
        if prefix == "apps/":
            self.apps = {k.split("/", 1)[1]: r.decode(v, r.App) for k, v in values.items()}
        else:
            self.instances = {k: r.decode(v, r.Instance) for k, v in values.items()}

    def _apply(self, prefix: str, key: str, value: bytes | None) -> None:
        if prefix == "apps/":
            name = key.split("/", 1)[1]
            if value is None:
                self.apps.pop(name, None)
            else:
                self.apps[name] = r.decode(value, r.App)
        elif value is None:
            self.instances.pop(key, None)
        else:
            self.instances[key] = r.decode(value, r.Instance)
