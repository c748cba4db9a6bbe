"""A server's receipt of a request: h2's ``_receive_headers_frame``, for the common case.

h2 handles a complete HEADERS frame opening a client's stream in five layers (the
connection's state machine, ``_get_or_create_stream`` -> ``_begin_new_stream``, the stream's
``receive_headers`` -> its state machine, ``_build_hdr_validation_flags``,
``_process_received_headers``' generator pipeline), each with checks that cannot fail for a
new stream on an open server connection. :func:`receive_request` does the same work in one:

- only for a light HEADERS frame (:mod:`roost.proxy.h2wire`: complete, unpadded, no
  priority) on a *server* connection in state ``SERVER_OPEN`` (where ``RECV_HEADERS``
  changes nothing and yields no event), opening a new odd stream above the highest inbound
  id; anything else (trailers, a too-low or even id, the first request) is h2's own path;
- h2's order: the concurrency limit (``_open_streams``, which also moves closed streams to
  ``_closed_streams``), HPACK decode (errors translated by h2's ``_decode_headers``), the
  new ``H2Stream`` as ``_begin_new_stream`` builds it, then the stream's inputs
  ``RECV_HEADERS`` (``request_received``: a ``RequestReceived``) and, with END_STREAM,
  ``RECV_END_STREAM`` (``stream_half_closed``: a ``StreamEnded``), run as h2's state
  machine runs them (the transitions are looked up in h2's table, not assumed);
- a block with ``:status`` (h2 would take an informational one for a response and fail), or
  a connection validating inbound headers or decoding them to ``str``: from the new stream
  on, h2's ``receive_headers`` itself; a ``content-length``: h2's
  ``_initialize_content_length`` (errors and all); ``cookie`` fields with inbound
  normalization on: h2's ``_process_received_headers`` (which joins them);
- the event's ``headers``: a list of the decoded fields, as h2's pipeline leaves them.

``tests/unit/test_h2recv.py`` compares events, errors, frames sent and stream state with a
plain ``H2Connection`` for ordinary and hostile request sequences.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import h2.stream
from h2.utilities import HeaderValidationFlags

__all__ = ["FAST_LAYOUT", "receive_request"]

_SERVER_OPEN = h2.connection.ConnectionState.SERVER_OPEN
_IDLE, _OPEN = h2.stream.StreamState.IDLE, h2.stream.StreamState.OPEN
_RECV_HEADERS = h2.stream.StreamInputs.RECV_HEADERS
_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM
# h2's transitions for a new stream's request: IDLE -RECV_HEADERS-> (request_received) OPEN,
# then OPEN -RECV_END_STREAM-> (stream_half_closed) HALF_CLOSED_REMOTE
_REQUEST_STEP: Any = h2.stream._transitions[_IDLE, _RECV_HEADERS]
_END_STEP: Any = h2.stream._transitions[_OPEN, _RECV_END_STREAM]
_MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
_INITIAL_WINDOW = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
_NO_LIMIT = 2**32 + 1  # h2's max_concurrent_streams when the setting is absent
_H2Stream = h2.stream.H2Stream
_decode_headers = h2.connection._decode_headers
# what h2's _build_hdr_validation_flags gives for a RequestReceived on a server's stream
_REQUEST = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
# fields that take h2's own steps: :status (informational?), content-length, cookie
_NOTABLE = frozenset({b":status", b"content-length", b"cookie"})
_NONE: frozenset[bytes] = frozenset()

# the attributes read here, as h2 4.x keeps them (another layout: h2's own path throughout)
FAST_LAYOUT = {
    "_client_side",
    "_validate_inbound_headers",
    "_normalize_inbound_headers",
    "_header_encoding",
}.issubset(vars(h2.config.H2Configuration())) and "_settings" in vars(h2.settings.Settings())


def _initial_window(settings: h2.settings.Settings) -> int:
    """``settings.initial_window_size`` (h2's Settings: a deque of values per code, the
    current value first)."""
    value = settings._settings[_INITIAL_WINDOW][0]
    return settings.initial_window_size if value is None else value  # (None: h2 raises)


def receive_request(conn: Any, frame: Any) -> tuple[list[Any], list[Any]]:
    """``conn._receive_headers_frame(frame)`` for a light HEADERS frame; see the module
    docstring."""
    sid = frame.stream_id
    config = conn.config
    if (
        config._client_side
        or conn.state_machine.state is not _SERVER_OPEN
        or sid in conn.streams
        or sid <= conn.highest_inbound_stream_id
        or not sid & 1
    ):
        return conn._receive_headers_frame(frame)  # type: ignore[no-any-return]
    # h2's limit check (its open_inbound_streams: the count, closed streams pruned)
    local = conn.local_settings
    values = local._settings.get(_MAX_STREAMS)  # local.max_concurrent_streams, inline
    limit = _NO_LIMIT if values is None or values[0] is None else values[0]
    value = conn._open_streams(1)
    if value + 1 > limit:
        msg = f"Max inbound streams is {limit}, {value} open"
        raise h2.exceptions.TooManyStreamsError(msg)
    headers = _decode_headers(conn.decoder, frame.data)
    # the connection's RECV_HEADERS: SERVER_OPEN -> SERVER_OPEN, no event (not called)
    # _begin_new_stream, its checks passed above
    inbound = local._settings[_INITIAL_WINDOW][0]  # (_initial_window, inline)
    outbound = conn.remote_settings._settings[_INITIAL_WINDOW][0]
    if inbound is None or outbound is None:  # (h2's properties raise)
        inbound, outbound = _initial_window(local), _initial_window(conn.remote_settings)
    stream = _H2Stream(sid, config, inbound, outbound)  # (config, inbound, outbound window)
    stream.max_outbound_frame_size = conn.max_outbound_frame_size
    conn.streams[sid] = stream
    conn.highest_inbound_stream_id = sid
    end_stream = "END_STREAM" in frame.flags
    notable = _NONE
    for field in headers:
        if field[0] in _NOTABLE:
            notable = notable | {field[0]}
    encoding = config._header_encoding
    if b":status" in notable or config._validate_inbound_headers or isinstance(encoding, str):
        return [], stream.receive_headers(headers, end_stream, encoding)[1]
    # H2Stream.receive_headers, for a request (no :status) on a new stream
    sm = stream.state_machine
    func, sm.state = _REQUEST_STEP
    events = func(sm, _IDLE)  # request_received: [RequestReceived]
    event: Any = events[0]
    if end_stream:
        func, sm.state = _END_STEP
        ended = func(sm, _OPEN)  # stream_half_closed: [StreamEnded]
        event.stream_ended = ended[0]
        events += ended
    if b"content-length" in notable:
        stream._initialize_content_length(headers)
    if b"cookie" in notable and config._normalize_inbound_headers:
        event.headers = stream._process_received_headers(headers, _REQUEST, encoding)
    else:
        event.headers = headers if type(headers) is list else list(headers)  # (h2: a copy)
    return [], events
