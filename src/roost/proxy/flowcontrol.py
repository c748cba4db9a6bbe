"""Adaptive HTTP/2 receive windows from a bandwidth-delay-product estimate (pure, sans-IO).

A fixed 64 KiB window caps a stream at ``window / RTT``: 640 KB/s on a 100 ms path, however
fast the link. The receiver therefore sizes its windows to the path, as gRPC
(``bdp_estimator.go``) and hyper (``proto/h2/ping.rs``) do:

1. When a DATA frame arrives and no BDP ping is outstanding, send a PING and start a
   sample with that frame's bytes.
2. Count every flow-controlled byte received until the PING's ACK: that is what the peer
   could send in one round trip, i.e. the BDP as limited by the current window.
3. On the ACK: ``rtt`` is smoothed (the first 10 samples averaged, then EWMA 0.9), the
   sample's bandwidth ``sample / (1.5 * rtt)`` compared with the best seen so far. If the
   sample filled at least 2/3 of the window (the peer was window-bound, so ``2 * sample``
   exceeds the window by a margin) *and* this is the best bandwidth yet (a rising RTT from
   queueing must not inflate the window), the window becomes ``min(2 * sample, max_window)``.

After a growth the next ping waits one RTT: until the peer has the new window, a sample
would still measure the old one. A sample that does not grow the window means the window
is not what limits the peer: the next ping then waits (hyper's "stabilize delay": 100 ms,
doubling up to 10 s; reset by a growth), so a connection whose window fits the path is not
pinged once per round trip forever (on a LAN, thousands of pings a second).

Growing the window is two commands: ``UpdateSettings(initial_window_size=new)`` (every
stream's window, open ones included: RFC 9113 section 6.9.2 applies the delta to them)
and ``IncreaseWindow(0, new - old)`` for the connection window. Windows never shrink.
Once at ``max_window`` no more pings are sent. At most one ping is outstanding, so a peer
sees at most one BDP ping per round trip while the window is growing.

Time is passed in (``now``, seconds, any monotonic origin); nothing here reads a clock,
does I/O or imports asyncio. The codec executes the commands:

    tuner = AdaptiveWindow(max_window=16 << 20)
    for cmd in tuner.start(): ...                       # connection window to the initial size
    for cmd in tuner.data_received(n, now): ...         # on every DATA frame
    if tuner.owns(ping_data):
        for cmd in tuner.ping_acked(ping_data, now): ...

:class:`CreditLedger` decides *when* received bytes are handed back (WINDOW_UPDATE): the
connection's at once, a stream's only once its consumer took them (a paused stream *holds*
its credit, which is the backpressure), both in batches of half the current window. One
stalled stream therefore cannot starve the others, unless paused streams hold more than
``held_budget`` bytes in all -- then the connection's credit waits too, bounding memory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "AdaptiveWindow",
    "Command",
    "CreditLedger",
    "IncreaseWindow",
    "SendPing",
    "UpdateSettings",
]

DEFAULT_WINDOW = 65_535  # RFC 9113: initial stream and connection window
MAX_WINDOW = 16 << 20  # cap used by gRPC and hyper
_LARGEST = 2**31 - 1  # largest legal window
_BOOTSTRAP = 10  # RTT samples averaged before switching to an EWMA
_ALPHA = 0.9  # EWMA weight of a new RTT sample
_BETA = 0.66  # grow when a sample filled at least this much of the window
_GAMMA = 2  # new window = GAMMA * sample
_PING_TAG = b"\xb0\xd9"  # first bytes of our BDP pings' opaque data
_FIRST_DELAY = 0.1  # wait before the next ping after a sample that did not grow the window
_MAX_DELAY = 10.0


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send a PING with this 8-byte opaque data."""

    data: bytes


@dataclass(frozen=True, slots=True)
class IncreaseWindow:
    """Send WINDOW_UPDATE: raise the receive window of ``stream_id`` (0: the connection)."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    """Send SETTINGS with a new SETTINGS_INITIAL_WINDOW_SIZE."""

    initial_window_size: int


Command = SendPing | IncreaseWindow | UpdateSettings


class AdaptiveWindow:
    """BDP-driven window sizing for one HTTP/2 connection (the receiving side).

    ``enabled=False`` gives a fixed window of ``initial_window`` (no pings, no growth),
    which keeps one code path in the codec for both modes.
    """

    __slots__ = (
        "_bw_max",
        "_count",
        "_delay",
        "_enabled",
        "_max",
        "_next_at",
        "_outstanding",
        "_rtt",
        "_sample",
        "_samples",
        "_sent_at",
        "_window",
    )

    def __init__(
        self,
        *,
        initial_window: int = DEFAULT_WINDOW,
        max_window: int = MAX_WINDOW,
        enabled: bool = True,
    ) -> None:
        if not 0 < initial_window <= max_window <= _LARGEST:
            raise ValueError("need 0 < initial_window <= max_window <= 2**31-1")
        self._window = initial_window
        self._max = max_window
        self._enabled = enabled
        self._outstanding: bytes | None = None  # opaque data of the ping in flight
        self._sent_at = 0.0
        self._sample = 0
        self._samples = 0
        self._count = 0
        self._rtt = 0.0
        self._bw_max = 0.0
        self._delay = 0.0  # between a stable sample and the next ping
        self._next_at = 0.0  # no ping before this time

    @property
    def window(self) -> int:
        """The current target for both the stream and the connection window."""
        return self._window

    @property
    def rtt(self) -> float:
        """Smoothed round-trip time in seconds (0 before the first sample)."""
        return self._rtt

    @property
    def settled(self) -> bool:
        """True when no more growth can happen (disabled, or at ``max_window``)."""
        return not self._enabled or self._window >= self._max

    def start(self) -> list[Command]:
        """Commands for a new connection: the connection window starts at 65 535 bytes
        whatever SETTINGS say, so raise it to the initial window now.

        (The initial stream window belongs in the codec's first SETTINGS frame.)
        """
        if self._window > DEFAULT_WINDOW:
            return [IncreaseWindow(0, self._window - DEFAULT_WINDOW)]
        return []

    def owns(self, data: bytes) -> bool:
        """Whether a PING ACK with this opaque data answers our outstanding BDP ping."""
        return self._outstanding is not None and data == self._outstanding

    def data_received(self, nbytes: int, now: float) -> list[Command]:
        """``nbytes`` flow-controlled bytes (a DATA frame, padding included) arrived."""
        if self._outstanding is not None:
            self._sample += nbytes
            return []
        if self.settled or nbytes <= 0 or now < self._next_at:
            return []
        self._count += 1
        data = _PING_TAG + (self._count & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
        self._outstanding = data
        self._sent_at = now
        self._sample = nbytes
        return [SendPing(data)]

    def ping_acked(self, data: bytes, now: float) -> list[Command]:
        """The PING ACK for ``data`` arrived; maybe grow the windows."""
        if not self.owns(data):
            return []
        self._outstanding = None
        sample = self._rtt_sample(max(now - self._sent_at, 1e-6))
        bandwidth = self._sample / (1.5 * sample)
        if bandwidth > self._bw_max:
            self._bw_max = bandwidth
        new = min(_GAMMA * self._sample, self._max)
        if self._sample < _BETA * self._window or bandwidth < self._bw_max or new <= self._window:
            self._delay = min(_MAX_DELAY, max(2 * self._delay, _FIRST_DELAY))
            self._next_at = now + self._delay
            return []
        self._delay = 0.0
        self._next_at = now + self._rtt  # until the peer has used it, samples see the old one
        delta, self._window = new - self._window, new
        return [UpdateSettings(new), IncreaseWindow(0, delta)]

    def _rtt_sample(self, rtt: float) -> float:
        self._samples += 1
        if self._samples <= _BOOTSTRAP:
            self._rtt += (rtt - self._rtt) / self._samples
        else:
            self._rtt += (rtt - self._rtt) * _ALPHA
        return self._rtt


class CreditLedger:
    """Receive-side credit of one connection (see the module docstring)."""

    __slots__ = ("_budget", "_conn_owed", "_held", "_held_total", "_owed", "_tuner")

    def __init__(self, tuner: AdaptiveWindow, held_budget: int) -> None:
        self._tuner = tuner
        self._budget = held_budget
        self._conn_owed = 0
        self._owed: dict[int, int] = {}  # stream -> credit to hand back
        self._held: dict[int, int] = {}  # stream -> credit held while paused
        self._held_total = 0

    @property
    def held(self) -> int:
        """Bytes whose stream credit paused streams hold."""
        return self._held_total

    def received(self, stream_id: int, nbytes: int, *, hold: bool, credit: bool) -> None:
        """``nbytes`` flow-controlled bytes arrived on ``stream_id``. ``hold``: its consumer
        is paused; ``credit=False``: the stream needs no more window (ended, or unknown)."""
        self._conn_owed += nbytes
        if not credit:
            return
        table = self._held if hold else self._owed
        table[stream_id] = table.get(stream_id, 0) + nbytes
        if hold:
            self._held_total += nbytes

    def release(self, stream_id: int) -> None:
        """The stream's consumer resumed: its held credit is owed now."""
        held = self._held.pop(stream_id, 0)
        if held:
            self._held_total -= held
            self._owed[stream_id] = self._owed.get(stream_id, 0) + held

    def forget(self, stream_id: int) -> None:
        """The stream is closed (or needs no more window): drop its credit."""
        self._owed.pop(stream_id, None)
        self._held_total -= self._held.pop(stream_id, 0)

    def updates(self) -> list[IncreaseWindow]:
        """The WINDOW_UPDATEs due now (streams first, then the connection)."""
        half = self._tuner.window >> 1
        out = [IncreaseWindow(sid, n) for sid, n in self._owed.items() if n >= half]
        for cmd in out:
            del self._owed[cmd.stream_id]
        if self._conn_owed >= half and self._held_total <= self._budget:
            out.append(IncreaseWindow(0, self._conn_owed))
            self._conn_owed = 0
        return out
