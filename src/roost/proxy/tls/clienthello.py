"""A strict, incremental TLS ClientHello reader (pure, sans-IO: bytes in, one result out).

The edge feeds the first bytes of a connection, as they arrive, into a
:class:`ClientHelloReader` *before* any TLS library sees them::

    reader = ClientHelloReader()
    result = reader.feed(data)      # -> NeedMore | ClientHello | Reject
    # NeedMore: read more and feed again; ClientHello: route by SNI / ALPN, then replay
    # ``result.raw`` into TLS (termination) or to the backend (passthrough); Reject: send
    # ``result.alert`` (or just close) and log ``result.reason``.

Rules, checked in this order as bytes arrive (RFC 8446 sections 4.1.2 and 5.1, RFC 6066, 7301):

- records: content type 22 (handshake) only; version 3.x; length 1..16384. SSLv2-framed hellos
  and anything else (e.g. plain HTTP on a TLS port) are refused on the first byte.
- the handshake message: type 1 (client_hello), declared length <= ``max_handshake``; it may
  span any number of records and any number of feeds, but no other handshake message may follow
  it inside the record that ends it.
- the body: version 3.x, 32-byte random, session id <= 32 bytes, a non-empty even-length cipher
  suite list, >= 1 compression method, then either nothing or an extension block whose length is
  exactly what remains (no trailing garbage). No extension type twice; pre_shared_key last.
- server_name: a non-empty list holding exactly one entry of type host_name (0) whose name is a
  valid LDH host name (see :mod:`.hostnames`): no empty names, no other name types, no lengths
  that overrun or underrun the extension.
- ALPN: a non-empty list of non-empty protocol names filling the extension exactly.
- supported_versions: a non-empty even-length list filling the extension exactly.

Memory is bounded: nothing is ever allocated from a declared length. Record payloads are copied
only as they arrive; the handshake buffer never grows past ``max_handshake + 4`` bytes and the
bytes kept for replay never pass ``max_raw`` before the hello is complete (a hello split into
very many tiny records is refused). The module imports nothing from asyncio, socket, ssl or time.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.proxy.tls.hostnames import host_error

__all__ = [
    "ALERT_DECODE_ERROR",
    "ALERT_ILLEGAL_PARAMETER",
    "ALERT_PROTOCOL_VERSION",
    "ALERT_RECORD_OVERFLOW",
    "ALERT_UNEXPECTED_MESSAGE",
    "ALERT_UNRECOGNIZED_NAME",
    "ClientHello",
    "ClientHelloReader",
    "NeedMore",
    "Reject",
    "alert_record",
    "parse_client_hello",
]

# TLS alert descriptions the edge may send back (RFC 8446 section 6).
ALERT_UNEXPECTED_MESSAGE = 10
ALERT_RECORD_OVERFLOW = 22
ALERT_ILLEGAL_PARAMETER = 47
ALERT_DECODE_ERROR = 50
ALERT_PROTOCOL_VERSION = 70
ALERT_UNRECOGNIZED_NAME = 112

MAX_RECORD_PAYLOAD = 1 << 14
DEFAULT_MAX_HANDSHAKE = 16 * 1024
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_PRE_SHARED_KEY = 41
_EXT_SUPPORTED_VERSIONS = 43
_HOST_NAME = 0
ACME_TLS_ALPN = "acme-tls/1"


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Not enough bytes yet: feed more."""


NEED_MORE = NeedMore()


@dataclass(frozen=True, slots=True)
class Reject:
    """The bytes are not an acceptable ClientHello: ``reason`` for logs, ``alert`` to send."""

    reason: str
    alert: int = ALERT_DECODE_ERROR


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a complete, valid ClientHello told us.

    ``raw`` is every byte fed to the reader, in order (the records carrying the hello and
    whatever followed them in the same feed): replay it into TLS or to a passthrough backend.
    """

    server_name: str | None
    alpn_protocols: tuple[str, ...]
    supported_versions: tuple[int, ...]
    legacy_version: int
    cipher_suites: tuple[int, ...]
    extension_types: tuple[int, ...]
    raw: bytes

    @property
    def max_version(self) -> int:
        """The highest protocol version offered (0x0304 = TLS 1.3)."""
        return max(self.supported_versions, default=self.legacy_version)

    @property
    def is_acme_tls_alpn(self) -> bool:
        """True for a TLS-ALPN-01 validation handshake (ALPN offers only ``acme-tls/1``)."""
        return self.alpn_protocols == (ACME_TLS_ALPN,)


Result = NeedMore | ClientHello | Reject


def alert_record(alert: int) -> bytes:
    """A fatal TLS alert record (TLS 1.2 framing, understood by every client)."""
    return bytes((21, 3, 3, 0, 2, 2, alert & 0xFF))


class ClientHelloReader:
    """Feed bytes until the result is not :data:`NEED_MORE`; after that it never changes."""

    def __init__(
        self, *, max_handshake: int = DEFAULT_MAX_HANDSHAKE, max_raw: int | None = None
    ) -> None:
        self.max_handshake = max_handshake
        self.max_raw = 2 * max_handshake if max_raw is None else max_raw
        self._chunks: list[bytes] = []
        self._consumed = 0  # bytes parsed so far, over all feeds
        self._header = bytearray()  # the current record's header, 0..5 bytes
        self._record_left = 0  # payload bytes still to come in the current record
        self._handshake = bytearray()  # handshake bytes so far (never past max_handshake + 4)
        self._result: Result = NEED_MORE

    @property
    def result(self) -> Result:
        """The last result (NEED_MORE until the hello is complete or refused)."""
        return self._result

    def feed(self, data: bytes) -> Result:
        """Take the next bytes of the connection and say what is known now."""
        if not isinstance(self._result, NeedMore):
            return self._result
        data = bytes(data)
        self._chunks.append(data)
        result = self._consume(data)
        if isinstance(result, NeedMore):
            return result
        if isinstance(result, ClientHello):
            result = _with_raw(result, b"".join(self._chunks))
        self._chunks = []
        self._handshake = bytearray()
        self._result = result
        return result

    def _consume(self, data: bytes) -> Result:
        pos, end = 0, len(data)
        while pos < end:
            if self._record_left == 0:
                take = min(5 - len(self._header), end - pos)
                self._header += data[pos : pos + take]
                pos += take
                self._consumed += take
                if self._consumed > self.max_raw:
                    return Reject("ClientHello spread over too many records", ALERT_DECODE_ERROR)
                refused = self._check_header()
                if refused is not None:
                    return refused
                if len(self._header) == 5:
                    self._record_left = int.from_bytes(self._header[3:5], "big")
                    self._header.clear()
                continue
            take = min(self._record_left, end - pos)
            chunk = data[pos : pos + take]
            pos += take
            self._consumed += take
            self._record_left -= take
            if self._consumed > self.max_raw:
                return Reject("ClientHello spread over too many records", ALERT_DECODE_ERROR)
            result = self._add_handshake(chunk)
            if not isinstance(result, NeedMore):
                return result
        return NEED_MORE

    def _check_header(self) -> Reject | None:
        h = self._header
        if len(h) >= 1 and h[0] != _HANDSHAKE:
            if h[0] & 0x80:
                return Reject("SSLv2-framed ClientHello", ALERT_PROTOCOL_VERSION)
            return Reject(f"not a TLS handshake record (type {h[0]})", ALERT_UNEXPECTED_MESSAGE)
        if len(h) >= 2 and h[1] != 3:
            return Reject("record version is not 3.x", ALERT_PROTOCOL_VERSION)
        if len(h) == 5:
            length = int.from_bytes(h[3:5], "big")
            if length == 0:
                return Reject("empty handshake record", ALERT_UNEXPECTED_MESSAGE)
            if length > MAX_RECORD_PAYLOAD:
                return Reject("record longer than 16384 bytes", ALERT_RECORD_OVERFLOW)
        return None

    def _add_handshake(self, chunk: bytes) -> Result:
        hs = self._handshake
        if len(hs) < 4:
            need = 4 - len(hs)
            hs += chunk[:need]
            chunk = chunk[need:]
            if hs[0] != _CLIENT_HELLO:
                return Reject(f"first handshake message is type {hs[0]}", ALERT_UNEXPECTED_MESSAGE)
            if len(hs) < 4:
                return NEED_MORE
            declared = int.from_bytes(hs[1:4], "big")
            if declared > self.max_handshake:
                return Reject(f"ClientHello of {declared} bytes is too large", ALERT_DECODE_ERROR)
        total = 4 + int.from_bytes(hs[1:4], "big")
        room = total - len(hs)
        if len(chunk) > room:
            return Reject("data after the ClientHello in its record", ALERT_UNEXPECTED_MESSAGE)
        hs += chunk
        if len(hs) < total:
            return NEED_MORE
        if self._record_left:
            return Reject("data after the ClientHello in its record", ALERT_UNEXPECTED_MESSAGE)
        return parse_client_hello(bytes(hs[4:]))


def _with_raw(hello: ClientHello, raw: bytes) -> ClientHello:
    return ClientHello(
        server_name=hello.server_name,
        alpn_protocols=hello.alpn_protocols,
        supported_versions=hello.supported_versions,
        legacy_version=hello.legacy_version,
        cipher_suites=hello.cipher_suites,
        extension_types=hello.extension_types,
        raw=raw,
    )


class _Malformed(Exception):
    def __init__(self, reason: str, alert: int = ALERT_DECODE_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.alert = alert


class _Cursor:
    """Reads big-endian fields from a bytes object; running past the end is ``_Malformed``."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise _Malformed(f"{what}: length {n} overruns its container")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, len_size: int, what: str) -> _Cursor:
        """A sub-cursor over a ``len_size``-byte length-prefixed vector; skips past it here."""
        n = self.uint(len_size, what)
        if n > self.left:
            raise _Malformed(f"{what}: length {n} overruns its container")
        sub = _Cursor(self.data, self.pos, self.pos + n)
        self.pos += n
        return sub


def parse_client_hello(body: bytes) -> ClientHello | Reject:
    """Parse a ClientHello body (the handshake message without its 4-byte header)."""
    try:
        return _parse(_Cursor(body))
    except _Malformed as exc:
        return Reject(exc.reason, exc.alert)


def _parse(c: _Cursor) -> ClientHello:
    legacy_version = c.uint(2, "client version")
    if legacy_version >> 8 != 3:
        raise _Malformed("client version is not 3.x", ALERT_PROTOCOL_VERSION)
    c.take(32, "random")
    session_id = c.vector(1, "session id")
    if session_id.left > 32:
        raise _Malformed("session id longer than 32 bytes", ALERT_ILLEGAL_PARAMETER)
    suites = c.vector(2, "cipher suites")
    if suites.left == 0 or suites.left % 2:
        raise _Malformed("cipher suite list is empty or odd-length")
    cipher_suites = tuple(suites.uint(2, "cipher suite") for _ in range(suites.left // 2))
    if c.vector(1, "compression methods").left == 0:
        raise _Malformed("no compression methods")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    types: list[int] = []
    if c.left:
        exts = c.vector(2, "extensions")
        if c.left:
            raise _Malformed("trailing data after the extensions")
        while exts.left:
            ext_type = exts.uint(2, "extension type")
            data = exts.vector(2, "extension")
            if ext_type in types:
                raise _Malformed(f"extension {ext_type} appears twice", ALERT_ILLEGAL_PARAMETER)
            if types and types[-1] == _EXT_PRE_SHARED_KEY:
                raise _Malformed(
                    "pre_shared_key is not the last extension", ALERT_ILLEGAL_PARAMETER
                )
            types.append(ext_type)
            if ext_type == _EXT_SERVER_NAME:
                server_name = _server_name(data)
            elif ext_type == _EXT_ALPN:
                alpn = _alpn(data)
            elif ext_type == _EXT_SUPPORTED_VERSIONS:
                versions = _supported_versions(data)
    return ClientHello(
        server_name=server_name,
        alpn_protocols=alpn,
        supported_versions=versions,
        legacy_version=legacy_version,
        cipher_suites=cipher_suites,
        extension_types=tuple(types),
        raw=b"",
    )


def _server_name(ext: _Cursor) -> str:
    names = ext.vector(2, "server name list")
    if ext.left:
        raise _Malformed("trailing data in the server_name extension")
    if names.left == 0:
        raise _Malformed("empty server name list")
    name_type = names.uint(1, "server name type")
    if name_type != _HOST_NAME:
        raise _Malformed(f"server name of type {name_type} is not a host_name")
    raw = names.vector(2, "host name")
    if names.left:
        raise _Malformed("more than one server name")
    host = raw.take(raw.left, "host name")
    try:
        text = host.decode("ascii").lower()
    except UnicodeDecodeError:
        raise _Malformed("non-ASCII byte in the server name", ALERT_UNRECOGNIZED_NAME) from None
    reason = host_error(text)
    if reason is not None:
        raise _Malformed(f"bad server name: {reason}", ALERT_UNRECOGNIZED_NAME)
    return text


def _alpn(ext: _Cursor) -> tuple[str, ...]:
    protos = ext.vector(2, "ALPN list")
    if ext.left:
        raise _Malformed("trailing data in the ALPN extension")
    if protos.left == 0:
        raise _Malformed("empty ALPN list")
    out: list[str] = []
    while protos.left:
        proto = protos.vector(1, "ALPN protocol")
        if proto.left == 0:
            raise _Malformed("empty ALPN protocol name")
        out.append(proto.take(proto.left, "ALPN protocol").decode("latin-1"))
    return tuple(out)


def _supported_versions(ext: _Cursor) -> tuple[int, ...]:
    versions = ext.vector(1, "supported versions")
    if ext.left:
        raise _Malformed("trailing data in supported_versions")
    if versions.left == 0 or versions.left % 2:
        raise _Malformed("supported_versions is empty or odd-length")
    return tuple(versions.uint(2, "version") for _ in range(versions.left // 2))
