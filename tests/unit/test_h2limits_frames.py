"""ConnectionGuard.received skips its per-frame checks for a complete HEADERS block or a
non-empty DATA frame (nothing to spend, nothing to remember): for any frames, any chunking,
it gives the verdicts and keeps the state of a guard that checks every frame; and
data_sent credits what Budget.credit would."""

from __future__ import annotations

import itertools
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.proxy import h2limits as lim
from roost.proxy.h2limits import Budget, ConnectionGuard, H2Limits, Rate

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _EveryFrame(ConnectionGuard):
    """The guard as it was: ``_frame`` for every frame header."""

    def received(self, data: bytes, now: float) -> Any:
        if self._failed is not None:
            return self._failed
        pos, end = 0, len(data)
        if self._preface:
            pos = min(self._preface, end)
            self._preface -= pos
        if self._skip:
            step = min(self._skip, end - pos)
            pos += step
            self._skip -= step
        new_streams = 0
        while pos < end:
            if self._partial:
                need = 9 - len(self._partial)
                self._partial += data[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._partial) < 9:
                    break
                hi, lo, ftype, flags, sid = lim._HEADER.unpack(self._partial)
                self._partial = b""
            elif end - pos < 9:
                self._partial = data[pos:]
                break
            else:
                hi, lo, ftype, flags, sid = lim._HEADER.unpack_from(data, pos)
                pos += 9
            length = hi << 8 | lo
            sid &= 0x7FFF_FFFF
            if ftype == lim._HEADERS and sid > self._highest and self._block is None:
                self._highest = sid
                new_streams += 1
                if len(self._open) + new_streams > self._ceiling:
                    return self._fail(lim.PROTOCOL_ERROR, "too many concurrent streams")
            verdict = self._frame(ftype, flags, sid, length, now)
            if verdict is not lim.OK:
                return verdict
            step = min(length, end - pos)
            pos += step
            self._skip = length - step
        return lim.OK


FRAME = st.tuples(
    st.sampled_from([0x0, 0x0, 0x1, 0x1, 0x1, 0x9, 0x9, 0x4, 0x6, 0x8, 0x2, 0x3]),
    st.sampled_from([0x0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x25]),  # END_STREAM, END_HEADERS, ...
    st.sampled_from([1, 3, 5, 7, 2, 0]),
    st.sampled_from([0, 1, 5, 40, 41]),  # (over the block cap of 40 below)
)


def _wire(frames: list) -> bytes:
    out = []
    for ftype, flags, sid, length in frames:
        out.append(struct.pack(">HBBBL", length >> 8, length & 0xFF, ftype, flags, sid))
        out.append(b"\x00" * length)
    return b"".join(out)


def _state(g: ConnectionGuard) -> tuple:
    b = g._budgets
    tokens = [x.tokens for x in (b.churn, b.settings, b.pings, b.empty, b.window, b.control)]
    block = (
        None if g._block is None else (g._block.stream_id, g._block.size, g._block.continuations)
    )
    return g._preface, g._partial, g._skip, g._highest, block, tokens, g._failed


@settings(max_examples=400, deadline=None)
@given(
    st.lists(FRAME, max_size=30),
    st.lists(st.integers(0, 600), max_size=6),
    st.sampled_from([2, 100]),
)
def test_received_as_when_every_frame_is_checked(frames: list, cuts: list, streams: int) -> None:
    limits = H2Limits(
        max_header_block_bytes=40,
        max_continuations=3,
        max_concurrent_streams=streams,
        empty_frames=Rate(0.0, 4),
        pings=Rate(0.0, 3),
        settings=Rate(0.0, 3),
        control=Rate(0.0, 3),
        window_updates=Rate(0.0, 3),
    )
    ours, ref = ConnectionGuard(limits, 0.0), _EveryFrame(limits, 0.0)
    data = PREFACE + _wire(frames)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        now = float(i)
        assert ours.received(data[a:b], now) == ref.received(data[a:b], now)
        assert _state(ours) == _state(ref)


@given(st.lists(st.integers(0, 50), max_size=8), st.floats(0.0, 40.0))
def test_data_sent_credits_as_budget_credit(frames: list, spent: float) -> None:
    limits = H2Limits(window_updates=Rate(1.0, 30), pings=Rate(1.0, 20))
    g = ConnectionGuard(limits, 0.0)
    window, pings = Budget(limits.window_updates, 0.0), Budget(limits.pings, 0.0)
    for b in (g._budgets.window, g._budgets.pings, window, pings):
        b.tokens = max(0.0, b.tokens - spent)
    for n in frames:
        g.data_sent(n)
        window.credit(2 * n)
        pings.credit(n)
        assert (g._budgets.window.tokens, g._budgets.pings.tokens) == (window.tokens, pings.tokens)
