"""The catalog: Roost's slow-changing desired and actual state, kept in one versioned store.

What it holds: nodes, apps, their instances, services, certificates, volumes and lifecycle
events. How the data flows:

- **Writers** (the API writing desired state, host agents writing actual state) encode records
  to bytes (``catalog.records``) and ``put`` them under string keys, using compare-and-set on
  ``mod_revision`` so concurrent read-modify-writes never lose each other's updates.
- **Readers** (edges, host agents, the scheduler) ``range`` a prefix to get a snapshot and the
  revision it was read at, then ``watch`` the prefix from ``revision + 1``: every later change
  arrives once, in revision order, with no gap between the snapshot and the stream.
- **Liveness** is a lease: a node grants one, attaches its presence keys to it and keeps it
  alive; if the node dies the lease expires and the keys are deleted as ordinary delete events.

``store`` defines the contract (``Store``, modelled on etcd v3); ``sqlite`` is the embedded
single-node backend (``SqliteStore``); an etcd backend for clusters passes the same contract
suite (``tests/contract``).
"""

from roost.catalog.sqlite import SqliteStore
from roost.catalog.store import (
    Compacted,
    CompareFailed,
    Entry,
    LeaseNotFound,
    Store,
    StoreError,
    WatchEvent,
)

__all__ = [
    "Compacted",
    "CompareFailed",
    "Entry",
    "LeaseNotFound",
    "SqliteStore",
    "Store",
    "StoreError",
    "WatchEvent",
]
