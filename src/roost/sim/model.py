"""The simulation: a heap of timed events over edges, host proxies and instances.

Model (all times in simulated seconds; nothing here reads a clock):

* **Clients** in each region send requests as a Poisson stream at ``rates[region]``
  to their region's edge; a client<->edge round trip adds ``client_rtt``.
* **Edges** (one per region, on ``edge_nodes[region]``) build a
  :class:`~roost.proxy.balance.Candidate` per instance from their
  :class:`~roost.proxy.loadview.LoadView` plus their own in-flight attempts
  (:func:`~roost.proxy.loadview.effective_load`), call
  :func:`~roost.proxy.balance.select` and send the attempt to the first pick.  A
  refused attempt is retried with ``accept`` excluding the instances already tried, up
  to ``max_attempts``; when nothing is left the request ends as a 503 ("refused").
* **Host proxies** count in-flight per instance and refuse at ``hard_limit`` before the
  instance sees anything (the retry-safe refusal of DESIGN.md).  An admitted request
  occupies one of the instance's ``workers`` or waits FIFO; service times are
  exponential with mean ``service_time``.
* **Load reports**: every node sends a :class:`~roost.proxy.loadview.LoadReport` every
  ``report_interval`` (staggered), arriving at each edge half an RTT later.
* **Network**: the backhaul one-way delay is half the RTT between the edge's node and
  the instance's node: 0 on the same node, ``intra_rtt`` within a region, else
  ``rtt[(region_a, region_b)]``.

The workload (arrival times and each request's service time) comes from its own RNG
seeded by ``seed``, so both strategies see the same requests; the balancer has a
separate RNG.  Same scenario + seed -> same result, bit for bit.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from roost.proxy.balance import Candidate, Strategy, select
from roost.proxy.loadview import LoadReport, LoadView

__all__ = ["InstanceSpec", "Result", "Scenario", "percentile", "run"]


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One instance: where it runs, its limits and its capacity."""

    id: str
    node: str
    region: str
    soft_limit: int
    hard_limit: int | None
    workers: int = 8  # requests served in parallel; the rest of the admitted wait
    service_time: float = 0.05  # mean seconds of work per request


@dataclass(frozen=True, slots=True)
class Scenario:
    """A topology and a workload."""

    instances: tuple[InstanceSpec, ...]
    rates: Mapping[str, float]  # region -> requests per second from clients there
    edge_nodes: Mapping[str, str]  # region -> node running that region's edge
    rtt: Mapping[tuple[str, str], float]  # region pair (either order) -> RTT seconds
    intra_rtt: float = 0.0005  # between two nodes of one region
    client_rtt: float = 0.01  # client <-> its edge
    duration: float = 10.0  # seconds of arrivals (the run drains after)
    report_interval: float = 0.5
    max_age: float = 1.5  # the edges' LoadView max_age
    max_attempts: int = 5

    def region_rtt(self, a: str, b: str) -> float:
        """RTT between two regions (``intra_rtt`` within one)."""
        if a == b:
            return self.intra_rtt
        rtt = self.rtt.get((a, b))
        return self.rtt[(b, a)] if rtt is None else rtt


@dataclass(slots=True)
class Result:
    """What one run measured."""

    strategy: str
    offered: int = 0  # requests the clients sent
    latencies: list[float] = field(default_factory=list)  # served requests, sorted
    refused: int = 0  # requests answered 503 (no instance would take them, or attempts ran out)
    retries: int = 0  # attempts refused by a host proxy and retried
    in_region: int = 0  # served requests served by an instance in the client's region
    max_load: dict[str, int] = field(default_factory=dict)  # instance -> max in-flight

    @property
    def served(self) -> int:
        """Requests that got a response from an instance."""
        return len(self.latencies)

    @property
    def in_region_share(self) -> float:
        """Fraction of served requests that stayed in the client's region."""
        return self.in_region / self.served if self.served else 0.0

    def p(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) of served requests, in seconds."""
        return percentile(self.latencies, q)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[min(int(rank), len(sorted_values)) - 1]


class _Request:
    __slots__ = ("attempts", "region", "service", "start", "tried")

    def __init__(self, region: str, start: float, service: float) -> None:
        self.region = region
        self.start = start
        self.service = service  # x the instance's mean service time
        self.attempts = 0
        self.tried: set[str] = set()


class _Instance:
    __slots__ = ("busy", "load", "queue", "spec")

    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec
        self.load = 0  # admitted and not finished (what the host proxy counts)
        self.busy = 0  # workers in use
        self.queue: deque[_Request] = deque()


class _Edge:
    __slots__ = ("local", "node", "region", "rtts", "view")

    def __init__(self, region: str, node: str, max_age: float) -> None:
        self.region = region
        self.node = node
        self.view = LoadView(max_age=max_age)
        self.local: dict[str, int] = {}  # instance id -> this edge's open attempts
        self.rtts: dict[str, float] = {}  # instance id -> RTT from this edge


Event = tuple[float, int, Callable[..., None], tuple[object, ...]]


class _Sim:
    def __init__(self, sc: Scenario, strategy: Strategy, seed: int, choices: int) -> None:
        self.sc = sc
        self.strategy: Strategy = strategy
        self.choices = choices
        self.work = random.Random(seed)
        self.pick = random.Random(seed + 1)
        self.now = 0.0
        self.seq = 0
        self.heap: list[Event] = []
        self.result = Result(strategy, max_load={spec.id: 0 for spec in sc.instances})
        self.instances = {spec.id: _Instance(spec) for spec in sc.instances}
        self.node_region = {spec.node: spec.region for spec in sc.instances}
        self.node_region.update({node: region for region, node in sc.edge_nodes.items()})
        self.edges = {r: _Edge(r, n, sc.max_age) for r, n in sc.edge_nodes.items()}
        for edge in self.edges.values():
            for spec in sc.instances:
                edge.rtts[spec.id] = self.node_rtt(edge.node, spec.node)
                edge.local[spec.id] = 0

    def node_rtt(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        return self.sc.region_rtt(self.node_region[a], self.node_region[b])

    def at(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now + delay, self.seq, fn, args))

    def run(self) -> Result:
        work = self.work
        for region, rate in sorted(self.sc.rates.items()):
            t = work.expovariate(rate)
            while t < self.sc.duration:
                self.seq += 1
                self.heap.append((t, self.seq, self.arrive, (region,)))
                t += work.expovariate(rate)
        heapq.heapify(self.heap)
        for node in sorted({spec.node for spec in self.sc.instances}):
            self.at(work.random() * self.sc.report_interval, self.report, node, 0)
        heap = self.heap
        while heap:
            self.now, _, fn, args = heapq.heappop(heap)
            fn(*args)
        self.result.latencies.sort()
        return self.result

    # -- events --------------------------------------------------------------------------

    def arrive(self, region: str) -> None:
        self.result.offered += 1
        self.dispatch(_Request(region, self.now, self.work.expovariate(1.0)))

    def dispatch(self, req: _Request) -> None:
        edge = self.edges[req.region]
        if req.attempts >= self.sc.max_attempts:
            self.result.refused += 1
            return
        now = self.now
        view_cand = edge.view.candidate
        cands: list[Candidate] = []
        for iid, inst in self.instances.items():
            spec = inst.spec
            cands.append(
                view_cand(
                    iid,
                    spec.node,
                    spec.region,
                    rtt=edge.rtts[iid],
                    soft_limit=spec.soft_limit,
                    hard_limit=spec.hard_limit,
                    now=now,
                    local=edge.local[iid],
                )
            )
        tried = req.tried
        order = select(
            cands,
            rng=self.pick,
            strategy=self.strategy,
            accept=(lambda c: c.instance_id not in tried) if tried else None,
            choices=self.choices,
        )
        if not order:
            self.result.refused += 1
            return
        iid = order[0].instance_id
        tried.add(iid)
        req.attempts += 1
        edge.local[iid] += 1
        self.at(edge.rtts[iid] / 2, self.host_arrive, req, self.instances[iid])

    def host_arrive(self, req: _Request, inst: _Instance) -> None:
        spec = inst.spec
        edge = self.edges[req.region]
        back = edge.rtts[spec.id] / 2
        if spec.hard_limit is not None and inst.load >= spec.hard_limit:
            self.at(back, self.edge_refused, req, inst)
            return
        inst.load += 1
        if inst.load > self.result.max_load[spec.id]:
            self.result.max_load[spec.id] = inst.load
        if inst.busy < spec.workers:
            inst.busy += 1
            self.at(req.service * spec.service_time, self.done, req, inst)
        else:
            inst.queue.append(req)

    def done(self, req: _Request, inst: _Instance) -> None:
        inst.load -= 1
        if inst.queue:
            nxt = inst.queue.popleft()
            self.at(nxt.service * inst.spec.service_time, self.done, nxt, inst)
        else:
            inst.busy -= 1
        self.at(self.edges[req.region].rtts[inst.spec.id] / 2, self.edge_response, req, inst)

    def edge_refused(self, req: _Request, inst: _Instance) -> None:
        self.edges[req.region].local[inst.spec.id] -= 1
        self.result.retries += 1
        self.dispatch(req)

    def edge_response(self, req: _Request, inst: _Instance) -> None:
        self.edges[req.region].local[inst.spec.id] -= 1
        self.result.latencies.append(self.now - req.start + self.sc.client_rtt)
        if inst.spec.region == req.region:
            self.result.in_region += 1

    def deliver(self, edge: _Edge, rep: LoadReport) -> None:
        edge.view.apply(rep, self.now)

    def report(self, node: str, seq: int) -> None:
        loads = {i: inst.load for i, inst in self.instances.items() if inst.spec.node == node}
        rep = LoadReport(node, f"{node}-1", seq, self.now, loads)
        for edge in self.edges.values():
            self.at(self.node_rtt(node, edge.node) / 2, self.deliver, edge, rep)
        if self.now < self.sc.duration:
            self.at(self.sc.report_interval, self.report, node, seq + 1)


def run(sc: Scenario, strategy: Strategy, *, seed: int = 1, choices: int = 2) -> Result:
    """Simulate ``sc`` with the live balancer using ``strategy``; deterministic in ``seed``."""
    return _Sim(sc, strategy, seed, choices).run()
