"""Timeouts of an HTTP/1.x client connection (a mixin of
:class:`~roost.proxy.http1.ClientConnection`; the state is the connection's).

Deadlines are plain numbers checked once per tick by
:class:`~roost.proxy.server.ConnectionRegistry` -- no timer per request:

- **request head total** (``header_timeout``, 408): armed when a head starts and not
  pushed back by new bytes, so a slowloris client trickling a header cannot keep it open;
- **request body minimum rate** (``body_min_rate`` per ``body_rate_window``, 408), measured
  only while the edge itself is reading (not while it paused, nor before a
  ``100-continue`` body started);
- **keep-alive idle** (``keepalive_timeout``): not while a response is still draining to a
  slow reader -- the transport's buffer or the socket's kernel send queue (``TIOCOUTQ``)
  still holds bytes;
- the request in flight checks its own (response head, wait for capacity).
"""

from __future__ import annotations

import fcntl
import struct
import termios
from typing import TYPE_CHECKING

from roost.proxy import errors

if TYPE_CHECKING:
    import asyncio

    from roost.proxy.context import Limits, RelayContext
    from roost.proxy.exchange import Exchange

__all__ = ["NEVER", "Deadlines"]

NEVER = float("inf")


class Deadlines:
    """The timeout half of an HTTP/1 client connection."""

    __slots__ = ()  # (ClientConnection holds the attributes)

    # the connection's state this half uses (set by ClientConnection.__init__)
    transport: asyncio.Transport | None
    _ctx: RelayContext
    _limits: Limits
    _deadline: float
    _deadline_is_head: bool
    _in_head: bool
    _paused: int
    _closing: bool
    _active: Exchange | None
    _parsing: Exchange | None
    _queue: object
    _rate_since: float
    _rate_bytes: int
    _linger: asyncio.TimerHandle | None

    def check_deadlines(self, now: float) -> None:
        """Called every tick: the idle/head timeout and the body rate here, the response
        (and queue) timeouts of the request in flight."""
        if now >= self._deadline:
            self._deadline = NEVER
            self._timed_out(now)
        parsing = self._parsing
        if parsing is not None and not parsing.request_done:
            self._check_body_rate(parsing, now)
        else:
            self._rate_since = 0.0
        if self._active is not None:
            self._active.check_deadline(now)

    def _check_body_rate(self, ex: Exchange, now: float) -> None:
        """Request body minimum rate, measured per window while the edge is reading (not
        while it paused reading itself, nor before a ``100-continue`` body started)."""
        if self._paused or self._closing or (ex.info.expect_continue and not ex.bytes_in):
            self._rate_since = 0.0
            return
        if not self._rate_since:
            self._rate_since, self._rate_bytes = now, 0
            return
        elapsed = now - self._rate_since
        limits = self._limits
        if elapsed < limits.body_rate_window:
            return
        if self._rate_bytes < limits.body_min_rate * elapsed:
            self._ctx.metrics.timed_out(role=self._ctx.role, kind="body_rate")
            self._bad_input(errors.body_too_slow(limits.body_min_rate))
            self.flush()
        else:
            self._rate_since, self._rate_bytes = now, 0

    def _arm_deadline(self) -> None:
        self._deadline_is_head = self._in_head
        limits = self._limits
        delay = limits.header_timeout if self._in_head else limits.keepalive_timeout
        self._deadline = self._ctx.loop.time() + delay

    def _clear_deadlines(self) -> None:
        self._deadline = NEVER
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _timed_out(self, now: float) -> None:
        if self._active is not None or self._queue or self._closing:
            return
        if self._in_head:
            self._ctx.metrics.timed_out(role=self._ctx.role, kind="header_deadline")
            self._bad_input(errors.request_timeout())
            self.flush()
        elif self._output_queued():
            # a slow reader is still receiving the last response: not idle
            self._deadline = now + self._limits.keepalive_timeout
        else:
            self._ctx.metrics.timed_out(role=self._ctx.role, kind="keepalive_idle")
            self._close(linger=False)

    def _output_queued(self) -> bool:
        """Whether response bytes still wait in our buffer or the kernel's send queue."""
        transport = self.transport
        if transport is None:
            return False
        if transport.get_write_buffer_size():
            return True
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return False
        return bool(struct.unpack("i", raw)[0])
