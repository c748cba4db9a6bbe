"""HostAgent.settled: an instance the last run left "started, healthy" whose process is gone
is marked unhealthy before the node says it is up (its banner waits for ``settled``)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.machines.agent import HostAgent
from roost.machines.drivers.process import ProcessDriver
from roost.machines.logs import LogCollector
from tests.unit.test_tls_certcache import GatedStore


async def test_settled_means_what_the_last_run_left_was_checked(tmp_path: Path) -> None:
    inner = await SqliteStore.open(tmp_path / "catalog.db")
    store = GatedStore(inner)
    try:
        catalog = Catalog(store)  # type: ignore[arg-type]
        dead = subprocess.Popen(["true"])  # a pid that has exited
        dead.wait()
        stale = r.Instance(
            id="i1",
            app="demo",
            node="n1",
            region="local",
            process_group="app",
            app_version=1,
            state="started",
            pid=dead.pid,
            pid_start_time=1,  # (and not its start time either)
            port=1,
            healthy=True,
        )
        await catalog.create_instance(stale)
        node = r.Node(id="n1", region="local", hostname="h", incarnation="x", started_at=0.0)
        logs = LogCollector(tmp_path / "logs")
        agent = HostAgent(catalog, node, ProcessDriver(), logs, tmp_path)
        stop = asyncio.Event()
        store.gate = asyncio.Event()  # the supervisor's first read of its record waits
        running = asyncio.ensure_future(agent.run(stop))
        settled = asyncio.ensure_future(agent.settled())
        try:
            await asyncio.wait_for(agent.ready.wait(), 10)
            for _ in range(20):
                await asyncio.sleep(0)
            # listed (ready) but not checked: the record still says healthy -- what the
            # node's banner used to wait for
            assert not settled.done()
            assert (await inner.get(r.instance_key("demo", "i1"))) is not None
            store.gate.set()
            await asyncio.wait_for(settled, 10)
            seen = await catalog.get_instance("demo", "i1")
            assert seen is not None
            assert not seen.healthy and seen.pid is None
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
    finally:
        await inner.close()
