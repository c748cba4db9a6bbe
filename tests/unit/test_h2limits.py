"""HTTP/2 abuse accounting: frame floods, CONTINUATION, rapid reset, stream limits, stalls."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import roost.proxy
from roost.proxy.h2limits import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    OK,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    Budget,
    ConnectionGuard,
    GoAway,
    H2Limits,
    Rate,
    ResetStream,
    bad_field_value,
    stream_ceiling,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def wire(*frames: Frame) -> bytes:
    return b"".join(f.serialize() for f in frames)


def headers(sid: int, block: bytes = b"\x82\x84", flags: tuple[str, ...] = ("END_HEADERS",)):
    return HeadersFrame(sid, data=block, flags=list(flags))


def guard(**kw: object) -> ConnectionGuard:
    g = ConnectionGuard(H2Limits(**kw), 0.0)  # type: ignore[arg-type]
    assert g.received(PREFACE, 0.0) is OK
    return g


def flood(g: ConnectionGuard, frame: Frame, n: int, now: float = 0.0) -> object:
    return g.received(wire(*[frame] * n), now)


# -- frame floods ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "rate_name", "reason"),
    [
        (PingFrame(0, b"12345678"), "pings", "PING flood"),
        (SettingsFrame(0), "settings", "SETTINGS flood"),
        (DataFrame(1, b""), "empty_frames", "empty frame flood"),
        (WindowUpdateFrame(0, window_increment=1), "window_updates", "WINDOW_UPDATE flood"),
        (PriorityFrame(1, depends_on=0), "control", "control flood"),
        (RstStreamFrame(1), "control", "control flood"),
        (PingFrame(0, b"12345678", flags=["ACK"]), "control", "control flood"),
    ],
)
def test_burst_then_goaway(frame: Frame, rate_name: str, reason: str) -> None:
    """Each kind gets its burst at once; one more frame is ENHANCE_YOUR_CALM."""
    g = guard(**{rate_name: Rate(1.0, 10)})
    assert flood(g, frame, 10) is OK
    assert flood(g, frame, 1) == GoAway(ENHANCE_YOUR_CALM, reason)
    assert g.received(b"", 100.0) == GoAway(ENHANCE_YOUR_CALM, reason)  # sticky


def test_budget_refills_with_time() -> None:
    """Frames at the sustained rate are fine forever."""
    g = guard(pings=Rate(10.0, 5))
    for i in range(200):
        assert flood(g, PingFrame(0, b"12345678"), 1, now=i * 0.1) is OK


def test_data_sent_earns_window_update_tokens() -> None:
    """Every DATA frame we send lets the peer send two WINDOW_UPDATEs."""
    g = guard(window_updates=Rate(0.0, 10))
    for _ in range(100):
        g.data_sent(1)
        assert flood(g, WindowUpdateFrame(1, window_increment=10), 2) is OK


def test_empty_data_with_end_stream_is_not_empty() -> None:
    """An empty DATA frame ending the stream is legitimate."""
    g = guard(empty_frames=Rate(0.0, 1))
    assert flood(g, DataFrame(1, b"", flags=["END_STREAM"]), 50) is OK


# -- CONTINUATION floods and header blocks -------------------------------------------------


def test_continuation_count_cap() -> None:
    """More CONTINUATIONs in one block than ``max_continuations`` -> GOAWAY."""
    g = guard(max_continuations=4)
    start = headers(1, b"\x82", flags=())
    conts = [ContinuationFrame(1, data=b"\x84") for _ in range(4)]
    assert g.received(wire(start, *conts), 0.0) is OK
    assert g.received(wire(ContinuationFrame(1, data=b"")), 0.0) == GoAway(
        ENHANCE_YOUR_CALM, "CONTINUATION flood"
    )


def test_legit_continuations_pass() -> None:
    """A block split in a few CONTINUATIONs ending with END_HEADERS is fine, repeatedly."""
    g = guard(max_continuations=4)
    for sid in range(1, 200, 2):
        frames = [headers(sid, b"\x82", flags=())]
        frames += [ContinuationFrame(sid, data=b"\x84") for _ in range(3)]
        frames.append(ContinuationFrame(sid, data=b"\x86", flags=["END_HEADERS"]))
        assert g.received(wire(*frames), 0.0) is OK
        g.stream_closed(sid)


def test_header_block_size_cap() -> None:
    """The encoded block (HEADERS + CONTINUATION payloads) is capped."""
    g = guard(max_header_block_bytes=1000)
    assert g.received(wire(headers(1, b"a" * 600, flags=())), 0.0) is OK
    assert g.received(wire(ContinuationFrame(1, data=b"b" * 401)), 0.0) == GoAway(
        ENHANCE_YOUR_CALM, "header block too large"
    )
    g = guard(max_header_block_bytes=1000)
    assert g.received(wire(headers(1, b"a" * 1001)), 0.0) == GoAway(
        ENHANCE_YOUR_CALM, "header block too large"
    )


def test_unfinished_header_block_times_out() -> None:
    """A block left open (slowloris in CONTINUATIONs) -> GOAWAY from check()."""
    g = guard(header_block_timeout=5.0)
    assert g.received(wire(headers(1, b"\x82", flags=())), 1.0) is OK
    assert g.check(5.9) == []
    assert g.check(6.0) == [GoAway(ENHANCE_YOUR_CALM, "header block not finished in time")]


# -- streams -----------------------------------------------------------------------------


def test_excess_streams_are_refused() -> None:
    """Past max_concurrent_streams: REFUSED_STREAM; a closed stream frees a slot."""
    g = guard(max_concurrent_streams=3)
    assert [g.stream_opened(s, 0.0) for s in (1, 3, 5)] == [OK, OK, OK]
    assert g.stream_opened(7, 0.0) == ResetStream(7, REFUSED_STREAM, "concurrent stream limit")
    g.stream_closed(3)
    assert g.stream_opened(9, 0.0) is OK
    assert g.open_streams == 3


def test_refusal_flood_goes_away() -> None:
    """Refusals spend the churn budget: a client hammering a full connection is dropped."""
    g = guard(max_concurrent_streams=1, stream_churn=Rate(0.0, 5))
    assert g.stream_opened(1, 0.0) is OK
    for sid in range(3, 13, 2):
        assert isinstance(g.stream_opened(sid, 0.0), ResetStream)
    assert g.stream_opened(13, 0.0) == GoAway(ENHANCE_YOUR_CALM, "too many refused streams")


def test_rapid_reset_goes_away() -> None:
    """Open-then-reset beyond the churn burst -> GOAWAY (CVE-2023-44487)."""
    g = guard(stream_churn=Rate(1.0, 10))
    for sid in range(1, 21, 2):
        assert g.stream_opened(sid, 0.0) is OK
        assert g.stream_reset_by_peer(sid, 0.0) is OK
    assert g.stream_opened(21, 0.0) is OK
    assert g.stream_reset_by_peer(21, 0.0) == GoAway(ENHANCE_YOUR_CALM, "rapid reset")


def test_reset_after_completion_is_free() -> None:
    """A reset of a stream already answered costs nothing."""
    g = guard(stream_churn=Rate(0.0, 1))
    for sid in range(1, 401, 2):
        assert g.stream_opened(sid, 0.0) is OK
        g.stream_closed(sid)
        assert g.stream_reset_by_peer(sid, 0.0) is OK


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=300))
def test_rapid_reset_bound(gaps: list[float]) -> None:
    """Premature resets accepted never exceed burst + rate x elapsed time."""
    rate = Rate(20.0, 50)
    g = guard(stream_churn=rate)
    now, accepted, sid = 0.0, 0, 1
    for gap in gaps:
        now += gap
        assert g.stream_opened(sid, now) is OK
        verdict = g.stream_reset_by_peer(sid, now)
        if verdict is not OK:
            assert isinstance(verdict, GoAway)
            break
        accepted += 1
        sid += 2
    assert accepted <= rate.burst + rate.per_second * now + 1e-9


def test_too_many_new_streams_in_one_read() -> None:
    """More new streams in one read than h2's ceiling tolerates -> GOAWAY PROTOCOL_ERROR."""
    limits = H2Limits(max_concurrent_streams=10)
    g = guard(max_concurrent_streams=10)
    ceiling = stream_ceiling(limits)
    ok = wire(*[headers(sid) for sid in range(1, 2 * ceiling, 2)])
    assert g.received(ok, 0.0) is OK
    g = guard(max_concurrent_streams=10)
    over = wire(*[headers(sid) for sid in range(1, 2 * ceiling + 2, 2)])
    assert g.received(over, 0.0) == GoAway(PROTOCOL_ERROR, "too many concurrent streams")


# -- field values ------------------------------------------------------------------------

values = st.binary(max_size=20)


@given(fields=st.lists(st.tuples(st.binary(min_size=1, max_size=8), values), max_size=8))
def test_fields_with_cr_lf_nul_reset_the_stream(fields: list[tuple[bytes, bytes]]) -> None:
    """A value with CR, LF or NUL resets the stream with PROTOCOL_ERROR; else OK."""
    g = guard()
    bad = any(c in v for _, v in fields for c in (b"\r", b"\n", b"\x00"))
    verdict = g.check_fields(1, fields)
    if bad:
        assert isinstance(verdict, ResetStream)
        assert (verdict.stream_id, verdict.error_code) == (1, PROTOCOL_ERROR)
        assert bad_field_value(fields) is not None
    else:
        assert verdict is OK


# -- zero-window stalls ------------------------------------------------------------------


def test_stalled_stream_is_reset_and_connection_goes_away() -> None:
    """A stream stuck at zero window past the timeout is reset; the connection -> GOAWAY."""
    g = guard(zero_window_timeout=10.0)
    g.stream_opened(1, 0.0)
    g.stream_opened(3, 0.0)
    g.blocked(1, 1.0)
    g.blocked(1, 5.0)  # still the same stall: the clock started at 1.0
    g.blocked(3, 2.0)
    g.unblocked(3)
    assert g.check(10.9) == []
    assert g.check(11.0) == [ResetStream(1, CANCEL, "stream window stalled at zero")]
    assert g.open_streams == 1
    assert g.check(30.0) == []
    g.blocked(0, 30.0)
    assert g.check(40.0) == [GoAway(ENHANCE_YOUR_CALM, "connection window stalled at zero")]


# -- the scanner is chunking-invariant -----------------------------------------------------

frame_kinds = st.sampled_from(["ping", "settings", "empty", "data", "wu", "headers", "block"])


def build(kinds: list[str]) -> bytes:
    out, sid = [], 1
    for kind in kinds:
        if kind == "ping":
            out.append(PingFrame(0, b"abcdefgh"))
        elif kind == "settings":
            out.append(SettingsFrame(0, settings={4: 100}))
        elif kind == "empty":
            out.append(DataFrame(1, b""))
        elif kind == "data":
            out.append(DataFrame(1, b"x" * 100))
        elif kind == "wu":
            out.append(WindowUpdateFrame(0, window_increment=5))
        elif kind == "headers":
            out.append(headers(sid))
            sid += 2
        else:
            out += [headers(sid, b"\x82", flags=()), ContinuationFrame(sid, data=b"\x84")]
            out.append(ContinuationFrame(sid, data=b"", flags=["END_HEADERS"]))
            sid += 2
    out.append(GoAwayFrame(0))
    return wire(*out)


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(frame_kinds, max_size=40), cuts=st.lists(st.integers(0, 4000)))
def test_any_chunking_gives_the_same_verdict(kinds: list[str], cuts: list[int]) -> None:
    """Frames split across reads at any byte are judged exactly as in one read."""
    limits = {"pings": Rate(0.0, 5), "empty_frames": Rate(0.0, 3), "settings": Rate(0.0, 4)}
    data = PREFACE + build(kinds)
    whole = ConnectionGuard(H2Limits(**limits), 0.0)  # type: ignore[arg-type]
    expected = whole.received(data, 0.0)
    split = ConnectionGuard(H2Limits(**limits), 0.0)  # type: ignore[arg-type]
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    verdict: object = OK
    for a, b in itertools.pairwise(points):
        verdict = split.received(data[a:b], 0.0)
    assert verdict == expected
    assert (split._block is None) == (whole._block is None)


def test_budget_credit_caps_at_burst() -> None:
    """credit() never fills a bucket past its burst."""
    b = Budget(Rate(0.0, 3), 0.0)
    b.credit(100)
    assert [b.spend(0.0) for _ in range(4)] == [True, True, True, False]


def test_pure_module() -> None:
    """h2limits imports no I/O, clock, randomness or h2."""
    path = Path(roost.proxy.__file__).with_name("h2limits.py")
    banned = {"asyncio", "socket", "ssl", "time", "random", "h2", "hpack"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not {str(n).split(".")[0] for n in names} & banned
