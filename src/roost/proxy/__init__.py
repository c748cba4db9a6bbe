"""The data plane: the edge proxy (and, later, the host proxy).

Role: accept client connections, find the app a request is for, pick one of its
instances and relay the request and the streamed response -- retrying on another
instance only when the first one cannot have seen the request.

Data flow of one request::

    client bytes --http1.ClientConnection (asyncio.Protocol + httptools)--> request head
      --headers.prepare_request--> checked head, hop-by-hop/roost-* stripped, X-Forwarded-*
      --routes.RouteTable.lookup(Host)--> AppRoute          (404 no app / 503 no instances)
      --balance.order_backends--> backends to try, in order
      --upstream.UpstreamPool--> pooled or new UpstreamConnection (connect fail -> next)
      --forward.Exchange--> request body streamed up, response streamed back down
      --errors.render--> the edge's own responses (4xx/5xx, Roost-Request-Id)

Pure modules (no I/O, clock or randomness of their own): ``routes``, ``balance``,
``headers``, ``errors``. I/O modules: ``http1`` (client side), ``upstream`` (instance
side), ``forward`` (one request across both), ``edge`` (assembly, lifecycle).

Public API for the code that runs an edge::

    holder = RouteHolder(RouteTable.build([("demo", ["demo.example.com"])],
                                          {"demo": [Backend("i-1", "127.0.0.1", 8080)]}))
    edge = await start_edge("0.0.0.0", 80, holder, region="ams")
    holder.table = RouteTable.build(...)   # on every catalog change
    await edge.close()
"""

from roost.proxy.edge import Edge, Limits, start_edge
from roost.proxy.routes import AppRoute, Backend, RouteHolder, RouteTable

__all__ = ["AppRoute", "Backend", "Edge", "Limits", "RouteHolder", "RouteTable", "start_edge"]
