"""The data plane: the edge and the host proxy (HTTP/1.1).

Role: accept client connections, find the app a request is for, pick an instance, and
relay the request to the host proxy of the instance's node, which enforces the
instance's concurrency limit and forwards to it -- retrying on another instance only when
the first one cannot have seen the request.

Data flow of one request::

    client bytes --http1.ClientConnection (asyncio.Protocol + httptools)--> request head
      --headers.prepare_head--> checked head, hop-by-hop/roost-* stripped, X-Forwarded-*
      --forward.EdgeExchange: routes.RouteTable.lookup(Host)--> AppRoute (404 / 503)
      --balance.select (load: host proxy counts; RTT)--> attempt order, full ones left out
      --upstream_pool.UpstreamPool (keyed by backhaul address)--> backhaul connection
      --backhaul.with_instance--> "Roost-Instance: <id>" --unix socket (in memory within
          one process: localpipe)--> HOST PROXY:
          http1.ClientConnection --host.HostExchange--> admission.Admission (full? refuse:
          503 "Roost-Refused: full", nothing reached the instance)
          --upstream_pool.UpstreamPool--> instance 127.0.0.1:port, response streamed back
      <-- refused: next instance (body replayed from the retry buffer); all full:
          waitqueue.WaitQueues until a slot is released (or 503 at capacity)
      --errors.render--> the proxies' own responses (4xx/5xx, Roost-Request-Id)
      --tunnel.Tunnel--> after a 101, both hops relay bytes

Pure modules (no I/O, clock or randomness of their own): ``routes``, ``balance``,
``headers``, ``errors``, ``backhaul``, ``admission``, ``waitqueue``, ``workgate`` (per-app
caps on edge work per loop turn). I/O modules: ``http1`` (client side, both roles; with
``http1_reader``, ``http1_writer`` and ``http1_deadlines``), ``upstream`` and
``upstream_pool`` (pooled upstream connections), ``exchange`` and ``exchange_response`` (one
request across both, shared), ``edge_context`` (what an edge's exchanges share; makes them),
``forward`` (edge policy), ``host`` (host proxy policy), ``tunnel`` (upgrades), ``server``
(listener lifecycle), ``edge``, ``localpipe`` (the backhaul in memory when edge and host
proxy share a process). HTTP/2: ``http2``, ``h2stream``, ``h2fields``, ``h2wire``,
``h2hpack``, ``h2conn``, ``h2backhaul`` (+ ``h2backhaul_conn``), ``h2limits``,
``flowcontrol``.

Public API for the code that runs a node (``node/run.py``)::

    table = TableHolder()                       # this node's instances (host proxy)
    host = await start_host_proxy(f"{data_dir}/backhaul.sock", table)
    holder = RouteHolder()                      # every app's backends (edge)
    edge = await start_edge("0.0.0.0", 80, holder, region="ams", admission=host.admission)
    holder.table, table.table = RouteTable.build(...), InstanceTable(...)  # on changes
    await edge.close(); await host.close()      # drain: edge first, then the host proxy
"""

from roost.proxy.admission import Admission, HostTarget, InstanceTable, TableHolder
from roost.proxy.edge import Edge, Limits, start_edge
from roost.proxy.host import HostProxy, start_host_proxy
from roost.proxy.routes import AppRoute, Backend, RouteHolder, RouteTable

__all__ = [
    "Admission",
    "AppRoute",
    "Backend",
    "Edge",
    "HostProxy",
    "HostTarget",
    "InstanceTable",
    "Limits",
    "RouteHolder",
    "RouteTable",
    "TableHolder",
    "start_edge",
    "start_host_proxy",
]
