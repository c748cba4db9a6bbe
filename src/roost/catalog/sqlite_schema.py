"""The SQLite catalog store's on-disk layout: its tables and the SQL helpers that read them.

Tables (one SQLite file):

- ``kv``       the current value of every key (what ``get`` and ``range`` read);
- ``changes``  one row per revision (a put or a delete), the log ``watch`` replays. Only the last
               ``history`` revisions are kept; older rows are deleted (compacted) as writes go on;
- ``leases``   granted leases, each with its TTL and an absolute deadline ``expires_at``;
- ``meta``     the store revision and the highest compacted revision, so both survive restarts.

``SqliteStore`` (``catalog.sqlite``) is the only user.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from roost.catalog.store import Entry

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""
KV_COLUMNS = "key, value, create_revision, mod_revision, version, lease"


def init_database(db: sqlite3.Connection) -> None:
    """Put ``db`` in WAL mode and create the tables that are missing (in one transaction)."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")


def prefix_filter(prefix: str) -> tuple[str, tuple[str, ...]]:
    """SQL condition (and its parameters) true exactly for keys starting with ``prefix``.

    ``prefix <= key < successor`` where ``successor`` is ``prefix`` with its last character
    incremented (dropping trailing U+10FFFF). SQLite compares TEXT by UTF-8 bytes, which orders
    like code points, so this is exact; unlike LIKE it treats ``%`` and ``_`` as plain characters.
    """
    chars = list(prefix)
    while chars:
        nxt = ord(chars.pop()) + 1
        if nxt <= 0x10FFFF:
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; skip over them
                nxt = 0xE000
            return "key >= ? AND key < ?", (prefix, "".join(chars) + chr(nxt))
    return ("key >= ?", (prefix,)) if prefix else ("1", ())


def entry_from_row(row: Any) -> Entry:
    """The ``Entry`` for one ``kv`` row selected as ``KV_COLUMNS``."""
    key, value, create_revision, mod_revision, version, lease = row
    return Entry(key, bytes(value), create_revision, mod_revision, version, lease)
