"""Byte tunnels for upgraded connections (WebSocket and other ``Upgrade`` protocols).

A request carrying ``Upgrade`` (other than ``h2c``, which the edge keeps to itself) is
forwarded with ``Connection: upgrade`` on each hop. Only when the instance answers ``101
Switching Protocols`` do the two connections of a hop -- client side and upstream side --
stop speaking HTTP and become a :class:`Tunnel`: bytes are relayed as they come, both
ways, with backpressure (a side whose write buffer is full stops reading the other side)
and half-close (an EOF from one side becomes ``write_eof`` on the other; the tunnel closes
when both sides ended or either connection is lost). On the full path this happens at the
host proxy (host connection <-> instance) and at the edge (client <-> backhaul).

Any other answer is an ordinary response; the client connection then goes on parsing
HTTP (the upgrade was declined). An upgraded request stays counted in flight -- at the
host proxy against the instance's limit -- until its tunnel closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from roost.proxy.headers import HOP_BY_HOP, Headers

__all__ = ["CLIENT", "UPSTREAM", "Tunnel", "upgrade_head"]

CLIENT, UPSTREAM = 0, 1  # the two sides of a tunnel


class Tunnel:
    """Relays bytes between two transports until both ended or either is lost."""

    __slots__ = ("_closed", "_ended", "_on_close", "_transports")

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        on_close: Callable[[], None],
    ) -> None:
        self._transports = (client, upstream)
        self._ended = [False, False]
        self._closed = False
        self._on_close = on_close

    def received(self, side: int, data: bytes) -> None:
        """Bytes arrived on ``side``: send them to the other side."""
        if data and not self._closed:
            self._transports[1 - side].write(data)

    def eof(self, side: int) -> bool:
        """``side`` sent EOF; returns what ``eof_received`` should return (keep open?)."""
        self._ended[side] = True
        other = self._transports[1 - side]
        if self._closed or all(self._ended) or not other.can_write_eof():
            self.close()
            return False
        other.write_eof()
        return True

    def lost(self, side: int) -> None:
        """``side``'s connection is gone."""
        self.close()

    def pause(self, side: int) -> None:
        """``side``'s write buffer is full: stop reading the other side."""
        if not self._closed:
            self._transports[1 - side].pause_reading()

    def resume(self, side: int) -> None:
        """``side``'s write buffer drained."""
        if not self._closed:
            self._transports[1 - side].resume_reading()

    def close(self) -> None:
        """Close both connections (buffered bytes are still written) and report it once."""
        if self._closed:
            return
        self._closed = True
        for transport in self._transports:
            transport.close()
        self._on_close()


def upgrade_head(status: int, reason: bytes, headers: Headers, request_id: bytes | None) -> bytes:
    """The ``101`` head for the client: the instance's fields minus hop-by-hop and
    ``roost-*`` ones, plus ``Connection: upgrade`` and its ``Upgrade``."""
    out: Headers = []
    upgrade = b""
    for name, value in headers:
        lname = name.lower()
        if lname == b"upgrade":
            upgrade = value
        elif lname not in HOP_BY_HOP and not lname.startswith(b"roost-"):
            out.append((name, value))
    out += ((b"Connection", b"upgrade"), (b"Upgrade", upgrade))
    if request_id is not None:
        out.append((b"Roost-Request-Id", request_id))
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"Switching Protocols")]
    lines += [name + b": " + value + b"\r\n" for name, value in out]
    lines.append(b"\r\n")
    return b"".join(lines)
