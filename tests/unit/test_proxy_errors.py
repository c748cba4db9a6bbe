"""Proxy errors: one place that turns failures into responses."""

from __future__ import annotations

import httptools
import pytest

from roost.proxy import errors
from roost.proxy.errors import ProxyError, render


class Parsed:
    def __init__(self, data: bytes) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.done = False
        parser = httptools.HttpResponseParser(self)
        parser.feed_data(data)
        self.status = parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def test_render_is_a_complete_response() -> None:
    """render() gives a whole, parseable response with a one-line plain-text body."""
    parsed = Parsed(render(errors.no_app("x.localhost"), request_id=b"r1"))
    assert parsed.done and parsed.status == 404
    assert parsed.body == b'no app for host "x.localhost"\n'
    assert parsed.headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert parsed.headers[b"content-length"] == str(len(parsed.body)).encode()
    assert parsed.headers[b"roost-request-id"] == b"r1"
    assert b"connection" not in parsed.headers


def test_render_close() -> None:
    """Errors that break framing say Connection: close; the caller can force it either way."""
    assert Parsed(render(errors.bad_request("x"))).headers[b"connection"] == b"close"
    assert b"connection" not in Parsed(render(errors.bad_request("x"), close=False)).headers
    assert Parsed(render(errors.no_instances("a"), close=True)).headers[b"connection"] == b"close"


def test_client_supplied_text_is_sanitized() -> None:
    """A hostile Host cannot inject lines or quotes into the body."""
    body = Parsed(render(errors.no_app('evil"\r\nX-Injected: 1' + "a" * 500))).body
    assert body.count(b"\n") == 1 and b"\r" not in body
    assert body.startswith(b'no app for host "evil?') and body.endswith(b'"...\n')
    assert len(body) < 200


@pytest.mark.parametrize(
    ("err", "status", "reason", "origin", "close"),
    [
        (errors.bad_request("x"), 400, "bad_request", "client", True),
        (errors.header_too_large(1), 431, "header_too_large", "client", True),
        (errors.uri_too_long(1), 414, "uri_too_long", "client", True),
        (errors.method_not_allowed("CONNECT"), 405, "method_not_allowed", "client", True),
        (errors.version_not_supported("2.0"), 505, "version_not_supported", "client", True),
        (errors.request_timeout(), 408, "request_timeout", "client", True),
        (errors.no_app("h"), 404, "no_app", "edge", False),
        (errors.no_instances("a"), 503, "no_instances", "edge", False),
        (errors.unknown_instance("a", "i"), 404, "unknown_instance", "edge", False),
        (errors.upstream_bad_response("i", "x"), 502, "upstream_bad_response", "upstream", False),
        (errors.upstream_timeout("i", 1.5), 504, "upstream_timeout", "upstream", False),
    ],
)
def test_error_catalogue(
    err: ProxyError, status: int, reason: str, origin: str, close: bool
) -> None:
    """Each error carries its status, code, origin and whether it closes the connection."""
    assert (err.status, err.reason, err.origin, err.close) == (status, reason, origin, close)
    assert not err.retry_safe


def test_connect_failure_is_retry_safe() -> None:
    """A failed connect never reached the instance: try the next one."""
    err = errors.upstream_connect_failed("i-1", ConnectionRefusedError())
    assert err.retry_safe and err.status == 502 and err.reason == "upstream_connect_failed"
    assert "ConnectionRefusedError" in err.message
    assert "timed out" in errors.upstream_connect_failed("i-1", TimeoutError()).message


@pytest.mark.parametrize("reused", [True, False])
@pytest.mark.parametrize("started", [True, False])
def test_upstream_lost_is_never_retry_safe(reused: bool, started: bool) -> None:
    """A connection lost with the request on it: the instance may have seen it, never replay."""
    err = errors.upstream_lost("i", response_started=started, reused=reused)
    assert not err.retry_safe
    assert err.reason == "upstream_reset" and err.status == 502
    assert ("reused" if reused else "new") in err.message


def test_upstream_unavailable_summarizes() -> None:
    """When every backend failed, the answer says how many were tried and the last error."""
    last = errors.upstream_connect_failed("i-3", ConnectionRefusedError())
    err = errors.upstream_unavailable("demo", 3, last)
    assert err.status == 502 and not err.retry_safe
    assert err.message.startswith('could not reach any instance of app "demo" (3 tried;')


def test_repr() -> None:
    """ProxyError's repr shows its fields."""
    assert "retry_safe=True" in repr(errors.upstream_connect_failed("i", OSError()))


def test_at_capacity_is_shared_and_renders_per_request() -> None:
    """The flood answer is one object per (app, reason); each rendering still carries its own
    request id and the caller's close/HEAD choices."""
    from roost.proxy import errors as e

    err = e.at_capacity("flooded")
    assert e.at_capacity("flooded") is err
    assert e.at_capacity("flooded", "queue_full") is not err
    one = e.render(err, request_id=b"r1")
    two = e.render(err, request_id=b"r2", close=True)
    assert b"Roost-Request-Id: r1\r\n" in one and b"Roost-Request-Id: r2\r\n" in two
    assert b"Connection: close" not in one and b"Connection: close\r\n" in two
    assert one.endswith(b'\r\n\r\napp "flooded" is at capacity, try again shortly\n')
    head = e.render(err, request_id=b"r3", head=True)
    assert head.endswith(b"Retry-After: 1\r\n\r\n") and b"Content-Length: 48\r\n" in head
    assert e.render(err) == one.replace(b"Roost-Request-Id: r1\r\n", b"")
    for i in range(e._AT_CAPACITY_MAX + 5):
        e.at_capacity(f"app{i}")
    assert len(e._AT_CAPACITY) <= e._AT_CAPACITY_MAX
