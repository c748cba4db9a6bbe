"""Fixtures for the store contract suite: every test runs once per backend in ``BACKENDS``.

Adding a backend (etcd) is one more ``Backend`` entry: a factory that opens a fresh, empty store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from roost.catalog import SqliteStore, Store


class Opener(Protocol):
    def __call__(self, directory: Path, *, history: int | None = None) -> Awaitable[Store]: ...


@dataclass(frozen=True)
class Backend:
    name: str
    open: Opener  # opens a fresh store; ``history`` = revisions of watch history to keep
    short_ttl: float  # a lease TTL the backend honours that keeps the lease tests quick


async def _open_sqlite(directory: Path, *, history: int | None = None) -> Store:
    return await SqliteStore.open(directory / "catalog.db", history=history or 10_000)


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("sqlite", _open_sqlite, short_ttl=0.3),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_store(backend: Backend, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Open extra stores (e.g. with a small ``history``); all are closed at teardown."""
    opened: list[Store] = []

    async def open_(*, history: int | None = None) -> Store:
        directory = tmp_path / f"store{len(opened)}"
        directory.mkdir()
        store = await backend.open(directory, history=history)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: StoreFactory) -> Store:
    """A fresh, empty store of the backend under test."""
    return await open_store()
