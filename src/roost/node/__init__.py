"""A Roost node process: the one place every role is composed and started.

``roost up`` (single node) runs: the SQLite catalog, the control-plane API, the host agent with
the ``process`` driver and the log collector, and the edge. Data flow: API writes desired state →
catalog → agent starts instances, writes actual state → catalog watch → route table → edge.
"""
