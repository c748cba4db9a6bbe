"""A bound on the framing of a chunked HTTP/1.1 body, for both directions. Pure.

httptools (llhttp) reports neither chunk extensions nor a trailer field until that field
is complete, so a peer could stream an endless chunk-size line (or trailer line) that no
size limit ever counts -- CVE-2024-22019 in Node.js. A chunked body's *framing* is every
byte read for it that is not body data: chunk-size lines with their extensions, CRLFs,
trailers. :class:`ChunkFraming` counts it from what the codec knows after each read (bytes
read, body bytes delivered so far) and says when it outgrows the trailers' limit plus
:data:`CHUNK_EXTENSIONS_MAX` plus :data:`PER_CHUNK` per chunk.

The read that completed the head is not counted (how it split between head and body is
unknown): counting starts with the next read, so the bound is approximate by at most one
read. Used by the request side (``http1_reader``: 400 to the client) and the response side
(``upstream``: 502, the instance's connection dropped).
"""

from __future__ import annotations

__all__ = ["CHUNK_EXTENSIONS_MAX", "PER_CHUNK", "TOO_LONG", "ChunkFraming"]

CHUNK_EXTENSIONS_MAX = 16 * 1024  # chunk extensions in all (Node.js caps them at 16 KiB)
PER_CHUNK = 64  # per chunk: its size line and CRLFs
TOO_LONG = "chunked framing too long (chunk extensions or trailer section)"  # (both sides)


class ChunkFraming:
    """The framing of one chunked body, counted read by read; see the module docstring."""

    __slots__ = ("_base", "_fed", "chunks", "limit")

    def __init__(self, trailer_limit: int) -> None:
        self.limit = trailer_limit + CHUNK_EXTENSIONS_MAX  # before the per-chunk allowance
        self.chunks = 0  # chunk headers parsed (the codec counts them)
        self._base = -1  # body bytes when counting began (-1: not yet)
        self._fed = 0  # bytes read since

    def read(self, nbytes: int, body: int) -> bool:
        """A read of ``nbytes`` left the body incomplete, ``body`` body bytes delivered so
        far: False when the framing has outgrown its bound."""
        if self._base < 0:
            self._base = body
            return True
        self._fed += nbytes
        return self._fed - (body - self._base) <= self.limit + PER_CHUNK * self.chunks
