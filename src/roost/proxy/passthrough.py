"""SNI passthrough: relay a TLS connection, ClientHello untouched, to an app's instance.

The TLS listener (:mod:`roost.proxy.tls.terminate`) peeks at the ClientHello without reading
it; when ``target(server_name)`` names instances (an app with a no-handler port 443, see
:mod:`roost.proxy.tls.sites`), :class:`Passthrough` connects to one and only then hands the
client socket to the loop, so the backend reads the very bytes the client sent, ClientHello
first. From then on it is a :class:`~roost.proxy.tunnel.Tunnel`: bytes both ways with
backpressure and half-close. No certificate, no decryption, no HTTP at the edge.

Limits: the relay is a connection to the instance, so with ``slots`` (the host proxy's
admission on this node) it takes one of the instance's ``hard_limit`` slots for as long as
it is open -- the same count HTTP requests take, so the limit holds in one place. The
candidates come in random order; one at its hard limit or unreachable is skipped (nothing
was sent to it yet); when none has room the client is closed (TLS clients then report a
handshake failure), as when no backend can be reached within ``connect_timeout``.

On shutdown, :meth:`Passthrough.drain` lets open relays end by themselves (the edge cannot
see requests inside TLS, so an open relay counts as in flight) for up to the drain timeout,
then aborts the rest; :meth:`Passthrough.close` aborts every relay at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

from roost.proxy.tls.clienthello import ClientHello
from roost.proxy.tunnel import CLIENT, UPSTREAM, Tunnel

__all__ = ["Passthrough"]

Target = Callable[[str | None], list[tuple[str, int]] | None]  # SNI -> (instance id, port)
Release = Callable[[], None]
Slots = Callable[[str], Release | None]  # instance id -> its slot's release, None: full


def unlimited() -> None:
    """The release of a relay without a known limit (no slot was taken)."""


class _Side(asyncio.Protocol):
    """One connection of a relay; bytes go to the other side once both are up."""

    __slots__ = ("early", "relay", "side", "transport")

    def __init__(self, relay: _Relay, side: int) -> None:
        self.relay = relay
        self.side = side
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.relay.side_up()

    def data_received(self, data: bytes) -> None:
        tunnel = self.relay.tunnel
        if tunnel is None:
            self.early.append(data)
        else:
            tunnel.received(self.side, data)

    def eof_received(self) -> bool | None:
        tunnel = self.relay.tunnel
        return tunnel.eof(self.side) if tunnel is not None else False

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self.side)

    def pause_writing(self) -> None:
        if self.relay.tunnel is not None:
            self.relay.tunnel.pause(self.side)

    def resume_writing(self) -> None:
        if self.relay.tunnel is not None:
            self.relay.tunnel.resume(self.side)


class _Relay:
    __slots__ = ("done", "ended", "release", "sides", "tunnel")

    def __init__(self, done: Callable[[_Relay], None]) -> None:
        self.sides = (_Side(self, CLIENT), _Side(self, UPSTREAM))
        self.tunnel: Tunnel | None = None
        self.done = done
        self.ended = False
        self.release: Release | None = None  # the instance slot this relay holds

    def finish(self) -> None:
        """The relay is over (once): ``done`` gives its slot back."""
        if not self.ended:
            self.ended = True
            self.done(self)

    def side_up(self) -> None:
        client, upstream = (side.transport for side in self.sides)
        if self.ended:  # one side was lost before the other came up
            self.abort()
            return
        if client is None or upstream is None:
            return
        self.tunnel = Tunnel(client, upstream, self.finish)
        for side in self.sides:
            for data in side.early:
                self.tunnel.received(side.side, data)
            side.early.clear()

    def lost(self, side: int) -> None:
        if self.tunnel is not None:
            self.tunnel.lost(side)
        else:
            self.abort()
            self.finish()

    def abort(self) -> None:
        for side in self.sides:
            if side.transport is not None:
                side.transport.abort()


class Passthrough:
    """The TLS listener's passthrough hook: ``hook(hello, sock)`` -> relay coroutine or None."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: Target,
        *,
        connect_timeout: float = 5.0,
        slots: Slots | None = None,
    ) -> None:
        self.loop = loop
        self.target = target
        self.connect_timeout = connect_timeout
        self.slots = slots
        self.relays: set[_Relay] = set()
        self._empty: asyncio.Event | None = None  # set when the last relay ends (drain)

    def __call__(self, hello: ClientHello, sock: socket.socket) -> Awaitable[None] | None:
        targets = self.target(hello.server_name)
        return None if targets is None else self._relay(targets, sock)

    async def _relay(self, targets: list[tuple[str, int]], sock: socket.socket) -> None:
        relay = _Relay(self._ended)
        try:
            connected = await self._connect(relay, targets)
        except asyncio.CancelledError:
            sock.close()
            raise
        if not connected:
            sock.close()
            return
        self.relays.add(relay)
        try:
            await self.loop.connect_accepted_socket(lambda: relay.sides[CLIENT], sock)
        except OSError:
            self._drop(relay, sock)
        except asyncio.CancelledError:  # the listener closed while it was being set up
            self._drop(relay, sock)
            raise

    async def _connect(self, relay: _Relay, targets: list[tuple[str, int]]) -> bool:
        """Connect the relay's upstream side to the first target with room (a slot taken
        first, given back if the connect fails); False if none."""
        for instance_id, port in targets:
            release = self.slots(instance_id) if self.slots is not None else unlimited
            if release is None:
                continue  # at its hard limit
            relay.release = release
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self.loop.create_connection(
                        lambda: relay.sides[UPSTREAM], "127.0.0.1", port
                    )
                return True
            except (OSError, TimeoutError):
                relay.release = None
                release()
            except asyncio.CancelledError:
                relay.release = None
                release()
                relay.abort()
                raise
        return False

    def _drop(self, relay: _Relay, sock: socket.socket) -> None:
        relay.abort()
        relay.finish()
        with contextlib.suppress(OSError):
            sock.close()

    def _ended(self, relay: _Relay) -> None:
        release, relay.release = relay.release, None
        if release is not None:
            release()  # exactly once per relay
        self.relays.discard(relay)
        if not self.relays and self._empty is not None:
            self._empty.set()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the open relays to end (their client or backend
        closes), then abort the rest. New relays must have stopped (the TLS listener is
        closed first)."""
        if self.relays:
            self._empty = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._empty.wait()
        self.close()

    def close(self) -> None:
        """Abort every relay."""
        for relay in list(self.relays):
            relay.abort()
        self.relays.clear()
