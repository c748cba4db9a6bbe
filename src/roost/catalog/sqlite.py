"""SQLite backend of the catalog store: one file, WAL mode, embedded in the node process.

This module is the store itself (``SqliteStore``: reads, writes, leases, transactions);
``sqlite_schema`` holds the tables and the SQL helpers, ``sqlite_watch`` the watch iterators.

Choices made within the contract of ``roost.catalog.store``:

- **Revisions.** Every mutation is one SQLite transaction, and bumps the revision once *per changed
  key* (etcd bumps once per transaction). Only a lease expiry or revoke changes several keys at
  once: each deleted key gets its own revision, all committed together.
- **Time.** Lease deadlines are absolute times on ``clock``, by default ``time.time`` (wall clock)
  so a deadline keeps its meaning across a restart; ``open`` expires leases that lapsed while the
  store was closed. A background task sleeps until the earliest deadline. Tests can pass a fake
  ``clock`` and call ``expire_leases()`` after moving it.
- **Threading.** Calls run synchronously on the event-loop thread (each is sub-millisecond). No
  call awaits while it holds the database, so writes are serialised and are published to watchers
  in revision order, right after they commit.
- **Watchers.** Writers never wait for a watcher: each has a bounded buffer, and one that
  overflows re-reads the change log instead of losing an event (``sqlite_watch``). There is
  no gap between history and live events.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from roost.catalog.sqlite_schema import KV_COLUMNS, entry_from_row, init_database, prefix_filter
from roost.catalog.sqlite_watch import Watcher
from roost.catalog.store import (
    Compacted,
    CompareFailed,
    Entry,
    LeaseNotFound,
    StoreError,
    WatchEvent,
)

log = logging.getLogger(__name__)


class SqliteStore:
    """The embedded ``Store`` backend. Create it with ``await SqliteStore.open(path)``."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        clock: Callable[[], float],
        history: int,
        watch_buffer: int,
    ) -> None:
        self._db = db
        self._clock = clock
        self._history_kept = history
        self._watch_buffer = watch_buffer
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        self._revision: int = meta["revision"]
        self._compacted: int = meta["compacted"]
        self._watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()
        self._wake = asyncio.Event()
        self._expirer: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        history: int = 10_000,
        watch_buffer: int = 10_000,
    ) -> SqliteStore:
        """Open (creating if needed) the store at ``path`` and start lease expiry.

        ``clock`` gives absolute seconds for lease deadlines; ``history`` is how many revisions of
        change log to keep for ``watch``; ``watch_buffer`` bounds each watcher's live buffer.
        """
        if history < 1 or watch_buffer < 1:
            raise ValueError("history and watch_buffer must be >= 1")
        db = sqlite3.connect(os.fspath(path), isolation_level=None)
        try:
            init_database(db)
            store = cls(db, clock=clock, history=history, watch_buffer=watch_buffer)
            with store._transaction():  # ``history`` may be smaller than last time
                compacted = store._compact(store._revision)
            store._compacted = compacted
            store._expire_due()
        except BaseException:
            db.close()
            raise
        store._expirer = asyncio.get_running_loop().create_task(
            store._expire_loop(), name="catalog-lease-expiry"
        )
        return store

    @property
    def revision(self) -> int:
        """The current store revision (0 before the first write)."""
        return self._revision

    # -- reads -------------------------------------------------------------------------------
    async def get(self, key: str) -> Entry | None:
        self._check_open()
        row = self._db.execute(f"SELECT {KV_COLUMNS} FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else entry_from_row(row)

    async def range(self, prefix: str) -> tuple[list[Entry], int]:
        self._check_open()
        where, params = prefix_filter(prefix)
        rows = self._db.execute(f"SELECT {KV_COLUMNS} FROM kv WHERE {where} ORDER BY key", params)
        return [entry_from_row(row) for row in rows], self._revision

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        self._check_open()
        watcher = Watcher(self, prefix, start_revision, self._watch_buffer)
        self._watchers.add(watcher)
        return watcher

    # -- writes ------------------------------------------------------------------------------
    async def put(
        self, key: str, value: bytes, *, prev_revision: int | None = None, lease: int = 0
    ) -> int:
        with self._transaction() as events:
            row = self._db.execute(
                "SELECT create_revision, mod_revision, version FROM kv WHERE key = ?", (key,)
            ).fetchone()
            actual = row[1] if row else 0
            if prev_revision is not None and actual != prev_revision:
                raise CompareFailed(key, prev_revision, actual)
            if lease and not self._lease_alive(lease):
                raise LeaseNotFound(lease)
            revision = self._record(events, "put", key, value)
            create, version = (row[0], row[2] + 1) if row else (revision, 1)
            self._db.execute(
                f"INSERT OR REPLACE INTO kv ({KV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (key, value, create, revision, version, lease),
            )
        return revision

    async def delete(self, key: str, *, prev_revision: int | None = None) -> bool:
        with self._transaction() as events:
            row = self._db.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            actual = row[0] if row else 0
            if prev_revision is not None and actual != prev_revision:
                raise CompareFailed(key, prev_revision, actual)
            if row is not None:
                self._delete_key(events, key)
        return row is not None

    # -- leases ------------------------------------------------------------------------------
    async def grant(self, ttl: float) -> int:
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"lease ttl must be a positive number of seconds, got {ttl!r}")
        self._check_open()
        cursor = self._db.execute(
            "INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, self._clock() + ttl)
        )
        self._wake.set()  # this may be the earliest deadline now
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def keepalive(self, lease: int) -> None:
        self._check_open()
        now = self._clock()
        cursor = self._db.execute(
            "UPDATE leases SET expires_at = ? + ttl WHERE id = ? AND expires_at > ?",
            (now, lease, now),
        )
        if cursor.rowcount == 0:
            raise LeaseNotFound(lease)

    async def revoke(self, lease: int) -> None:
        with self._transaction() as events:
            if self._db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
                raise LeaseNotFound(lease)
            self._drop_leases(events, [lease])

    async def expire_leases(self) -> int:
        """Expire every lease whose deadline has passed on ``clock``; returns how many.

        The background task does this on its own; call it after moving a fake clock.
        """
        return self._expire_due()

    async def close(self) -> None:
        """Stop lease expiry, end every watch iterator and close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._expirer is not None:
            self._expirer.cancel()
            await asyncio.wait([self._expirer])
        for watcher in list(self._watchers):
            watcher.end()
        self._watchers.clear()
        self._db.close()

    # -- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    @contextmanager
    def _transaction(self) -> Iterator[list[WatchEvent]]:
        """One write transaction; yields the list that ``_record`` appends changes to.

        On success the revision is saved, old history trimmed, and the changes are published
        to watchers after the commit; on any error everything is rolled back.
        """
        self._check_open()
        events: list[WatchEvent] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield events
            if events:
                revision = events[-1].revision
                self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
                compacted = self._compact(revision)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if events:
            self._revision, self._compacted = revision, compacted
            for watcher in list(self._watchers):
                watcher.offer(events)

    def _compact(self, revision: int) -> int:
        """Delete change-log rows older than the last ``history`` revisions (inside a txn)."""
        compacted = max(self._compacted, revision - self._history_kept)
        if compacted > self._compacted:
            self._db.execute("DELETE FROM changes WHERE revision <= ?", (compacted,))
            self._db.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (compacted,))
        return compacted

    def _record(
        self, events: list[WatchEvent], kind: Literal["put", "delete"], key: str, value: bytes
    ) -> int:
        """Append one change to the log at the next revision; returns that revision."""
        revision = self._revision + len(events) + 1
        self._db.execute("INSERT INTO changes VALUES (?, ?, ?, ?)", (revision, key, kind, value))
        events.append(WatchEvent(kind, key, value, revision))
        return revision

    def _delete_key(self, events: list[WatchEvent], key: str) -> None:
        self._record(events, "delete", key, b"")
        self._db.execute("DELETE FROM kv WHERE key = ?", (key,))

    def _history(self, prefix: str, start: int, limit: int) -> list[WatchEvent]:
        """Changes under ``prefix`` with revision >= ``start``, oldest first, at most ``limit``."""
        self._check_open()
        if start <= self._compacted:
            raise Compacted(start, self._compacted + 1)
        where, params = prefix_filter(prefix)
        rows = self._db.execute(
            f"SELECT type, key, value, revision FROM changes WHERE revision >= ? AND {where}"
            " ORDER BY revision LIMIT ?",
            (start, *params, limit),
        )
        return [WatchEvent(kind, key, bytes(value), rev) for kind, key, value, rev in rows]

    def _lease_alive(self, lease: int) -> bool:
        row = self._db.execute("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        return row is not None and row[0] > self._clock()

    def _drop_leases(self, events: list[WatchEvent], leases: list[int]) -> None:
        for lease in leases:
            rows = self._db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease,))
            for (key,) in rows.fetchall():
                self._delete_key(events, key)
            self._db.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _expire_due(self) -> int:
        with self._transaction() as events:
            rows = self._db.execute(
                "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id",
                (self._clock(),),
            )
            due = [lease for (lease,) in rows.fetchall()]
            self._drop_leases(events, due)
        return len(due)

    async def _expire_loop(self) -> None:
        """Sleep until the earliest lease deadline (or a new grant), then expire what is due."""
        while True:
            self._wake.clear()
            try:
                self._expire_due()
                deadline = self._db.execute("SELECT min(expires_at) FROM leases").fetchone()[0]
            except (sqlite3.Error, StoreError):
                log.exception("lease expiry failed; retrying in 1 s")
                deadline = self._clock() + 1.0
            delay = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
