"""The backhaul protocol (pure): naming the instance, refusals, the host's view of a head."""

from __future__ import annotations

import pytest

from roost.proxy import backhaul
from roost.proxy.errors import ProxyError, render
from roost.proxy.headers import prepare_response


def test_with_instance_appends_the_header() -> None:
    """Roost-Instance goes at the end of the head, before the blank line."""
    head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert backhaul.with_instance(head, "i-1") == (
        b"GET / HTTP/1.1\r\nHost: a\r\nRoost-Instance: i-1\r\n\r\n"
    )


def test_host_head_reads_and_drops_instance_keeps_roost_fields() -> None:
    """The host proxy drops Roost-Instance, keeps the edge's Roost-* fields and framing."""
    head, info = backhaul.prepare_host_head(
        b"POST",
        "1.1",
        b"/x",
        [
            (b"Host", b"demo.localhost"),
            (b"Roost-Instance", b"i-1"),
            (b"Roost-Request-Id", b"r1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"keep-alive"),
        ],
    )
    assert info.instance == b"i-1" and info.chunked
    assert head == (
        b"POST /x HTTP/1.1\r\nHost: demo.localhost\r\nRoost-Request-Id: r1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"1"), (b"Content-Length", b"1")],
        [(b"Content-Length", b"x")],
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")],
    ],
)
def test_host_head_rejects_ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> None:
    """What no edge sends is a 400 at the host proxy too."""
    with pytest.raises(ProxyError) as err:
        backhaul.prepare_host_head(b"POST", "1.1", b"/", headers)
    assert err.value.status == 400


def test_refusal_is_recognised_by_the_edge() -> None:
    """The host's refusal response parses back to info.refused on the edge."""
    wire = render(backhaul.refusal(backhaul.FULL, "i-1"))
    assert wire.startswith(b"HTTP/1.1 503 ") and b"\r\nRoost-Refused: full\r\n" in wire
    _, info = prepare_response([(b"Roost-Refused", b"full"), (b"Content-Length", b"0")], b"r")
    assert info.refused == b"full"


def test_refused_field_is_stripped_from_forwarded_responses() -> None:
    """Roost-Refused never goes on to a client (or from an app through the host)."""
    out, _ = prepare_response([(b"Roost-Refused", b"full")], None)
    assert out == []


def test_parse_address() -> None:
    """unix and tcp backhaul addresses; anything else is an error."""
    assert backhaul.parse_address("unix:/a/b.sock") == ("unix", "/a/b.sock", 0)
    assert backhaul.parse_address("tcp:10.0.0.1:4281") == ("tcp", "10.0.0.1", 4281)
    with pytest.raises(ValueError):
        backhaul.parse_address("http://x")
