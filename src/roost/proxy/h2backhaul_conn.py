"""The edge's HTTP/2 connection to a host proxy, and the requests (streams) it carries.

Used by :mod:`roost.proxy.h2backhaul`'s pool. Data flow:

- **out**: an exchange's request -- a header block (:func:`request_block`, from the fields
  the edge prepared) or an HTTP/1.1 head (:func:`request_fields`) -- ->
  :meth:`BackhaulStream.send_request` opens a stream (:func:`~roost.proxy.h2wire.open_stream`,
  the HEADERS framed at once) -> body bytes queued on the stream (``send_body``/``send_end``)
  -> framed under the peer's windows by :class:`~roost.proxy.h2conn.H2Base` at ``flush()``,
  written once per loop turn.
- **in**: the host proxy's frames -> h2 -> the events' handlers here -> the stream's sink
  (the exchange, an :class:`~roost.proxy.upstream.UpstreamSink`): ``upstream_head`` /
  ``upstream_body`` / ``upstream_end`` or ``upstream_failed``, then ``upstream_flush`` once
  per read for every sink touched.

- :class:`BackhaulConnection` -- an :class:`~roost.proxy.h2conn.H2Base` client whose
  receive windows adapt to the path (BDP pings: on a WAN link a fixed 64 KiB window caps a
  stream at 64 KiB per round trip), carrying at most ``min(max_streams, the peer's
  MAX_CONCURRENT_STREAMS)`` streams.
- :class:`BackhaulStream` -- one request on it, with the methods an exchange calls on an
  :class:`~roost.proxy.upstream.UpstreamConnection` (``send_request``, ``send_body``,
  ``send_end``, ``flush``, ``pause_reading``, ``abort``).

Never processed, so ``upstream_failed`` with a retry-safe error: RST_STREAM(REFUSED_STREAM)
before a response, streams above a GOAWAY's last id (those below it finish).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h2.config
import h2.events as ev
import h2.exceptions
import h2.settings

from roost.proxy import backhaul, errors, h2wire
from roost.proxy.h2conn import H2Base, StreamOut
from roost.proxy.h2hpack import REQUEST_ID, RequestIdField
from roost.proxy.headers import HOP_BY_HOP, Headers

if TYPE_CHECKING:
    from roost.proxy.h2backhaul import H2BackhaulPool
    from roost.proxy.upstream import UpstreamSink

__all__ = ["BackhaulConnection", "BackhaulStream", "request_block", "request_fields"]

_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_inbound_headers=False,  # the host proxy is trusted; its fields come from httptools
    validate_outbound_headers=False,  # built from the exchange's checked head
    normalize_outbound_headers=False,
)
_SC = h2.settings.SettingCodes
_REFUSED_STREAM, _CANCEL = 0x7, 0x8
_NEVER = float("inf")


def request_fields(head: bytes, scheme: bytes = b"http") -> Headers:
    """An HTTP/1.1 request head (as the exchange built it) as an HTTP/2 header block."""
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    pseudo = [(b":method", method), (b":scheme", scheme)]
    fields: Headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        lname = name.strip().lower()
        if lname == b"host":
            pseudo.append((b":authority", value.strip()))
        elif lname == REQUEST_ID:  # (as in request_block)
            fields.append(RequestIdField(lname, value.strip()))
        elif lname not in HOP_BY_HOP:
            fields.append((lname, value.strip()))
    pseudo.append((b":path", target))
    return pseudo + fields


def request_block(
    method: bytes, target: bytes, fields: Headers, scheme: bytes = b"http"
) -> Headers:
    """HTTP/1.1-style request fields (as the edge prepared them) as an HTTP/2 header block:
    ``Host`` becomes ``:authority``, names are lower-cased, hop-by-hop fields go. The
    request id (new on every request) stays out of HPACK's dynamic table, where it would
    only evict the fields that repeat (and make every lookup in the table longer), as a
    :class:`~roost.proxy.h2hpack.RequestIdField`: the host proxy's decoder then takes it
    out of the block and finds the rest (the same fields each time) in its cache."""
    block: Headers = [(b":method", method), (b":scheme", scheme), (b":path", target)]
    for name, value in fields:
        lname = name.lower()
        if lname == b"host":
            block.insert(2, (b":authority", value))
        elif lname == REQUEST_ID:
            block.append(RequestIdField(lname, value))
        elif lname not in HOP_BY_HOP:
            block.append((lname, value))
    return block


class BackhaulStream(StreamOut):
    """One request on a :class:`BackhaulConnection` (see the module docstring)."""

    __slots__ = ("conn", "instance_id", "requests", "response_started", "sink")

    def __init__(self, conn: BackhaulConnection, instance_id: str) -> None:
        super().__init__(0)
        self.conn = conn
        self.instance_id = instance_id
        self.sink: UpstreamSink | None = None
        self.response_started = False
        self.requests = conn.opened_streams + 1  # > 1: on a reused connection

    def send_request(
        self,
        sink: UpstreamSink,
        head: bytes | Headers,
        *,
        chunked: bool,
        has_body: bool,
        head_req: bool,
        upgrade: bool = False,
    ) -> None:
        """Bind ``sink`` and frame the request's HEADERS (written at :meth:`flush`);
        ``head`` is a header block (:func:`request_block`) or an HTTP/1.1 head."""
        conn = self.conn
        self.sink = sink
        self.sid = sid = conn.h2.get_next_available_stream_id()  # taken by open_stream below
        conn.streams[sid] = self
        conn.opened_streams += 1
        conn.pool.requests += 1
        conn.idle_since = _NEVER
        self.ending = self.done = not has_body
        try:
            block = request_fields(head) if isinstance(head, bytes) else head
            h2wire.open_stream(conn.h2, sid, block, not has_body)
        except h2.exceptions.ProtocolError:  # e.g. the peer lowered its stream limit
            self.sink = None
            conn.drop(self.sid)
            sink.upstream_failed(self.lost(sink, refused=True))

    def send_body(self, data: bytes) -> None:
        self.conn.queue(self, data)

    def send_end(self) -> None:
        self.ending = True
        self.conn.touch(self)

    def flush(self) -> None:
        self.conn.flush()

    def pause_reading(self) -> None:
        self.paused = 1  # the response's credit is held: the host proxy stops sending

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = 0
            self.conn.release(self)

    def abort(self) -> None:
        """Give up on the request: detach the sink (no more callbacks) and reset."""
        self.sink = None
        if self.sid:
            self.conn.reset(self.sid, _CANCEL)
            self.conn.flush()

    def lost(self, sink: UpstreamSink, *, refused: bool) -> errors.ProxyError:
        """The error for a stream that ended without its response."""
        if refused and not self.response_started:
            return backhaul.refusal(backhaul.FULL, self.instance_id)
        return errors.upstream_lost(
            self.instance_id,
            response_started=self.response_started,
            reused=self.requests > 1,
        )


class BackhaulConnection(H2Base):
    """One HTTP/2 connection to a host proxy (see the module docstring)."""

    def __init__(self, pool: H2BackhaulPool, key: Any) -> None:
        super().__init__(pool.loop, _CONFIG, pool.options)
        self.pool = pool
        self.key = key
        self.draining = False  # GOAWAY received: no new streams
        self.opened_streams = 0
        self.idle_since = pool.loop.time()
        self._touched: set[UpstreamSink] = set()  # sinks to flush after this input

    @property
    def capacity(self) -> int:
        """Streams this connection may carry at once."""
        return min(self.pool.max_streams, self.h2.remote_settings.max_concurrent_streams)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining and len(self.streams) < self.capacity

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.start({_SC.ENABLE_PUSH: 0})
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.pool.forget(self)

    def _stream(self, event: Any) -> BackhaulStream | None:
        st = self.streams.get(event.stream_id or 0)
        if isinstance(st, BackhaulStream) and st.sink is not None:
            self._touched.add(st.sink)  # flushed even if the stream ends in this read
            return st
        return None

    def _on_response(self, event: ev.ResponseReceived, now: float) -> None:
        st = self._stream(event)
        if st is not None and st.sink is not None:
            status, fields = _split(event.headers or [])
            st.response_started = True
            info = st.sink.upstream_head(status, b"", fields)
            if info.bad_framing is not None:
                sink, st.sink = st.sink, None
                self.reset(st.sid, _CANCEL)
                sink.upstream_failed(errors.upstream_bad_response(st.instance_id, "framing"))

    def _on_interim(self, event: ev.InformationalResponseReceived, now: float) -> None:
        st = self._stream(event)
        if st is not None and st.sink is not None:
            status, fields = _split(event.headers or [])
            st.sink.upstream_interim(status, b"", fields)

    def _on_data(self, event: ev.DataReceived, now: float) -> None:
        st = self._stream(event)
        self.received(st, event.stream_id or 0, event.flow_controlled_length or 0, now)
        if st is not None and st.sink is not None and event.data:
            st.sink.upstream_body(event.data)

    def _on_end(self, event: ev.StreamEnded | ev.TrailersReceived, now: float) -> None:
        st = self._stream(event)  # trailers always end the stream: the end is then a no-op
        if st is None or st.sink is None:
            return
        sink, st.sink = st.sink, None
        if st.done:
            self._forget(st)
        else:  # answered before the whole request was sent: stop sending it
            self.reset(st.sid, _CANCEL)
        sink.upstream_end(list(getattr(event, "headers", None) or []))

    def _on_reset(self, event: ev.StreamReset, now: float) -> None:
        st = self._stream(event)
        refused = event.error_code == _REFUSED_STREAM
        if st is not None and st.sink is not None:
            sink, st.sink = st.sink, None
            self.drop(st.sid)
            sink.upstream_failed(st.lost(sink, refused=refused))
        else:
            self.drop(event.stream_id or 0)

    def _on_goaway(self, event: ev.ConnectionTerminated, now: float) -> None:
        self.draining = True
        last = event.last_stream_id or 0
        for st in list(self.streams.values()):
            if st.sid > last or event.error_code:
                assert isinstance(st, BackhaulStream)
                sink, st.sink = st.sink, None
                self.reset(st.sid, _CANCEL)
                if sink is not None:
                    sink.upstream_failed(st.lost(sink, refused=st.sid > last))
                    sink.upstream_flush()
        if not self.streams:
            self._close()

    HANDLERS = {
        **H2Base.HANDLERS,
        ev.ResponseReceived: _on_response,
        ev.InformationalResponseReceived: _on_interim,
        ev.DataReceived: _on_data,
        ev.TrailersReceived: _on_end,
        ev.StreamEnded: _on_end,
        ev.StreamReset: _on_reset,
        ev.ConnectionTerminated: _on_goaway,
    }

    # -- H2Base hooks -----------------------------------------------------------------

    def _after_input(self) -> None:
        touched, self._touched = self._touched, set()
        for sink in touched:
            sink.upstream_flush()

    def _pause_changed(self, st: StreamOut, paused: bool) -> None:
        sink = st.sink if isinstance(st, BackhaulStream) else None
        if sink is not None:
            sink.upstream_write_paused() if paused else sink.upstream_write_resumed()

    def _ended(self, st: StreamOut) -> None:
        if not isinstance(st, BackhaulStream) or st.sink is None:
            self._forget(st)  # the response is complete too (or was abandoned)

    def _forget(self, st: StreamOut) -> None:
        super()._forget(st)
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.draining:
                self._close()

    def _cancel(self, st: StreamOut) -> None:
        if isinstance(st, BackhaulStream) and st.sink is not None:
            sink, st.sink = st.sink, None
            sink.upstream_failed(st.lost(sink, refused=False))
            sink.upstream_flush()

    def close_idle(self) -> None:
        """Close gracefully (GOAWAY) if no stream is open."""
        if not self.streams and not self.closed:
            self.h2.close_connection()
            self._close()


def _split(headers: Headers) -> tuple[int, Headers]:
    """(status, regular fields) of a response header block."""
    status = next((int(v) for n, v in headers if n == b":status"), 0)
    return status, [(n, v) for n, v in headers if n[:1] != b":"]
