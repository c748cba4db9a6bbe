"""The edge's TLS listener: peek at the ClientHello, choose a context, let the loop do TLS.

Per accepted socket, with no task until the hello is complete::

    accept --> add_reader --> recv(MSG_PEEK) --> ClientHelloReader (strict, bounded, deadline)
      incomplete  -> SO_RCVLOWAT = bytes seen + 1, so epoll stays quiet until more arrive
      Reject      -> the reader's alert record, close
      ClientHello -> passthrough(hello) gives an address? -> raw TCP to it (:mod:`..passthrough`)
                     else ctx = await choose_context(hello, cache, tls_alpn01)
                       None -> alert ``unrecognized_name``, close
                       ctx  -> loop.connect_accepted_socket(TlsAccepted, sock, ssl=ctx)
    handshake done --> TlsAccepted.connection_made(ssl transport): ``accepted(alpn)`` gives the
                       protocol to hand the decrypted stream to (h2 / HTTP/1.1), or None (close:
                       an ``acme-tls/1`` validation ends with the handshake)

Why peek: the ClientHello stays in the kernel's receive buffer until the loop's own TLS
implementation (uvloop's, in C, or asyncio's) reads it, so nothing is replayed or copied and
the handshake runs on the loop's fast path. SO_RCVLOWAT keeps a split ClientHello from making
the level-triggered reader spin; it is put back to 1 before the socket is handed over.

Bounds: ``max_pending`` sockets may be waiting for their hello (more are closed at accept), each
for at most ``hello_timeout`` seconds; the handshake itself has ``handshake_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from roost.proxy.tls.clienthello import (
    ALERT_DECODE_ERROR,
    ALERT_UNRECOGNIZED_NAME,
    ClientHello,
    ClientHelloReader,
    NeedMore,
    Reject,
    alert_record,
)

log = logging.getLogger("roost.proxy.tls")

__all__ = ["TlsAccepted", "TlsListener"]

Select = Callable[[ClientHello], Awaitable[ssl.SSLContext | None]]
Accepted = Callable[[str | None], asyncio.Protocol | None]
Passthrough = Callable[[ClientHello, socket.socket], Awaitable[None] | None]
_ACCEPT_BATCH = 64


class TlsAccepted(asyncio.Protocol):
    """Placeholder protocol for the handshake; swaps in the real one by ALPN once it is done."""

    __slots__ = ("_accepted",)

    def __init__(self, accepted: Accepted) -> None:
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = transport.get_extra_info("ssl_object")
        alpn = tls.selected_alpn_protocol() if tls is not None else None
        proto = self._accepted(alpn)
        if proto is None:
            transport.close()
            return
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only reached if the connection ends inside connection_made


class _Pending:
    """One accepted socket whose ClientHello is not complete yet."""

    __slots__ = ("listener", "lowat", "reader", "seen", "sock", "timer")

    def __init__(self, listener: TlsListener, sock: socket.socket) -> None:
        self.listener = listener
        self.sock = sock
        self.reader = ClientHelloReader()
        self.seen = 0
        self.lowat = 1
        loop = listener.loop
        self.timer = loop.call_later(listener.hello_timeout, self.close)
        loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        try:
            data = self.sock.recv(self.reader.max_raw, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if len(data) <= self.seen:  # EOF (or nothing new, which SO_RCVLOWAT should prevent)
            self.close()
            return
        result = self.reader.feed(data[self.seen :])
        self.seen = len(data)
        if isinstance(result, NeedMore):
            if self.seen >= self.reader.max_raw:  # the reader's bound, reached by peeking
                self._detach()
                self.fail(alert_record(ALERT_DECODE_ERROR))
            else:
                self._set_lowat(self.seen + 1)
            return
        self._detach()
        if isinstance(result, Reject):
            self.fail(alert_record(result.alert))
            return
        self._set_lowat(1)
        self.listener.hello_complete(result, self.sock)

    def _set_lowat(self, n: int) -> None:
        if n != self.lowat:
            self.lowat = n
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)

    def _detach(self) -> None:
        self.timer.cancel()
        self.listener.loop.remove_reader(self.sock.fileno())
        self.listener.pending.discard(self)

    def fail(self, alert: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(alert)
        self.sock.close()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._detach()
            self.sock.close()


class TlsListener:
    """Accepts TLS connections on a bound socket; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        select: Select,
        accepted: Accepted,
        *,
        passthrough: Passthrough | None = None,
        hello_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        max_pending: int = 4096,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.select = select
        self.accepted = accepted
        self.passthrough = passthrough
        self.hello_timeout = hello_timeout
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.pending: set[_Pending] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.handshakes = 0  # completed handshakes (for tests and metrics)
        self._closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next wake-up
                log.warning("TLS accept failed: %s", exc)
                return
            if len(self.pending) >= self.max_pending:
                conn.close()
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pending.add(_Pending(self, conn))

    def hello_complete(self, hello: ClientHello, sock: socket.socket) -> None:
        """The ClientHello is in: route it (passthrough or terminate) without reading it."""
        task = self.loop.create_task(self._start(hello, sock))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _start(self, hello: ClientHello, sock: socket.socket) -> None:
        handed = False
        try:
            if self.passthrough is not None:
                relay = self.passthrough(hello, sock)
                if relay is not None:
                    handed = True
                    await relay
                    return
            ctx = await self.select(hello)
            if ctx is None:
                with contextlib.suppress(OSError):
                    sock.send(alert_record(ALERT_UNRECOGNIZED_NAME))
                return
            handed = True
            await self.loop.connect_accepted_socket(
                lambda: TlsAccepted(self.accepted),
                sock,
                ssl=ctx,
                ssl_handshake_timeout=self.handshake_timeout,
            )
            self.handshakes += 1
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass  # handshake failed or timed out: the loop has closed the transport
        except Exception:
            log.exception("TLS connection setup failed")
        finally:
            if not handed:
                sock.close()

    def close(self) -> None:
        """Stop accepting; drop sockets still waiting for a hello or a handshake."""
        if self._closed:
            return
        self._closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for pending in list(self.pending):
            pending.close()
        for task in list(self.tasks):
            task.cancel()
