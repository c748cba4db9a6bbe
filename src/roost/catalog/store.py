"""The store contract: one async interface, several backends (SQLite embedded, etcd later).

Semantics follow etcd's v3 model so both backends can pass one contract suite:

- Every mutation bumps a single store-wide ``revision`` (int, starts at 1 after the first write).
- ``Entry.create_revision`` is the revision that created the key, ``mod_revision`` the last one
  that changed it, ``version`` counts writes to the key since creation (1 on create).
- ``put(key, value, prev_revision=R)`` is compare-and-set: it succeeds only when the key's current
  ``mod_revision == R``; ``prev_revision=0`` means "only if the key does not exist". A failed
  compare raises ``CompareFailed`` and changes nothing.
- ``delete(key, prev_revision=R)`` is the same compare for deletes; deleting a missing key
  returns False (no revision bump).
- ``range(prefix)`` returns entries sorted by key and the store revision they were read at.
- ``watch(prefix, start_revision)`` yields every change with ``revision >= start_revision`` in
  revision order, then live changes, forever (until the iterator is closed). If history before
  ``start_revision`` has been compacted it raises ``Compacted`` with the oldest revision kept.
- Leases: ``grant(ttl)`` returns a lease id; keys put with ``lease=id`` are deleted (as ordinary
  delete events) when the lease expires or is revoked; ``keepalive(id)`` renews the TTL and raises
  ``LeaseNotFound`` for an expired/unknown lease.

Keys and values are ``str`` / ``bytes``; records are encoded by ``catalog.records``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


class StoreError(Exception):
    """Base class for store errors."""


class CompareFailed(StoreError):
    """A compare-and-set precondition did not hold; nothing was written."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"compare failed on {key!r}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class Compacted(StoreError):
    """A watch asked for history that is no longer kept."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"revision {requested} is compacted; oldest kept is {oldest}")
        self.requested = requested
        self.oldest = oldest


class LeaseNotFound(StoreError):
    """The lease is unknown or has expired."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    key: str
    value: bytes  # empty for deletes
    revision: int  # the revision of this change (mod_revision for puts)


class Store(Protocol):
    async def get(self, key: str) -> Entry | None: ...

    async def put(
        self, key: str, value: bytes, *, prev_revision: int | None = None, lease: int = 0
    ) -> int:
        """Write ``key``; returns the new store revision. See module doc for CAS rules."""
        ...

    async def delete(self, key: str, *, prev_revision: int | None = None) -> bool: ...

    async def range(self, prefix: str) -> tuple[list[Entry], int]: ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]: ...

    async def grant(self, ttl: float) -> int: ...

    async def keepalive(self, lease: int) -> None: ...

    async def revoke(self, lease: int) -> None: ...

    async def close(self) -> None: ...
