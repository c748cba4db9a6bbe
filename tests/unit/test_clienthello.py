"""The strict ClientHello reader on genuine hellos (from OpenSSL) and on hand-built bad ones."""

from __future__ import annotations

import ast
import ssl
import struct
from pathlib import Path

import pytest

from roost.proxy.tls import clienthello as ch
from roost.proxy.tls.clienthello import ClientHello, ClientHelloReader, NeedMore, Reject


def real_hello(
    server_hostname: str | None = "www.example.com",
    alpn: list[str] | None = None,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    """The first flight of a real OpenSSL client (an SSLObject over MemoryBIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def refragment(records: bytes, sizes: list[int]) -> bytes:
    """Re-split the handshake payload of ``records`` into records of the given sizes (cycled)."""
    payload, pos = bytearray(), 0
    while pos < len(records):
        (length,) = struct.unpack(">H", records[pos + 3 : pos + 5])
        payload += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    out, pos, i = bytearray(), 0, 0
    while pos < len(payload):
        size = sizes[i % len(sizes)]
        chunk = payload[pos : pos + size]
        out += bytes((22, 3, 1)) + struct.pack(">H", len(chunk)) + chunk
        pos += size
        i += 1
    return bytes(out)


def feed_all(data: bytes, cuts: list[int]) -> ch.Result:
    reader = ClientHelloReader()
    result: ch.Result = ch.NEED_MORE
    last = 0
    for cut in [*cuts, len(data)]:
        result = reader.feed(data[last:cut])
        last = cut
    return result


# -- hand-built hellos --------------------------------------------------------------------------
def ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack(">HH", ext_type, len(data)) + data


def sni_ext(*names: tuple[int, bytes], list_len: int | None = None) -> bytes:
    entries = b"".join(struct.pack(">BH", t, len(n)) + n for t, n in names)
    n = len(entries) if list_len is None else list_len
    return ext(0, struct.pack(">H", n) + entries)


def hello_body(extensions: bytes | None, ext_len: int | None = None, tail: bytes = b"") -> bytes:
    body = struct.pack(">H", 0x0303) + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    if extensions is not None:
        n = len(extensions) if ext_len is None else ext_len
        body += struct.pack(">H", n) + extensions
    return body + tail


def wrap(body: bytes, msg_type: int = 1) -> bytes:
    hs = bytes((msg_type,)) + len(body).to_bytes(3, "big") + body
    return bytes((22, 3, 1)) + struct.pack(">H", len(hs)) + hs


def parse(records: bytes) -> ch.Result:
    return ClientHelloReader().feed(records)


# -- genuine hellos ------------------------------------------------------------------------------
def test_real_hello_gives_sni_alpn_and_versions() -> None:
    """A real OpenSSL ClientHello yields its SNI (lower-cased), ALPN and supported_versions."""
    data = real_hello("WWW.Example.COM", ["h2", "http/1.1"])
    result = parse(data)
    assert isinstance(result, ClientHello)
    assert result.server_name == "www.example.com"
    assert result.alpn_protocols == ("h2", "http/1.1")
    assert 0x0304 in result.supported_versions and result.max_version == 0x0304
    assert result.raw == data and not result.is_acme_tls_alpn


def test_real_hello_without_sni() -> None:
    """A client that sends no SNI gives ``server_name`` None, not an error."""
    result = parse(real_hello(None))
    assert isinstance(result, ClientHello) and result.server_name is None


def test_tls12_only_client_has_no_supported_versions() -> None:
    """A TLS 1.2-only client sends no supported_versions; its version is the legacy one."""
    result = parse(real_hello(maximum=ssl.TLSVersion.TLSv1_2))
    assert isinstance(result, ClientHello)
    assert result.supported_versions == () and result.max_version == 0x0303


def test_acme_tls_alpn_hello_is_recognised() -> None:
    """ALPN offering only acme-tls/1 marks a TLS-ALPN-01 validation."""
    result = parse(real_hello("a.example.com", ["acme-tls/1"]))
    assert isinstance(result, ClientHello) and result.is_acme_tls_alpn


def test_every_two_feed_split_gives_the_same_hello() -> None:
    """Cut at every byte boundary into two feeds: NeedMore first, then the same hello."""
    data = real_hello("split.example.com", ["h2"])
    expected = parse(data)
    for cut in range(1, len(data)):
        reader = ClientHelloReader()
        assert reader.feed(data[:cut]) == NeedMore()
        assert reader.feed(data[cut:]) == expected


def test_byte_at_a_time() -> None:
    """One byte per feed still gives the complete hello, and raw equals what was fed."""
    data = real_hello("slow.example.com")
    reader = ClientHelloReader()
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert all(isinstance(r, NeedMore) for r in results[:-1])
    assert isinstance(results[-1], ClientHello) and results[-1].raw == data


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 64, 100, 255, 511])
def test_hello_split_across_records_at_every_feed_boundary(size: int) -> None:
    """The hello fragmented over many records, cut at every byte boundary, parses the same."""
    original = parse(real_hello("frag.example.com", ["h2", "http/1.1"]))
    assert isinstance(original, ClientHello)
    data = refragment(original.raw, [size, size + 3])
    for cut in range(1, len(data), max(1, len(data) // 300)):
        result = feed_all(data, [cut])
        assert isinstance(result, ClientHello), (size, cut, result)
        assert result.server_name == "frag.example.com" and result.raw == data
        assert result.alpn_protocols == original.alpn_protocols


def test_bytes_after_the_hello_are_kept_for_replay() -> None:
    """Anything fed after the hello's last record is part of ``raw`` (nothing is lost)."""
    data = real_hello() + b"\x17\x03\x03\x00\x01X"
    result = parse(data)
    assert isinstance(result, ClientHello) and result.raw == data


def test_result_is_final() -> None:
    """After a result, further feeds return it unchanged."""
    reader = ClientHelloReader()
    first = reader.feed(b"GET / HTTP/1.1\r\n")
    assert isinstance(first, Reject)
    assert reader.feed(real_hello()) is first and reader.result is first


# -- records and framing ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "not a TLS handshake record"),
        (b"\x80\x2e\x01\x00\x02", "SSLv2"),
        (b"\x16\x02\x00", "record version"),
        (b"\x16\x03\x01\x00\x00", "empty handshake record"),
        (b"\x16\x03\x01\x40\x01", "longer than 16384"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "first handshake message is type 2"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "too large"),
    ],
)
def test_bad_framing_is_refused_early(data: bytes, reason: str) -> None:
    """Framing errors are refused as soon as the offending byte arrives."""
    result = parse(data)
    assert isinstance(result, Reject) and reason in result.reason


def test_declared_length_never_allocates() -> None:
    """A 16 MiB declared handshake is refused on its header, with nothing buffered."""
    reader = ClientHelloReader()
    result = reader.feed(b"\x16\x03\x01\x00\x04\x01\xff\xff\xf0")
    assert isinstance(result, Reject) and reader._handshake == bytearray()


def test_data_after_hello_in_same_record_is_refused() -> None:
    """Another handshake message in the record that ends the hello is refused."""
    body = hello_body(sni_ext((0, b"a.example.com")))
    hs = b"\x01" + len(body).to_bytes(3, "big") + body + b"\x0b\x00\x00\x00"
    result = parse(b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs)
    assert isinstance(result, Reject) and "after the ClientHello" in result.reason


def test_too_many_tiny_records_are_refused() -> None:
    """A hello spread over more record headers than ``max_raw`` allows is refused."""
    data = refragment(real_hello(), [1])
    result = ClientHelloReader(max_raw=len(data) - 1).feed(data)
    assert isinstance(result, Reject) and "too many records" in result.reason


# -- body and extensions ------------------------------------------------------------------------
def test_minimal_hello_without_extensions() -> None:
    """A hello with no extension block at all is valid (and has no SNI)."""
    result = parse(wrap(hello_body(None)))
    assert isinstance(result, ClientHello) and result.server_name is None


LONG_NAME = ".".join(["a" * 63] * 4)  # 255 characters


@pytest.mark.parametrize(
    ("extensions", "reason"),
    [
        (sni_ext((0, b"")), "empty host name"),
        (sni_ext(), "empty server name list"),
        (sni_ext((0, b"a.example.com"), list_len=99), "overruns"),
        (sni_ext((0, b"a.example.com"), list_len=3), "trailing data in the server_name"),
        (sni_ext((1, b"a.example.com")), "type 1 is not a host_name"),
        (sni_ext((0, b"a.example.com"), (0, b"b.example.com")), "more than one"),
        (sni_ext((0, b"a.example.com"), (1, b"x")), "more than one"),
        (sni_ext((0, b"a b.example.com")), "invalid character"),
        (sni_ext((0, b"a_b.example.com")), "invalid character"),
        (sni_ext((0, "é.example.com".encode())), "non-ASCII"),
        (sni_ext((0, b"a.example.com.")), "ends with a dot"),
        (sni_ext((0, b"a..example.com")), "empty label"),
        (sni_ext((0, b"-a.example.com")), "starts or ends"),
        (sni_ext((0, b"*.example.com")), "invalid character"),
        (sni_ext((0, b"10.0.0.1")), "IP address"),
        (sni_ext((0, LONG_NAME.encode())), "longer than 253"),
        (sni_ext((0, b"b" * 64 + b".example.com")), "label longer"),
        (ext(0, b"\x00"), "overruns"),
        (ext(16, b"\x00\x00"), "empty ALPN list"),
        (ext(16, b"\x00\x03\x00\x01a"), "empty ALPN protocol"),
        (ext(16, b"\x00\x03\x02h2\x00"), "trailing data in the ALPN"),
        (ext(43, b"\x03\x03\x04\x03"), "odd-length"),
        (ext(43, b"\x02\x03\x04\x00"), "trailing data in supported_versions"),
        (ext(5, b"") + ext(5, b""), "appears twice"),
        (ext(41, b"") + ext(5, b""), "pre_shared_key"),
    ],
)
def test_malformed_extensions_are_refused(extensions: bytes, reason: str) -> None:
    """Each malformed SNI / ALPN / versions / ordering case is refused with its reason."""
    result = parse(wrap(hello_body(extensions)))
    assert isinstance(result, Reject), result
    assert reason in result.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (hello_body(sni_ext((0, b"a.example.com")), tail=b"\x00"), "trailing data"),
        (hello_body(b"", ext_len=4), "overruns"),
        (hello_body(ext(0, b"\x00\x05")), "overruns"),
        (b"\x02\x00" + bytes(40), "not 3.x"),
        (struct.pack(">H", 0x0303) + bytes(32) + b"\x21" + bytes(40), "session id longer"),
        (struct.pack(">H", 0x0303) + bytes(32) + b"\x00\x00\x00\x01\x00", "cipher suite list"),
        (struct.pack(">H", 0x0303) + bytes(32) + b"\x00\x00\x02\x13\x01\x00", "no compression"),
        (b"", "overruns"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, reason: str) -> None:
    """Trailing garbage, overrunning lengths and bad fixed fields are refused."""
    result = parse(wrap(body))
    assert isinstance(result, Reject) and reason in result.reason


def test_bad_sni_gets_unrecognized_name_alert() -> None:
    """A syntactically framed but invalid name is refused with alert unrecognized_name."""
    result = parse(wrap(hello_body(sni_ext((0, b"bad name")))))
    assert isinstance(result, Reject) and result.alert == ch.ALERT_UNRECOGNIZED_NAME
    assert ch.alert_record(result.alert) == b"\x15\x03\x03\x00\x02\x02\x70"


def test_parser_modules_are_pure() -> None:
    """clienthello and hostnames import no I/O, clock or randomness."""
    banned = {"asyncio", "socket", "ssl", "time", "random", "selectors"}
    here = Path(ch.__file__).parent
    for name in ("clienthello.py", "hostnames.py"):
        tree = ast.parse((here / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mods = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not mods & banned, (name, mods)
