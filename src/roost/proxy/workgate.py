"""Per-app caps on edge work: a flooded app's requests wait their turn, others go first.

The edge is one event loop. When 1,000 clients of a flooded app send at the same instant
(load generators and retry storms do), every one of those requests is parsed, routed and
answered (mostly: 503, the app's wait queue is full) in the loop turn that read them. A
request for another app that arrives in that turn -- or just after it -- waits behind all
of that work: 1,000 x ~60 µs is a 60 ms stall for an app that did nothing wrong.

:class:`WorkGate` caps that work per app and loop turn. It applies only to *congested* apps
(the edge's own signal: the app has requests waiting for capacity, i.e. every instance is
at its hard limit); requests for other apps never wait for it. Two ways in, one FIFO per
app:

- **park**: a connection that just answered a request of a congested app stops reading
  (its client's next request stays in the kernel, costing this loop turn nothing). When
  released it reads again, and a request already waiting then goes without being held a
  second time -- only in that turn (:attr:`WorkGate.turns`): a paced client that sends
  later is gated like any other. (Else a pass could be kept: hundreds of released
  connections of paced flood clients, idle until their clients' next tick, all sending at
  that tick, were all answered in one loop turn.) Such a request is held *before* it is
  parsed: its bytes wait in the line of the app the connection last served (or, when a
  scan of its head shows another app -- a connection shared between apps -- in that
  app's line, or not at all if it has room), so the tick costs a read per connection, not
  a parse and a route (``http1``'s ``_hold_unparsed``).
- **admit**: a request head parsed for a congested app -- on a new connection (floods
  often come with connection churn), or one that arrived anyway -- starts at once up to
  ``batch`` per app and turn; beyond that it is held, not started, and reading pauses.

Each loop turn releases the next ``batch`` per app, round-robin across apps (a parked
connection reads again and its next request is not held back; a held request starts),
so between two batches the loop polls for I/O and other apps' requests run at once.
Nothing is dropped: a held request is processed in order, only later; when the app is no
longer congested its queue is released in one go.

A *new connection's first bytes* come in before they are parsed (``preface.
PrefaceSniffer``): under their app's key when a scan of the head shows an app at capacity,
not at all for an app with room, and otherwise under a key of their own, :data:`NEW`, with
its own ``batches`` entry, always capped. Floods often come as connection churn -- 1,000
clients opening connections on the same tick -- and parsing, routing and checking each one's
request head (~30 µs here) would otherwise all happen in the loop turn that read them.
Beyond the batch, a new connection's bytes wait (reading paused) for a later turn; requests
on open connections -- and new connections of other apps -- go first. What is left uncapped:
accepting a connection and reading its first bytes (~10 µs). HTTP/2 streams are
held as requests (not started until their turn); their connections are never parked
(other streams may be for other apps).

``before_turn()``, if given, runs first in each turn: the edge delivers there what other
apps' requests and responses have waiting on the in-process backhaul
(:func:`roost.proxy.localpipe.run_due`), so they do not wait behind the batch either.

Pure: the gate never touches the event loop or a socket. ``schedule(fn)`` (the loop's
``call_soon``) arranges for :meth:`WorkGate.turn` to run once in the next loop turn; the
connections are :class:`Parked` (``http1.ClientConnection``). ``on_hold(app)`` is told of
every request or connection held back (the ``roost_proxy_gate_held_total{app}`` metric).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

__all__ = ["NEW", "Parked", "WorkGate"]

NEW = "_new"  # the key of new connections' first bytes (no app name starts with "_")


class Parked(Protocol):
    """A client connection the gate can hold back and release."""

    def gate_hold(self) -> None:
        """Stop reading until :meth:`gate_release`."""
        ...

    def gate_release(self) -> None:
        """Its turn: start the held request (or, parked while idle, read again with the
        next request not held back). A closed connection ignores it."""
        ...


class WorkGate:
    """Caps each congested app's requests per loop turn; see the module docstring."""

    __slots__ = (
        "_armed",
        "_before_turn",
        "_congested",
        "_on_hold",
        "_queues",
        "_schedule",
        "_used",
        "batch",
        "batches",
        "held",
        "turns",
    )

    def __init__(
        self,
        schedule: Callable[[Callable[[], None]], object],
        congested: Callable[[str], bool],
        *,
        batch: int = 4,
        on_hold: Callable[[str], object] | None = None,
        batches: dict[str, int] | None = None,
        before_turn: Callable[[], object] | None = None,
    ) -> None:
        if batch < 1 or any(n < 1 for n in (batches or {}).values()):
            raise ValueError("batch must be at least 1")
        self._schedule = schedule
        self._congested = congested
        self.batch = batch
        self.batches = dict(batches or {})  # key -> its own batch (:data:`NEW`'s)
        self._used: dict[str, int] = {}  # app -> requests let through this turn
        self._queues: dict[str, collections.deque[Parked]] = {}  # held back, per app
        self._armed = False  # turn() is scheduled
        self._on_hold = on_hold
        self._before_turn = before_turn
        self.held = 0  # requests and connections held back so far
        # this turn's number, from 1 (0: none): a pass given in turn n lapses at turn n + 1
        self.turns = 1

    def admit(self, app: str, conn: Parked) -> bool:
        """A request for the congested ``app`` was parsed on ``conn``: True to start it
        now; False if the gate holds it (``conn.gate_hold()`` was called) until
        ``conn.gate_release()`` in a later turn."""
        queue = self._queues.get(app)
        if queue is None:
            used = self._used.get(app, 0)
            if used < self.batches.get(app, self.batch):
                self._used[app] = used + 1
                self._arm()
                return True
            queue = self._queues[app] = collections.deque()
        self._hold(app, queue, conn)  # behind the ones already held: FIFO per app
        return False

    def park(self, app: str, conn: Parked) -> bool:
        """``conn`` answered a request of ``app`` and is idle: if ``app`` is congested,
        stop reading it until its turn (its client's next request then stays in the
        kernel instead of costing this turn a read and a parse). True if parked."""
        queue = self._queues.get(app)
        if queue is None:
            if not self._congested(app):
                return False
            queue = self._queues[app] = collections.deque()
        self._hold(app, queue, conn)
        return True

    def congested(self, app: str) -> bool:
        """Whether ``app`` is at capacity (its requests are gated)."""
        return self._congested(app)

    def waiting(self, app: str | None = None) -> int:
        """Connections held (of ``app``, or of all apps)."""
        if app is not None:
            queue = self._queues.get(app)
            return len(queue) if queue else 0
        return sum(len(q) for q in self._queues.values())

    def turn(self) -> None:
        """A new loop turn: reset the budgets and release the next batch of every app."""
        self._armed = False
        self.turns += 1
        self._used.clear()
        if self._before_turn is not None and self._queues:
            self._before_turn()
        batches, batch = self.batches, self.batch
        for app in list(self._queues):
            queue = self._queues[app]
            # a queue left over from congestion that has ended goes at once
            if app in batches:  # (NEW: always capped)
                count = min(batches[app], len(queue))
            elif self._congested(app):
                count = min(batch, len(queue))
            else:
                count = len(queue)
            self._used[app] = count
            for _ in range(count):
                queue.popleft().gate_release()
            if not queue:
                del self._queues[app]
        if self._queues or self._used:
            self._arm()

    def _hold(self, app: str, queue: collections.deque[Parked], conn: Parked) -> None:
        queue.append(conn)
        self.held += 1
        if self._on_hold is not None:
            self._on_hold(app)
        conn.gate_hold()
        self._arm()

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            self._schedule(self.turn)
