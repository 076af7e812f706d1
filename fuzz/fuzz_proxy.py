"""Fuzz the PROXY protocol reader, ``smtpd_trio.proxy.ProxyHeaderReader``.

Input: a framed input (``harness.unframe``): the cut lengths split the payload into the chunks
to feed. Flags: bit 0 refuses v1, bit 1 refuses v2, bit 2 also decodes the whole payload as a
v2 TLV area with ``decode_tlvs``, bit 3 also feeds one byte at a time.

Asserted:

- only ``ProxyProtocolError`` escapes ``feed``, ``feed_eof``, ``parse_proxy_header`` and
  ``decode_tlvs``; its message is short, ASCII and on one line (it is meant for logs);
- fed whole or in chunks, the reader reaches the same outcome: the same header, ``ProxyInfo``
  and trailing bytes, or an error of the same reason, or the same incomplete state (which
  ``feed_eof`` then refuses as TRUNCATED); ``parse_proxy_header`` agrees;
- what it reports as the header is a prefix of the input and what it reports as trailing is
  exactly the rest; it never holds more than one header's worth of bytes;
- the header is well formed for its version (v1: ``PROXY `` .. CRLF within 107 bytes, a
  ``TCP4`` line is exactly the text of the addresses it reports; v2: the signature and 16 + the
  length field), refused versions never complete, and the addresses, ports and TLVs agree with
  the family, with ``decode_tlvs`` on the header's TLV area, and with a CRC32C computed here by
  the pure-Python implementation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

import harness

with harness.instrumented(__name__, "smtpd_trio.proxy"):
    from smtpd_trio.proxy import (
        CRC32CTLV,
        MAX_V1_LENGTH,
        MAX_V2_LENGTH,
        SSLTLV,
        AlpnTLV,
        AuthorityTLV,
        ProxyChecksumError,
        ProxyErrorReason,
        ProxyFamily,
        ProxyHeaderReader,
        ProxyInfo,
        ProxyProtocolError,
        ProxyTransport,
        decode_tlvs,
        parse_proxy_header,
    )
    from smtpd_trio.proxy.crc32c import crc32c_python

MAX_LEN: Final = 4096
SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
DICTIONARY: Final = (
    SIGNATURE,
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
    b"\r\n",
    b"::ffff:",
    b"\x21\x11\x00\x0c",
    b"\x21\x21\x00\x24",
    b"\x21\x31\x00\xd8",
    b"\x20\x00\x00\x00",
    b"\x03\x00\x04",
    b"\x20\x00",
    b"\xea\x00",
    b"\x01vpce-",
)
#: Address block sizes by family (the specification's, written out here).
ADDRESS_BLOCK: Final = {ProxyFamily.INET: 12, ProxyFamily.INET6: 36, ProxyFamily.UNIX: 216}

Outcome = (
    tuple[ProxyInfo, bytes, bytes]  # info, header, everything after the header
    | ProxyErrorReason
    | int  # incomplete: how many bytes are held
)


def check_error(error: ProxyProtocolError) -> ProxyErrorReason:
    message = str(error)
    assert message.isascii(), message
    assert "\r" not in message, message
    assert "\n" not in message, message
    assert len(message) <= 200, message
    assert isinstance(error.reason, ProxyErrorReason)
    assert isinstance(error, ProxyChecksumError) == (
        error.reason is ProxyErrorReason.CHECKSUM_MISMATCH
    )
    return error.reason


def feed(chunks: Sequence[bytes], accept_v1: bool, accept_v2: bool) -> Outcome:
    reader = ProxyHeaderReader(accept_v1=accept_v1, accept_v2=accept_v2)
    for i, chunk in enumerate(chunks):
        try:
            info = reader.feed(chunk)
        except ProxyProtocolError as error:
            return check_error(error)
        if info is not None:
            assert reader.info is info
            return info, reader.header, reader.trailing + b"".join(chunks[i + 1 :])
        assert reader.header == b""
        assert reader.trailing == b""
        assert reader.buffered <= max(MAX_V1_LENGTH, MAX_V2_LENGTH)
    held = reader.buffered
    try:
        reader.feed_eof()
    except ProxyProtocolError as error:
        assert check_error(error) is ProxyErrorReason.TRUNCATED
    else:
        raise AssertionError("feed_eof accepted an incomplete header")
    return held


def check_crc(header: bytes, info: ProxyInfo) -> None:
    """Verify the CRC32C TLV independently: find it by walking the TLVs' framing here."""
    if info.crc32c is None:
        return
    pos = 16 + ADDRESS_BLOCK[info.family]
    while header[pos] != 0x03:
        pos += 3 + int.from_bytes(header[pos + 1 : pos + 3], "big")
    zeroed = header[: pos + 3] + bytes(4) + header[pos + 7 :]
    assert crc32c_python(zeroed) == info.crc32c


def check_info(info: ProxyInfo, header: bytes, accept_v1: bool, accept_v2: bool) -> None:
    if info.version == 1:
        assert accept_v1
        assert header.startswith(b"PROXY "), header
        assert header.endswith(b"\r\n"), header
        assert len(header) <= MAX_V1_LENGTH
        assert header.count(b"\r") == header.count(b"\n") == 1, header
        assert info.tlvs == ()
        if info.has_addresses:
            assert info.transport is ProxyTransport.STREAM
            assert info.family in (ProxyFamily.INET, ProxyFamily.INET6)
        if info.family is ProxyFamily.INET:
            # Octets and ports have no leading zeros, so the text of a TCP4 line is canonical.
            text = (
                f"PROXY TCP4 {info.source_address} {info.destination_address} "
                f"{info.source_port} {info.destination_port}\r\n"
            )
            assert header == text.encode(), header
    else:
        assert info.version == 2
        assert accept_v2
        assert header[:12] == SIGNATURE
        assert len(header) == 16 + int.from_bytes(header[14:16], "big")
    if not info.has_addresses:
        assert info.source_address is info.destination_address is None
        assert info.source_port is info.destination_port is None
        assert info.tlvs == ()
        return
    assert info.family in ADDRESS_BLOCK
    assert info.transport is not ProxyTransport.UNSPEC
    if info.family is ProxyFamily.UNIX:
        assert isinstance(info.source_address, str)
        assert isinstance(info.destination_address, str)
        assert info.source_port is info.destination_port is None
    else:
        kind = ipaddress.IPv4Address if info.family is ProxyFamily.INET else ipaddress.IPv6Address
        assert isinstance(info.source_address, kind)
        assert isinstance(info.destination_address, kind)
        for port in (info.source_port, info.destination_port):
            assert port is not None
            assert 0 <= port <= 65535
    if info.version == 2:
        assert decode_tlvs(header[16 + ADDRESS_BLOCK[info.family] :]) == info.tlvs
        assert sum(isinstance(t, CRC32CTLV) for t in info.tlvs) <= 1
        check_crc(header, info)
        check_accessors(info)


def check_accessors(info: ProxyInfo) -> None:
    """The convenience properties report the first TLV of their kind, in the documented type."""
    first = {type(t): t for t in reversed(info.tlvs)}
    alpn = first.get(AlpnTLV)
    assert info.alpn == (alpn.protocol if isinstance(alpn, AlpnTLV) else None)
    authority = first.get(AuthorityTLV)
    assert info.authority == (authority.host_name if isinstance(authority, AuthorityTLV) else None)
    assert info.ssl is first.get(SSLTLV)
    for value in (info.netns, info.aws_vpc_endpoint_id):
        assert value is None or value.isascii()
    for number in (info.azure_private_link_id, info.gcp_psc_connection_id):
        assert number is None or number >= 0
    assert info.unique_id is None or len(info.unique_id) <= 128
    if info.ssl is not None:
        ssl = info.ssl
        for text in (ssl.version, ssl.cipher, ssl.sig_alg, ssl.key_alg, ssl.group, ssl.sig_scheme):
            assert text is None or text.isascii()
        assert ssl.cn is None or isinstance(ssl.cn, str)
        assert ssl.client_cert is None or isinstance(ssl.client_cert, bytes)
        assert isinstance(ssl.verified, bool)


def one_input(data: bytes) -> None:
    framed = harness.unframe(data)
    accept_v1, accept_v2 = not framed.flags & 1, not framed.flags & 2
    payload = framed.payload
    whole = feed([payload], accept_v1, accept_v2)
    ways = [framed.chunks]
    if framed.flags & 8:
        ways.append(tuple(harness.bytewise(payload)))
    for chunks in ways:
        outcome = feed(chunks, accept_v1, accept_v2)
        assert outcome == whole, (outcome, whole)
    if isinstance(whole, tuple):
        info, header, trailing = whole
        assert payload == header + trailing
        check_info(info, header, accept_v1, accept_v2)
    try:
        parsed = parse_proxy_header(payload, accept_v1=accept_v1, accept_v2=accept_v2)
    except ProxyProtocolError as error:
        reason = check_error(error)
        if isinstance(whole, int):
            assert reason is ProxyErrorReason.TRUNCATED
        else:
            assert reason is whole
    else:
        assert isinstance(whole, tuple)
        assert parsed == (whole[0], whole[2])
    if framed.flags & 4:
        try:
            tlvs = decode_tlvs(payload)
        except ProxyProtocolError as error:
            check_error(error)
        else:
            assert sum(isinstance(t, CRC32CTLV) for t in tlvs) <= 1


# ---- seeds ---------------------------------------------------------------------------------------


def tlv(tlv_type: int, value: bytes) -> bytes:
    return bytes([tlv_type]) + len(value).to_bytes(2, "big") + value[:0xFFFF]


def v2(byte13: int, byte14: int, block: bytes, *, crc: bool = False) -> bytes:
    """A v2 header around ``block``; with ``crc``, a CRC32C TLV is appended and filled in."""
    if crc:
        block += tlv(0x03, bytes(4))
    header = SIGNATURE + bytes([byte13, byte14]) + len(block).to_bytes(2, "big") + block
    if crc:
        header = header[:-4] + crc32c_python(header).to_bytes(4, "big")
    return header


#: The v2 TLV types worth wrapping a test literal in.
TLV_TYPES: Final = (0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xE0, 0xEA, 0xEE, 0x7F)
ADDRESS_BLOCKS: Final = (
    (0x11, bytes([192, 0, 2, 1, 198, 51, 100, 7, 0xC3, 0x50, 0, 25])),
    (0x21, ipaddress.IPv6Address("2001:db8::1").packed * 2 + b"\xc3\x50\x00\x19"),
    (0x31, b"/run/client.sock".ljust(108, b"\x00") + b"/run/smtpd.sock".ljust(108, b"\x00")),
    (0x12, bytes(12)),
)


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """v1 lines and v2 headers from the tests as they are (and followed by SMTP), and each short
    literal as the value of a TLV in a v2 header, cycling through families and TLV types."""
    smtp = b"EHLO client.example\r\n"
    for literal in literals:
        for start in (literal.find(b"PROXY"), literal.find(SIGNATURE)):
            if start >= 0:
                for flags in (0, 1, 2, 8):
                    yield harness.frame(literal[start:], flags)
                yield harness.frame(literal[start:] + smtp, 0, [7, 1])
    yield harness.frame(v2(0x20, 0x00, b""))
    yield harness.frame(v2(0x21, 0x00, b"ignored"))
    yield harness.frame(v2(0x20, 0x11, ADDRESS_BLOCKS[0][1]) + smtp)
    yield harness.frame(v2(0x21, 0x11, ADDRESS_BLOCKS[0][1] + tlv(0x03, bytes(4)), crc=True))
    short = [literal for literal in literals if len(literal) <= 48]
    for i, literal in enumerate(short):
        family, block = ADDRESS_BLOCKS[i % len(ADDRESS_BLOCKS)]
        value = tlv(TLV_TYPES[i % len(TLV_TYPES)], literal)
        yield harness.frame(v2(0x21, family, block + value, crc=i % 3 == 0))
        yield harness.frame(value, 4)


if __name__ == "__main__":
    harness.fuzz(one_input)
