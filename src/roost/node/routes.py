"""Keeps the edge's route table in step with the catalog.

Watches ``apps/`` (names, extra hostnames) and ``instances/`` (state, port, health); after every
batch of changes builds a fresh immutable ``RouteTable`` and swaps it into the ``RouteHolder``
the edge reads per request. Only instances that are started (and meant to be) are routable.
"""

from __future__ import annotations

import asyncio
import contextlib

from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.store import Compacted
from roost.proxy.routes import Backend, RouteHolder, RouteTable


def build_table(apps: dict[str, r.App], instances: dict[str, r.Instance]) -> RouteTable:
    backends: dict[str, list[Backend]] = {name: [] for name in apps}
    for inst in instances.values():
        routable = inst.desired == "started" and inst.state == "started"
        if inst.app in backends and routable and inst.port:
            backends[inst.app].append(
                Backend(instance_id=inst.id, host="127.0.0.1", port=inst.port, healthy=inst.healthy)
            )
    return RouteTable.build(((name, app.config.hostnames) for name, app in apps.items()), backends)


class RouteSync:
    def __init__(self, catalog: Catalog, holder: RouteHolder) -> None:
        self.catalog = catalog
        self.holder = holder
        self.apps: dict[str, r.App] = {}
        self.instances: dict[str, r.Instance] = {}
        self._dirty = asyncio.Event()
        self.ready = asyncio.Event()
        self._loaded: set[str] = set()

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self._follow("apps/")),
            asyncio.ensure_future(self._follow("instances/")),
        ]
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                self.holder.table = build_table(self.apps, self.instances)
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
