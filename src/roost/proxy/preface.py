"""HTTP/1.x and h2c (HTTP/2 with prior knowledge) on one port: look at the first bytes.

An HTTP/2 client with prior knowledge opens with the 24-byte connection preface
``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``; no valid HTTP/1.x request starts that way.
:func:`detect_preface` answers from any prefix of the first bytes, and
:class:`PrefaceSniffer` is the ``asyncio.Protocol`` a listener creates per connection:

    lambda: PrefaceSniffer(ClientConnection(ctx, registry),
                           lambda: H2ClientConnection(ctx, registry))

The HTTP/1 protocol gets ``connection_made`` at once (so its registry entry, idle and head
deadlines and draining behave exactly as without the sniffer). The first bytes decide:
HTTP/1 -> the transport is handed to it for good; h2c -> the HTTP/1 protocol is told the
connection is gone (``connection_lost(None)``: it unregisters, it never saw a byte) and the
transport goes to a new HTTP/2 protocol with the bytes read so far. A partial preface is
buffered until it can be told apart (the HTTP/1 head deadline still runs meanwhile).

At the edge the sniffer also takes a new connection's first bytes through the work gate
(``gate``). ``key(first_bytes)`` says under which key: :data:`~roost.proxy.workgate.NEW`
(capped, always) when the bytes do not show an app; the app when they show a request for
an app at capacity (:func:`peek_host` finds its Host: a new connection for a flooded app
waits in that app's line, not in front of other apps' new connections); None when they
show a request for an app with room (handled at once, like a request on an open
connection). Beyond the turn's batch the bytes are kept and reading pauses (so no EOF
overtakes them) until the gate releases the connection in a later loop turn; then they are
handled as above. A request let through under its app's key is not gated a second time
when the HTTP/1 protocol parses it (``gate_pass()``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

from roost.proxy.workgate import NEW, WorkGate

__all__ = ["H2_PREFACE", "PEEK_MAX", "PrefaceSniffer", "detect_preface", "peek_host"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PEEK_MAX = 8192  # bytes of a first read that peek_host looks at
_HOST = b"\r\nhost:"


class GatePass(Protocol):
    def gate_pass(self) -> None:
        """The work gate let this connection's next request through: do not gate it again."""
        ...


def _always_new(data: bytes) -> str | None:
    return NEW


def peek_host(data: bytes) -> bytes | None:
    """The Host field value of the HTTP/1.x request head that ``data`` starts with, when the
    whole head is within the first :data:`PEEK_MAX` bytes and has exactly one Host field;
    else None. Not a parser: it only picks a work-gate line for the first request (the
    parser then checks the head as always, and routes by what it finds)."""
    end = data.find(b"\r\n\r\n", 0, PEEK_MAX)
    if end < 0:
        return None
    head = data[: end + 2].lower()
    i = head.find(_HOST)
    if i < 0 or head.find(_HOST, i + 7) >= 0:
        return None
    return data[i + 7 : head.find(b"\r\n", i + 7)].strip(b" \t")


def detect_preface(data: bytes) -> bool | None:
    """True: ``data`` starts with the h2c preface; False: it cannot; None: too short to tell."""
    n = min(len(data), len(H2_PREFACE))
    if data[:n] != H2_PREFACE[:n]:
        return False
    return True if n == len(H2_PREFACE) else None


class PrefaceSniffer(asyncio.Protocol):
    """Routes one connection to the HTTP/1 protocol or a new HTTP/2 one by its first bytes."""

    __slots__ = ("_buffer", "_gate", "_h1", "_held", "_key", "_make_h2", "_passed", "_transport")

    def __init__(
        self,
        h1: asyncio.Protocol,
        make_h2: Callable[[], asyncio.Protocol],
        gate: WorkGate | None = None,
        key: Callable[[bytes], str | None] = _always_new,
    ) -> None:
        self._h1 = h1
        self._make_h2 = make_h2
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._gate = gate  # None once the first bytes went through it
        self._key = key
        self._held: bytes | None = None  # first bytes waiting for the gate
        self._passed = False  # admitted under their app's key (not to be gated again)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._h1.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        gate = self._gate
        if gate is not None:
            self._gate = None
            key = self._key(data)
            if key is not None:
                self._passed = key != NEW
                if not gate.admit(key, self):  # it called gate_hold(): reading is paused
                    self._held = data
                    return
        self._sniff(data)

    def gate_hold(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def gate_release(self) -> None:
        data, self._held = self._held, None
        transport = self._transport
        if transport is None or data is None:
            return  # closed meanwhile
        transport.resume_reading()
        self._sniff(data)

    def _sniff(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        data = self._buffer + data if self._buffer else data
        kind = detect_preface(data)
        if kind is None:
            self._buffer = data
            return
        self._buffer = b""
        if kind:
            self._h1.connection_lost(None)
            proto = self._make_h2()
            transport.set_protocol(proto)
            proto.connection_made(transport)
        else:
            proto = self._h1
            transport.set_protocol(proto)
            if self._passed:
                self._passed = False
                cast(GatePass, proto).gate_pass()
        proto.data_received(data)

    def eof_received(self) -> bool | None:
        return self._h1.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None  # no transport <-> protocol cycle left behind
        self._h1.connection_lost(exc)

    def pause_writing(self) -> None:
        self._h1.pause_writing()

    def resume_writing(self) -> None:
        self._h1.resume_writing()
