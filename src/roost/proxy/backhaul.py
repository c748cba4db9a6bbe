"""The backhaul protocol: what an edge and a host proxy say to each other (pure).

The backhaul is HTTP/1.1 over pooled keep-alive connections from an edge to the host
proxy of the node an instance runs on. It adds two header fields to plain HTTP/1.1:

- ``Roost-Instance: <id>`` on a request names the instance it is for. The edge appends it
  to the request head it already built (``with_instance``); the host proxy reads and drops
  it (``prepare_host_head``), keeping every other field as the edge set it (``Roost-*``
  included: the edge stripped the client's and set its own).
- ``Roost-Refused: <reason>`` on a response means *the instance never saw the request*, so
  the edge may send it elsewhere (DESIGN.md, "Retry safety"). Reasons: ``full`` (the
  instance is at its hard limit), ``unreachable`` (the host proxy could not connect to the
  instance), ``unknown`` (no such instance on that node: the edge's catalog view is stale),
  ``draining`` (the host proxy is shutting down).

Trust: the host proxy accepts ``Roost-Instance`` only on its backhaul listener (clients
can never reach it: on one node a 0600 unix socket in the 0700 data dir; across nodes
mTLS, later), and strips every ``roost-*`` field from instances' responses, so an app
cannot forge a refusal. The edge honours ``Roost-Refused`` only on backhaul connections.

Addresses: ``unix:/path/to/backhaul.sock`` (one node) or ``tcp:host:port`` (the seam for
the mesh: mTLS backhaul connections between nodes).
"""

from __future__ import annotations

from roost.proxy import errors
from roost.proxy.headers import HOP_BY_HOP, KEEP, Headers, NameKinds, RequestInfo, encode_head

__all__ = [
    "DRAINING",
    "FULL",
    "INSTANCE",
    "REFUSED",
    "UNKNOWN",
    "UNREACHABLE",
    "parse_address",
    "prepare_host_head",
    "refusal",
    "unix_address",
    "with_instance",
]

INSTANCE = b"Roost-Instance"
REFUSED = b"Roost-Refused"
FULL = b"full"
UNREACHABLE = b"unreachable"
UNKNOWN = b"unknown"
DRAINING = b"draining"

_INSTANCE_LOWER = INSTANCE.lower()
_OWS = b" \t"
_STATUS = {FULL: 503, UNREACHABLE: 502, UNKNOWN: 503, DRAINING: 503}


def unix_address(path: str) -> str:
    """The backhaul address of a host proxy listening on a unix socket."""
    return "unix:" + path


def parse_address(address: str) -> tuple[str, str, int]:
    """``("unix", path, 0)`` or ``("tcp", host, port)``; ValueError otherwise.

    >>> parse_address("unix:/d/backhaul.sock")
    ('unix', '/d/backhaul.sock', 0)
    >>> parse_address("tcp:[fdaa::1]:4281")
    ('tcp', 'fdaa::1', 4281)
    """
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return "unix", rest, 0
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return "tcp", host.strip("[]"), int(port)
    raise ValueError(f"invalid backhaul address {address!r}")


def with_instance(head: bytes, instance_id: str) -> bytes:
    """A request head (ending in the blank line) with ``Roost-Instance`` appended."""
    return b"%s%s: %s\r\n\r\n" % (head[:-2], INSTANCE, instance_id.encode("ascii"))


def refusal(reason: bytes, instance_id: str) -> errors.ProxyError:
    """The host proxy's answer when the instance will not see the request."""
    return errors.ProxyError(
        _STATUS.get(reason, 503),
        "refused_" + reason.decode("ascii"),
        f"instance {instance_id!r} refused the request ({reason.decode('ascii')})",
        origin="upstream",
        retry_safe=True,
        headers=((REFUSED, reason),),
    )


# Backhaul field names -> whether prepare_host_head must look at them (the edge sends the
# same names every time)
_LOOK = "look"
_LOOKED_AT = HOP_BY_HOP | {_INSTANCE_LOWER, b"content-length", b"host", b"expect"}
_KINDS = NameKinds(lambda lname: _LOOK if lname in _LOOKED_AT else KEEP)


def prepare_host_head(
    method: bytes, version: str, target: bytes, headers: Headers
) -> tuple[bytes, RequestInfo]:
    """Check a backhaul request head and build the head for the instance.

    Hop-by-hop fields go (``Transfer-Encoding: chunked`` is re-added: the body is
    re-framed); ``Roost-Instance`` is read into ``info.instance`` and dropped; an
    ``Upgrade`` field is kept (with ``Connection: upgrade``) so the instance can answer
    101. Raises :class:`errors.ProxyError` (400) for what an edge never sends.
    """
    if version != "1.1":
        raise errors.version_not_supported(version)
    info = RequestInfo()
    out: Headers = []
    kinds = _KINDS
    for name, value in headers:
        if kinds[name] is KEEP:  # most fields: nothing to check
            out.append((name, value))
            continue
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"transfer-encoding":
                if info.chunked or value.strip(_OWS).lower() != b"chunked":
                    raise errors.bad_request("only 'Transfer-Encoding: chunked' is accepted")
                info.chunked = True
            elif lname == b"upgrade":
                info.upgrade = value
        elif lname == _INSTANCE_LOWER:
            info.instance = value.strip(_OWS)
        else:
            if lname == b"content-length":
                text = value.strip(_OWS)
                if info.content_length is not None or not text.isdigit():
                    raise errors.bad_request("invalid Content-Length")
                info.content_length = int(text)
            elif lname == b"host":
                info.host = value
            elif lname == b"expect":
                info.expect_continue = value.strip(_OWS).lower() == b"100-continue"
            out.append((name, value))
    if info.chunked:
        if info.content_length is not None:
            raise errors.bad_request("both Content-Length and Transfer-Encoding")
        out.append((b"Transfer-Encoding", b"chunked"))
    if info.upgrade is not None:
        out += ((b"Connection", b"upgrade"), (b"Upgrade", info.upgrade))
    return encode_head(method + b" " + target + b" HTTP/1.1\r\n", out), info
