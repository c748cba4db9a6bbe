"""Running instances on a node.

The host agent (``agent``) watches the catalog for instances assigned to its node and gives each
one a ``Supervisor`` that starts and stops it through a driver (``drivers.process`` today),
applies the restart policy, probes readiness, and writes state and lifecycle events back. The
log collector (``logs``) tails each instance's stdout/stderr files and timestamps every line once.
"""
