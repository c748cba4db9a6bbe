"""Per-connection HTTP/2 abuse accounting (pure, sans-IO): events in, verdicts out.

The client-facing HTTP/2 codec feeds a :class:`ConnectionGuard` the raw bytes it reads
(*before* h2 parses them, so a flood is judged before h2 does its work) and the stream
events it sees; the guard answers :data:`OK`, :class:`ResetStream` or :class:`GoAway`.
Time is passed in; nothing here reads a clock or does I/O.

What h2/hpack (4.x) enforce themselves, and what this module adds:

- **HPACK bomb.** hpack caps the *decoded* header list while decoding
  (``Decoder.max_header_list_size``; over it h2 sends GOAWAY ENHANCE_YOUR_CALM) and the
  dynamic table by SETTINGS_HEADER_TABLE_SIZE. Added: the codec advertises
  ``max_header_list_size`` and sets it on the decoder at once (not only after the ACK), and
  the *encoded* block is capped (next item).
- **CONTINUATION flood.** h2 buffers up to 64 CONTINUATION frames per block (~1 MiB) before
  a PROTOCOL_ERROR. Added: ``max_continuations`` per block, ``max_header_block_bytes`` of
  encoded block, and a block must end within ``header_block_timeout`` -- judged on the raw
  frame headers, before h2 buffers anything.
- **Oversized frames.** h2: SETTINGS_MAX_FRAME_SIZE -> FRAME_SIZE_ERROR. Nothing added.
- **Stream exhaustion.** h2 turns a stream past its local MAX_CONCURRENT_STREAMS into a
  *connection* error. Added: streams past the advertised limit are refused with
  REFUSED_STREAM (the codec raises h2's own limit to :func:`stream_ceiling`, unannounced);
  more new streams than that ceiling in one read -> GOAWAY.
- **Rapid reset** (CVE-2023-44487). h2: nothing. Added: streams the client resets before
  their response ended, and refused streams, spend a token bucket -> GOAWAY.
- **SETTINGS/PING/empty-frame/WINDOW_UPDATE/control floods** (CVE-2019-9512..9518). h2
  answers every PING and SETTINGS. Added: a token bucket per kind ("empty" = zero-length
  DATA/HEADERS/CONTINUATION that ends neither the stream nor the block; each DATA frame we
  send earns the peer 2 WINDOW_UPDATE tokens and 1 PING token -- BDP-estimating clients
  ping while they receive).
- **Zero-window stall.** h2: nothing. Added: a stream the peer keeps at zero window while
  data waits is reset (CANCEL) after ``zero_window_timeout``; the connection -> GOAWAY.
- **CR/LF/NUL in a field value.** h2 4.x, when validating, makes it a *connection* error.
  Added: :meth:`ConnectionGuard.check_fields` -> stream reset PROTOCOL_ERROR (RFC 9113
  section 8.2.1 calls it a malformed request, a stream error).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "CANCEL",
    "ENHANCE_YOUR_CALM",
    "NO_ERROR",
    "OK",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "Budget",
    "ConnectionGuard",
    "GoAway",
    "H2Limits",
    "Ok",
    "Rate",
    "ResetStream",
    "Verdict",
    "bad_field_value",
    "stream_ceiling",
]

# RFC 9113 section 7 error codes (ints, as h2's ErrorCodes IntEnum compares equal to them)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB

PREFACE_LEN = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADER = struct.Struct(">HBBBL")  # length (24 bit, as 16 + 8), type, flags, stream id
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE = 0, 1, 2, 3, 4, 5
_PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 6, 7, 8, 9
_END_STREAM = _ACK = 0x1
_END_HEADERS = 0x4


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's refill ``per_second`` and its capacity ``burst``."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Per-connection HTTP/2 limits of the edge (all sizes in bytes, times in seconds)."""

    max_concurrent_streams: int = 100  # advertised; the next ones get REFUSED_STREAM
    max_header_list_size: int = 64 * 1024  # advertised; decoded size, enforced by hpack
    max_header_block_bytes: int = 64 * 1024  # encoded HEADERS + CONTINUATION payload
    max_continuations: int = 16  # CONTINUATION frames in one header block
    header_block_timeout: float = 10.0  # a started header block must end within
    stream_churn: Rate = Rate(30.0, 200)  # streams reset by the client early + refused
    settings: Rate = Rate(10.0, 50)  # SETTINGS frames (not ACKs)
    pings: Rate = Rate(20.0, 100)  # PING frames (not ACKs)
    empty_frames: Rate = Rate(50.0, 200)  # zero-length DATA/HEADERS/CONTINUATION
    window_updates: Rate = Rate(100.0, 1000)  # + 2 tokens per DATA frame we send
    control: Rate = Rate(200.0, 1000)  # PRIORITY, RST_STREAM, GOAWAY, ACKs, unknown
    zero_window_timeout: float = 30.0  # data waiting, peer window at zero this long


def stream_ceiling(limits: H2Limits) -> int:
    """Open streams h2 itself tolerates: room to *refuse* streams past the advertised
    limit (a client may open streams before it has seen our SETTINGS)."""
    return max(2 * limits.max_concurrent_streams, limits.max_concurrent_streams + 100)


@dataclass(frozen=True, slots=True)
class Ok:
    """Carry on."""


OK = Ok()


@dataclass(frozen=True, slots=True)
class GoAway:
    """Close the connection with GOAWAY ``error_code``."""

    error_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ResetStream:
    """Reset one stream with RST_STREAM ``error_code``; the connection lives on."""

    stream_id: int
    error_code: int
    reason: str


Verdict = Ok | GoAway | ResetStream


class Budget:
    """A token bucket: ``spend`` succeeds while tokens remain; refills at the rate."""

    __slots__ = ("_burst", "_last", "_rate", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate.per_second
        self._burst = float(rate.burst)
        self.tokens = float(rate.burst)
        self._last = now

    def spend(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many (after refilling up to ``now``)."""
        if now > self._last:
            self.tokens = min(self._burst, self.tokens + (now - self._last) * self._rate)
            self._last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def credit(self, n: float) -> None:
        """Add ``n`` tokens (up to the burst)."""
        self.tokens = min(self._burst, self.tokens + n)


def bad_field_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The name of the first field whose value holds CR, LF or NUL (RFC 9113 8.2.1)."""
    for name, value in headers:
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            return name
    return None


@dataclass(slots=True)
class _Block:
    """A header block in progress (HEADERS without END_HEADERS, then CONTINUATIONs)."""

    stream_id: int
    started: float
    size: int
    continuations: int = 0


@dataclass(slots=True)
class _Budgets:
    churn: Budget
    settings: Budget
    pings: Budget
    empty: Budget
    window: Budget
    control: Budget
    by_type: dict[int, Budget] = field(default_factory=dict)


class ConnectionGuard:
    """The abuse accounting of one server-side HTTP/2 connection."""

    def __init__(self, limits: H2Limits, now: float, *, preface: bool = True) -> None:
        self.limits = limits
        b = self._budgets = _Budgets(
            churn=Budget(limits.stream_churn, now),
            settings=Budget(limits.settings, now),
            pings=Budget(limits.pings, now),
            empty=Budget(limits.empty_frames, now),
            window=Budget(limits.window_updates, now),
            control=Budget(limits.control, now),
        )
        b.by_type = {
            _PRIORITY: b.control,
            _RST_STREAM: b.control,
            _GOAWAY: b.control,
            _WINDOW_UPDATE: b.window,
        }
        self._ceiling = stream_ceiling(limits)
        self._preface = PREFACE_LEN if preface else 0  # preface bytes still to skip
        self._partial = b""  # a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to skip
        self._highest = 0  # highest stream id a HEADERS frame opened
        self._block: _Block | None = None
        self._open: set[int] = set()
        self._blocked: dict[int, float] = {}  # stream id (0: connection) -> stalled since
        self._failed: GoAway | None = None

    @property
    def open_streams(self) -> int:
        """Streams accepted and not yet closed."""
        return len(self._open)

    # -- raw input --------------------------------------------------------------------

    def received(self, data: bytes, now: float) -> Ok | GoAway:
        """Account the frames in ``data`` (raw bytes from the peer, any chunking)."""
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
                hi, lo, ftype, flags, sid = _HEADER.unpack(self._partial)
                self._partial = b""
            elif end - pos < 9:
                self._partial = data[pos:]
                break
            else:
                hi, lo, ftype, flags, sid = _HEADER.unpack_from(data, pos)
                pos += 9
            length = hi << 8 | lo
            sid &= 0x7FFF_FFFF
            if ftype == _HEADERS and sid > self._highest and self._block is None:
                self._highest = sid
                new_streams += 1
                if len(self._open) + new_streams > self._ceiling:
                    return self._fail(PROTOCOL_ERROR, "too many concurrent streams")
            if not (  # (a complete HEADERS block or a non-empty DATA frame: nothing to spend)
                length
                and self._block is None
                and (
                    ftype == _DATA
                    or (
                        ftype == _HEADERS
                        and flags & _END_HEADERS
                        and length <= self.limits.max_header_block_bytes
                    )
                )
            ):
                verdict = self._frame(ftype, flags, sid, length, now)
                if verdict is not OK:
                    return verdict
            step = min(length, end - pos)
            pos += step
            self._skip = length - step
        return OK

    def _frame(self, ftype: int, flags: int, sid: int, length: int, now: float) -> Ok | GoAway:
        block, limits, b = self._block, self.limits, self._budgets
        if block is not None:
            if ftype != _CONTINUATION:
                return OK  # h2 answers this protocol error itself
            block.continuations += 1
            block.size += length
            if block.continuations > limits.max_continuations:
                return self._fail(ENHANCE_YOUR_CALM, "CONTINUATION flood")
            if block.size > limits.max_header_block_bytes:
                return self._fail(ENHANCE_YOUR_CALM, "header block too large")
            if flags & _END_HEADERS:
                self._block = None
            elif length == 0 and not b.empty.spend(now):
                return self._fail(ENHANCE_YOUR_CALM, "empty frame flood")
            return OK
        if ftype == _DATA:
            if length == 0 and not flags & _END_STREAM and not b.empty.spend(now):
                return self._fail(ENHANCE_YOUR_CALM, "empty frame flood")
        elif ftype == _HEADERS:
            if length > limits.max_header_block_bytes:
                return self._fail(ENHANCE_YOUR_CALM, "header block too large")
            if not flags & _END_HEADERS:
                self._block = _Block(sid, now, length)
            if length == 0 and not flags & _END_STREAM and not b.empty.spend(now):
                return self._fail(ENHANCE_YOUR_CALM, "empty frame flood")
        elif ftype in (_SETTINGS, _PING):
            budget = b.control if flags & _ACK else b.settings if ftype == _SETTINGS else b.pings
            if not budget.spend(now):
                kind = "control" if flags & _ACK else "SETTINGS" if ftype == _SETTINGS else "PING"
                return self._fail(ENHANCE_YOUR_CALM, f"{kind} flood")
        elif ftype in (_PUSH_PROMISE, _CONTINUATION):
            return OK  # never valid from a client here: h2 answers PROTOCOL_ERROR
        else:
            budget = b.by_type.get(ftype, b.control)
            if not budget.spend(now):
                kind = "WINDOW_UPDATE" if ftype == _WINDOW_UPDATE else "control"
                return self._fail(ENHANCE_YOUR_CALM, f"{kind} flood")
        return OK

    def _fail(self, code: int, reason: str) -> GoAway:
        self._failed = GoAway(code, reason)
        return self._failed

    # -- stream events ----------------------------------------------------------------

    def stream_opened(self, stream_id: int, now: float) -> Verdict:
        """A request's headers arrived: accept it, refuse it, or give up on the peer."""
        if len(self._open) >= self.limits.max_concurrent_streams:
            if not self._budgets.churn.spend(now):
                return self._fail(ENHANCE_YOUR_CALM, "too many refused streams")
            return ResetStream(stream_id, REFUSED_STREAM, "concurrent stream limit")
        self._open.add(stream_id)
        return OK

    def stream_closed(self, stream_id: int) -> None:
        """A stream ended (both sides done, or reset by us)."""
        self._open.discard(stream_id)
        self._blocked.pop(stream_id, None)

    def stream_reset_by_peer(self, stream_id: int, now: float) -> Ok | GoAway:
        """The client reset a stream; early resets of open streams spend the churn budget."""
        if stream_id not in self._open:
            return OK
        self.stream_closed(stream_id)
        if not self._budgets.churn.spend(now):
            return self._fail(ENHANCE_YOUR_CALM, "rapid reset")
        return OK

    def check_fields(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> Verdict:
        """CR, LF or NUL in a field value makes the request malformed: reset the stream."""
        name = bad_field_value(headers)
        if name is None:
            return OK
        shown = name.decode("latin-1")[:40]
        return ResetStream(stream_id, PROTOCOL_ERROR, f"CR, LF or NUL in field {shown!r}")

    def data_sent(self, frames: int) -> None:
        """We sent ``frames`` DATA frames: the peer may answer each with two WINDOW_UPDATEs
        and a PING (BDP estimation pings as it receives data, as gRPC does)."""
        self._budgets.window.credit(2 * frames)
        self._budgets.pings.credit(frames)

    # -- flow-control stalls and timers -------------------------------------------------

    def blocked(self, stream_id: int, now: float) -> None:
        """Data waits for ``stream_id``'s window (0: the connection's) and it is zero."""
        self._blocked.setdefault(stream_id, now)

    def unblocked(self, stream_id: int) -> None:
        """The window of ``stream_id`` (0: the connection) opened, or nothing waits."""
        self._blocked.pop(stream_id, None)

    def check(self, now: float) -> list[GoAway | ResetStream]:
        """Timers, called periodically: unfinished header blocks, zero-window stalls."""
        if self._failed is not None:
            return [self._failed]
        block = self._block
        if block is not None and now - block.started >= self.limits.header_block_timeout:
            return [self._fail(ENHANCE_YOUR_CALM, "header block not finished in time")]
        out: list[GoAway | ResetStream] = []
        timeout = self.limits.zero_window_timeout
        for sid, since in list(self._blocked.items()):
            if now - since < timeout:
                continue
            if sid == 0:
                return [self._fail(ENHANCE_YOUR_CALM, "connection window stalled at zero")]
            self.stream_closed(sid)
            out.append(ResetStream(sid, CANCEL, "stream window stalled at zero"))
        return out
