"""Typed access to the catalog: records in, records out, over any ``Store`` backend.

Read-modify-write goes through ``update_*`` helpers that retry on a compare-and-set conflict, so
the API (writing desired state) and the host agent (writing actual state) never lose each
other's writes to the same instance record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import TypeVar

import msgspec

from roost.catalog import records as r
from roost.catalog.store import CompareFailed, Store

T = TypeVar("T", bound=msgspec.Struct)

EVENTS_KEPT_PER_APP = 1000
_seq = itertools.count()


class Catalog:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._events_since_trim: dict[str, int] = {}

    # -- generic ---------------------------------------------------------------------------
    async def _get(self, key: str, kind: type[T]) -> tuple[T, int] | None:
        entry = await self.store.get(key)
        if entry is None:
            return None
        return r.decode(entry.value, kind), entry.mod_revision

    async def _list(self, prefix: str, kind: type[T]) -> list[T]:
        entries, _ = await self.store.range(prefix)
        return [r.decode(e.value, kind) for e in entries]

    async def _update(
        self, key: str, kind: type[T], fn: Callable[[T], T | None], *, attempts: int = 50
    ) -> T | None:
        """Apply ``fn`` to the record at ``key`` with CAS, retrying on conflicts.

        ``fn`` returns the new record, or None to leave it unchanged. Returns the record as
        stored afterwards (None if the key does not exist).
        """
        for _ in range(attempts):
            got = await self._get(key, kind)
            if got is None:
                return None
            current, revision = got
            new = fn(current)
            if new is None or new == current:
                return current
            try:
                await self.store.put(key, r.encode(new), prev_revision=revision)
            except CompareFailed:
                continue
            return new
        raise RuntimeError(f"catalog: too many conflicting writes to {key}")

    async def wait_change(self, prefix: str, after_revision: int, timeout: float) -> None:
        """Return at the first change under ``prefix`` after ``after_revision`` (the revision
        the caller read its state at, so nothing in between is missed), or after ``timeout``."""
        watch = self.store.watch(prefix, after_revision + 1)
        try:
            with contextlib.suppress(TimeoutError, StopAsyncIteration):
                await asyncio.wait_for(anext(watch), max(timeout, 0.001))
        finally:
            aclose = getattr(watch, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- nodes -----------------------------------------------------------------------------
    async def put_node(self, node: r.Node, *, lease: int = 0) -> None:
        await self.store.put(r.node_key(node.id), r.encode(node), lease=lease)

    async def list_nodes(self) -> list[r.Node]:
        return await self._list("nodes/", r.Node)

    # -- apps ------------------------------------------------------------------------------
    async def get_app(self, name: str) -> r.App | None:
        got = await self._get(r.app_key(name), r.App)
        return None if got is None else got[0]

    async def list_apps(self) -> list[r.App]:
        return await self._list("apps/", r.App)

    async def create_app(self, app: r.App) -> bool:
        """Create ``app`` if no app of that name exists; False if one does."""
        try:
            await self.store.put(r.app_key(app.name), r.encode(app), prev_revision=0)
        except CompareFailed:
            return False
        return True

    async def update_app(self, name: str, fn: Callable[[r.App], r.App | None]) -> r.App | None:
        return await self._update(r.app_key(name), r.App, fn)

    async def delete_app(self, name: str) -> bool:
        for entry in (await self.store.range(f"services/{name}/"))[0]:
            await self.store.delete(entry.key)
        return await self.store.delete(r.app_key(name))

    async def put_services(self, app: r.App) -> None:
        wanted = {s.name: s for s in app.config.services}
        for entry in (await self.store.range(f"services/{app.name}/"))[0]:
            if entry.key.rsplit("/", 1)[1] not in wanted:
                await self.store.delete(entry.key)
        for name, service in wanted.items():
            record = r.ServiceRecord(app=app.name, service=service)
            await self.store.put(r.service_key(app.name, name), r.encode(record))

    # -- instances -------------------------------------------------------------------------
    async def get_instance(self, app: str, instance_id: str) -> r.Instance | None:
        got = await self._get(r.instance_key(app, instance_id), r.Instance)
        return None if got is None else got[0]

    async def list_instances(self, app: str | None = None) -> list[r.Instance]:
        return await self._list(r.instances_prefix(app), r.Instance)

    async def create_instance(self, inst: r.Instance) -> None:
        await self.store.put(r.instance_key(inst.app, inst.id), r.encode(inst), prev_revision=0)

    async def update_instance(
        self, app: str, instance_id: str, fn: Callable[[r.Instance], r.Instance | None]
    ) -> r.Instance | None:
        return await self._update(r.instance_key(app, instance_id), r.Instance, fn)

    async def delete_instance(self, app: str, instance_id: str) -> bool:
        return await self.store.delete(r.instance_key(app, instance_id))

    # -- events ----------------------------------------------------------------------------
    async def add_event(
        self,
        app: str,
        instance_id: str,
        type: r.EventType,
        message: str = "",
        exit_code: int | None = None,
    ) -> r.Event:
        now = self.clock()
        event = r.Event(
            time=now,
            app=app,
            instance_id=instance_id,
            type=type,
            message=message,
            exit_code=exit_code,
        )
        # nanosecond timestamp + process-wide sequence: unique and time-ordered within an app
        ts = int(now * 1e9) + next(_seq) % 1000
        await self.store.put(r.event_key(app, ts, instance_id), r.encode(event))
        count = self._events_since_trim.get(app, 0) + 1
        self._events_since_trim[app] = count
        if count >= 100:
            self._events_since_trim[app] = 0
            await self.trim_events(app)
        return event

    async def list_events(self, app: str, limit: int = 100) -> list[r.Event]:
        entries, _ = await self.store.range(r.events_prefix(app))
        return [r.decode(e.value, r.Event) for e in entries[-limit:]] if limit > 0 else []

    async def trim_events(self, app: str, keep: int = EVENTS_KEPT_PER_APP) -> None:
        entries, _ = await self.store.range(r.events_prefix(app))
        for entry in entries[: max(0, len(entries) - keep)]:
            await self.store.delete(entry.key)

    async def delete_events(self, app: str) -> None:
        await self.trim_events(app, keep=0)
