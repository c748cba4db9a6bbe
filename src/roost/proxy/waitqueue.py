"""Requests waiting for capacity at the edge, per app and bounded (pure).

When every instance of an app is at its hard limit (as the edge sees the load, or as the
host proxies answered), a request waits here -- up to ``queue_timeout`` seconds, at most
``max_waiting`` per app -- for the first instance to drop below its limit. A full queue
means an immediate 503: a flood to one app costs the edge a parse and a short answer,
never a backhaul request, so other apps keep their share of the edge.

Waking is driven by events, not polling: each time a host proxy releases a slot (or the
edge's own attempt on an instance ends) the edge takes the first waiter that wants that
instance (:meth:`WaitQueues.take`) and lets it try again. A *forced* waiter
(``Roost-Force-Instance-Id``) wants only its instance; the others want any. FIFO order;
a waiter whose retry was refused again goes back to the front.

No clock here: deadlines are kept by the waiters and checked by the edge's tick.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Protocol

__all__ = ["WaitQueues", "Waiter"]


class Waiter(Protocol):
    """A request waiting for capacity."""

    @property
    def forced(self) -> str | None:
        """The one instance id it can go to, or None for any instance of its app."""
        ...


class WaitQueues:
    """A bounded FIFO of waiters per app."""

    __slots__ = ("_general", "_queues", "max_waiting")

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._queues: dict[str, collections.deque[Waiter]] = {}
        self._general: dict[str, int] = {}  # app -> waiters that accept any instance

    def push(self, app: str, waiter: Waiter, *, front: bool = False) -> bool:
        """Queue ``waiter`` (at the back, or the front for one that lost a race).

        False when the app's queue is full (``front`` pushes are always accepted: the
        waiter already held a place).
        """
        queue = self._queues.get(app)
        if queue is None:
            queue = self._queues[app] = collections.deque()
        elif len(queue) >= self.max_waiting and not front:
            return False
        if front:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
        if waiter.forced is None:
            self._general[app] = self._general.get(app, 0) + 1
        return True

    def remove(self, app: str, waiter: Waiter) -> bool:
        """Take ``waiter`` out (timed out, client gone); False if it was not queued."""
        queue = self._queues.get(app)
        if queue is None:
            return False
        try:
            queue.remove(waiter)
        except ValueError:
            return False
        self._forget(app, queue, waiter)
        return True

    def take(self, app: str, instance_id: str | None = None) -> Waiter | None:
        """The first waiter of ``app`` that can use ``instance_id`` (None: any waiter)."""
        queue = self._queues.get(app)
        if not queue:
            return None
        for waiter in queue:
            forced = waiter.forced
            if instance_id is None or forced is None or forced == instance_id:
                queue.remove(waiter)
                self._forget(app, queue, waiter)
                return waiter
        return None

    def waiting(self, app: str) -> int:
        """How many requests of ``app`` wait."""
        queue = self._queues.get(app)
        return len(queue) if queue else 0

    def any_waiting(self) -> bool:
        """Whether any app has waiters."""
        return bool(self._queues)

    def general(self, app: str) -> int:
        """How many waiters of ``app`` accept any instance (new requests queue behind them)."""
        return self._general.get(app, 0)

    def apps(self) -> Iterator[str]:
        """Apps with waiters (a copy: safe to change the queues while iterating)."""
        return iter(list(self._queues))

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _forget(self, app: str, queue: collections.deque[Waiter], waiter: Waiter) -> None:
        if waiter.forced is None:
            left = self._general[app] - 1
            if left:
                self._general[app] = left
            else:
                del self._general[app]
        if not queue:
            del self._queues[app]
