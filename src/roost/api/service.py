"""Control-plane operations (deploy, scale, instance actions) over the catalog.

The HTTP layer (``api.app``) and ``roost up`` (which deploys the demo) call these; they validate,
write desired state, and let the host agents converge. Writes for one app are serialised by a
per-app lock so two concurrent deploys/scales never double-create instances.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from roost.api.errors import ApiError, invalid, not_found
from roost.api.scheduler import plan_instances
from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.config import ConfigError, parse_config
from roost.config.model import AppConfig


def new_instance_id() -> str:
    return secrets.token_hex(7)


@dataclass(frozen=True, slots=True)
class DeployResult:
    app: r.App
    created: tuple[str, ...]
    destroyed: tuple[str, ...]
    warnings: tuple[str, ...]


class ControlPlane:
    def __init__(self, catalog: Catalog, *, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, app: str) -> asyncio.Lock:
        return self._locks.setdefault(app, asyncio.Lock())

    # -- apps ------------------------------------------------------------------------------
    async def create_app(self, name: str) -> r.App:
        now = self.clock()
        app = r.App(
            name=name,
            config=AppConfig(app=name),
            counts={},
            version=0,
            created_at=now,
            updated_at=now,
        )
        if not await self.catalog.create_app(app):
            raise ApiError(409, "exists", f"app {name!r} already exists")
        return app

    async def get_app(self, name: str) -> r.App:
        app = await self.catalog.get_app(name)
        if app is None:
            raise not_found(f"app {name!r}")
        return app

    async def destroy_app(self, name: str, *, timeout: float = 30.0) -> None:
        async with self._lock(name):
            await self.get_app(name)
            for inst in await self.catalog.list_instances(name):
                await self._set_desired(inst, "destroyed")
            deadline = self.clock() + timeout
            prefix = r.instances_prefix(name)
            while self.clock() < deadline:
                left, revision = await self.catalog.store.range(prefix)
                if not left:
                    break
                await self.catalog.wait_change(prefix, revision, deadline - self.clock())
            await self.catalog.delete_app(name)
            await self.catalog.delete_events(name)

    # -- deploy ----------------------------------------------------------------------------
    def parse(
        self, text: str, filename: str, app: str | None, command: list[str] | None
    ) -> tuple[AppConfig, tuple[str, ...]]:
        try:
            parsed = parse_config(text, filename=filename)
        except ConfigError as exc:
            errors = getattr(exc, "errors", None) or [exc]
            fields = [(e.key or "config", str(e)) for e in errors]
            raise ApiError(422, "invalid_config", str(exc), fields) from None
        config = parsed.config
        if app is not None and app != config.app:
            config = msgspec.structs.replace(config, app=app)
        if command and not config.processes:
            config = msgspec.structs.replace(config, processes=(("app", tuple(command)),))
        if config.image is not None:
            raise invalid("image", "image deploys need the container driver, not available yet")
        if not config.processes:
            raise invalid(
                "processes", "no command to run: add [processes] or pass a command to deploy"
            )
        return config, tuple(str(w) for w in parsed.warnings)

    async def deploy(
        self,
        text: str,
        *,
        filename: str = "roost.toml",
        app: str | None = None,
        workdir: str | None = None,
        command: list[str] | None = None,
    ) -> DeployResult:
        config, warnings = self.parse(text, filename, app, command)
        if workdir is not None and not (os.path.isabs(workdir) and os.path.isdir(workdir)):
            raise invalid("workdir", f"{workdir!r} is not an existing absolute directory")
        now = self.clock()
        async with self._lock(config.app):
            current = await self.catalog.get_app(config.app)
            counts = dict(current.counts) if current else {}
            counts = {
                g: counts.get(g, config.count if config.count is not None else 1)
                for g in config.process_groups()
            }
            if config.count is not None:
                counts = dict.fromkeys(counts, config.count)
            record = r.App(
                name=config.app,
                config=config,
                counts=counts,
                version=(current.version if current else 0) + 1,
                workdir=workdir,
                config_file=os.path.basename(filename),
                created_at=current.created_at if current else now,
                updated_at=now,
            )
            if current is None:
                if not await self.catalog.create_app(record):
                    raise ApiError(409, "conflict", f"app {config.app!r} was created concurrently")
            else:
                await self.catalog.update_app(config.app, lambda _: record)
            await self.catalog.put_services(record)
            created, destroyed = await self._reconcile(record)
        return DeployResult(record, created, destroyed, warnings)

    async def scale(self, name: str, count: int, group: str | None) -> tuple[r.App, list, list]:
        async with self._lock(name):
            app = await self.get_app(name)
            groups = app.config.process_groups()
            if group is not None and group not in groups:
                raise invalid("process_group", f"app {name!r} has no process group {group!r}")
            if app.version == 0:
                raise ApiError(409, "not_deployed", f"app {name!r} has not been deployed yet")
            counts = {g: (count if group in (None, g) else app.counts.get(g, 0)) for g in groups}
            app = (
                await self.catalog.update_app(
                    name,
                    lambda a: msgspec.structs.replace(a, counts=counts, updated_at=self.clock()),
                )
                or app
            )
            created, destroyed = await self._reconcile(app)
        return app, list(created), list(destroyed)

    async def _reconcile(self, app: r.App) -> tuple[tuple[str, ...], tuple[str, ...]]:
        instances = await self.catalog.list_instances(app.name)
        nodes = await self.catalog.list_nodes()
        plan = plan_instances(app, instances, nodes, new_instance_id, self.clock())
        if not nodes and any(app.counts.values()):
            raise ApiError(503, "no_nodes", "no node is available to run instances")
        for inst in plan.create:
            await self.catalog.create_instance(inst)
        by_id = {i.id: i for i in instances}
        for iid in plan.destroy:
            await self._set_desired(by_id[iid], "destroyed")
        return tuple(i.id for i in plan.create), plan.destroy

    # -- instances -------------------------------------------------------------------------
    async def get_instance(self, app: str, iid: str) -> r.Instance:
        inst = await self.catalog.get_instance(app, iid)
        if inst is None:
            raise not_found(f"instance {iid!r} of app {app!r}")
        return inst

    async def _set_desired(self, inst: r.Instance, desired: r.DesiredState, boot: int = 0) -> None:
        now = self.clock()
        await self.catalog.update_instance(
            inst.app,
            inst.id,
            lambda i: msgspec.structs.replace(
                i, desired=desired, boot=i.boot + boot, updated_at=now
            ),
        )

    async def instance_action(self, app: str, iid: str, action: str) -> r.Instance:
        inst = await self.get_instance(app, iid)
        if inst.desired == "destroyed":
            raise ApiError(409, "destroyed", f"instance {iid!r} is being destroyed")
        if action == "start":
            await self._set_desired(inst, "started", boot=0 if inst.state == "started" else 1)
        elif action == "stop":
            await self._set_desired(inst, "stopped")
        elif action == "restart":
            await self._set_desired(inst, "started", boot=1)
        elif action == "destroy":
            await self._set_desired(inst, "destroyed")
        else:  # pragma: no cover - routes only pass the four actions
            raise invalid("action", f"unknown action {action!r}")
        return await self.get_instance(app, iid)

    async def wait_for_state(self, app: str, iid: str, state: str, timeout: float) -> r.Instance:
        """Return once the instance is in ``state`` (``destroyed``: gone); 408 after timeout."""
        deadline = self.clock() + timeout
        key = r.instance_key(app, iid)
        while True:
            entries, revision = await self.catalog.store.range(key)
            inst = next((r.decode(e.value, r.Instance) for e in entries if e.key == key), None)
            if inst is None:
                if state == "destroyed":
                    return r.Instance(
                        id=iid,
                        app=app,
                        node="",
                        region="",
                        process_group="",
                        app_version=0,
                        desired="destroyed",
                        state="destroyed",
                    )
                raise not_found(f"instance {iid!r} of app {app!r}")
            if inst.state == state:
                return inst
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ApiError(
                    408,
                    "timeout",
                    f"instance {iid} is {inst.state!r}, not {state!r}, after {timeout:g}s",
                )
            await self.catalog.wait_change(key, revision, remaining)
