"""The SQLite catalog store's watch iterators: change-log replay, then live events, in order.

Each watcher has a bounded buffer that the store's writers fill without ever waiting. A watcher
whose buffer overflows is marked *lagging*: its buffer is dropped and it re-reads the change log
from the last revision it delivered (raising ``Compacted`` if that history is gone), so it never
loses an event. A new watcher starts out lagging, so the history replay and the catch-up after an
overflow are the same code. ``SqliteStore`` (``catalog.sqlite``) creates watchers and feeds them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from roost.catalog.store import WatchEvent

if TYPE_CHECKING:
    from roost.catalog.sqlite import SqliteStore

_REPLAY_BATCH = 1000  # change-log rows read per catch-up query


class Watcher:
    """One ``watch`` iterator: history from the change log, then live events, in order."""

    def __init__(self, store: SqliteStore, prefix: str, start_revision: int, limit: int) -> None:
        self._store = store
        self._prefix = prefix
        self._next = max(start_revision, 1)  # lowest revision not yet delivered
        self._read_to = 0  # the change log has been read (and delivered) up to here
        self._limit = limit
        self._replay: deque[WatchEvent] = deque()  # read from the change log
        self._live: deque[WatchEvent] = deque()  # pushed by writers, at most ``limit``
        self._ready = asyncio.Event()
        self._lagging = True  # writers skip us until the change log has been read
        self._ended = False

    def offer(self, events: list[WatchEvent]) -> None:
        """Called by the store after each commit; never blocks."""
        if self._lagging or self._ended:
            return
        for event in events:
            if not event.key.startswith(self._prefix):
                continue
            if len(self._live) >= self._limit:
                self._lagging = True  # re-read the change log instead of dropping events
                self._live.clear()
                break
            self._live.append(event)
        self._ready.set()

    def end(self) -> None:
        self._ended = True
        self._replay.clear()
        self._live.clear()
        self._ready.set()

    async def aclose(self) -> None:
        """Stop watching; the iterator then ends."""
        self.end()
        self._store._watchers.discard(self)

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._ended:
            for queue in (self._replay, self._live):
                while queue:
                    event = queue.popleft()
                    if event.revision >= self._next:  # dedupe replayed vs live
                        self._next = event.revision + 1
                        return event
            if self._lagging:
                self._catch_up()
                continue
            self._ready.clear()
            await self._ready.wait()
        raise StopAsyncIteration

    def _catch_up(self) -> None:
        # Runs only once ``_replay`` is drained, so all matches up to ``_read_to`` were delivered.
        start = max(self._next, self._read_to + 1)
        try:
            events = self._store._history(self._prefix, start, _REPLAY_BATCH)
        except BaseException:
            self.end()
            self._store._watchers.discard(self)
            raise
        self._replay.extend(events)
        if len(events) < _REPLAY_BATCH:
            # Read up to the current revision with no await since: live events continue from here.
            self._read_to = self._store.revision
            self._lagging = False
            self._live.clear()
