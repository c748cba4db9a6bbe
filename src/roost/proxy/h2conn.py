"""HTTP/2 connection plumbing shared by both ends Roost speaks h2 on: an asyncio base.

:class:`H2Base`, an ``asyncio.Protocol`` over h2's ``H2Connection``, is subclassed by the
client-facing codec (:mod:`roost.proxy.http2`) and the backhaul client
(:mod:`roost.proxy.h2backhaul`); it does what both need, the subclasses handle streams:

- **input**: bytes -> ``_screen`` (the subclass's abuse checks) -> h2 -> each event to the
  handler in the class's ``HANDLERS`` table -> credit handed back -> ``_after_input`` ->
  ``flush()``. An h2 protocol error abandons the connection (h2 has queued its GOAWAY).
- **windows in**: :class:`~roost.proxy.flowcontrol.AdaptiveWindow` (BDP pings) sizes them,
  :class:`~roost.proxy.flowcontrol.CreditLedger` hands credit back: a stream's only as its
  consumer takes the bytes (``StreamOut.paused`` holds it -- that is the backpressure).
- **output**: per stream (:class:`StreamOut`) a pending HEADERS block, a byte queue and an
  end (END_STREAM or trailers), framed at ``flush()`` (:mod:`~roost.proxy.h2wire`) under the
  peer's windows, round-robin among streams waiting for window, and written once as the event
  loop's turn ends (one write for every stream). Over :data:`HIGH` queued bytes, or while the
  transport's buffer is full, a stream is ``write_paused`` and ``_pause_changed`` tells the
  subclass to stop its producer. Streams (or the connection) held at zero window are
  reported through ``_stalled``.
- **ends**: h2 closes its state machine on any GOAWAY, sent or received, and then refuses
  every frame (python-hyper/h2#1181), which would kill the streams a graceful GOAWAY lets
  finish. So a *received* GOAWAY leaves h2's state open (the subclass decides what it means),
  and graceful GOAWAYs are *sent* with ``_write_raw``, behind h2's back. ``_abandon``
  cancels every stream and closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import h2.config
import h2.events as ev
import h2.exceptions
import h2.settings

from roost.proxy import flowcontrol as fc
from roost.proxy import h2wire
from roost.proxy.h2limits import H2Limits

__all__ = ["HIGH", "H2Base", "H2Options", "StreamOut"]

HIGH = 64 * 1024  # bytes queued on a stream beyond which its producer pauses
Headers = list[tuple[bytes, bytes]]
_SC = h2.settings.SettingCodes
_NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class H2Options:
    """Per-connection HTTP/2 settings (``limits`` apply where Roost is the server)."""

    limits: H2Limits = field(default_factory=H2Limits)
    adaptive_window: bool = True  # grow windows by BDP estimation (else fixed)
    initial_window: int = 65_535  # receive window (stream and connection) to start with
    max_window: int = fc.MAX_WINDOW  # cap of the adaptive window
    held_budget: int = 16 << 20  # credit paused streams may hold before the connection waits


class StreamOut:
    """What :class:`H2Base` keeps per stream; subclasses add their side's state."""

    __slots__ = (
        "done",
        "ending",
        "head",
        "out",
        "out_bytes",
        "paused",
        "sid",
        "trailers",
        "write_paused",
    )

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.head: Headers | None = None  # a HEADERS block not yet framed
        self.out: collections.deque[bytes] = collections.deque()
        self.out_bytes = 0
        self.ending = False  # our side ends once ``out`` drains
        self.trailers: Headers | None = None
        self.paused = 0  # reasons the consumer of this stream's input is paused
        self.write_paused = False
        self.done = False  # our side ended, or the stream is gone


class H2Base(asyncio.Protocol):
    """See the module docstring. Subclasses set ``HANDLERS`` (``{**H2Base.HANDLERS, ...}``)."""

    HANDLERS: ClassVar[dict[type[ev.Event], Callable[[Any, Any, float], None]]]

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: h2.config.H2Configuration,
        options: H2Options,
    ) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.h2 = h2wire.new_connection(config)  # h2, open after a received GOAWAY
        self.window = fc.AdaptiveWindow(
            initial_window=options.initial_window,
            max_window=options.max_window,
            enabled=options.adaptive_window,
        )
        self.credit = fc.CreditLedger(self.window, options.held_budget)
        self.streams: dict[int, StreamOut] = {}
        self._dirty: dict[int, StreamOut] = {}  # streams with frames to build at flush()
        self._blocked: dict[int, StreamOut] = {}  # streams waiting for window, in turn
        self._in_input = False
        self._write_due = False  # a _write_out is scheduled
        self.closed = False

    # -- hooks ------------------------------------------------------------------------

    def _screen(self, data: bytes, now: float) -> bool:
        """Look at raw input before h2 does; False: drop it (the connection is failed)."""
        return True

    def _after_input(self) -> None:
        """Everything one read produced has been handled."""

    def _pause_changed(self, st: StreamOut, paused: bool) -> None:
        """``st.write_paused`` changed: stop or restart what produces its output."""

    def _stalled(self, sid: int, now: float | None) -> None:
        """Output waits for ``sid``'s window (0: the connection's); ``now=None``: no more."""

    def _ended(self, st: StreamOut) -> None:
        """Our END_STREAM for ``st`` is out (after ``_forget`` unless overridden)."""
        self._forget(st)

    def _cancel(self, st: StreamOut) -> None:
        """``st`` is gone without a proper end (reset, connection lost)."""

    def _ping_acked(self, data: bytes, now: float) -> None:
        """A PING ACK that is not a BDP ping's."""

    def _sent_frames(self, frames: int) -> None:
        """``frames`` DATA frames were just framed."""

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def start(self, settings: dict[h2.settings.SettingCodes, int]) -> None:
        """Send the preface/SETTINGS (``settings`` advertised) and open the windows."""
        conn = self.h2
        initial = {_SC.INITIAL_WINDOW_SIZE: self.window.window, **settings}
        conn.local_settings = h2.settings.Settings(
            client=conn.config.client_side, initial_values=initial
        )
        conn.initiate_connection()
        self.run(self.window.start())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = self.loop.time()
        if not self._screen(data, now):
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            return self._abandon()
        handlers = self.HANDLERS
        self._in_input = True
        try:
            for event in events:
                handler = handlers.get(type(event))
                if handler is not None:
                    handler(self, event, now)
                    if self.closed:
                        return
        finally:
            self._in_input = False
        self.run(self.credit.updates())
        self._after_input()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._abandon()

    def pause_writing(self) -> None:
        self._set_writing(paused=True)

    def resume_writing(self) -> None:
        self._set_writing(paused=False)

    def _set_writing(self, *, paused: bool) -> None:
        self.write_paused = paused
        if self.transport is not None and not self.closed:  # no input while output waits
            (self.transport.pause_reading if paused else self.transport.resume_reading)()
        for st in list(self.streams.values()):
            self._update_pause(st)

    # -- events both sides handle alike ---------------------------------------------------

    def _on_window(self, event: ev.WindowUpdated, now: float) -> None:
        sid = event.stream_id or 0
        self._stalled(sid, None)
        if sid == 0:
            self._dirty.update(self._blocked)
        elif sid in self._blocked:
            self._dirty[sid] = self._blocked[sid]

    def _on_settings(self, event: ev.RemoteSettingsChanged, now: float) -> None:
        self._dirty.update(self._blocked)  # the initial window or frame size may have changed

    def _on_ping_ack(self, event: ev.PingAckReceived, now: float) -> None:
        data = event.ping_data or b""
        if self.window.owns(data):
            self.run(self.window.ping_acked(data, now))
        else:
            self._ping_acked(data, now)

    HANDLERS = {
        ev.WindowUpdated: _on_window,
        ev.RemoteSettingsChanged: _on_settings,
        ev.PingAckReceived: _on_ping_ack,
    }

    # -- windows ----------------------------------------------------------------------

    def run(self, commands: Sequence[fc.Command]) -> None:
        """Execute flow-control commands."""
        conn = self.h2
        for cmd in commands:
            if isinstance(cmd, fc.SendPing):
                conn.ping(cmd.data)
            elif isinstance(cmd, fc.UpdateSettings):
                conn.update_settings({_SC.INITIAL_WINDOW_SIZE: cmd.initial_window_size})
            else:
                with contextlib.suppress(h2.exceptions.ProtocolError):  # stream just closed
                    conn.increment_flow_control_window(cmd.delta, cmd.stream_id or None)

    def received(self, st: StreamOut | None, sid: int, nbytes: int, now: float) -> None:
        """``nbytes`` flow-controlled bytes arrived on ``sid``; ``st=None``: the stream
        needs no more window (unknown, or its input is complete or unwanted)."""
        self.run(self.window.data_received(nbytes, now))
        hold = st is not None and st.paused > 0
        self.credit.received(sid, nbytes, hold=hold, credit=st is not None)

    def release(self, st: StreamOut) -> None:
        """``st``'s consumer resumed: hand back the credit it held."""
        self.credit.release(st.sid)
        self.run(self.credit.updates())
        self.flush()

    def _update_pause(self, st: StreamOut) -> None:
        want = self.write_paused or st.out_bytes > HIGH
        if want != st.write_paused and not st.done:
            st.write_paused = want
            self._pause_changed(st, want)

    # -- output -----------------------------------------------------------------------

    def queue(self, st: StreamOut, data: bytes) -> None:
        """Queue body bytes on ``st`` (framed at the next flush)."""
        if data and not st.done:
            st.out.append(data)
            st.out_bytes += len(data)
            self._dirty[st.sid] = st
            if st.out_bytes > HIGH and not st.write_paused:
                self._update_pause(st)

    def touch(self, st: StreamOut) -> None:
        """``st`` has something new to frame (a head, an end)."""
        self._dirty[st.sid] = st

    def flush(self) -> None:
        """Build the frames of every stream with something to send; they are written once
        this turn of the event loop ends (one write for all the responses it completed)."""
        if self._in_input or self.closed or self.transport is None:
            return
        if self._dirty:
            now = self.loop.time()
            dirty, self._dirty = self._dirty, {}
            for st in dirty.values():
                if not st.done:
                    self._drain(st, now)
        if not self._write_due:
            self._write_due = True
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_due = False  # (_close and _write_raw take h2's output first if they run)
        if self.transport is not None and not self.closed and (data := self.h2.data_to_send()):
            self.transport.write(data)

    def _drain(self, st: StreamOut, now: float) -> None:
        conn, sid, out, frames, ended = self.h2, st.sid, st.out, 0, False
        try:
            if st.head is not None:
                head, st.head = st.head, None
                ended = st.ending and not out and not st.trailers
                h2wire.send_headers(conn, sid, head, ended)
            stream = conn.streams.get(sid) if out else None
            if out and stream is None:
                return self.drop(sid)  # closed and forgotten by h2 (the peer reset it)
            max_frame = conn.max_outbound_frame_size
            while out:
                window = min(conn.outbound_flow_control_window, stream.outbound_flow_control_window)
                if window <= 0:
                    break
                chunk = out[0]
                n = min(len(chunk), window, max_frame)
                if n == len(chunk):
                    out.popleft()
                else:
                    out[0], chunk = chunk[n:], chunk[:n]
                st.out_bytes -= n
                frames += 1
                ended = st.ending and not out and not st.trailers
                h2wire.send_data(conn, sid, chunk, ended)
            if frames:
                self._sent_frames(frames)
            if out:
                self._blocked[sid] = self._blocked.pop(sid, st)  # to the back of the line
                self._stalled(0 if conn.outbound_flow_control_window <= 0 else sid, now)
            elif st.ending:
                if st.trailers:
                    conn.send_headers(sid, st.trailers, end_stream=True)
                elif not ended:
                    conn.end_stream(sid)
                st.done = True
                return self._ended(st)
            else:
                self._unblock(sid)
        except h2.exceptions.ProtocolError:
            return self.drop(sid)  # closed under us (the peer reset it)
        self._update_pause(st)

    def _unblock(self, sid: int) -> None:
        self._blocked.pop(sid, None)
        self._stalled(sid, None)
        if not self._blocked:
            self._stalled(0, None)  # nothing waits for the connection window either

    # -- ends -------------------------------------------------------------------------

    def _forget(self, st: StreamOut) -> None:
        st.done = True
        sid = st.sid
        self.streams.pop(sid, None)
        self._unblock(sid)
        self._dirty.pop(sid, None)
        self.credit.forget(sid)
        st.out.clear()
        st.out_bytes = 0

    def drop(self, sid: int) -> None:
        """The stream is gone (reset either way): forget it and cancel what it carried."""
        st = self.streams.get(sid)
        if st is None:
            self.credit.forget(sid)
            self._stalled(sid, None)
        else:
            self._forget(st)
            self._cancel(st)

    def reset(self, sid: int, code: int) -> None:
        """Send RST_STREAM ``code`` and drop the stream."""
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed
            self.h2.reset_stream(sid, code)
        self.drop(sid)

    def _abandon(self) -> None:
        """Cancel every stream, write what h2 has queued, close."""
        streams, self.streams = self.streams, {}
        self._dirty.clear()
        self._blocked.clear()
        for st in streams.values():
            st.done = True
            self._cancel(st)
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(self.h2.data_to_send())
            self.transport.close()
        self.closed = True

    def _write_raw(self, frame: bytes) -> None:
        """A frame h2 must not know about, after everything h2 has queued."""
        if self.transport is not None and not self.closed:
            self.transport.write(self.h2.data_to_send() + frame)

    def abort(self) -> None:
        """Drop the connection now."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
