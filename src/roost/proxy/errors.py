"""Proxy errors and the one place that turns them into HTTP responses.

Every failure the edge answers itself is a :class:`ProxyError` carrying:

- ``status`` / ``reason``: the HTTP status and a short stable code (metrics, logs, tests);
- ``origin``: whose fault it was -- ``"client"`` (bad request), ``"edge"`` (routing),
  ``"upstream"`` (the instance or the way to it);
- ``retry_safe``: True only when the instance cannot have seen the request, so the edge
  may try the next backend (DESIGN.md, "Retry safety");
- ``close``: the client connection must be closed after the response (request framing is
  broken or unknown).

:func:`render` produces the complete response bytes. Bodies are short ``text/plain``
lines meant for humans running curl.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Literal

__all__ = [
    "ProxyError",
    "at_capacity",
    "bad_request",
    "body_too_slow",
    "header_too_large",
    "method_not_allowed",
    "no_app",
    "no_instances",
    "render",
    "request_timeout",
    "unknown_instance",
    "upstream_bad_response",
    "upstream_connect_failed",
    "upstream_lost",
    "upstream_timeout",
    "upstream_unavailable",
    "uri_too_long",
    "version_not_supported",
]

Origin = Literal["client", "edge", "upstream"]


class ProxyError(Exception):
    """A failure the edge answers with its own response."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        origin: Origin,
        retry_safe: bool = False,
        close: bool = False,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.origin: Origin = origin
        self.retry_safe = retry_safe
        self.close = close
        self.headers = headers  # extra response header fields (e.g. Retry-After)
        self._rendered: dict[tuple[bool, bool], tuple[bytes, bytes]] = {}  # see render()

    def __repr__(self) -> str:
        return (
            f"ProxyError({self.status}, {self.reason!r}, {self.message!r}, "
            f"origin={self.origin!r}, retry_safe={self.retry_safe}, close={self.close})"
        )


def render(
    err: ProxyError,
    *,
    request_id: bytes | None = None,
    close: bool | None = None,
    head: bool = False,
) -> bytes:
    """The complete HTTP/1.1 response for ``err``.

    ``close`` overrides ``err.close`` when the caller knows more (the request body is
    still unread, the client asked to close, the edge is draining). ``head``: the answer
    to a HEAD request, so the body is left out (its Content-Length stays).
    """
    close = err.close if close is None else close
    key = (close, head)
    parts = err._rendered.get(key)
    if parts is None:  # once per error object and shape: shared errors render once
        body = err.message.encode("utf-8", "replace") + b"\n"
        phrase = _PHRASES.get(err.status, b"Error")
        first = (
            b"HTTP/1.1 %d %s\r\n" % (err.status, phrase)
            + b"Content-Type: text/plain; charset=utf-8\r\n"
            + b"Content-Length: %d\r\n" % len(body)
        )
        rest = (
            [b"Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"]
            if err.status == 405
            else []
        )
        rest += [name + b": " + value + b"\r\n" for name, value in err.headers]
        if close:
            rest.append(b"Connection: close\r\n")
        rest.append(b"\r\n")
        if not head:
            rest.append(body)
        parts = err._rendered[key] = (first, b"".join(rest))
    if request_id is None:
        return parts[0] + parts[1]
    return b"%sRoost-Request-Id: %s\r\n%s" % (parts[0], request_id, parts[1])


_PHRASES = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


def _quote(text: str, limit: int = 100) -> str:
    """A client-supplied value made safe to echo in a one-line plain-text body."""
    safe = "".join(c if " " <= c <= "~" and c != '"' else "?" for c in text[:limit])
    return f'"{safe}"' + ("..." if len(text) > limit else "")


# -- client errors: the request itself is unacceptable; the connection is closed ---------


def bad_request(detail: str) -> ProxyError:
    """400: malformed or ambiguous request framing/headers."""
    return ProxyError(400, "bad_request", f"bad request: {detail}", origin="client", close=True)


def header_too_large(limit: int) -> ProxyError:
    """431: the request header section is larger than the edge accepts."""
    return ProxyError(
        431,
        "header_too_large",
        f"request header section larger than {limit} bytes",
        origin="client",
        close=True,
    )


def uri_too_long(limit: int) -> ProxyError:
    """414: the request target is longer than the edge accepts."""
    return ProxyError(
        414,
        "uri_too_long",
        f"request target longer than {limit} bytes",
        origin="client",
        close=True,
    )


def method_not_allowed(method: str) -> ProxyError:
    """405: a method the edge does not proxy (CONNECT)."""
    return ProxyError(
        405, "method_not_allowed", f"method {method} is not supported", origin="client", close=True
    )


def version_not_supported(version: str) -> ProxyError:
    """505: anything but HTTP/1.0 and HTTP/1.1 on an HTTP/1 connection."""
    return ProxyError(
        505,
        "version_not_supported",
        f"HTTP/{version} is not supported",
        origin="client",
        close=True,
    )


def request_timeout() -> ProxyError:
    """408: the client did not finish sending the request head in time."""
    return ProxyError(
        408, "request_timeout", "timed out reading the request", origin="client", close=True
    )


def body_too_slow(min_rate: int) -> ProxyError:
    """408: the request body arrives slower than the minimum rate."""
    return ProxyError(
        408,
        "body_too_slow",
        f"request body slower than {min_rate} bytes/s",
        origin="client",
        close=True,
    )


# -- edge errors: routing found nothing to send the request to ---------------------------


def no_app(host: str) -> ProxyError:
    """404: no app is routed at this Host."""
    return ProxyError(404, "no_app", f"no app for host {_quote(host)}", origin="edge")


def no_instances(app: str) -> ProxyError:
    """503: the app exists but has no running instances."""
    return ProxyError(
        503, "no_instances", f"app {_quote(app)} has no running instances", origin="edge"
    )


def at_capacity(app: str, reason: str = "at_capacity") -> ProxyError:
    """503: every instance of the app is at its hard limit (after the bounded wait, or at
    once when the app's wait queue is full).

    The answer a flooded app's excess requests get, thousands a second: one shared instance
    per (app, reason) (bounded), never raised, so it carries no traceback to share."""
    key = (app, reason)
    err = _AT_CAPACITY.get(key)
    if err is None:
        if len(_AT_CAPACITY) >= _AT_CAPACITY_MAX:
            _AT_CAPACITY.clear()
        err = _AT_CAPACITY[key] = ProxyError(
            503,
            reason,
            f"app {_quote(app)} is at capacity, try again shortly",
            origin="edge",
            headers=((b"Retry-After", b"1"),),
        )
    return err


_AT_CAPACITY: dict[tuple[str, str], ProxyError] = {}
_AT_CAPACITY_MAX = 1024


def unknown_instance(app: str, instance_id: str) -> ProxyError:
    """404: ``Roost-Force-Instance-Id`` names no instance of this app."""
    return ProxyError(
        404,
        "unknown_instance",
        f"app {_quote(app)} has no instance {_quote(instance_id)}",
        origin="edge",
    )


# -- upstream errors: the instance or the way to it failed --------------------------------


def upstream_connect_failed(instance_id: str, exc: BaseException) -> ProxyError:
    """502, retry-safe: connecting failed, the instance never saw the request."""
    what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    return ProxyError(
        502,
        "upstream_connect_failed",
        f"could not connect to instance {_quote(instance_id)} ({what})",
        origin="upstream",
        retry_safe=True,
    )


def upstream_lost(instance_id: str, *, response_started: bool, reused: bool) -> ProxyError:
    """502: the upstream connection closed or reset while a request was on it.

    Never retry-safe: once request bytes were written the instance may have seen them
    (DESIGN.md: never replay a request an app may have processed), whatever the method --
    a GET can have effects too. That includes a reused keep-alive connection the instance
    closed just as the request went out: the pools keep reading idle connections (a close
    is seen before reuse) and expire them before the instances' own keep-alive timeout, so
    that race is narrow, and a 502 beats a request run twice. A reset after response bytes
    also closes the client connection, since the response is truncated.
    """
    where = "a reused" if reused else "a new"
    when = "mid-response" if response_started else "before responding"
    return ProxyError(
        502,
        "upstream_reset",
        f"instance {_quote(instance_id)} closed {where} connection {when}",
        origin="upstream",
    )


def upstream_bad_response(instance_id: str, detail: str) -> ProxyError:
    """502: the instance sent something that is not a valid HTTP/1.1 response."""
    return ProxyError(
        502,
        "upstream_bad_response",
        f"instance {_quote(instance_id)} sent an invalid response: {detail}",
        origin="upstream",
    )


def upstream_timeout(instance_id: str, seconds: float) -> ProxyError:
    """504: no response head from the instance within the response timeout."""
    return ProxyError(
        504,
        "upstream_timeout",
        f"instance {_quote(instance_id)} did not respond within {seconds:g}s",
        origin="upstream",
    )


def upstream_unavailable(app: str, tried: int, last: ProxyError) -> ProxyError:
    """502: every backend was tried and each attempt failed retry-safely."""
    return ProxyError(
        502,
        last.reason,
        f"could not reach any instance of app {_quote(app)} ({tried} tried; last: {last.message})",
        origin="upstream",
    )
