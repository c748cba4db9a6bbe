"""The backhaul to a host proxy in the same process, in memory: no socket, no syscall.

``roost up`` runs the edge and its node's host proxy in one process, and every request
crosses the backhaul between them. Over the host proxy's unix socket that costs, per request,
two writes and two reads (the kernel wakes the same process), two trips through epoll, and a
place in the next poll batch behind every other ready socket. A host proxy registers its
socket path here (:func:`listen`); an edge connecting to ``unix:<that path>`` on the same
event loop gets a pair of :class:`PipeEnd` transports instead (:func:`connect`). Everything
above the transport is unchanged: the same HTTP/1.1 or HTTP/2 bytes, the host proxy's
admission and limits, its connection registry, drain and metrics. Processes on the node
other than this one still use the socket.

Transport semantics follow a stream socket's, as the protocols expect them:

- ``write`` puts bytes in the peer's inbox; the inbox is delivered as one ``data_received``
  in a later loop callback (``call_soon``: after the current callback, before the next poll),
  never inside the writer's call;
- flow control: while the peer's inbox holds more than ``high`` bytes (it paused reading, or
  has not run yet) the writer's protocol gets ``pause_writing``, and ``resume_writing`` once
  it is down to ``low``; ``get_write_buffer_size`` is the peer's undelivered bytes;
- ``write_eof`` / ``close``: the peer gets ``eof_received`` after the bytes before it (and
  closes its end if that returns false); ``close`` ends this end's protocol with
  ``connection_lost(None)``; ``abort`` drops undelivered bytes both ways and the peer sees
  ``connection_lost(ConnectionResetError)``, as after a reset; so does a write to an end
  whose peer has closed.

Why not ``socket.socketpair()``: it keeps every syscall and epoll trip this exists to save.

:func:`run_due` delivers, at once, what is waiting for its ``call_soon`` on a loop: the
edge's work gate calls it before releasing a flooded app's batch, so that a request (or
response) of another app crossing the backhaul does not wait behind that batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["PipeEnd", "connect", "listen", "listener", "open_unix", "run_due", "unlisten"]

Factory = Callable[[], asyncio.BaseProtocol]

_HIGH, _LOW = 256 * 1024, 64 * 1024  # like a socket's buffers: bytes in flight before pausing
_listeners: dict[str, tuple[asyncio.AbstractEventLoop, Factory]] = {}
# loop -> ends with a delivery scheduled since the loop last ran one (run_due's work list;
# the first scheduled delivery to run drops it, so it only holds what is still due; a loop
# closed with deliveries pending never runs it: such entries go when another loop adds one)
_due: dict[asyncio.AbstractEventLoop, list[PipeEnd]] = {}


def _forget_closed_loops() -> None:
    for loop in [loop for loop in _due if loop.is_closed()]:
        del _due[loop]


def run_due(loop: asyncio.AbstractEventLoop) -> None:
    """Deliver now what every pipe end on ``loop`` has waiting for its scheduled callback
    (which then finds nothing left to do). Called between loop callbacks, never inside a
    protocol's own call."""
    ends = _due.pop(loop, None)
    if ends:
        for end in ends:
            if end._scheduled:
                end._deliver()


def listen(path: str, loop: asyncio.AbstractEventLoop, accept: Factory) -> None:
    """A host proxy serving ``unix:path`` on ``loop`` takes in-process connections too."""
    _listeners[path] = (loop, accept)


def unlisten(path: str, accept: Factory | None = None) -> None:
    """No more in-process connections to ``path`` (the host proxy is closing)."""
    found = _listeners.get(path)
    if found is not None and (accept is None or found[1] is accept):
        del _listeners[path]


def listener(path: str, loop: asyncio.AbstractEventLoop) -> Factory | None:
    """The accept factory of a host proxy at ``path`` on this very loop, or None."""
    found = _listeners.get(path)
    return found[1] if found is not None and found[0] is loop else None


def connect(
    loop: asyncio.AbstractEventLoop, factory: Factory, accept: Factory, path: str
) -> tuple[PipeEnd, asyncio.BaseProtocol]:
    """A connection from a protocol of ``factory`` to one of ``accept`` (the host proxy's
    side is made first, as a server accepts before the client's connect completes)."""
    server_proto, client_proto = accept(), factory()
    server = PipeEnd(loop, server_proto, {"peername": "", "sockname": path})
    client = PipeEnd(loop, client_proto, {"peername": path, "sockname": ""})
    server.peer, client.peer = client, server
    server_proto.connection_made(server)
    client_proto.connection_made(client)
    return client, client_proto


async def open_unix(loop: asyncio.AbstractEventLoop, factory: Factory, path: str) -> Any:
    """A protocol of ``factory`` connected to the unix socket ``path``: in memory when a host
    proxy of this process listens there (on ``loop``), else through the socket."""
    accept = listener(path, loop)
    if accept is None:
        _, protocol = await loop.create_unix_connection(factory, path)
        return protocol
    return connect(loop, factory, accept, path)[1]


class PipeEnd(asyncio.Transport):
    """One end of an in-process pipe (see the module docstring)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol, extra: dict[str, Any]
    ) -> None:
        super().__init__(extra)
        self.peer: PipeEnd | None = None
        self._loop = loop
        self._protocol: Any = protocol
        self._inbox: list[bytes] = []  # bytes the peer wrote, not yet delivered
        self._inbox_size = 0
        self._eof_in = False  # the peer wrote EOF (delivered after the inbox)
        self._scheduled = False
        self._reading = True
        self._closing = False  # close/abort called: writes are dropped
        self._lost = False  # connection_lost delivered (or scheduled)
        self._write_paused = False  # our protocol was told pause_writing
        self._high, self._low = _HIGH, _LOW

    # -- the asyncio.Transport interface ---------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            if self._inbox or self._eof_in:
                self._schedule()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        peer = self.peer
        if self._closing or peer is None or not data:
            return
        if peer._closing:  # the peer closed its end: as a socket would, answer with a reset
            self._reset()
            return
        peer._receive(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        peer = self.peer
        if peer is not None and not self._closing:
            peer._receive_eof()

    def get_write_buffer_size(self) -> int:
        peer = self.peer
        return peer._inbox_size if peer is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = _HIGH if high is None else high
        self._low = min(self._high, (self._high // 4) if low is None else low)

    def close(self) -> None:
        """Bytes written so far still reach the peer, then its EOF; this end is lost."""
        if not self._closing:
            self._shut(PipeEnd._receive_eof)

    def abort(self) -> None:
        """Nothing more is delivered either way; the peer sees a reset."""
        if not self._lost:
            self._shut(PipeEnd._reset)

    def _shut(self, tell_peer: Callable[[PipeEnd], None]) -> None:
        self._closing = True
        self._inbox.clear()
        self._inbox_size = 0
        peer = self.peer
        if peer is not None:
            tell_peer(peer)
        self._lose(None)

    # -- the peer's side ---------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if self._closing or self._eof_in:
            return
        self._inbox.append(data)
        self._inbox_size += len(data)
        peer = self.peer
        if (
            peer is not None
            and not peer._write_paused
            and not peer._lost
            and self._inbox_size > peer._high
        ):
            peer._write_paused = True
            peer._protocol.pause_writing()
        self._schedule()

    def _receive_eof(self) -> None:
        if not self._closing and not self._eof_in:
            self._eof_in = True
            self._schedule()

    def _reset(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._inbox.clear()
        self._inbox_size = 0
        self._lose(ConnectionResetError("the other end of the in-process backhaul aborted"))

    def _schedule(self) -> None:
        if not self._scheduled and self._reading and not self._closing:
            self._scheduled = True
            loop = self._loop
            due = _due.get(loop)
            if due is None:
                if _due:  # (another loop's: one process normally runs one loop)
                    _forget_closed_loops()
                _due[loop] = [self]
            else:
                due.append(self)
            loop.call_soon(self._run_scheduled)

    def _run_scheduled(self) -> None:
        _due.pop(self._loop, None)  # the loop reached the scheduled callbacks itself
        if self._scheduled:
            self._deliver()

    def _deliver(self) -> None:
        self._scheduled = False
        if self._closing or not self._reading:
            return
        inbox = self._inbox
        if inbox:
            data = inbox[0] if len(inbox) == 1 else b"".join(inbox)
            inbox.clear()
            self._inbox_size = 0
            peer = self.peer
            if peer is not None and peer._write_paused and not peer._lost:
                peer._write_paused = False
                peer._protocol.resume_writing()
            self._protocol.data_received(data)
            if self._inbox:  # it wrote to itself through its peer, or the peer wrote back
                return
        if self._eof_in and not self._closing and self._reading:
            self._eof_in = False
            if not self._protocol.eof_received():
                self.close()

    def _lose(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        protocol, self._protocol = self._protocol, None
        peer = self.peer
        if peer is not None and peer._lost:  # both ends done: no cycle left for the GC
            self.peer = peer.peer = None
        protocol.connection_lost(exc)
