"""h2wire's writers (send_headers / send_data) against h2's own send_headers / send_data for
any sequence of responses, bodies, ends, resets and GOAWAYs on streams in any state: the
same bytes, the same errors, the same stream and connection state (state machines inlined
for the transitions that cannot fail, h2's for the rest)."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.exceptions
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roost.proxy import h2wire

CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
SID = st.sampled_from([1, 3, 5, 7])  # 1, 3: GETs ended; 5: a POST (body to come); 7: none
STATUS = st.sampled_from([b"200", b"204", b"404", b"100", b"103"])
ACTION = st.one_of(
    st.tuples(st.just("headers"), SID, STATUS, st.booleans()),
    st.tuples(st.just("trailers"), SID, st.just(b""), st.booleans()),
    st.tuples(st.just("data"), SID, st.sampled_from([b"", b"ok", b"x" * 50]), st.booleans()),
    st.tuples(st.just("end"), SID, st.just(b""), st.just(True)),
    st.tuples(st.just("client_reset"), SID, st.just(b""), st.just(True)),
    st.tuples(st.just("client_data"), SID, st.just(b"body"), st.booleans()),
    st.tuples(st.just("reset"), SID, st.just(b""), st.just(True)),
    st.tuples(st.just("client_goaway"), SID, st.just(b""), st.just(True)),
    st.tuples(st.just("goaway"), SID, st.just(b""), st.just(True)),
)


def _pair(*, ours: bool) -> tuple[Any, h2.connection.H2Connection]:
    server = h2wire.new_connection(CONFIG) if ours else h2.connection.H2Connection(CONFIG)
    if not ours:  # (h2's own paths, with the state machine a received GOAWAY leaves open)
        server.state_machine = h2wire._OpenAfterGoaway()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.initiate_connection()
    client.send_headers(1, GET, end_stream=True)
    client.send_headers(3, GET, end_stream=True)
    client.send_headers(5, [(b":method", b"POST"), *GET[1:]])
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # (the client's SETTINGS ACK)
    server.data_to_send()
    return server, client


def _act(server: Any, client: Any, action: tuple, *, ours: bool) -> Any:
    kind, sid, value, flag = action
    try:
        if kind == "headers":
            head = [(b":status", value), (b"server", b"t"), (b"content-length", b"2")]
            if ours:
                h2wire.send_headers(server, sid, head, flag)
            else:
                server.send_headers(sid, head, end_stream=flag)
        elif kind == "trailers":
            if ours:
                h2wire.send_headers(server, sid, [(b"x-t", b"1")], flag)
            else:
                server.send_headers(sid, [(b"x-t", b"1")], end_stream=flag)
        elif kind == "data":
            if ours:
                h2wire.send_data(server, sid, value, flag)
            else:
                server.send_data(sid, value, end_stream=flag)
        elif kind == "end":
            server.end_stream(sid)
        elif kind == "reset":
            server.reset_stream(sid)
        elif kind == "goaway":
            server.close_connection()
        else:
            if kind == "client_reset":
                client.reset_stream(sid)
            elif kind == "client_data":
                client.send_data(sid, value, end_stream=flag)
            else:
                client.close_connection()
            events = server.receive_data(client.data_to_send())
            return [type(e).__name__ for e in events]
    except (
        h2.exceptions.ProtocolError,
        AssertionError,
        KeyError,
    ) as e:  # (KeyError: h2 4.4, data on an unknown stream)
        return type(e).__name__, str(e)
    except h2.exceptions.FlowControlError as e:  # pragma: no cover (windows are wide)
        return type(e).__name__, str(e)
    return None


def _state(conn: Any) -> tuple:
    streams = {
        sid: (
            vars(s.state_machine),
            s.outbound_flow_control_window,
            s.request_method,
            s._authority,
        )
        for sid, s in conn.streams.items()
    }
    return (
        conn.state_machine.state,
        streams,
        dict(conn._closed_streams),
        conn.outbound_flow_control_window,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(ACTION, max_size=10))
@example([("headers", 1, b"200", True)])  # HALF_CLOSED_REMOTE -> CLOSED (send_end_stream)
@example([("headers", 5, b"200", False), ("data", 5, b"ok", True)])  # OPEN -> HALF_CLOSED_LOCAL
@example([("headers", 5, b"200", True), ("client_data", 5, b"body", True)])
@example([("goaway", 1, b"", True), ("headers", 1, b"200", False)])  # connection CLOSED
@example([("client_goaway", 1, b"", True), ("headers", 1, b"200", True)])
@example([("client_reset", 1, b"", True), ("data", 1, b"ok", True)])
@example([("headers", 1, b"200", False), ("data", 1, b"ok", True), ("data", 1, b"ok", True)])
def test_writers_match_h2_in_any_state(actions: list) -> None:
    """The same bytes, errors and state as h2's own writers."""
    ours, our_client = _pair(ours=True)
    ref, ref_client = _pair(ours=False)
    for action in actions:
        out = _act(ours, our_client, action, ours=True)
        assert out == _act(ref, ref_client, action, ours=False)
        assert ours.data_to_send() == ref.data_to_send()
        assert _state(ours) == _state(ref)


def test_transition_tables_are_h2s() -> None:
    """The per-input tables hold h2's transitions; only open connections skip an input."""
    steps = h2.stream._transitions
    for input_, table in h2wire._STREAM_STEPS.items():
        assert table == {s: step for (s, i), step in steps.items() if i is input_}
    open_states = {
        h2.connection.ConnectionState.CLIENT_OPEN,
        h2.connection.ConnectionState.SERVER_OPEN,
    }
    assert set(h2wire._SEND_HEADERS_UNCHANGED) == open_states
    assert set(h2wire._SEND_DATA_UNCHANGED) == open_states
