"""HPACK for Roost's h2 connections: hpack's encoder and decoder, with repeated work cached.

- :class:`CachingEncoder`, hpack's encoder remembering the bytes of fields it emitted as an
  *index* (a response's ``server``, ``content-type``, ...): valid while the dynamic table is
  unchanged, so the cache is emptied whenever an entry is added or evicted. Names of literal
  fields keep their Huffman code. The bytes are the ones hpack would have produced.
- :class:`CachingDecoder`, hpack's decoder remembering header blocks made only of indexed
  fields (a client repeating a request: one byte per field), which leave the table as it is:
  the same fields, the same limit checks (list size, table size), until the table changes.
- :func:`huffman_encode`, RFC 7541's Huffman code with half hpack's per-byte work.

Used by :func:`roost.proxy.h2wire.new_connection`; ``tests/unit/test_h2wire.py`` compares
bytes and fields with hpack's own for random sequences, table resizes included.
"""

from __future__ import annotations

import re
from typing import Any

from hpack import HeaderTuple
from hpack.hpack import INDEX_NEVER, Decoder, Encoder, encode_integer
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable, table_entry_size

__all__ = ["CachingDecoder", "CachingEncoder", "huffman_encode"]

_CACHE_MAX = 256  # fields (blocks) remembered: a response carries ~10; a client repeats a few
_ALL_INDEXED = re.compile(rb"[\x80-\xfe]*").fullmatch  # one byte per field, each an index
_CODES = tuple(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True))


def _bytes(value: Any) -> bytes:
    """A field name or value as hpack's encoder takes it (``str``: UTF-8)."""
    if type(value) is bytes:
        return value
    return (value if isinstance(value, str) else str(value)).encode("utf-8")


def huffman_encode(data: bytes) -> bytes:
    """HPACK's Huffman code of ``data`` (RFC 7541 appendix B), as hpack's encoder makes it
    (with half its per-byte work)."""
    acc = bits = 0
    for byte in data:
        code, n = _CODES[byte]
        acc = acc << n | code
        bits += n
    pad = -bits % 8
    return (acc << pad | ((1 << pad) - 1)).to_bytes((bits + pad) >> 3, "big")


class _Huffman:
    """The ``huffman_coder`` hpack's encoder calls."""

    encode = staticmethod(huffman_encode)


class _CountingTable(HeaderTable):
    """hpack's table, counting the changes that move or drop dynamic entries."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    def _shrink(self) -> None:
        self.changes += 1
        super()._shrink()

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1  # (a size of 0 empties the table without _shrink)
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class CachingEncoder(Encoder):
    """hpack's :class:`~hpack.Encoder` with a cache of indexed fields (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table: _CountingTable = _CountingTable()
        self.huffman_coder = _Huffman()  # type: ignore[assignment]
        self._indexed: dict[tuple[bytes, bytes], bytes] = {}
        self._names: dict[bytes, bytes] = {}  # name -> Huffman code
        self._unmatched: set[bytes] = set()  # names in neither table (a request id's)
        self._changes = 0

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if isinstance(headers, dict):
            return super().encode(headers, huffman)
        table = self.header_table
        block: list[bytes] = []
        if table.resized:
            block.append(self._encode_table_size_change())
            table.resized = False
        indexed, unmatched = self._indexed, self._unmatched
        if self._changes != table.changes:
            indexed.clear()
            unmatched.clear()
            self._changes = table.changes
        for header in headers:
            if type(header) is tuple and len(header) == 2:
                hit = indexed.get(header)
                if hit is not None:
                    block.append(hit)
                    continue
                sensitive = False
            elif isinstance(header, HeaderTuple):
                sensitive = not header.indexable
            else:
                sensitive = len(header) > 2 and bool(header[2])
            name, value = _bytes(header[0]), _bytes(header[1])
            if sensitive and name in unmatched:  # what add() would do, without the search
                block.append(self._encode_literal(name, value, INDEX_NEVER, huffman))
                continue
            pair = (name, value)
            out = self.add(pair, sensitive, huffman)
            if table.changes != self._changes:
                indexed.clear()
                unmatched.clear()
                self._changes = table.changes
            elif not sensitive:  # no table change: the field went out as an index
                if len(indexed) >= _CACHE_MAX:
                    indexed.clear()
                indexed[pair] = out
            elif len(unmatched) < _CACHE_MAX and table.search(name, value) is None:
                unmatched.add(name)  # (the name matches nothing: any value goes literal)
            block.append(out)
        return b"".join(block)

    def _encode_literal(
        self, name: bytes, value: bytes, indexbit: bytes, huffman: bool = False
    ) -> bytes:
        if not huffman:
            return super()._encode_literal(name, value, indexbit, huffman)
        coded = self._names.get(name)
        if coded is None:
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            coded = self._names[name] = huffman_encode(name)
        value = huffman_encode(value)
        name_len, value_len = encode_integer(len(coded), 7), encode_integer(len(value), 7)
        name_len[0] |= 0x80
        value_len[0] |= 0x80
        return b"".join([indexbit, bytes(name_len), coded, bytes(value_len), value])


class CachingDecoder(Decoder):
    """hpack's :class:`~hpack.Decoder` with a cache of all-indexed blocks (module docstring)."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table: _CountingTable = _CountingTable()
        self._blocks: dict[bytes, tuple[list[Any], int]] = {}  # block -> (fields, list size)
        self._changes = 0

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table, blocks = self.header_table, self._blocks
        if self._changes != table.changes:
            blocks.clear()
            self._changes = table.changes
        cacheable = raw and type(data) is bytes
        if cacheable:
            hit = blocks.get(data)
            if hit is not None and hit[1] <= self.max_header_list_size:
                self._assert_valid_table_size()
                return list(hit[0])
        headers = super().decode(data, raw)
        if cacheable and table.changes == self._changes and _ALL_INDEXED(data):
            if len(blocks) >= _CACHE_MAX:
                blocks.clear()
            size = sum(table_entry_size(n, v) for n, v in headers)
            blocks[data] = (list(headers), size)
        return headers
