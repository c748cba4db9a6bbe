"""The chunked-body framing bound (pure): reads in, verdicts out."""

from __future__ import annotations

from roost.proxy.chunkframing import CHUNK_EXTENSIONS_MAX, PER_CHUNK, ChunkFraming


def test_the_first_read_is_not_counted() -> None:
    """The read that completed the head only sets the base: its split is unknown."""
    framing = ChunkFraming(trailer_limit=100)
    assert framing.read(10_000_000, body=5)  # however big
    assert framing.read(100 + CHUNK_EXTENSIONS_MAX, body=5)  # then: exactly at the bound
    assert not framing.read(1, body=5)  # one byte of framing more


def test_body_bytes_are_not_framing() -> None:
    """Bytes read that became body data do not count, however many."""
    framing = ChunkFraming(trailer_limit=0)
    framing.read(0, body=0)
    for i in range(1, 100):
        assert framing.read(1_000_010, body=i * 1_000_000)  # 10 framing bytes per read


def test_each_chunk_widens_the_bound() -> None:
    """Many small chunks are fine: each adds PER_CHUNK to the allowance."""
    framing = ChunkFraming(trailer_limit=0)
    framing.read(0, body=0)
    framing.chunks = 1000
    allowed = CHUNK_EXTENSIONS_MAX + PER_CHUNK * 1000
    assert framing.read(allowed + 1000, body=1000)  # 1000 body bytes among them
    assert not framing.read(1, body=1000)
