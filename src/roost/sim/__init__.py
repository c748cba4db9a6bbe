"""A discrete-event simulator of Roost's request routing, over the live balancer.

Role: compare balancing strategies (and later, limits and report intervals) on a
multi-region topology without sockets or wall-clock time, deterministically from a seed.
The simulator *imports* :func:`roost.proxy.balance.select` and
:class:`roost.proxy.loadview.LoadView` -- the very code the edge runs -- so what it
measures is the shipped behaviour, not a model of it.

Data flow of one simulated request (:mod:`roost.sim.model`)::

    client (region R) --arrival--> edge of R
      edge: LoadView + own in-flight -> Candidates -> balance.select(accept=not tried)
      --backhaul, RTT/2--> host proxy: load >= hard_limit? refuse : admit (queue/serve)
      refused --RTT/2--> edge retries the next pick (bounded attempts, else a 503)
      served --RTT/2--> edge --> latency = client RTT + backhaul + queueing + service
    every node --LoadReport every interval, RTT/2 later--> every edge's LoadView

``python -m roost.sim`` prints ``closest`` vs ``leastload`` on a 3-region scenario.
"""

from roost.sim.model import InstanceSpec, Result, Scenario, run

__all__ = ["InstanceSpec", "Result", "Scenario", "run"]
