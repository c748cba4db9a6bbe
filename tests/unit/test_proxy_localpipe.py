"""The in-process backhaul pipe behaves like a stream socket to the protocols on its ends:
bytes arrive later (never inside the writer's call), in order, coalesced; flow control both
ways; EOF, close, abort and writes to a closed end as a socket would report them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.proxy import localpipe
from roost.proxy.localpipe import PipeEnd


class Proto(asyncio.Protocol):
    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.events: list[Any] = []
        self.transport: PipeEnd | None = None
        self.keep_open_on_eof = keep_open_on_eof

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, PipeEnd)
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc).__name__ if exc else None))

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")


async def turns(n: int = 3) -> None:
    """Let the loop run ``n`` callbacks' worth (the pipe delivers with call_soon)."""
    for _ in range(n):
        await asyncio.sleep(0)


def pair(server: Proto | None = None, client: Proto | None = None) -> tuple[Proto, Proto, PipeEnd]:
    server = server or Proto()
    client = client or Proto()
    loop = asyncio.get_running_loop()
    end, proto = localpipe.connect(loop, lambda: client, lambda: server, "/x/backhaul.sock")
    assert proto is client and server.events == ["made"] and client.events == ["made"]
    return server, client, end


async def test_bytes_arrive_after_the_write_in_order_and_coalesced() -> None:
    server, client, end = pair()
    end.write(b"GET / HTTP/1.1\r\n")
    end.write(b"Host: a\r\n\r\n")
    assert server.events == ["made"]  # nothing inside the writer's call
    assert end.get_write_buffer_size() == 27
    await turns()
    assert server.events == ["made", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]
    assert end.get_write_buffer_size() == 0
    assert server.transport is not None
    server.transport.write(b"HTTP/1.1 200 OK\r\n")
    await turns()
    assert client.events[-1] == b"HTTP/1.1 200 OK\r\n"


async def test_extra_info_looks_like_the_unix_socket() -> None:
    server, _client, end = pair()
    assert server.transport is not None
    assert server.transport.get_extra_info("peername") == ""
    assert server.transport.get_extra_info("sockname") == "/x/backhaul.sock"
    assert end.get_extra_info("socket") is None  # no kernel queue to ask about


async def test_paused_reading_holds_bytes_and_the_writer_is_paused_past_high() -> None:
    server, client, end = pair()
    assert server.transport is not None
    server.transport.pause_reading()
    end.set_write_buffer_limits(high=100, low=10)
    end.write(b"x" * 60)
    end.write(b"y" * 60)  # 120 > high: the writer must stop
    await turns()
    assert server.events == ["made"]
    assert client.events == ["made", "pause_writing"]
    server.transport.resume_reading()
    await turns()
    assert server.events == ["made", b"x" * 60 + b"y" * 60]
    assert client.events == ["made", "pause_writing", "resume_writing"]


async def test_close_delivers_what_was_written_then_eof_then_both_ends_are_lost() -> None:
    server, client, end = pair()
    end.write(b"last")
    end.close()
    assert end.is_closing()
    await turns(5)
    assert server.events == ["made", b"last", "eof", ("lost", None)]
    assert client.events == ["made", ("lost", None)]
    # both ends lost: no transport <-> transport or transport -> protocol links are left
    # for the cyclic GC (closed connections must not pile up as garbage cycles)
    assert server.transport is not None
    assert end.peer is None and server.transport.peer is None
    assert end.get_protocol() is None and server.transport.get_protocol() is None


async def test_write_eof_is_a_half_close() -> None:
    server, client, end = pair(Proto(keep_open_on_eof=True))
    end.write_eof()
    await turns()
    assert server.events == ["made", "eof"]
    assert server.transport is not None
    server.transport.write(b"still open this way")
    await turns()
    assert client.events == ["made", b"still open this way"]


async def test_abort_drops_undelivered_bytes_and_the_peer_sees_a_reset() -> None:
    server, client, end = pair()
    end.write(b"never delivered")
    end.abort()
    await turns()
    assert server.events == ["made", ("lost", "ConnectionResetError")]
    assert client.events == ["made", ("lost", None)]


async def test_writing_to_an_end_whose_peer_closed_is_a_reset() -> None:
    server, client, end = pair(client=Proto(keep_open_on_eof=True))
    assert server.transport is not None
    server.transport.close()
    await turns()
    assert client.events == ["made", "eof"]  # (this client keeps its end open on EOF)
    end.write(b"too late")
    await turns()
    assert client.events == ["made", "eof", ("lost", "ConnectionResetError")]
    assert server.events == ["made", ("lost", None)]


async def test_open_unix_goes_in_memory_only_to_a_listener_on_this_loop(tmp_path: Any) -> None:
    loop = asyncio.get_running_loop()
    server = Proto()
    path = str(tmp_path / "h.sock")
    localpipe.listen(path, loop, lambda: server)
    try:
        client = await localpipe.open_unix(loop, Proto, path)
        assert isinstance(client.transport, PipeEnd) and server.events == ["made"]
        other_loop = asyncio.new_event_loop()
        try:
            assert localpipe.listener(path, other_loop) is None
        finally:
            other_loop.close()
    finally:
        localpipe.unlisten(path)
    with pytest.raises(OSError):  # nothing listens: the socket path is tried, and fails
        await localpipe.open_unix(loop, Proto, path)


async def test_run_due_delivers_now_and_the_scheduled_callback_finds_nothing() -> None:
    """``run_due`` (the work gate calls it between callbacks) delivers what is waiting at
    once, in order, once; bytes written after it wait for their own callback as usual."""
    server, client, end = pair()
    end.write(b"one")
    assert server.transport is not None
    server.transport.write(b"two")
    assert server.events == ["made"] and client.events == ["made"]
    localpipe.run_due(asyncio.get_running_loop())
    assert server.events == ["made", b"one"] and client.events == ["made", b"two"]
    end.write(b"three")
    localpipe.run_due(asyncio.get_running_loop())  # a new due list: delivered too
    assert server.events == ["made", b"one", b"three"]
    end.write(b"four")
    await turns()
    assert server.events == ["made", b"one", b"three", b"four"]  # each exactly once
    assert client.events == ["made", b"two"]
    localpipe.run_due(asyncio.get_running_loop())  # nothing due: nothing happens
    assert server.events[-1] == b"four" and localpipe._due == {}


def test_a_loop_closed_with_deliveries_due_leaves_no_entry_behind() -> None:
    """A loop closed before its scheduled deliveries ran: its due list (which holds the
    loop and the pipe ends) goes when another loop schedules a delivery."""
    old = asyncio.new_event_loop()
    end, _proto = localpipe.connect(old, Proto, Proto, "/x/backhaul.sock")
    end.write(b"never delivered")  # its delivery is scheduled on a loop that never runs it
    assert old in localpipe._due
    old.close()
    new = asyncio.new_event_loop()
    try:

        async def write_and_deliver() -> None:
            server, _client, end = pair()
            end.write(b"delivered")
            assert old not in localpipe._due and new in localpipe._due
            await turns()
            assert server.events[-1] == b"delivered"

        new.run_until_complete(write_and_deliver())
        assert localpipe._due == {}
    finally:
        new.close()
