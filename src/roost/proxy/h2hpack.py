"""HPACK for Roost's h2 connections: hpack's encoder and decoder, with repeated work cached.

- :class:`CachingEncoder`, hpack's encoder remembering the bytes of fields it emitted as an
  *index* (a response's ``server``, ``content-type``, ...): valid while the dynamic table is
  unchanged, so the cache is emptied whenever an entry is added or evicted. Names of literal
  fields keep their Huffman code. The bytes are the ones hpack would have produced (but
  for a :class:`RequestIdField`'s).
- :class:`CachingDecoder`, hpack's decoder remembering header blocks made only of indexed
  fields (a client repeating a request: one byte per field), which leave the table as it is:
  the same fields, the same limit checks (list size, table size), until the table changes.
  Also blocks of indexed fields around one request id in :class:`RequestIdField`'s form
  (an edge's backhaul requests: a new id every time), remembered without the id.
- :class:`RequestIdField`, the ``roost-request-id`` field of a backhaul request block: never
  indexed, and the one field :class:`CachingEncoder` writes otherwise than hpack would --
  name as hpack codes it (literal, Huffman), value *not* Huffman-coded -- so that its bytes
  are ``<fixed prefix><length byte><id>`` and the host's :class:`CachingDecoder` finds the
  id in a block without decoding it. Any HPACK decoder reads the same field.
- :func:`huffman_encode`, RFC 7541's Huffman code with half hpack's per-byte work.

Used by :func:`roost.proxy.h2wire.new_connection`; ``tests/unit/test_h2wire.py`` compares
bytes and fields with hpack's own for random sequences, table resizes included, and
``tests/unit/test_h2hpack_backhaul.py`` the request id's blocks (and blocks like them).
"""

from __future__ import annotations

import re
from typing import Any

from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.hpack import INDEX_NEVER, Decoder, Encoder, encode_integer
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable, table_entry_size

__all__ = ["REQUEST_ID", "CachingDecoder", "CachingEncoder", "RequestIdField", "huffman_encode"]

_CACHE_MAX = 256  # fields (blocks) remembered: a response carries ~10; a client repeats a few
_ALL_INDEXED = re.compile(rb"[\x80-\xfe]*").fullmatch  # one byte per field, each an index
_CODES = tuple(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True))
REQUEST_ID = b"roost-request-id"


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


_RID_NAME = huffman_encode(REQUEST_ID)
# a literal field never indexed (0x10: 0001 0000, no name index), the name Huffman-coded
_RID_FIELD = b"\x10" + bytes([0x80 | len(_RID_NAME)]) + _RID_NAME
# indexed fields (one byte each), then that field: the value's length (7-bit prefix, no
# Huffman flag) follows
_RID_AT = re.compile(rb"[\x80-\xfe]*" + re.escape(_RID_FIELD)).match


class RequestIdField(NeverIndexedHeaderTuple):
    """``(REQUEST_ID, id)`` as :class:`CachingEncoder` writes it (module docstring)."""

    __slots__ = ()


# the field's bytes up to a value of n < 127 bytes (its length: one byte, no Huffman flag)
_RID_PREFIXES = [_RID_FIELD + bytes([n]) for n in range(0x7F)]


def _request_id_literal(value: bytes) -> bytes:
    """The field ``REQUEST_ID: value``, never indexed, literal name, value not Huffman-coded."""
    if len(value) < 0x7F:
        return _RID_PREFIXES[len(value)] + value
    return b"".join([_RID_FIELD, bytes(encode_integer(len(value), 7)), value])


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
            elif (
                type(header) is RequestIdField
                and header[0] == REQUEST_ID
                and type(header[1]) is bytes
            ):  # never indexed, in a form valid whatever the tables hold: no table work
                block.append(_request_id_literal(header[1]))
                continue
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
    """hpack's :class:`~hpack.Decoder` with a cache of all-indexed blocks, and of indexed
    blocks around a request id (module docstring)."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table: _CountingTable = _CountingTable()
        self._blocks: dict[bytes, tuple[list[Any], int]] = {}  # block -> (fields, list size)
        # block without the id's length and bytes -> (fields before it, after it, list size
        # without the id's value)
        self._rid_blocks: dict[bytes, tuple[list[Any], list[Any], int]] = {}
        self._changes = 0

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table, blocks, rid_blocks = self.header_table, self._blocks, self._rid_blocks
        if self._changes != table.changes:
            blocks.clear()
            rid_blocks.clear()
            self._changes = table.changes
        if not raw or type(data) is not bytes:
            return super().decode(data, raw)
        hit = blocks.get(data)
        if hit is not None and hit[1] <= self.max_header_list_size:
            self._assert_valid_table_size()
            return list(hit[0])
        key, found = None, _RID_AT(data)
        if found is not None:
            # indexed fields, REQUEST_ID never indexed with an id of n < 127 bytes (one
            # length byte, no Huffman flag), indexed fields to the end of the block?
            at = found.end()
            n = data[at] if at < len(data) else 0x7F
            end = at + 1 + n
            if n < 0x7F and end <= len(data) and _ALL_INDEXED(data, end):
                # fields before, the id's prefix, fields after: unambiguous (the prefix
                # starts with 0x10, no index byte is 0x10)
                key = data[:at] + data[end:]
                split = rid_blocks.get(key)
                if split is not None and split[2] + n <= self.max_header_list_size:
                    self._assert_valid_table_size()
                    rid = NeverIndexedHeaderTuple(REQUEST_ID, data[at + 1 : end])
                    return [*split[0], rid, *split[1]]
        headers: Any = super().decode(data, raw)  # (a list)
        if table.changes != self._changes:
            return headers  # (never so for the blocks cached below)
        if key is not None:
            if len(rid_blocks) >= _CACHE_MAX:
                rid_blocks.clear()
            pos = at - len(_RID_FIELD)  # fields before the id, a byte each
            size = sum(table_entry_size(f, v) for f, v in headers) - n  # (the id's length)
            rid_blocks[key] = (list(headers[:pos]), list(headers[pos + 1 :]), size)
        elif _ALL_INDEXED(data):
            if len(blocks) >= _CACHE_MAX:
                blocks.clear()
            size = sum(table_entry_size(f, v) for f, v in headers)
            blocks[data] = (list(headers), size)
        return headers
