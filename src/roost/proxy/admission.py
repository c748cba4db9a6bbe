"""Admission on the host proxy: per-instance in-flight counts and the hard limit (pure).

This is the one place Roost enforces an instance's concurrency limit. The host proxy
admits a request for instance *i* only while ``in_flight(i) < hard_limit(i)``, counting it
from admission (before any byte is sent to the instance) until its response is complete
or it failed; beyond the limit it refuses, and the edge retries elsewhere.

``[services.concurrency] type``: for HTTP services both ``connections`` and ``requests``
count *in-flight requests through the host proxy to the instance* (an upgraded
connection, e.g. a WebSocket, counts as one request for as long as it is open). Keep-alive
connections to the instance are pooled by the host proxy and carry one request at a time,
so the two agree; the type is kept in the table for raw TCP services later.

The counts are the node's *load*: the edge's balancer reads them (on one node this very
object, through :meth:`Admission.load`; later the mesh gossips :meth:`Admission.snapshot`),
and listeners (:meth:`Admission.subscribe`) hear of every release so edges can wake
requests waiting for capacity without polling.

The instance table (:class:`InstanceTable`) is an immutable snapshot of this node's
instances built from the catalog and swapped into a :class:`TableHolder`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from roost.proxy.routes import Backend

__all__ = ["Admission", "HostTarget", "InstanceTable", "Released", "TableHolder"]

Released = Callable[[str, str, int], None]
"""Listener: ``(app, instance_id, in_flight_after)`` after each release."""


@dataclass(frozen=True, slots=True)
class HostTarget:
    """One instance on this node, as the host proxy sees it."""

    instance_id: str
    app: str
    port: int
    host: str = "127.0.0.1"
    concurrency: Literal["connections", "requests"] = "requests"
    soft_limit: int = 20
    hard_limit: int | None = None  # None: no hard limit
    backend: Backend = field(init=False, compare=False, repr=False)  # where to connect

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", Backend(self.instance_id, self.host, self.port))


class InstanceTable:
    """An immutable instance id -> :class:`HostTarget` snapshot."""

    __slots__ = ("_targets",)

    def __init__(self, targets: Iterable[HostTarget] = ()) -> None:
        self._targets = {t.instance_id: t for t in targets}

    def get(self, instance_id: str) -> HostTarget | None:
        """The target with this id, or None."""
        return self._targets.get(instance_id)

    def __len__(self) -> int:
        return len(self._targets)

    def __iter__(self) -> Iterator[HostTarget]:
        return iter(self._targets.values())

    def __repr__(self) -> str:
        return f"<InstanceTable instances={len(self._targets)}>"


class TableHolder:
    """The one mutable cell: the catalog watcher stores a table, the host proxy reads it."""

    __slots__ = ("table",)

    def __init__(self, table: InstanceTable | None = None) -> None:
        self.table = table if table is not None else InstanceTable()


class Admission:
    """In-flight requests per instance, with the hard limit checked on every admission."""

    __slots__ = ("_counts", "_listeners")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._listeners: list[Released] = []

    def try_acquire(self, target: HostTarget) -> bool:
        """Count one more request for ``target`` unless it is at its hard limit."""
        counts = self._counts
        n = counts.get(target.instance_id, 0)
        hard = target.hard_limit
        if hard is not None and n >= hard:
            return False
        counts[target.instance_id] = n + 1
        return True

    def release(self, target: HostTarget) -> None:
        """One request for ``target`` finished (exactly once per successful acquire)."""
        counts = self._counts
        iid = target.instance_id
        n = counts.get(iid, 0) - 1
        if n > 0:
            counts[iid] = n
        else:
            counts.pop(iid, None)
            n = 0
        for listener in self._listeners:
            listener(target.app, iid, n)

    def load(self, instance_id: str) -> int:
        """Requests in flight to this instance now."""
        return self._counts.get(instance_id, 0)

    def snapshot(self) -> dict[str, int]:
        """Every non-zero count (what a load report would carry)."""
        return dict(self._counts)

    def subscribe(self, listener: Released) -> None:
        """Call ``listener`` after every release."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Released) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)
