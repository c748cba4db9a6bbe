"""A certificate's hostname routes to its app: ``roost certs add www.example.com --app web``.

:class:`CertRoutes` sits between the route watcher and the edge's :class:`RouteHolder`: the
watcher stores its tables here (it is a ``RouteHolder`` too), and every table -- and every
change under ``certs/`` in the catalog -- is republished to the edge with each certificate's
exact hostname added for its app, unless the apps' own hostnames already claim the name (an
app's configured hostnames win). Wildcard certificates add no routes.
"""

from __future__ import annotations

import contextlib

from roost.catalog import certs as c
from roost.catalog.client import Catalog
from roost.catalog.store import Compacted
from roost.proxy.routes import AppRoute, RouteHolder, RouteTable

__all__ = ["CertRoutes", "with_cert_hostnames"]


def with_cert_hostnames(table: RouteTable, names: dict[str, str]) -> RouteTable:
    """``table`` plus ``hostname -> app`` for the names it does not route yet (pure)."""
    known = table.hostnames
    extra: dict[str, AppRoute] = {}
    for name, app in names.items():
        route = table.app(app)
        if route is not None and name not in known and not name.startswith("*."):
            extra[name] = route
    if not extra:
        return table
    by_host: dict[str, AppRoute] = {}
    for host in known:
        route = table.lookup(host)
        if route is not None:
            by_host[host] = route
    by_app = {route.app: route for route in by_host.values()}
    return RouteTable(by_host | extra, by_app)


class CertRoutes(RouteHolder):
    """The watcher's holder; publishes its tables, with certificate hostnames, to ``target``."""

    __slots__ = ("_base", "_names", "target")

    def __init__(self, target: RouteHolder) -> None:  # no super().__init__: ``table`` is ours
        self.target = target
        self._names: dict[str, str] = {}
        self._base = target.table

    @property
    def table(self) -> RouteTable:
        return self._base

    @table.setter
    def table(self, table: RouteTable) -> None:
        self._base = table
        self.target.table = with_cert_hostnames(table, self._names)

    def set_names(self, names: dict[str, str]) -> None:
        """Certificate hostname -> app, as in the catalog now."""
        self._names = names
        self.target.table = with_cert_hostnames(self._base, names)

    async def run(self, catalog: Catalog) -> None:
        """Follow ``certs/`` until cancelled."""
        while True:
            entries, revision = await catalog.store.range(c.CERTS_PREFIX)
            names: dict[str, str] = {}
            for entry in entries:
                with contextlib.suppress(Exception):
                    cert = c.decode_cert(entry.value)
                    names[cert.hostname] = cert.app
            self.set_names(names)
            try:
                async for ev in catalog.store.watch(c.CERTS_PREFIX, revision + 1):
                    name = c.hostname_of(ev.key)
                    if ev.type == "delete":
                        names.pop(name, None)
                    else:
                        with contextlib.suppress(Exception):
                            names[name] = c.decode_cert(ev.value).app
                    self.set_names(dict(names))
            except Compacted:
                continue
            return
