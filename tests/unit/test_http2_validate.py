"""The client-facing codec's per-request checks: the fast path (and its memory of the last
block it passed) never lets a malformed request through."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from roost.proxy import h2limits as lim
from roost.proxy.http2 import _REQUEST, H2ClientConnection

GET = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"app.localhost"),
    (b":path", b"/"),
    (b"user-agent", b"t"),
]


@pytest.fixture
def conn() -> H2ClientConnection:
    ctx = SimpleNamespace(loop=SimpleNamespace(time=lambda: 0.0), role="edge")
    return H2ClientConnection(ctx, registry=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        [*GET, (b"host", b"other.localhost")],  # host differs from :authority
        [*GET[:4], (b"user-agent", b"t\r\nx: y")],  # CR/LF in a value
        [*GET[:4], (b"user-agent", b" t")],  # leading whitespace
        [*GET, (b":path", b"/again")],  # a pseudo-header twice, out of place
    ],
)
def test_malformed_after_a_valid_block_is_reset(conn: H2ClientConnection, bad: list) -> None:
    """A repeated valid block passes; a malformed one still resets its stream afterwards."""
    assert conn._validate(1, list(GET), _REQUEST) is lim.OK
    assert conn._validate(3, list(GET), _REQUEST) is lim.OK
    verdict = conn._validate(5, bad, _REQUEST)
    assert isinstance(verdict, lim.ResetStream)
    assert (verdict.stream_id, verdict.error_code) == (5, lim.PROTOCOL_ERROR)
    assert conn._validate(7, list(GET), _REQUEST) is lim.OK
