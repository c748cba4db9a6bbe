"""HTTP/2 requests at the edge without sockets: the fields prepared once, the HTTP/2
backhaul header block built from them (no re-parse), the HTTP/1.1 head for direct
backends, and what counts as a refusal."""

from __future__ import annotations

import pytest

from roost.proxy import backhaul, errors
from roost.proxy.edge_context import _prepare_h2
from roost.proxy.exchange_response import _refusal_reason
from roost.proxy.forward import _h1_head
from roost.proxy.h2backhaul import request_block

TAIL = ((b"X-Forwarded-Proto", b"http"), (b"Via", b"1.1 roost"))


def test_block_from_prepared_fields() -> None:
    """Host becomes :authority, names are lower-cased, hop-by-hop and client roost-* go."""
    fields, info = _prepare_h2(
        b"POST",
        b"/a?b",
        [(b"host", b"x.localhost"), (b"roost-secret", b"1"), (b"transfer-encoding", b"chunked")],
        TAIL,
        b"10.0.0.1",
        b"rid1",
    )
    assert info.chunked and info.host == b"x.localhost"
    assert request_block(b"POST", b"/a?b", fields) == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"x.localhost"),
        (b":path", b"/a?b"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"via", b"1.1 roost"),
        (b"roost-request-id", b"rid1"),
    ]


@pytest.mark.parametrize(
    ("method", "target", "headers", "status"),
    [
        (b"CONNECT", b"/", [(b"host", b"x")], 405),
        (b"GET", b"x", [(b"host", b"x")], 400),
        (b"GET", b"/", [], 400),
        (b"GET", b"/", [(b"host", b"x"), (b"content-length", b"1x")], 400),
    ],
)
def test_prepare_h2_rejects(method: bytes, target: bytes, headers: list, status: int) -> None:
    """What the edge never forwards: CONNECT, a non-origin :path, no :authority, bad framing."""
    with pytest.raises(errors.ProxyError) as exc:
        _prepare_h2(method, target, headers, TAIL, b"1.2.3.4", b"r")
    assert exc.value.status == status


def test_h1_head_for_a_direct_backend() -> None:
    """A header block turns back into an HTTP/1.1 head (chunked body re-framed)."""
    block = [(b":method", b"PUT"), (b":scheme", b"http"), (b":authority", b"h"), (b":path", b"/")]
    head = _h1_head([*block, (b"x-a", b"1")], chunked=True)
    assert head == b"PUT / HTTP/1.1\r\nhost: h\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_refused_stream_error_carries_its_reason() -> None:
    """A refusal error (e.g. from REFUSED_STREAM) reads as Roost-Refused's reason."""
    assert _refusal_reason(backhaul.refusal(backhaul.FULL, "i1")) == backhaul.FULL
    assert _refusal_reason(backhaul.refusal(backhaul.UNREACHABLE, "i1")) == backhaul.UNREACHABLE
