"""HTTP/1.1 framing features over the whole request path: client -> edge -> backhaul ->
host proxy -> instance, as ``roost up`` runs it.

``test_edge_http1`` checks each of these against an edge that talks to its backends
directly; here the same echo backend (:class:`~tests.integration.rig.EchoBackend`) is an
instance behind a real host proxy, so each feature must also survive the second hop (the
edge's backhaul request and the host proxy's own HTTP/1.1 codec): chunked uploads (their
trailers dropped), chunked responses and their trailers, ``Expect: 100-continue``, an early
final answer, and responses without a body (HEAD, 204, 304) on kept-alive connections.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.hostrig import rig
from tests.integration.rig import (
    HOST,
    EchoBackend,
    RawClient,
    check_bodiless_responses,
    check_early_final_answer,
    check_expect_continue,
    fetch,
    get,
    wait_for,
)

pytestmark = pytest.mark.integration


@dataclass
class EchoInstance(EchoBackend):
    """An :class:`EchoBackend` with what ``hostrig.rig`` needs of an instance."""

    soft: int = 20
    hard: int | None = None
    node: str = "n1"
    rtt: float = 0.0


def _headers(seen: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in seen["headers"]:  # type: ignore[attr-defined]
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_chunked_upload_arrives_intact_without_its_trailers(tmp_path: Path) -> None:
    """A 2 MB chunked upload reaches the instance intact and chunked, streamed (part of it
    is there before the client sends the rest); its trailer field is not forwarded."""
    e1 = EchoInstance("e1")
    async with rig(tmp_path, [e1]) as r:
        payload = os.urandom(2 * 1024 * 1024)
        client = await RawClient.open(r.port)
        client.send(
            f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        half = len(payload) // 2
        for off in range(0, half, 65536):
            client.send(b"%x\r\n%s\r\n" % (65536, payload[off : off + 65536]))
        await wait_for(lambda: e1.body_progress >= half, what="first half at the instance")
        client.send(b"%x\r\n%s\r\n" % (len(payload) - half, payload[half:]))
        client.send(b"0\r\nX-Trailer: secret\r\n\r\n")
        seen = (await client.response(timeout=30)).json()
        assert seen["body_len"] == len(payload)
        assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()
        headers = _headers(seen)
        assert headers["transfer-encoding"] == ["chunked"]
        assert "x-trailer" not in headers
        assert headers["roost-request-id"]  # it did come through the edge
        await client.close()


async def test_chunked_response_and_its_trailers_reach_the_client(tmp_path: Path) -> None:
    """A chunked response arrives chunked and complete; its trailers arrive minus roost-*."""
    async with rig(tmp_path, [EchoInstance("e1")]) as r:
        resp = await fetch(r.port, get("/chunked/300000"))
        assert resp.status == 200 and resp.header("transfer-encoding") == "chunked"
        assert len(resp.body) == 300000
        resp = await fetch(r.port, get("/trailers"))
        assert resp.body == b"body" and resp.header("x-checksum") == "abc"
        assert resp.header("roost-bad") is None


async def test_expect_100_continue_crosses_both_hops(tmp_path: Path) -> None:
    """The instance's 100 Continue comes back through the host proxy and the edge; the body
    is sent only then, and arrives."""
    async with rig(tmp_path, [EchoInstance("e1")]) as r:
        await check_expect_continue(r.port)


async def test_early_final_answer_closes_the_client_connection(tmp_path: Path) -> None:
    """An instance answering 413 before reading a 100-continue body: the client gets the
    413 with Connection: close, and the connection closes (the body was never sent)."""
    async with rig(tmp_path, [EchoInstance("e1")]) as r:
        await check_early_final_answer(r.port)


async def test_responses_without_body_keep_the_connections(tmp_path: Path) -> None:
    """HEAD, 204 and 304 end at their head on both hops: one client connection and one
    instance connection serve them all and a request after them."""
    e1 = EchoInstance("e1")
    async with rig(tmp_path, [e1]) as r:
        await check_bodiless_responses(r.port)
        assert e1.connections == 1
        assert [q["target"] for q in e1.requests] == ["/", "/status/204", "/status/304", "/last"]
