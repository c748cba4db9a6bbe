"""The routing table: ``Host`` header -> app -> the app's backends (pure, no I/O).

A :class:`RouteTable` is an immutable snapshot. Whoever watches the catalog builds a new
one with :meth:`RouteTable.build` on every change and swaps it into the shared
:class:`RouteHolder`; the edge reads ``holder.table`` once per request, so a request
always sees one consistent table and a swap is a single attribute store.

Every app is reachable as ``<app>.localhost`` plus its own hostnames. Host names are
compared case-insensitively, without the port and without a trailing dot; IPv6 literals
are written ``[::1]:8080`` in a Host header and stored without brackets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["AppRoute", "Backend", "RouteHolder", "RouteTable", "normalize_host"]

LOCAL_SUFFIX = ".localhost"
_MAX_HOST_LEN = 255


@dataclass(frozen=True, slots=True)
class Backend:
    """One running instance the edge may send requests to.

    ``host:port`` is where the instance listens on its node. ``backhaul`` is the address of
    the host proxy on that node (``unix:/path`` on one node; ``tcp:host:port`` with mTLS
    when the mesh arrives): when set, the edge sends the request there naming the instance,
    and the host proxy enforces the limits. ``None`` sends straight to ``host:port`` (an
    edge without host proxies: tests, benchmarks) with no limits enforced anywhere.
    """

    instance_id: str
    host: str
    port: int
    healthy: bool = True
    node: str = ""
    region: str = ""
    backhaul: str | None = None
    soft_limit: int = 20
    hard_limit: int | None = None


@dataclass(frozen=True, slots=True)
class AppRoute:
    """An app and the backends that currently serve it (possibly none)."""

    app: str
    backends: tuple[Backend, ...] = ()

    def backend(self, instance_id: str) -> Backend | None:
        """The backend with this instance id, or None."""
        for backend in self.backends:
            if backend.instance_id == instance_id:
                return backend
        return None


def normalize_host(host: str) -> str | None:
    """Canonical form of a Host header value or configured hostname, or None if invalid.

    Lower-cases, strips surrounding whitespace, a ``:port`` suffix (digits, possibly
    empty) and one trailing dot; ``[v6]`` literals lose their brackets.

    >>> normalize_host("Demo.LocalHost.:8080")
    'demo.localhost'
    >>> normalize_host("[::1]:443")
    '::1'
    """
    name = _canonical(host)
    if name is None or _INVALID_HOST_CHARS.intersection(name):
        return None
    return name


def _canonical(host: str) -> str | None:
    """``normalize_host`` without the character check (lookups need no validation: an
    invalid name is never in a table)."""
    host = host.strip().lower()
    if not host or len(host) > _MAX_HOST_LEN:
        return None
    if host[0] == "[":
        end = host.find("]")
        if end < 2:
            return None
        rest = host[end + 1 :]
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        return host[1:end]
    name, sep, port = host.rpartition(":")
    if sep:
        if ":" in name or not _is_port(port):
            return None
        host = name
    if host.endswith("."):
        host = host[:-1]
    return host or None


_INVALID_HOST_CHARS = frozenset(" \t/\\?#@[]\"'<>%{}|^`")


def _is_port(text: str) -> bool:
    return not text or (text.isascii() and text.isdigit() and len(text) <= 5)


class RouteTable:
    """An immutable host -> :class:`AppRoute` snapshot; build with :meth:`build`."""

    __slots__ = ("_by_app", "_by_host")

    def __init__(self, by_host: Mapping[str, AppRoute], by_app: Mapping[str, AppRoute]) -> None:
        self._by_host = dict(by_host)
        self._by_app = dict(by_app)

    @classmethod
    def empty(cls) -> RouteTable:
        """A table that routes nothing."""
        return cls({}, {})

    @classmethod
    def build(
        cls,
        apps: Iterable[tuple[str, Iterable[str]]],
        backends: Mapping[str, Iterable[Backend]],
    ) -> RouteTable:
        """Build a table from ``(app, extra hostnames)`` pairs and backends per app.

        Backends of apps not listed in ``apps`` are ignored. Raises ValueError for an
        invalid hostname or a hostname claimed by two apps (the control plane should
        never produce either; failing loudly beats routing to the wrong app).
        """
        by_host: dict[str, AppRoute] = {}
        by_app: dict[str, AppRoute] = {}
        for app, hostnames in apps:
            route = AppRoute(app, tuple(backends.get(app, ())))
            if app in by_app:
                raise ValueError(f"app {app!r} listed twice")
            by_app[app] = route
            for raw in (app + LOCAL_SUFFIX, *hostnames):
                name = normalize_host(raw)
                if name is None:
                    raise ValueError(f"app {app!r}: invalid hostname {raw!r}")
                other = by_host.get(name)
                if other is not None and other.app != app:
                    raise ValueError(f"hostname {name!r} claimed by apps {other.app!r} and {app!r}")
                by_host[name] = route
        return cls(by_host, by_app)

    def lookup(self, host_header: str) -> AppRoute | None:
        """The route for a Host header value (any case, with or without port), or None."""
        route = self._by_host.get(host_header)
        if route is not None:
            return route
        name = _canonical(host_header)
        return None if name is None else self._by_host.get(name)

    def app(self, name: str) -> AppRoute | None:
        """The route of an app by name, or None."""
        return self._by_app.get(name)

    @property
    def hostnames(self) -> frozenset[str]:
        """Every routable hostname (normalized)."""
        return frozenset(self._by_host)

    def __len__(self) -> int:
        return len(self._by_app)

    def __repr__(self) -> str:
        return f"<RouteTable apps={len(self._by_app)} hosts={len(self._by_host)}>"


class RouteHolder:
    """The one mutable cell: the catalog watcher stores a new table, the edge reads it."""

    __slots__ = ("table",)

    def __init__(self, table: RouteTable | None = None) -> None:
        self.table: RouteTable = table if table is not None else RouteTable.empty()
