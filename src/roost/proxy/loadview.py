"""The load view: per-instance in-flight counts reported by nodes (pure, time passed in).

Every node's host proxy periodically reports the load of all its instances as one
:class:`LoadReport` (a full snapshot, not a delta).  Edges fold the reports into a
:class:`LoadView` and read it when they build the balancer's
:class:`~roost.proxy.balance.Candidate` records.  DESIGN.md's rule -- *stale load must
never pin traffic* -- is enforced here:

* **Incarnations.**  A node's incarnation changes on every restart.  Per node the view
  keeps the *current* incarnation and the last few *retired* ones.  A report of a
  retired incarnation is dropped.  A report of an incarnation not seen before replaces
  the current one (and *all* of the node's loads) when it was sent later than the
  current incarnation's newest report, or when the current data has expired; otherwise
  it is dropped as a leftover of an older run that arrives late (the node's own clock
  orders its runs; if that clock stepped backwards the new run still takes over once
  the old data expires, after at most ``max_age``).
* **Sequence numbers.**  Within an incarnation only a strictly higher ``seq`` is
  applied; duplicates and reordered reports are dropped.
* **Expiry.**  A report's age counts from the *earlier* of its ``sent_at`` (sender's
  clock) and the time it was applied (this edge's clock), so neither a delayed report
  nor a sender clock running ahead makes data live longer.  A report already
  ``max_age`` old on arrival is dropped; once the newest applied report of a node is
  ``max_age`` old, :meth:`LoadView.load` answers ``None`` for its instances.

**What the balancer does with ``None``** (unknown or expired): it uses what this edge
itself has in flight to the instance (:func:`effective_load`), i.e. at least 0.  That
optimistic reading is deliberate: an instance that really is full refuses the attempt
at its host proxy and the edge retries elsewhere, whereas a pessimistic reading of
stale data would keep traffic away from an instance forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from roost.proxy.balance import Candidate

__all__ = ["RETIRED_KEPT", "LoadReport", "LoadView", "effective_load"]

RETIRED_KEPT = 8  # retired incarnations remembered per node


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One node's loads at one moment: instance id -> in-flight (all its instances)."""

    node: str
    incarnation: str
    seq: int
    sent_at: float
    loads: Mapping[str, int]


@dataclass(slots=True)
class _NodeState:
    incarnation: str
    seq: int
    sent_at: float  # of the newest applied report (sender's clock)
    born: float  # min(sent_at, applied at): the age of the data counts from here
    loads: Mapping[str, int]
    retired: list[str]  # oldest first, at most RETIRED_KEPT


class LoadView:
    """The freshest load report per node, with the rules of the module docstring."""

    __slots__ = ("_nodes", "_where", "max_age")

    def __init__(self, *, max_age: float = 3.0) -> None:
        self.max_age = max_age  # seconds; "a few" report intervals
        self._nodes: dict[str, _NodeState] = {}
        self._where: dict[str, str] = {}  # instance id -> node of its latest report

    def apply(self, report: LoadReport, now: float) -> bool:
        """Fold ``report`` in; False when it was ignored (stale, old or out of order)."""
        born = min(report.sent_at, now)
        if now - born >= self.max_age:
            return False  # too old on arrival
        state = self._nodes.get(report.node)
        if state is None:
            self._nodes[report.node] = _NodeState(
                report.incarnation, report.seq, report.sent_at, born, report.loads, []
            )
            self._index(report.node, {}, report.loads)
            return True
        if report.incarnation == state.incarnation:
            if report.seq <= state.seq:
                return False  # duplicate or reordered
        elif report.incarnation in state.retired:
            return False  # a run that has been replaced
        elif report.sent_at > state.sent_at or now - state.born >= self.max_age:
            state.retired.append(state.incarnation)  # the node restarted
            del state.retired[:-RETIRED_KEPT]
            state.incarnation = report.incarnation
        else:
            return False  # an unseen but older run, arriving late
        old = state.loads
        state.seq = report.seq
        state.sent_at = report.sent_at
        state.born = born
        state.loads = report.loads
        self._index(report.node, old, report.loads)
        return True

    def load(self, instance_id: str, now: float) -> int | None:
        """The instance's reported in-flight count; None when unknown or expired."""
        node = self._where.get(instance_id)
        if node is None:
            return None
        state = self._nodes[node]
        if now - state.born >= self.max_age:
            return None
        return state.loads.get(instance_id)

    def forget_node(self, node: str) -> None:
        """Drop everything known about ``node`` (it left the cluster)."""
        state = self._nodes.pop(node, None)
        if state is not None:
            self._index(node, state.loads, {})

    def candidate(
        self,
        instance_id: str,
        node: str,
        region: str,
        *,
        rtt: float,
        soft_limit: int,
        hard_limit: int | None,
        now: float,
        local: int = 0,
        healthy: bool = True,
    ) -> Candidate:
        """A balancer candidate with :func:`effective_load` of this view and ``local``.

        ``local`` is what this edge itself has in flight to the instance.
        """
        load = effective_load(self.load(instance_id, now), local)
        return Candidate(instance_id, node, region, rtt, load, soft_limit, hard_limit, healthy)

    def _index(self, node: str, old: Mapping[str, int], new: Mapping[str, int]) -> None:
        where = self._where
        for iid in old:
            if iid not in new and where.get(iid) == node:
                del where[iid]
        for iid in new:
            where[iid] = node


def effective_load(reported: int | None, local: int) -> int:
    """The load to balance on: the report, but never less than this edge's own count.

    Unknown or expired (``None``) counts as only what this edge has in flight.

    >>> effective_load(None, 2), effective_load(5, 2), effective_load(1, 3)
    (2, 5, 3)
    """
    if reported is None or reported < local:
        return local
    return reported
