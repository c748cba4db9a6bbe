"""The client side of the edge for HTTP/2 (cleartext prior knowledge, later TLS + ALPN).

:class:`H2ClientConnection`, the sibling of ``http1``, is built on :class:`~roost.proxy.
h2conn.H2Base` (windows, output, raw frames). Each stream gets a :class:`~roost.proxy.
h2stream.ClientStream` (the exchange's ``Downstream``) and an exchange from
``ctx.new_exchange``, as an HTTP/1.1 request would (``:authority`` -> ``Host``; a body
without ``content-length`` is chunked upstream; :mod:`~roost.proxy.h2fields` converts).
No task per request. Rules kept here:

- **Abuse accounting first**: raw bytes go through :class:`~roost.proxy.h2limits.
  ConnectionGuard` before h2 parses them, stream events too; its verdicts reset a stream or
  end the connection (GOAWAY).
- **Malformed requests are stream errors**: h2 runs with ``validate_inbound_headers=False``
  and its validator runs here per request (after a one-pass check that passes ordinary
  requests, :func:`~roost.proxy.h2fields.plainly_valid`), so CR/LF/NUL in a value or a
  bad pseudo-header resets one stream (PROTOCOL_ERROR), not the connection. Excess
  streams: REFUSED_STREAM (h2's own limit is raised, unannounced, to ``stream_ceiling``).
  Request trailers are checked, then dropped (as in ``http1``).
- **On a host proxy's backhaul** (``ctx.role == "host"``; only authenticated edges reach
  it): request blocks are not validated again (the edge checked and rebuilt them), and a
  ``full`` refusal is RST_STREAM(REFUSED_STREAM) -- the instance saw nothing.
- **Backpressure**: a stream's request credit goes back only as its exchange takes the bytes
  (``pause_reading`` holds it); over 64 KiB of response queued for a slow client pauses that
  stream's upstream; zero-window stalls go to the guard's stall timeout.
- **Early answers**: a response complete while the request body still flows ends with
  RST_STREAM(NO_ERROR) (RFC 9113 section 8.1).
- **Graceful close**: GOAWAY(2^31-1) + PING, GOAWAY(last stream) on the PING's ACK (or a
  second later), later streams refused, close after the last stream. After a client's
  GOAWAY(NO_ERROR) its open streams are still answered; any other GOAWAY cancels them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h2.config
import h2.events as ev
import h2.exceptions
import h2.settings
from h2.utilities import HeaderValidationFlags, validate_headers
from hyperframe.frame import GoAwayFrame, PingFrame

from roost.proxy import errors
from roost.proxy import h2limits as lim
from roost.proxy.forwarding import forwarding_tail
from roost.proxy.h2conn import H2Base, H2Options, StreamOut
from roost.proxy.h2fields import plainly_valid, to_http1
from roost.proxy.h2stream import ClientStream
from roost.proxy.headers import Headers

if TYPE_CHECKING:
    from roost.proxy.context import RelayContext
    from roost.proxy.exchange import Exchange

__all__ = ["H2ClientConnection", "H2Options"]

_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,  # validated per stream below: errors stay stream errors
    validate_outbound_headers=False,  # built here from upstream headers already checked
    normalize_outbound_headers=False,
)
_SC = h2.settings.SettingCodes
_REQUEST = HeaderValidationFlags(False, False, False, False)
_TRAILERS = HeaderValidationFlags(False, True, False, False)
_BYE = b"roostbye"  # opaque data of the PING that times the final GOAWAY
_NEVER = float("inf")


class H2ClientConnection(H2Base):
    """One client connection speaking HTTP/2; see the module docstring."""

    def __init__(self, ctx: RelayContext, registry: Any, options: H2Options | None = None) -> None:
        opts = self._opts = options or H2Options()
        super().__init__(ctx.loop, _CONFIG, opts)
        self._ctx = ctx
        self._registry = registry  # a server.ConnectionRegistry
        self._guard = lim.ConnectionGuard(opts.limits, ctx.loop.time())
        self._touched: set[Exchange] = set()  # exchanges to flush after this input
        self._settings_seen = False
        self._drain_at = _NEVER  # first GOAWAY sent: the final one is due then
        self._final = False  # final GOAWAY sent: streams after _last_stream are refused
        self._last_stream = 2**31 - 1
        self._deadline = _NEVER  # preface/SETTINGS deadline, then the idle deadline
        self._client_ip = b""
        self._fwd_tail: tuple[tuple[bytes, bytes], ...] = ()
        self._plain: Headers | None = None  # the last request block plainly_valid passed
        # the last request block to_http1 converted: (block, ended, method, target, fields)
        self._last_http1: tuple[Headers, bool, bytes, bytes, Headers] | None = None
        # a host proxy's backhaul (only authenticated edges reach it): refusals are
        # RST_STREAM(REFUSED_STREAM), and request blocks are not validated again
        self.backhaul = ctx.role == "host"

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self._client_ip = (peer[0] if isinstance(peer, tuple) else "").encode("ascii")
        port = str(local[1]).encode("ascii") if isinstance(local, tuple) else b""
        proto = b"http" if transport.get_extra_info("ssl_object") is None else b"https"
        region = self._ctx.region.encode("ascii")
        self._fwd_tail = forwarding_tail(self._client_ip, proto, port, region)
        limits = self._opts.limits
        self.start(
            {
                _SC.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                _SC.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            }
        )
        self.h2.decoder.max_header_list_size = limits.max_header_list_size  # before the ACK
        settings = self.h2.local_settings  # h2 may now hold more streams than announced
        settings.max_concurrent_streams = lim.stream_ceiling(limits)  # so that we refuse them
        settings.acknowledge()
        self._registry.add(self)
        self._deadline = self.loop.time() + self._ctx.limits.header_timeout
        self.flush()
        if self._registry.draining:
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        super().connection_lost(exc)

    # -- H2Base hooks -----------------------------------------------------------------

    def _screen(self, data: bytes, now: float) -> bool:
        verdict = self._guard.received(data, now)
        if isinstance(verdict, lim.GoAway):
            self._fail(verdict)
            return False
        return True

    def _after_input(self) -> None:
        touched, self._touched = self._touched, set()
        for ex in touched:
            ex.flush()

    def _pause_changed(self, st: StreamOut, paused: bool) -> None:
        ex = st.ex if isinstance(st, ClientStream) else None
        if ex is not None and not ex.finished:
            ex.client_write_paused() if paused else ex.client_write_resumed()

    def _stalled(self, sid: int, now: float | None) -> None:
        self._guard.unblocked(sid) if now is None else self._guard.blocked(sid, now)

    def _sent_frames(self, frames: int) -> None:
        self._guard.data_sent(frames)

    def _ended(self, st: StreamOut) -> None:
        if isinstance(st, ClientStream) and not st.request_done:
            self.h2.reset_stream(st.sid, lim.NO_ERROR)  # the rest of the request: not needed
        self._forget(st)

    def _forget(self, st: StreamOut) -> None:
        super()._forget(st)
        if isinstance(st, ClientStream) and st.ex is not None and st.ex.finished:
            st.ex = None  # no stream <-> exchange cycle left: refcounting frees both
        self._guard.stream_closed(st.sid)
        if not self.streams:
            if self._final:
                self._close()
            else:
                self._deadline = self.loop.time() + self._ctx.limits.keepalive_timeout

    def _cancel(self, st: StreamOut) -> None:
        if isinstance(st, ClientStream) and st.ex is not None:
            ex, st.ex = st.ex, None  # (as in _forget: no cycle left behind)
            ex.cancel()

    def _ping_acked(self, data: bytes, now: float) -> None:
        if data == _BYE:
            self._final_goaway()

    # -- h2 events --------------------------------------------------------------------

    def _on_request(self, event: ev.RequestReceived, now: float) -> None:
        sid, headers = event.stream_id or 0, event.headers or []
        if self._final and sid > self._last_stream:
            return self.reset(sid, lim.REFUSED_STREAM)
        verdict = self._guard.stream_opened(sid, now)
        if verdict is lim.OK and not self.backhaul:  # an edge's block: checked, rebuilt there
            verdict = self._validate(sid, headers, _REQUEST)
        if verdict is not lim.OK:
            return self._apply(verdict)
        self._deadline = _NEVER
        ended = event.stream_ended is not None
        st = self.streams[sid] = ClientStream(self, sid, ended)
        ctx, (method, target, fields) = self._ctx, self._http1(headers, ended)
        rid = ctx.request_ids.next()
        try:
            st.ex = ex = ctx.new_exchange(
                st,
                method,
                "1.1",
                target,
                fields,
                self._fwd_tail,
                self._client_ip,
                rid,
                False,
                protocol="h2",
            )
        except errors.ProxyError as err:
            ctx.request_rejected(err.status, "h2")
            return st.answer(err, rid, head=method == b"HEAD")
        gate = ctx.gate
        if gate is not None:
            app = ctx.congested_app(ex.host)
            if app is not None and not gate.admit(app, _HeldStream(self, ex)):
                return  # its app is at capacity: started in a later loop turn (workgate)
        ex.start(flush=False)
        self._touched.add(ex)

    def _http1(self, headers: Headers, ended: bool) -> tuple[bytes, bytes, Headers]:
        """``to_http1(headers, ended)``; for a client repeating its last request (the same
        fields), the fields worked out then (a copy)."""
        last = self._last_http1
        if last is not None and last[1] is ended and last[0] == headers:
            return last[2], last[3], list(last[4])
        method, target, fields = to_http1(headers, ended)
        self._last_http1 = (list(headers), ended, method, target, list(fields))
        return method, target, fields

    def _validate(self, sid: int, headers: Headers, flags: HeaderValidationFlags) -> lim.Verdict:
        if flags is _REQUEST and (headers == self._plain or plainly_valid(headers)):
            self._plain = headers  # a client repeating it: compared, not checked again
            return lim.OK  # what both checks below would say, in a fraction of the time
        verdict = self._guard.check_fields(sid, headers)
        if verdict is lim.OK:
            try:
                for _ in validate_headers(headers, flags):
                    pass
            except h2.exceptions.ProtocolError as exc:
                return lim.ResetStream(sid, lim.PROTOCOL_ERROR, str(exc))
        return verdict

    def _on_data(self, event: ev.DataReceived, now: float) -> None:
        sid = event.stream_id or 0
        st = self.streams.get(sid)
        if not isinstance(st, ClientStream) or st.ex is None or st.ex.finished or st.request_done:
            return self.received(None, sid, event.flow_controlled_length or 0, now)
        if event.data:
            st.ex.request_body(event.data)
            self._touched.add(st.ex)
        self.received(st, sid, event.flow_controlled_length or 0, now)

    def _on_end(self, event: ev.StreamEnded, now: float) -> None:
        st = self.streams.get(event.stream_id or 0)
        if isinstance(st, ClientStream):
            st.request_done = True
            self.credit.forget(st.sid)  # no more window needed
            if st.ex is not None and not st.ex.finished:
                st.ex.request_end()
                self._touched.add(st.ex)

    def _on_trailers(self, event: ev.TrailersReceived, now: float) -> None:
        self._apply(self._validate(event.stream_id or 0, event.headers or [], _TRAILERS))

    def _on_reset(self, event: ev.StreamReset, now: float) -> None:
        sid = event.stream_id or 0
        verdict = self._guard.stream_reset_by_peer(sid, now) if event.remote_reset else lim.OK
        self.drop(sid)
        self._apply(verdict)

    def _on_settings(self, event: ev.RemoteSettingsChanged, now: float) -> None:
        super()._on_settings(event, now)
        if not self._settings_seen:
            self._settings_seen = True
            if not self.streams:
                self._deadline = now + self._ctx.limits.keepalive_timeout

    def _on_goaway(self, event: ev.ConnectionTerminated, now: float) -> None:
        if event.error_code or not self.streams:
            return self._abandon()
        self._final = True  # the client opens no more streams: finish these, then close
        self._last_stream = self.h2.highest_inbound_stream_id

    HANDLERS = {
        **H2Base.HANDLERS,
        ev.RequestReceived: _on_request,
        ev.DataReceived: _on_data,
        ev.StreamEnded: _on_end,
        ev.TrailersReceived: _on_trailers,
        ev.StreamReset: _on_reset,
        ev.RemoteSettingsChanged: _on_settings,
        ev.ConnectionTerminated: _on_goaway,
    }

    # -- verdicts, shutdown, deadlines ----------------------------------------------------

    def _apply(self, verdict: lim.Verdict) -> None:
        if isinstance(verdict, lim.GoAway):
            self._fail(verdict)
        elif isinstance(verdict, lim.ResetStream):
            self.reset(verdict.stream_id, verdict.error_code)

    def _fail(self, verdict: lim.GoAway) -> None:
        """A connection error of ours: GOAWAY with its code, then close."""
        if not self.closed:
            reason = verdict.reason.encode("ascii", "replace")
            last = self.h2.highest_inbound_stream_id
            self.h2.close_connection(verdict.error_code, reason, last_stream_id=last)
            self._abandon()

    def _close(self) -> None:
        super()._close()
        self._deadline = self._drain_at = _NEVER

    def shutdown(self) -> None:
        """The listener is draining: GOAWAY now, close when the last stream ends."""
        if self.closed or self._final or self._drain_at != _NEVER:
            return
        if not self.streams:
            return self._final_goaway()
        self.flush()
        goaway = GoAwayFrame(0, last_stream_id=2**31 - 1).serialize()
        self._write_raw(goaway + PingFrame(0, _BYE).serialize())
        self._drain_at = self.loop.time() + 1.0

    def _final_goaway(self) -> None:
        if not self._final and not self.closed:
            self._final, self._drain_at = True, _NEVER
            self._last_stream = self.h2.highest_inbound_stream_id
            self._write_raw(GoAwayFrame(0, last_stream_id=self._last_stream).serialize())
            if not self.streams:
                self._close()

    def check_deadlines(self, now: float) -> None:
        """Called every tick: exchanges' deadlines, the guard's timers, idle and drain."""
        if self.closed:
            return
        for st in list(self.streams.values()):
            ex = st.ex if isinstance(st, ClientStream) else None
            if ex is not None and not ex.finished:
                ex.check_deadline(now)
        for verdict in self._guard.check(now):
            self._apply(verdict)
        if now >= self._drain_at:
            self._final_goaway()
        if now >= self._deadline and not self.streams:
            transport = self.transport
            if transport is not None and transport.get_write_buffer_size():
                self._deadline = now + self._ctx.limits.keepalive_timeout  # still writing
            else:
                idle = self._settings_seen
                self._ctx.metrics.timed_out(
                    role=self._ctx.role, kind="keepalive_idle" if idle else "header_deadline"
                )
                self._final_goaway()
        self.flush()


class _HeldStream:
    """A stream's request the work gate holds back (:mod:`roost.proxy.workgate`): it is not
    started until its turn. The connection goes on reading -- other streams may be for other
    apps -- and a held request's body waits in its exchange (flow control bounds it)."""

    __slots__ = ("conn", "ex")

    def __init__(self, conn: H2ClientConnection, ex: Exchange) -> None:
        self.conn = conn
        self.ex = ex

    def gate_hold(self) -> None:
        pass

    def gate_release(self) -> None:
        if not self.ex.finished and not self.conn.closed:  # (a reset stream was cancelled)
            self.ex.start()
            self.conn.flush()
