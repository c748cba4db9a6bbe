"""Behaviour of ``SqliteStore`` beyond the shared contract: persistence, fake clocks, overflow."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.catalog import Compacted, LeaseNotFound, SqliteStore, StoreError, WatchEvent

TIMEOUT = 5.0


class FakeClock:
    """Absolute seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def take(events: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    """The next ``n`` events, failing if they do not arrive within ``TIMEOUT``."""
    async with asyncio.timeout(TIMEOUT):
        return [await anext(events) for _ in range(n)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.db"


async def test_data_and_revision_survive_reopen(db_path: Path) -> None:
    """Keys, entry metadata and the store revision are the same after close and reopen."""
    store = await SqliteStore.open(db_path)
    await store.put("a", b"1")
    rev = await store.put("a", b"2")
    before = await store.get("a")
    await store.close()
    store = await SqliteStore.open(db_path)
    try:
        assert await store.get("a") == before
        assert store.revision == rev
        assert await store.put("b", b"") == rev + 1
    finally:
        await store.close()


async def test_watch_history_survives_reopen(db_path: Path) -> None:
    """A watch after reopening replays changes written before the restart."""
    store = await SqliteStore.open(db_path)
    first = await store.put("k", b"1")
    await store.delete("k")
    await store.close()
    store = await SqliteStore.open(db_path)
    try:
        events = await take(store.watch("k", first), 2)
        assert [(e.type, e.revision) for e in events] == [("put", first), ("delete", first + 1)]
    finally:
        await store.close()


async def test_database_uses_wal(db_path: Path) -> None:
    """The file is in WAL journal mode."""
    store = await SqliteStore.open(db_path)
    await store.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_leases_expired_while_closed_are_expired_at_open(db_path: Path) -> None:
    """open() deletes the keys of leases whose deadline passed while the store was closed."""
    clock = FakeClock()
    store = await SqliteStore.open(db_path, clock=clock)
    lease = await store.grant(10)
    rev = await store.put("node/a", b"", lease=lease)
    await store.put("node/b", b"")
    await store.close()
    clock.now += 11
    store = await SqliteStore.open(db_path, clock=clock)
    try:
        assert [e.key for e in (await store.range(""))[0]] == ["node/b"]
        [event] = await take(store.watch("node/a", rev + 1), 1)
        assert (event.type, event.key) == ("delete", "node/a")
        with pytest.raises(LeaseNotFound):
            await store.keepalive(lease)
    finally:
        await store.close()


async def test_live_lease_survives_reopen(db_path: Path) -> None:
    """A lease still within its TTL after a restart keeps its keys and accepts keepalives."""
    clock = FakeClock()
    store = await SqliteStore.open(db_path, clock=clock)
    lease = await store.grant(10)
    await store.put("k", b"", lease=lease)
    await store.close()
    clock.now += 5
    store = await SqliteStore.open(db_path, clock=clock)
    try:
        await store.keepalive(lease)
        clock.now += 9  # past the original deadline, within the renewed one
        assert await store.expire_leases() == 0
        assert await store.get("k") is not None
    finally:
        await store.close()


async def test_expire_leases_follows_fake_clock(db_path: Path) -> None:
    """With a fake clock, moving it past a deadline and calling expire_leases() expires."""
    clock = FakeClock()
    store = await SqliteStore.open(db_path, clock=clock)
    try:
        lease = await store.grant(30)
        await store.put("k", b"", lease=lease)
        clock.now += 29
        assert await store.expire_leases() == 0
        clock.now += 1
        with pytest.raises(LeaseNotFound):
            await store.put("k2", b"", lease=lease)  # due but not yet reaped counts as expired
        assert await store.expire_leases() == 1
        assert await store.get("k") is None
    finally:
        await store.close()


async def test_lease_expiry_bumps_one_revision_per_key(db_path: Path) -> None:
    """A lease with three keys expires as three delete events at consecutive revisions."""
    clock = FakeClock()
    store = await SqliteStore.open(db_path, clock=clock)
    try:
        lease = await store.grant(1)
        for key in ["c", "a", "b"]:
            rev = await store.put(key, b"", lease=lease)
        clock.now += 1
        await store.expire_leases()
        events = await take(store.watch("", rev + 1), 3)
        assert [(e.key, e.revision) for e in events] == [
            ("a", rev + 1),
            ("b", rev + 2),
            ("c", rev + 3),
        ]
        assert store.revision == rev + 3
    finally:
        await store.close()


async def test_revoked_lease_ids_are_not_reused(db_path: Path) -> None:
    """A new lease never gets the id of a revoked one."""
    store = await SqliteStore.open(db_path)
    try:
        lease = await store.grant(60)
        await store.revoke(lease)
        assert await store.grant(60) != lease
    finally:
        await store.close()


async def test_overflowing_watcher_catches_up_without_loss(db_path: Path) -> None:
    """A watcher that falls far behind its buffer still gets every event, in order."""
    store = await SqliteStore.open(db_path, watch_buffer=4)
    try:
        events = store.watch("k/", 1)
        await store.put("k/0", b"")
        assert (await take(events, 1))[0].key == "k/0"  # now live, not replaying
        for i in range(1, 3000):
            await store.put(f"k/{i}", b"")
            if i % 500 == 0:
                await store.put("other", b"")
        got = await take(events, 2999)
        assert [e.key for e in got] == [f"k/{i}" for i in range(1, 3000)]
        assert [e.revision for e in got] == sorted({e.revision for e in got})
    finally:
        await store.close()


async def test_lagging_watcher_past_history_raises_compacted(db_path: Path) -> None:
    """A watcher that lags beyond the kept history raises Compacted rather than skip events."""
    store = await SqliteStore.open(db_path, history=10, watch_buffer=2)
    try:
        events = store.watch("", 1)
        await store.put("k", b"")
        await take(events, 1)
        for i in range(30):
            await store.put("k", str(i).encode())
        with pytest.raises(Compacted):
            await take(events, 1)
        assert await anext(events, None) is None  # the watch has ended
    finally:
        await store.close()


async def test_smaller_history_at_reopen_compacts(db_path: Path) -> None:
    """Reopening with a smaller history drops the older change log."""
    store = await SqliteStore.open(db_path)
    for i in range(20):
        await store.put("k", str(i).encode())
    await store.close()
    store = await SqliteStore.open(db_path, history=5)
    try:
        with pytest.raises(Compacted) as info:
            await anext(store.watch("k", 1))
        assert info.value.oldest == 16
    finally:
        await store.close()


async def test_closed_store_rejects_calls(db_path: Path) -> None:
    """Calls after close() raise StoreError; close() twice is fine."""
    store = await SqliteStore.open(db_path)
    await store.close()
    await store.close()
    with pytest.raises(StoreError):
        await store.get("k")
    with pytest.raises(StoreError):
        await store.put("k", b"")


async def test_open_rejects_bad_history(db_path: Path) -> None:
    """history must be at least 1."""
    with pytest.raises(ValueError):
        await SqliteStore.open(db_path, history=0)
