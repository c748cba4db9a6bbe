"""Header fields between HTTP/2 and the edge's HTTP/1.1 exchange (pure, no I/O).

- :func:`plainly_valid`: a one-pass check that an HTTP/2 request header block is one h2's
  validator (``h2.utilities.validate_headers`` with request flags) *and* the guard's CR/LF/NUL
  check accept -- an ordinary GET or POST. It never accepts a block either would reject;
  anything unusual (CONNECT, ``:protocol``, ``te``, a connection-specific field, an odd
  character) answers False and the codec runs the full checks, which give the reason.
  h2's checks are a chain of seven generators: several microseconds per request.
- :func:`to_http1`: a validated request block as (method, target, HTTP/1.1 fields).
- :func:`response_fields`: HTTP/1.1 response fields as HTTP/2 ones.
"""

from __future__ import annotations

import re

from roost.proxy.h2hpack import REQUEST_ID, RequestIdField
from roost.proxy.headers import HOP_BY_HOP, Headers

__all__ = ["plainly_valid", "response_fields", "to_http1"]

_RID = REQUEST_ID
# RFC 9113 section 8.2.1: a name holds none of 0x00-0x20, 0x41-0x5a (upper case), 0x7f-0xff,
# and no colon (a pseudo-header's leading one aside)
_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+").fullmatch
# ... and a value no NUL, LF or CR, and neither starts nor ends with SP or HTAB
_VALUE = re.compile(rb"[^\x00\t\n\r ](?:[^\x00\n\r]*[^\x00\t\n\r ])?").fullmatch
_PSEUDO = {b":method": 1, b":scheme": 2, b":authority": 4, b":path": 8}
_REQUIRED = 1 | 2 | 8
# fields h2 treats specially in a request: connection-specific ones (rejected), te (only
# "trailers"), host (at most one, equal to :authority)
_SPECIAL = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
    | {b"te", b"host"}
)


def plainly_valid(headers: Headers) -> bool:
    """True if the request block is certainly valid (see the module docstring)."""
    seen = 0
    regular = False
    method = path = authority = host = None
    for name, value in headers:
        if value and not _VALUE(value):
            return False
        bit = _PSEUDO.get(name)
        if bit is not None:
            if seen & bit or regular:
                return False
            seen |= bit
            if bit == 1:
                method = value
            elif bit == 8:
                path = value
            elif bit == 4:
                authority = value
        elif not _NAME(name):  # (a pseudo-header other than those four fails here too)
            return False
        else:
            regular = True
            if name in _SPECIAL:
                if name == b"host" and host is None:
                    host = value
                elif name != b"te" or value.lower() != b"trailers":
                    return False
    if seen & _REQUIRED != _REQUIRED or method == b"CONNECT" or not path:
        return False
    if authority is None:
        return host is not None
    return host is None or host == authority


def to_http1(headers: Headers, ended: bool) -> tuple[bytes, bytes, Headers]:
    """(method, target, HTTP/1.1 fields) of a validated HTTP/2 request header block:
    ``:authority`` becomes the first field, ``host`` (replacing any other); a request not
    ended with its headers and without ``content-length`` gets ``transfer-encoding:
    chunked``."""
    method = path = authority = b""
    fields: Headers = []
    sized = hosted = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
        else:
            fields.append((name, value))  # plain tuples (h2 hands HeaderTuples)
            if name == b"content-length":
                sized = True
            elif name == b"host":
                hosted = True
    if authority:
        if hosted:
            fields = [f for f in fields if f[0] != b"host"]
        fields.insert(0, (b"host", authority))
    if not ended and not sized:
        fields.append((b"transfer-encoding", b"chunked"))
    return method, path, fields


def response_fields(headers: Headers, status: int | None = None) -> Headers:
    """HTTP/1.1 fields as HTTP/2 fields: lower-case names, no connection-specific ones; the
    request id (new in every response) kept out of HPACK's table, where it would only evict,
    as a :class:`~roost.proxy.h2hpack.RequestIdField` (written without Huffman coding: no
    per-response coding work for a value that never repeats). With ``status``: a response
    head, ``:status`` first."""
    out: Headers = [] if status is None else [(b":status", _status(status))]
    names = _NAMES
    for name, value in headers:
        lower = names.get(name)
        if lower is None:
            lower = _h2_name(name)
        if lower is _RID:
            out.append(RequestIdField(lower, value))
        elif lower:
            out.append((lower, value))
    return out


# HTTP/1.1 field name -> its HTTP/2 name: lower case; b"" for a connection-specific one
# (dropped), _RID itself for the request id's
_NAMES: dict[bytes, bytes] = {}
_STATUS: dict[int, bytes] = {}
_CACHE_MAX = 512


def _h2_name(name: bytes) -> bytes:
    lower = name.lower()
    lower = b"" if lower in HOP_BY_HOP else _RID if lower == _RID else lower
    if len(_NAMES) >= _CACHE_MAX:
        _NAMES.clear()
    _NAMES[name] = lower
    return lower


def _status(status: int) -> bytes:
    code = _STATUS.get(status)
    if code is None:
        code = b"%d" % status
        if len(_STATUS) < _CACHE_MAX:
            _STATUS[status] = code
    return code
