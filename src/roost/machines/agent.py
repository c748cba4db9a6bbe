"""The host agent: runs the instances the catalog assigns to this node.

Data flow: catalog watch on ``instances/`` → one ``Supervisor`` task per instance of this node
(poked on every change of its record) → driver start/stop → state and lifecycle events written
back to the catalog. On start it re-reads every instance of its node, so processes that outlived
a killed platform are re-adopted (pid + start time verified) instead of restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.store import Compacted
from roost.machines.drivers.process import ProcessDriver
from roost.machines.logs import LogCollector
from roost.machines.supervisor import Supervisor


class HostAgent:
    def __init__(
        self,
        catalog: Catalog,
        node: r.Node,
        driver: ProcessDriver,
        logs: LogCollector,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.node = node
        self.driver = driver
        self.logs = logs
        self.data_dir = data_dir
        self.clock = clock
        self.supervisors: dict[str, Supervisor] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ready = asyncio.Event()

    async def settled(self) -> None:
        """Until the first listing is done and every supervisor has checked what it found
        (re-adopted its process, or marked it exited and unhealthy): before that the
        catalog may still show instances of the last run as started and healthy."""
        await self.ready.wait()
        await asyncio.gather(*(s.adopted.wait() for s in list(self.supervisors.values())))

    def log_dir(self, instance_id: str) -> Path:
        return self.data_dir / "instances" / instance_id

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop`` is set; then stop every instance of this node."""
        watcher = asyncio.ensure_future(self._watch())
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.shutdown()

    async def _watch(self) -> None:
        while True:
            entries, revision = await self.catalog.store.range(r.instances_prefix())
            for entry in entries:
                self._poke(r.decode(entry.value, r.Instance))
            self.ready.set()
            try:
                async for ev in self.catalog.store.watch(r.instances_prefix(), revision + 1):
                    if ev.type == "put":
                        self._poke(r.decode(ev.value, r.Instance))
                    else:
                        iid = ev.key.rsplit("/", 1)[1]
                        sup = self.supervisors.get(iid)
                        if sup is not None:
                            sup.changed.set()
            except Compacted:
                continue  # fell behind: re-list and carry on
            return

    def _poke(self, inst: r.Instance) -> None:
        if inst.node != self.node.id:
            return
        sup = self.supervisors.get(inst.id)
        if sup is not None:
            sup.changed.set()
            return
        if inst.desired == "destroyed" and inst.pid is None and inst.state == "destroyed":
            return
        sup = Supervisor(self, inst.app, inst.id)
        self.supervisors[inst.id] = sup
        task = asyncio.ensure_future(self._supervise(sup))
        self.tasks[inst.id] = task

    async def _supervise(self, sup: Supervisor) -> None:
        try:
            await sup.run()
        finally:
            self.supervisors.pop(sup.id, None)
            self.tasks.pop(sup.id, None)

    async def shutdown(self) -> None:
        sups = list(self.supervisors.values())
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(s.shutdown() for s in sups), return_exceptions=True)
