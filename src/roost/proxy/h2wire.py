"""The ``H2Connection`` Roost runs (:func:`new_connection`): h2, cheaper per request.

h2 builds every frame it sends as hyperframe objects (a ``Flags`` set, a ``Padding`` mixin,
``serialize``), re-encodes and re-checks header names it was given as bytes, and runs hpack,
whose encoder searches the table and logs for every field. Per small response that is most
of the edge's CPU. What is here keeps h2's state exact and skips the rest:

- HPACK through :class:`~roost.proxy.h2hpack.CachingEncoder` and
  :class:`~roost.proxy.h2hpack.CachingDecoder` (:mod:`roost.proxy.h2hpack`): hpack's, with
  the work of repeated fields and blocks cached, the bytes and fields unchanged.
- :func:`send_headers` / :func:`send_data` for a stream h2 already knows (a server's
  response): the same state-machine inputs (connection, then stream), flow-control windows
  and bytes as ``H2Connection.send_headers`` / ``send_data``, the frames written directly.
  Anything else (an informational or client-side block) goes through h2. Inputs that
  cannot fail are applied from h2's own transition tables (looked up by state, not by an
  Enum pair hashed in Python): ``SEND_HEADERS`` / ``SEND_DATA`` leave an open connection
  as it is (not run), a stream's ``response_sent`` / ``send_end_stream`` / plain moves are
  inlined; every other transition is h2's ``process_input``, raising as it does.
- :func:`open_stream`, a client's request HEADERS on a new stream (the backhaul's): h2's
  stream-limit check (which also prunes closed streams), connection and stream inputs, new
  ``H2Stream``, ``_authority`` / ``request_method``, the frames written directly.
- A received GOAWAY does not close h2's connection state machine (see
  :mod:`roost.proxy.h2conn`, "ends"), and a received frame is not ``repr``-ed for h2's trace
  log unless h2 was given a real logger (its default, a ``DummyLogger``, drops the text).
- Received DATA (unpadded) and complete HEADERS (unpadded, no priority) frames are parsed by
  :class:`_FrameBuffer` into light frames (``stream_id``, ``data``, ``flags``,
  ``flow_controlled_length``: what h2's handlers read) instead of hyperframe's objects; the
  same checks (frame size, a header block in progress) and the same handlers run on them
  -- but a light HEADERS frame opening a client's stream on a server connection, which
  :func:`roost.proxy.h2recv.receive_request` takes (h2's work for it, in one function).
  Every other frame is hyperframe's. (Not with a real logger, whose trace ``repr``-s them.)
- Open streams are counted (for every stream opened, either side: h2 checks the limit, and
  moves closed streams to ``_closed_streams``) reading each stream's state once.

All rely on attributes h2 4.x keeps (``streams``, ``state_machine``, ``_data_to_send``,
the frame buffer's ``_data``); the tests (``tests/unit/test_h2wire*.py``) compare bytes,
events, errors and state with h2's own paths and decode the output with a second h2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

import h2.config
import h2.connection
import h2.exceptions
import h2.stream
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import Frame, RstStreamFrame

from roost.proxy.h2hpack import CachingDecoder, CachingEncoder, huffman_encode
from roost.proxy.h2recv import FAST_LAYOUT, receive_request

__all__ = [
    "CachingDecoder",
    "CachingEncoder",
    "huffman_encode",
    "new_connection",
    "open_stream",
    "send_data",
    "send_headers",
]

_FRAME = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8, type, flags, stream id
_HEADERS, _CONTINUATION, _DATA = 0x1, 0x9, 0x0
_END_STREAM, _END_HEADERS = 0x1, 0x4
_CONN_SEND_HEADERS = h2.connection.ConnectionInputs.SEND_HEADERS
_CONN_SEND_DATA = h2.connection.ConnectionInputs.SEND_DATA
_SEND_HEADERS = h2.stream.StreamInputs.SEND_HEADERS
_SEND_DATA = h2.stream.StreamInputs.SEND_DATA
_SEND_END_STREAM = h2.stream.StreamInputs.SEND_END_STREAM
_RECV_GOAWAY = h2.connection.ConnectionInputs.RECV_GOAWAY
_CLOSED = h2.connection.ConnectionState.CLOSED
_process_input = h2.connection.H2ConnectionStateMachine.process_input
_CLIENT_IDS = h2.connection.AllowedStreamIDs.ODD
_STREAM_OPEN = h2.stream.STREAM_OPEN  # state -> counts against the concurrency limit
_STREAM_CLOSED = h2.stream.StreamState.CLOSED
_PADDED, _PRIORITY = 0x8, 0x20
# h2's transitions, (state, input) -> (function or None, next state), by input and state:
# the same entries, looked up without hashing an Enum input in Python (StreamState is an
# IntEnum: hashed as an int)
_STREAM_STEPS = {
    input_: {state: step for (state, inp), step in h2.stream._transitions.items() if inp is input_}
    for input_ in (_SEND_HEADERS, _SEND_DATA, _SEND_END_STREAM)
}
_SEND_HEADERS_STEPS = _STREAM_STEPS[_SEND_HEADERS]
_SEND_DATA_STEPS = _STREAM_STEPS[_SEND_DATA]
_SEND_END_STREAM_STEPS = _STREAM_STEPS[_SEND_END_STREAM]
_NO_STEP = (False, None)  # (no transition: h2's process_input raises)
_RESPONSE_SENT = h2.stream.H2StreamStateMachine.response_sent
_SEND_END_STREAM_STEP = h2.stream.H2StreamStateMachine.send_end_stream
# the connection states an input leaves as they are, doing nothing else
_CONN_STEPS = h2.connection.H2ConnectionStateMachine._transitions
_UNCHANGED = {
    input_: tuple(
        state
        for (state, inp), (func, target) in _CONN_STEPS.items()
        if inp is input_ and func is None and target is state
    )
    for input_ in (_CONN_SEND_HEADERS, _CONN_SEND_DATA)
}
_SEND_HEADERS_UNCHANGED = _UNCHANGED[_CONN_SEND_HEADERS]
_SEND_DATA_UNCHANGED = _UNCHANGED[_CONN_SEND_DATA]
_FLAGS = {
    (_DATA, 0): frozenset(),
    (_DATA, _END_STREAM): frozenset(["END_STREAM"]),
    (_HEADERS, 0): frozenset(["END_HEADERS"]),
    (_HEADERS, _END_STREAM): frozenset(["END_HEADERS", "END_STREAM"]),
}


def _header(length: int, ftype: int, flags: int, sid: int) -> bytes:
    return _FRAME.pack(length >> 8, length & 0xFF, ftype, flags, sid)


class _Light:
    """A received DATA or HEADERS frame as h2's handlers read it (module docstring)."""

    __slots__ = ("data", "flags", "flow_controlled_length", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flags: frozenset[str]) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flags = flags
        self.flow_controlled_length = len(data)  # (unpadded)


class _LightData(_Light):
    __slots__ = ()


class _LightHeaders(_Light):
    __slots__ = ()


class _FrameBuffer(FrameBuffer):
    """h2's frame buffer, yielding :class:`_Light` frames for plain DATA and HEADERS."""

    def __next__(self) -> Any:
        data = self._data
        if len(data) >= 9 and not self._headers_buffer:
            hi, lo, ftype, flags, sid = _FRAME.unpack_from(data)
            length = hi << 8 | lo
            sid &= 0x7FFFFFFF
            if (
                sid
                and len(data) >= length + 9
                and (
                    (ftype == _DATA and not flags & _PADDED)
                    or (
                        ftype == _HEADERS
                        and flags & _END_HEADERS
                        and not flags & (_PADDED | _PRIORITY)
                    )
                )
            ):
                self._validate_frame_length(length)
                body = bytes(data[9 : 9 + length])
                del data[: 9 + length]
                kind = _LightData if ftype == _DATA else _LightHeaders
                return kind(sid, body, _FLAGS[ftype, flags & _END_STREAM])
        return super().__next__()


# the attributes _FrameBuffer reads (h2 4.4's; another layout keeps h2's own buffer)
_BUFFER_LAYOUT = {"_data", "_headers_buffer"} <= vars(FrameBuffer()).keys()


class _OpenAfterGoaway(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a received GOAWAY does not close it."""

    def process_input(self, input_: h2.connection.ConnectionInputs) -> list[Any]:
        if input_ is _RECV_GOAWAY and self.state is not _CLOSED:
            return []
        return _process_input(self, input_)  # (called for every frame: no super() lookup)


class _Connection(h2.connection.H2Connection):
    """h2's connection, receiving frames without formatting them for a dropped log line,
    counting open streams without two property calls per stream."""

    def _open_streams(self, remainder: int) -> int:
        # h2 4.x's _open_streams (called for every stream opened, either way): open streams
        # of the parity counted, closed ones moved to _closed_streams
        count = 0
        closed = []
        for sid, stream in self.streams.items():
            state = stream.state_machine.state
            if _STREAM_OPEN[state]:
                if sid % 2 == remainder:
                    count += 1
            elif state == _STREAM_CLOSED:
                closed.append(sid)
        for sid in closed:
            self._closed_streams[sid] = self.streams.pop(sid).closed_by
        return count

    _receive_request = receive_request  # a light HEADERS frame (roost.proxy.h2recv)

    def _receive_frame(self, frame: Frame) -> list[Any]:
        if type(self.config.logger) is not h2.config.DummyLogger:
            return super()._receive_frame(frame)  # someone reads the trace
        # h2 4.x's _receive_frame, without its trace("Received frame: %s", repr(frame))
        events: list[Any]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if not self._stream_is_closed_by_reset(e.stream_id):
                raise
            f = RstStreamFrame(e.stream_id)
            f.error_code = e.error_code
            self._prepare_for_sending([f])
            events = e._events
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events


def new_connection(config: h2.config.H2Configuration) -> h2.connection.H2Connection:
    """An h2 connection with the state machine and HPACK codecs described above."""
    conn = _Connection(config)
    conn.state_machine = _OpenAfterGoaway()
    if type(config.logger) is h2.config.DummyLogger and _BUFFER_LAYOUT:
        conn.incoming_buffer = _FrameBuffer(server=not config.client_side)
        # (typed by h2 as keyed by hyperframe classes; the light frames are duck-typed)
        table: dict[type[Any], Callable[..., Any]] = conn._frame_dispatch_table
        table[_LightData] = conn._receive_data_frame
        table[_LightHeaders] = conn._receive_request if FAST_LAYOUT else conn._receive_headers_frame
    conn.encoder = CachingEncoder()
    old = conn.decoder
    conn.decoder = CachingDecoder(old.max_header_list_size)
    conn.decoder.max_allowed_table_size = old.max_allowed_table_size
    return conn


def send_headers(
    conn: h2.connection.H2Connection, sid: int, headers: list[Any], end_stream: bool
) -> None:
    """``conn.send_headers(sid, headers, end_stream=end_stream)``, faster for a final
    response on a known stream of a server connection that neither normalizes nor validates
    outbound headers (see the module docstring)."""
    stream = conn.streams.get(sid)
    config: Any = conn.config
    if (
        stream is None
        or config._client_side  # (h2's config options, read without their descriptors)
        or config._normalize_outbound_headers  # h2 would rewrite or check the block
        or config._validate_outbound_headers
        or not headers
        or headers[0][0] != b":status"
        or headers[0][1][:1] == b"1"  # informational
    ):
        return conn.send_headers(sid, headers, end_stream=end_stream)
    sm: Any = stream.state_machine
    if sm.headers_sent or sm.client is not False:  # trailers; or not a peer's request
        return conn.send_headers(sid, headers, end_stream=end_stream)
    _connection_input(conn, _CONN_SEND_HEADERS, _SEND_HEADERS_UNCHANGED)
    func, target = _SEND_HEADERS_STEPS.get(sm.state, _NO_STEP)
    if func is _RESPONSE_SENT:  # H2StreamStateMachine.response_sent for a server's stream
        sm.state = target
        sm.headers_sent = True  # (its _ResponseSent event: what h2 drops here)
    else:
        sm.process_input(_SEND_HEADERS)  # raises, as in h2
    block = conn.encoder.encode(headers)
    out = _frames(block, _END_STREAM if end_stream else 0, sid, conn.max_outbound_frame_size)
    if end_stream:
        _stream_input(sm, _SEND_END_STREAM, _SEND_END_STREAM_STEPS)
    stream.request_method = None  # as h2 sets it from a response block
    conn._data_to_send += out


def _connection_input(
    conn: h2.connection.H2Connection, input_: Any, unchanged: tuple[Any, ...]
) -> None:
    """``conn.state_machine.process_input(input_)``, skipped in a state it does not change
    (``unchanged``: ``SEND_HEADERS`` / ``SEND_DATA`` on an open connection, no event)."""
    machine = conn.state_machine
    if machine.state not in unchanged:  # (a tuple: by identity, no Enum hash in Python)
        machine.process_input(input_)


def _stream_input(sm: h2.stream.H2StreamStateMachine, input_: Any, steps: dict[Any, Any]) -> None:
    """``sm.process_input(input_)`` (events dropped; ``steps``: its transitions by state),
    inline for a transition whose function cannot fail (none, or ``send_end_stream``)."""
    prev = sm.state
    func, target = steps.get(prev, _NO_STEP)
    if func is None:
        sm.state = target
    elif func is _SEND_END_STREAM_STEP:
        sm.state = target
        func(sm, prev)
    else:
        sm.process_input(input_)  # the rest: h2's, raising as it does


def _frames(block: bytes, flags: int, sid: int, size: int) -> bytes:
    """HEADERS (``flags`` on it) and CONTINUATIONs carrying ``block``, as h2 splits it."""
    if len(block) <= size:
        return _header(len(block), _HEADERS, flags | _END_HEADERS, sid) + block
    parts = [block[i : i + size] for i in range(0, len(block), size)]
    frames = [_header(len(parts[0]), _HEADERS, flags, sid), parts[0]]
    for i, part in enumerate(parts[1:], 2):
        last = _END_HEADERS if i == len(parts) else 0
        frames += (_header(len(part), _CONTINUATION, last, sid), part)
    return b"".join(frames)


def open_stream(
    conn: h2.connection.H2Connection, sid: int, headers: list[Any], end_stream: bool
) -> None:
    """``conn.send_headers(sid, headers, end_stream=end_stream)``, faster for a request
    opening stream ``sid`` on a client connection that neither normalizes nor validates
    outbound headers, fields given as bytes (see the module docstring)."""
    config = conn.config
    authority = method = None
    for header in headers:  # (h2 takes these from the block it re-encoded as bytes)
        if len(header) != 2 or type(header[0]) is not bytes or type(header[1]) is not bytes:
            return conn.send_headers(sid, headers, end_stream=end_stream)
        name, value = header
        if name == b":authority" and authority is None:
            authority = value
        elif name == b":method" and method is None:
            method = value
    if (
        not config.client_side
        or config.normalize_outbound_headers  # h2 would rewrite or check the block
        or config.validate_outbound_headers
        or sid in conn.streams  # trailers
        or not headers
    ):
        return conn.send_headers(sid, headers, end_stream=end_stream)
    limit = conn.remote_settings.max_concurrent_streams
    open_now = conn.open_outbound_streams  # (prunes closed streams, as in h2)
    if open_now + 1 > limit:
        msg = f"Max outbound streams is {limit}, {open_now} open"
        raise h2.exceptions.TooManyStreamsError(msg)
    conn.state_machine.process_input(_CONN_SEND_HEADERS)
    stream = conn._begin_new_stream(sid, _CLIENT_IDS)  # raises for a too-low or even id
    stream.state_machine.process_input(_SEND_HEADERS)
    block = conn.encoder.encode(headers)
    out = _frames(  # (the stream's frame size: set by _begin_new_stream)
        block, _END_STREAM if end_stream else 0, sid, cast(int, stream.max_outbound_frame_size)
    )
    if end_stream:
        stream.state_machine.process_input(_SEND_END_STREAM)
    stream._authority = authority
    stream.request_method = method
    conn._data_to_send += out


def send_data(conn: h2.connection.H2Connection, sid: int, data: bytes, end_stream: bool) -> None:
    """``conn.send_data(sid, data, end_stream=end_stream)`` for data the caller has sized
    to the windows and the frame size (as :meth:`H2Base._drain` does)."""
    stream = conn.streams.get(sid)
    if stream is None:
        return conn.send_data(sid, data, end_stream=end_stream)  # raises as h2 does
    n = len(data)
    _connection_input(conn, _CONN_SEND_DATA, _SEND_DATA_UNCHANGED)
    sm: Any = stream.state_machine
    _stream_input(sm, _SEND_DATA, _SEND_DATA_STEPS)
    if end_stream:
        _stream_input(sm, _SEND_END_STREAM, _SEND_END_STREAM_STEPS)
    stream.outbound_flow_control_window -= n
    conn.outbound_flow_control_window -= n
    conn._data_to_send += _header(n, _DATA, _END_STREAM if end_stream else 0, sid) + data
