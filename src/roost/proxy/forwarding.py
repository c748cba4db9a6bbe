"""What the edge stamps on every request: per-connection forwarding fields and request ids.

:class:`Forwarding` holds the facts of one client connection (client address, scheme, local
port, region) as the constant fields appended to each of its requests
(:func:`forwarding_tail` shares them between connections with the same facts);
:class:`RequestIds` makes the ``Roost-Request-Id`` values. Pure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from roost.proxy.headers import VIA

__all__ = ["Forwarding", "RequestIds", "forwarding_tail"]


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Per-connection facts the edge stamps on every request (all as header bytes)."""

    client_ip: bytes
    proto: bytes
    port: bytes
    region: bytes

    def tail(self) -> tuple[tuple[bytes, bytes], ...]:
        """The constant headers appended to every request from this connection."""
        return (
            (b"X-Forwarded-Proto", self.proto),
            (b"X-Forwarded-Port", self.port),
            (b"Via", VIA),
            (b"Roost-Client-IP", self.client_ip),
            (b"Roost-Region", self.region),
        )


_TAILS: dict[tuple[bytes, bytes, bytes, bytes], tuple[tuple[bytes, bytes], ...]] = {}
_TAILS_MAX = 4096


def forwarding_tail(
    client_ip: bytes, proto: bytes, port: bytes, region: bytes
) -> tuple[tuple[bytes, bytes], ...]:
    """:meth:`Forwarding.tail` for a new connection, shared between connections with the same
    facts (a client reconnecting; a flood of new connections): no new tuples per connection.
    Bounded: emptied when it reaches its cap."""
    key = (client_ip, proto, port, region)
    tail = _TAILS.get(key)
    if tail is None:
        if len(_TAILS) >= _TAILS_MAX:
            _TAILS.clear()
        tail = _TAILS[key] = Forwarding(client_ip, proto, port, region).tail()
    return tail


class RequestIds:
    """Short unique request ids: a random per-process prefix (passed in) + a counter."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        """The next id, e.g. ``b"9f2c41d0000003e8"``."""
        return b"%s%08x" % (self._prefix, next(self._counter) & 0xFFFFFFFF)
