"""h2c prior-knowledge detection and the hand-over of a connection to the HTTP/2 codec."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.preface import H2_PREFACE, PrefaceSniffer, detect_preface


def test_every_prefix_is_undecided_and_the_whole_is_h2() -> None:
    """Any strict prefix of the preface needs more bytes; the preface (+ more) is h2c."""
    for n in range(len(H2_PREFACE)):
        assert detect_preface(H2_PREFACE[:n]) is None
    assert detect_preface(H2_PREFACE) is True
    assert detect_preface(H2_PREFACE + b"\x00\x00\x00\x04") is True


@given(st.binary(max_size=40))
def test_http1_is_never_h2(data: bytes) -> None:
    """Bytes that diverge from the preface are HTTP/1 at once."""
    verdict = detect_preface(data)
    if data[: len(H2_PREFACE)] == H2_PREFACE[: len(data)]:
        assert verdict is (True if len(data) >= len(H2_PREFACE) else None)
    else:
        assert verdict is False
    assert detect_preface(b"GET / HTTP/1.1\r\n") is False
    assert detect_preface(b"PRI * HTTP/1.1\r\n") is False


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connection_made(self, transport: Any) -> None:
        self.calls.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))


class FakeTransport:
    def __init__(self) -> None:
        self.protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


def test_http1_keeps_the_connection() -> None:
    """HTTP/1 bytes: the HTTP/1 protocol gets the transport and the bytes; no h2 made."""
    h1, made = Recorder(), []
    sniffer = PrefaceSniffer(h1, lambda: made.append(1) or Recorder())  # type: ignore[func-returns-value]
    transport = FakeTransport()
    sniffer.connection_made(transport)  # type: ignore[arg-type]
    sniffer.data_received(b"GET / HTTP/1.1\r\n")
    assert transport.protocol is h1 and not made
    assert h1.calls == [("made", transport), ("data", b"GET / HTTP/1.1\r\n")]


def test_h2_takes_over_even_from_a_trickle() -> None:
    """A preface split over reads is buffered; then HTTP/1 lets go and h2 gets it all."""
    h1, h2 = Recorder(), Recorder()
    sniffer = PrefaceSniffer(h1, lambda: h2)
    transport = FakeTransport()
    sniffer.connection_made(transport)  # type: ignore[arg-type]
    sniffer.data_received(H2_PREFACE[:1])
    sniffer.data_received(H2_PREFACE[1:10])
    assert transport.protocol is None and h1.calls == [("made", transport)]
    sniffer.data_received(H2_PREFACE[10:] + b"frames")
    assert transport.protocol is h2
    assert h1.calls == [("made", transport), ("lost", None)]
    assert h2.calls == [("made", transport), ("data", H2_PREFACE + b"frames")]
