"""Roost: a self-hostable, multi-region app platform.

Packages and the data that flows through them:

- ``config``   roost.toml / fly.toml text -> frozen ``AppConfig`` records (pure).
- ``catalog``  the store contract (get/put/CAS/delete/range/watch/leases), its SQLite backend,
               and the records kept in it (nodes, apps, instances, services, events).
- ``machines`` the host agent: watches instance records for its node, runs them with a driver
               (``process`` today), writes state + lifecycle events back, collects logs.
- ``proxy``    the data plane: edge (Host -> app -> instance) and, later, the host proxy.
- ``api``      the control-plane HTTP+JSON API (token auth) and the scheduler.
- ``cli``      the ``roost`` command; talks to the API with the API's own schema types.
"""

__version__ = "0.1.0"
