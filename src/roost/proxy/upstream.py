"""Upstream HTTP/1.1 connections (edge -> host proxy or instance; host proxy -> instance).

:class:`UpstreamConnection` is an ``asyncio.Protocol`` driving httptools'
``HttpResponseParser``. One request at a time is bound to it through an
:class:`UpstreamSink` (the :class:`~roost.proxy.forward.Exchange`): the connection writes
the request it is given and streams the response back as sink callbacks, then returns
itself to the :class:`UpstreamPool` (reusable) or closes (not).

Response framing: ``Content-Length``, chunked, or close-delimited (completes on a clean
EOF); responses to HEAD and 1xx/204/304 responses have no body. Interim 1xx responses
(``100 Continue``, ``103 Early Hints``) are passed on as they come; ``101`` answers a
request sent with ``upgrade=True`` by turning the connection into one side of a
:class:`~roost.proxy.tunnel.Tunnel` (otherwise it is an error). A connection that ends
before the response is complete is reported with :func:`errors.upstream_lost` (never
retry-safe: the instance may have seen the request). A chunked response's framing and its
trailers are bounded (:mod:`roost.proxy.chunkframing`, the pool's ``max_head_bytes``):
beyond, the connection is dropped as a bad response.

Flow control, both ways: the sink is told when this connection's write buffer is full
(it pauses reading the client), and the sink pauses this connection's reading while the
client's write buffer is full.

Connections come from and go back to an
:class:`~roost.proxy.upstream_pool.UpstreamPool` (:mod:`roost.proxy.upstream_pool`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from roost.proxy import errors
from roost.proxy.chunkframing import TOO_LONG, ChunkFraming
from roost.proxy.headers import Headers, ResponseInfo
from roost.proxy.routes import Backend
from roost.proxy.tunnel import UPSTREAM, Tunnel

if TYPE_CHECKING:
    from roost.proxy.upstream_pool import UpstreamPool

__all__ = ["UpstreamConnection", "UpstreamSink", "pool_key"]

Key = str | tuple[str, int]  # a backhaul address, or an instance's (host, port)


def pool_key(backend: Backend) -> Key:
    """Connections are pooled per host proxy (backhaul address), else per instance address."""
    return backend.backhaul or (backend.host, backend.port)


class UpstreamSink(Protocol):
    """What an upstream connection reports to (one request's exchange)."""

    def upstream_interim(self, status: int, reason: bytes, headers: Headers) -> None: ...
    def upstream_head(self, status: int, reason: bytes, headers: Headers) -> ResponseInfo: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_end(self, trailers: Headers) -> None: ...
    def upstream_failed(self, err: errors.ProxyError) -> None: ...
    def upstream_flush(self) -> None: ...
    def upstream_write_paused(self) -> None: ...
    def upstream_write_resumed(self) -> None: ...
    def upstream_upgraded(
        self, conn: UpstreamConnection, status: int, reason: bytes, headers: Headers, rest: bytes
    ) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to an instance; carries one request at a time."""

    def __init__(self, pool: UpstreamPool, key: Key, instance_id: str) -> None:
        self.pool = pool
        self.key = key
        self.instance_id = instance_id
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.in_pool = False
        self.idle_since = 0.0
        self.requests = 0  # requests sent so far; > 1 means this one is on a reused conn
        self._sink: UpstreamSink | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._parser_dirty = False
        self._pending: list[bytes] = []
        self._chunked = False  # request body framing
        self._request_done = False
        self._head_request = False
        self._reason = b""
        self._headers: Headers = []
        self._trailers: Headers = []
        self._head_done = False  # final (non-1xx) response head seen
        self._head_bytes = 0
        self._trailer_bytes = 0
        self._framing: ChunkFraming | None = None  # a chunked response's framing bound
        self._body_in = 0  # response body bytes received on this connection, ever
        self._skip_rest = False  # response complete at its head (HEAD); ignore parser
        self._eof_framed = False
        self._keep_alive = False
        self._interim = False
        self._error: errors.ProxyError | None = None
        self._done: UpstreamSink | None = None  # finished, not yet told (see _finish)
        self._reusable = False
        self._done_trailers: Headers = []
        self._upgrade_ok = False  # the request asked for an upgrade: a 101 may come
        self._switching = False  # the response is a 101
        self.tunnel: Tunnel | None = None  # set once upgraded
        self._reading_paused = False

    # -- used by the exchange ---------------------------------------------------------

    def send_request(
        self,
        sink: UpstreamSink,
        head: bytes,
        *,
        chunked: bool,
        has_body: bool,
        head_req: bool,
        upgrade: bool = False,
    ) -> None:
        """Bind ``sink`` and queue a request head (call :meth:`flush` to write)."""
        self._sink = sink
        self.requests += 1
        if self._parser_dirty:
            self._parser = httptools.HttpResponseParser(self)
            self._parser_dirty = False
        self._chunked = chunked
        self._request_done = not has_body
        self._head_request = head_req
        self._upgrade_ok = upgrade
        self._switching = False
        self._head_done = self._skip_rest = self._eof_framed = self._interim = False
        self._head_bytes = self._trailer_bytes = 0
        self._framing = None
        self._error = None
        self._reason = b""  # (reset here, not in on_message_begin: one callback less)
        self._headers = []
        self._trailers = []
        self._pending.append(head)

    def send_body(self, data: bytes) -> None:
        """Queue request body bytes (re-framed as chunks for a chunked request)."""
        if self._chunked:
            self._pending += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self._pending.append(data)

    def send_end(self) -> None:
        """Queue the end of the request body."""
        if self._chunked:
            self._pending.append(b"0\r\n\r\n")
        self._request_done = True

    def flush(self) -> None:
        """Write everything queued since the last flush in one call."""
        pending = self._pending
        if pending and self.transport is not None and not self.closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()

    def pause_reading(self) -> None:
        """Stop reading the response (the client cannot keep up)."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self._reading_paused = True

    def resume_reading(self) -> None:
        """Resume reading the response."""
        if self._reading_paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            self._reading_paused = False

    def abort(self) -> None:
        """Drop the connection at once, detaching the sink (no callbacks follow)."""
        self._sink = None
        self.close(abort=True)

    def close(self, *, abort: bool = False) -> None:
        """Close the connection."""
        if not self.closed:
            self.closed = True
            self.pool.closed += 1
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort() if abort else self.transport.close()

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.received(UPSTREAM, data)
            return
        sink = self._sink
        if sink is None:  # bytes on an idle connection: the server is confused
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._upgrade_ok and self._switching:
                self._sink = None
                sink.upstream_upgraded(self, 101, self._reason, self._headers, data[exc.args[0] :])
                return
            self._fail(errors.upstream_bad_response(self.instance_id, "unexpected upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(self._error or errors.upstream_bad_response(self.instance_id, str(exc)))
        else:
            if not self._head_done and self._sink is not None:
                self._head_bytes += len(data)
                if self._head_bytes > self.pool.max_head_bytes:
                    self._fail(errors.upstream_bad_response(self.instance_id, "head too large"))
            framing = self._framing
            if (
                framing is not None
                and self._sink is not None
                and not framing.read(len(data), self._body_in)
            ):
                self._fail(errors.upstream_bad_response(self.instance_id, TOO_LONG))
        self._deliver_end()
        sink.upstream_flush()

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return self.tunnel.eof(UPSTREAM)
        return False  # close; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.closed += 1
        self.pool.forget(self)
        if self.tunnel is not None:
            self.tunnel.lost(UPSTREAM)
            return
        sink, self._sink = self._sink, None
        if sink is None:
            return
        if exc is None and self._head_done and self._eof_framed:
            self._sink = sink
            self._finish()  # a close-delimited response ends at a clean EOF
            self._deliver_end()
        else:
            sink.upstream_failed(
                errors.upstream_lost(
                    self.instance_id,
                    response_started=self._head_done,
                    reused=self.requests > 1,
                )
            )
        sink.upstream_flush()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pause(UPSTREAM)
        elif self._sink is not None:
            self._sink.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume(UPSTREAM)
        elif self._sink is not None:
            self._sink.upstream_write_resumed()

    # -- httptools callbacks ----------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:  # a trailer field: bounded like a head
            self._trailers.append((name, value))
            self._trailer_bytes += len(name) + len(value)
            if self._trailer_bytes > self.pool.max_head_bytes:
                self._error = errors.upstream_bad_response(self.instance_id, "trailers too large")
                raise self._error
        else:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        sink = self._sink
        if sink is None or self._skip_rest:
            raise _Stray()
        status = self._parser.get_status_code()
        if status < 200:
            self._interim = True
            self._switching = status == 101
            if status != 101:  # 101 makes feed_data raise HttpParserUpgrade
                sink.upstream_interim(status, self._reason, self._headers)
                self._reason = b""  # the final response's head follows
                self._headers = []
            return
        self._head_done = True
        self._keep_alive = self._parser.should_keep_alive()
        info = sink.upstream_head(status, self._reason, self._headers)
        if info.bad_framing is not None:
            self._error = errors.upstream_bad_response(self.instance_id, info.bad_framing)
            raise self._error
        if self._head_request:
            # httptools cannot be told "no body follows": finish here, use a fresh parser
            # for the next response, and ignore whatever this one still reports.
            self._skip_rest = self._parser_dirty = True
            self._finish()
        elif info.chunked:
            self._framing = ChunkFraming(self.pool.max_head_bytes)
        elif info.content_length is None and status not in (204, 304):
            self._eof_framed = True

    def on_chunk_header(self) -> None:
        if self._framing is not None:
            self._framing.chunks += 1

    def on_body(self, data: bytes) -> None:
        if self._skip_rest or self._sink is None:
            raise _Stray()
        self._body_in += len(data)
        self._sink.upstream_body(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif not self._skip_rest:
            self._finish()

    # -- internals --------------------------------------------------------------------

    def _finish(self) -> None:
        """The response is complete: detach the sink; :meth:`_deliver_end` tells it.

        Telling it (and pooling this connection) waits until the parser has returned, so
        no new request can be bound while the old parser is still running, and the
        connection is already back in the pool when the client's next request looks.
        """
        self._done, self._sink = self._sink, None
        self._done_trailers = self._trailers
        self._reusable = self._keep_alive and self._request_done and not self._eof_framed

    def _deliver_end(self) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        if self._reusable and not self.closed:
            self.pool.release(self)
        else:
            self.close()
        done.upstream_end(self._done_trailers)

    def _fail(self, err: errors.ProxyError) -> None:
        sink, self._sink = self._sink, None
        self.close(abort=True)
        if sink is not None:
            sink.upstream_failed(err)


class _Stray(Exception):
    """Bytes the upstream sent that no request asked for."""
