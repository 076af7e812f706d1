"""Tests for the sans-IO PROXY header reader (v1 and v2)."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smtpd_trio.errors import SMTPDTrioError
from smtpd_trio.proxy import (
    CRC32CTLV,
    MAX_V1_LENGTH,
    MAX_V2_LENGTH,
    SSLTLV,
    TLV,
    AlpnTLV,
    AuthorityTLV,
    AWSVPCEndpointTLV,
    AzurePrivateLinkTLV,
    GCPPSCConnectionTLV,
    NetnsTLV,
    NoopTLV,
    ProxyChecksumError,
    ProxyCommand,
    ProxyErrorReason,
    ProxyFamily,
    ProxyHeaderReader,
    ProxyInfo,
    ProxyProtocolError,
    ProxyTransport,
    RawTLV,
    SSLClientFlags,
    SSLSubTLV,
    SSLSubType,
    UniqueIdTLV,
    parse_proxy_header,
)
from smtpd_trio.proxy.crc32c import crc32c_python

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
R = ProxyErrorReason
IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


# ---------------------------------------------------------------------------------------------
# An encoder written from the specification, independent of the code under test.


def tlv(tlv_type: int, value: bytes) -> bytes:
    return bytes([tlv_type]) + len(value).to_bytes(2, "big") + value


def v2(command: int, fam: int, block: bytes, *, crc_at: int | None = None) -> bytes:
    """A v2 header; ``crc_at`` is the offset in ``block`` of a zeroed CRC32C value to fill in."""
    header = SIG + bytes([0x20 | command, fam]) + len(block).to_bytes(2, "big") + block
    if crc_at is not None:
        at = 16 + crc_at
        assert header[at : at + 4] == b"\x00\x00\x00\x00"
        header = header[:at] + crc32c_python(header).to_bytes(4, "big") + header[at + 4 :]
    return header


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return IPv4(src).packed + IPv4(dst).packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return IPv6(src).packed + IPv6(dst).packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def unix_field(path: bytes) -> bytes:
    return path + b"\x00" * (108 - len(path))


def with_crc(block_before: bytes, block_after: bytes = b"") -> tuple[bytes, int]:
    """Return a block with a zeroed CRC32C TLV between the two parts, and its value offset."""
    return block_before + tlv(0x03, b"\x00" * 4) + block_after, len(block_before) + 3


# ---------------------------------------------------------------------------------------------
# Feeding helpers (h11 style).


def feed_all(reader: ProxyHeaderReader, chunks: Sequence[bytes]) -> tuple[ProxyInfo | None, bytes]:
    """Feed chunks until the header completes; return it and every byte after it."""
    for i, chunk in enumerate(chunks):
        info = reader.feed(chunk)
        if info is not None:
            return info, reader.trailing + b"".join(chunks[i + 1 :])
    return None, b""


def check_three_ways(data: bytes, expected: ProxyInfo) -> None:
    # Whole.
    reader = ProxyHeaderReader()
    assert reader.feed(data) == expected
    assert reader.trailing == b""
    assert reader.header == data
    assert reader.info == expected
    # One byte at a time: None until the very last byte.
    reader = ProxyHeaderReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) is None
        assert reader.buffered == i + 1
    assert reader.feed(data[-1:]) == expected
    assert reader.trailing == b""
    # With trailing junk, which must come back exactly.
    for junk in (b"EHLO client.example\r\n", b"\r\n\r\n\x00\r\nQUIT\n", b"P", b"\x00" * 300):
        reader = ProxyHeaderReader()
        assert reader.feed(data + junk) == expected
        assert reader.trailing == junk
        assert reader.header == data


def proxied(
    version: int,
    family: ProxyFamily,
    src: object,
    dst: object,
    sport: int | None,
    dport: int | None,
    *,
    transport: ProxyTransport = ProxyTransport.STREAM,
    tlvs: tuple[TLV, ...] = (),
) -> ProxyInfo:
    return ProxyInfo(
        version,  # type: ignore[arg-type]
        ProxyCommand.PROXY,
        family,
        transport,
        src,  # type: ignore[arg-type]
        dst,  # type: ignore[arg-type]
        sport,
        dport,
        tlvs,
    )


V1_UNKNOWN = ProxyInfo(1, ProxyCommand.PROXY, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC)
V2_LOCAL = ProxyInfo(2, ProxyCommand.LOCAL, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC)

_crc_block, _crc_at = with_crc(
    inet4("203.0.113.7", "192.0.2.25", 51234, 25),
    tlv(0x05, b"\x8a" * 16)
    + tlv(0x02, b"mx.example.org")
    + tlv(0x20, b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.example")),
)

VALID: list[tuple[str, bytes, ProxyInfo]] = [
    (
        "spec v1 example",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        proxied(1, ProxyFamily.INET, IPv4("192.168.0.1"), IPv4("192.168.0.11"), 56324, 443),
    ),
    (
        "v1 TCP4 extremes",
        b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
        proxied(1, ProxyFamily.INET, IPv4("255.255.255.255"), IPv4("0.0.0.0"), 65535, 0),
    ),
    (
        "v1 TCP6",
        b"PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 1025 25\r\n",
        proxied(1, ProxyFamily.INET6, IPv6("2001:db8::1"), IPv6("2001:db8::2"), 1025, 25),
    ),
    (
        "v1 TCP6 IPv4-mapped",
        b"PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n",
        proxied(1, ProxyFamily.INET6, IPv6("::ffff:192.0.2.1"), IPv6("::"), 1, 2),
    ),
    (
        "v1 TCP6 longest (104 bytes)",
        b"PROXY TCP6 "
        + b":".join([b"ffff"] * 8)
        + b" "
        + b":".join([b"ffff"] * 8)
        + b" 65535 65535\r\n",
        proxied(
            1,
            ProxyFamily.INET6,
            IPv6("ffff:" * 7 + "ffff"),
            IPv6("ffff:" * 7 + "ffff"),
            65535,
            65535,
        ),
    ),
    ("v1 UNKNOWN short", b"PROXY UNKNOWN\r\n", V1_UNKNOWN),
    (
        "v1 UNKNOWN long form, worst case (107 bytes)",
        b"PROXY UNKNOWN "
        + b":".join([b"ffff"] * 8)
        + b" "
        + b":".join([b"ffff"] * 8)
        + b" 65535 65535\r\n",
        V1_UNKNOWN,
    ),
    ("v1 UNKNOWN long form, anything", b"PROXY UNKNOWN \x00\xff junk\t!\r\n", V1_UNKNOWN),
    ("v2 LOCAL health check (HAProxy)", SIG + b"\x20\x00\x00\x00", V2_LOCAL),
    (
        "v2 LOCAL skips its block and family",
        v2(0, 0x11, inet4("10.0.0.1", "10.0.0.2", 1, 2) + tlv(0x03, b"bad")),
        V2_LOCAL,
    ),
    (
        "v2 TCP4",
        v2(1, 0x11, inet4("203.0.113.7", "192.0.2.25", 51234, 25)),
        proxied(2, ProxyFamily.INET, IPv4("203.0.113.7"), IPv4("192.0.2.25"), 51234, 25),
    ),
    (
        "v2 UDP6",
        v2(1, 0x22, inet6("2001:db8::7", "2001:db8::25", 5353, 53)),
        proxied(
            2,
            ProxyFamily.INET6,
            IPv6("2001:db8::7"),
            IPv6("2001:db8::25"),
            5353,
            53,
            transport=ProxyTransport.DGRAM,
        ),
    ),
    (
        "v2 UNIX stream",
        v2(1, 0x31, unix_field(b"/run/client.sock") + unix_field(b"/run/smtpd.sock")),
        proxied(2, ProxyFamily.UNIX, "/run/client.sock", "/run/smtpd.sock", None, None),
    ),
    (
        "v2 PROXY with UNSPEC family: use the real endpoints",
        v2(1, 0x00, b"ignored"),
        ProxyInfo(2, ProxyCommand.PROXY, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC),
    ),
    (
        "v2 PROXY with INET family but UNSPEC transport",
        v2(1, 0x10, b""),
        ProxyInfo(2, ProxyCommand.PROXY, ProxyFamily.INET, ProxyTransport.UNSPEC),
    ),
    (
        "v2 TCP4 with CRC32C, UNIQUE_ID, AUTHORITY and SSL (HAProxy-style)",
        v2(1, 0x11, _crc_block, crc_at=_crc_at),
        proxied(
            2,
            ProxyFamily.INET,
            IPv4("203.0.113.7"),
            IPv4("192.0.2.25"),
            51234,
            25,
            tlvs=(
                CRC32CTLV(
                    int.from_bytes(
                        v2(1, 0x11, _crc_block, crc_at=_crc_at)[16 + _crc_at : 20 + _crc_at], "big"
                    )
                ),
                UniqueIdTLV(b"\x8a" * 16),
                AuthorityTLV("mx.example.org"),
                SSLTLV(
                    SSLClientFlags.SSL | SSLClientFlags.CERT_CONN | SSLClientFlags.CERT_SESS,
                    0,
                    (
                        SSLSubTLV(SSLSubType.VERSION, "TLSv1.3"),
                        SSLSubTLV(SSLSubType.CN, "client.example"),
                    ),
                ),
            ),
        ),
    ),
    (
        "v2 AWS NLB with VPC endpoint id",
        v2(
            1,
            0x11,
            inet4("172.31.7.113", "172.31.10.31", 12345, 25)
            + tlv(0xEA, b"\x01vpce-08d2bf15fac5001c9")
            + tlv(0x04, b"\x00" * 5),
        ),
        proxied(
            2,
            ProxyFamily.INET,
            IPv4("172.31.7.113"),
            IPv4("172.31.10.31"),
            12345,
            25,
            tlvs=(AWSVPCEndpointTLV("vpce-08d2bf15fac5001c9"), NoopTLV(b"\x00" * 5)),
        ),
    ),
    (
        "v2 Azure and GCP ids",
        v2(
            1,
            0x21,
            inet6("2001:db8::1", "2001:db8::2", 1, 2)
            + tlv(0xEE, b"\x01" + (0x12345678).to_bytes(4, "little"))
            + tlv(0xE0, (2**64 - 1).to_bytes(8, "big")),
        ),
        proxied(
            2,
            ProxyFamily.INET6,
            IPv6("2001:db8::1"),
            IPv6("2001:db8::2"),
            1,
            2,
            tlvs=(AzurePrivateLinkTLV(0x12345678), GCPPSCConnectionTLV(2**64 - 1)),
        ),
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [(d, e) for _, d, e in VALID], ids=[n for n, _, _ in VALID]
)
def test_valid_samples_three_ways(data: bytes, expected: ProxyInfo) -> None:
    check_three_ways(data, expected)


def test_convenience_properties() -> None:
    info = VALID[15][2]
    assert info.has_addresses
    assert info.unique_id == b"\x8a" * 16
    assert info.authority == "mx.example.org"
    assert info.crc32c is not None
    assert info.ssl is not None
    assert info.ssl.version == "TLSv1.3"
    assert info.ssl.cn == "client.example"
    assert info.ssl.verified
    assert info.alpn is None
    assert info.netns is None
    aws = parse_proxy_header(VALID[16][1])[0]
    assert aws.aws_vpc_endpoint_id == "vpce-08d2bf15fac5001c9"
    assert aws.azure_private_link_id is None
    cloud = parse_proxy_header(VALID[17][1])[0]
    assert cloud.azure_private_link_id == 0x12345678
    assert cloud.gcp_psc_connection_id == 2**64 - 1
    for info in (V1_UNKNOWN, V2_LOCAL, parse_proxy_header(v2(1, 0x00, b""))[0]):
        assert not info.has_addresses
        assert info.source_address is None
        assert info.source_port is None


# ---------------------------------------------------------------------------------------------
# Invalid headers: each with the exact reason.

_tcp4 = inet4("10.0.0.1", "10.0.0.2", 1000, 25)

INVALID: list[tuple[str, bytes, ProxyErrorReason]] = [
    ("HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", R.NOT_PROXY),
    ("SMTP client", b"EHLO client.example\r\n", R.NOT_PROXY),
    ("starts with P", b"POST / HTTP/1.1\r\n", R.NOT_PROXY),
    ("lower case", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", R.NOT_PROXY),
    ("TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", R.NOT_PROXY),
    ("CRLF then SMTP", b"\r\nEHLO x\r\n", R.NOT_PROXY),
    ("v2 signature broken", SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + _tcp4, R.NOT_PROXY),
    ("no space after PROXY", b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", R.NOT_PROXY),
    ("leading zero in octet", b"PROXY TCP4 10.0.0.01 10.0.0.2 1 2\r\n", R.BAD_ADDRESS),
    ("octal-looking octet", b"PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n", R.BAD_ADDRESS),
    ("octet 256", b"PROXY TCP4 10.0.0.256 10.0.0.2 1 2\r\n", R.BAD_ADDRESS),
    ("three octets", b"PROXY TCP4 10.0.1 10.0.0.2 1 2\r\n", R.BAD_ADDRESS),
    ("hex IPv4", b"PROXY TCP4 0a.0.0.1 10.0.0.2 1 2\r\n", R.BAD_ADDRESS),
    ("bad IPv6", b"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n", R.BAD_ADDRESS),
    ("IPv6 too many groups", b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", R.BAD_ADDRESS),
    ("scoped IPv6", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", R.BAD_V1_SYNTAX),
    ("port 65536", b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 25\r\n", R.BAD_PORT),
    ("port with leading zero", b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 025\r\n", R.BAD_PORT),
    ("port 00", b"PROXY TCP4 10.0.0.1 10.0.0.2 00 25\r\n", R.BAD_PORT),
    ("hex port", b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 ab\r\n", R.BAD_PORT),
    ("negative port", b"PROXY TCP4 10.0.0.1 10.0.0.2 -1 25\r\n", R.BAD_V1_SYNTAX),
    ("TCP4 with IPv6", b"PROXY TCP4 ::1 10.0.0.2 1 2\r\n", R.FAMILY_MISMATCH),
    ("TCP6 with IPv4", b"PROXY TCP6 10.0.0.1 ::1 1 2\r\n", R.FAMILY_MISMATCH),
    ("double space", b"PROXY TCP4 10.0.0.1  10.0.0.2 1 2\r\n", R.BAD_V1_SYNTAX),
    ("double space after PROXY", b"PROXY  TCP4 10.0.0.1 10.0.0.2 1 2\r\n", R.BAD_V1_SYNTAX),
    ("trailing space", b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2 \r\n", R.BAD_V1_SYNTAX),
    ("missing port", b"PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n", R.BAD_V1_SYNTAX),
    ("tab separator", b"PROXY TCP4\t10.0.0.1 10.0.0.2 1 2\r\n", R.BAD_V1_SYNTAX),
    ("unknown protocol", b"PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n", R.BAD_V1_SYNTAX),
    ("TCP5", b"PROXY TCP5 10.0.0.1 10.0.0.2 1 2\r\n", R.BAD_V1_SYNTAX),
    ("UNKNOWN glued", b"PROXY UNKNOWNX\r\n", R.BAD_V1_SYNTAX),
    ("bare LF", b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n", R.BAD_V1_SYNTAX),
    ("bare LF, UNKNOWN", b"PROXY UNKNOWN\n", R.BAD_V1_SYNTAX),
    ("bare CR", b"PROXY UNKNOWN junk\rmore\r\n", R.BAD_V1_SYNTAX),
    ("CR CR LF", b"PROXY UNKNOWN\r\r\n", R.BAD_V1_SYNTAX),
    ("no CRLF within 107", b"PROXY UNKNOWN " + b"x" * 200, R.TOO_LONG),
    ("CRLF at byte 108", b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", R.TOO_LONG),
    ("v2 version 1", SIG + b"\x11\x11\x00\x0c" + _tcp4, R.BAD_V2_VERSION),
    ("v2 version 3", SIG + b"\x31\x11\x00\x0c" + _tcp4, R.BAD_V2_VERSION),
    ("v2 command 2", SIG + b"\x22\x11\x00\x0c" + _tcp4, R.BAD_COMMAND),
    ("v2 command 15", SIG + b"\x2f\x11\x00\x0c" + _tcp4, R.BAD_COMMAND),
    ("v2 family 4", SIG + b"\x21\x41\x00\x0c" + _tcp4, R.BAD_FAMILY),
    ("v2 transport 3", SIG + b"\x21\x13\x00\x0c" + _tcp4, R.BAD_TRANSPORT),
    ("v2 length too short for INET", SIG + b"\x21\x11\x00\x0b" + _tcp4[:11], R.BAD_LENGTH),
    ("v2 length too short for INET6", v2(1, 0x21, b"\x00" * 35), R.BAD_LENGTH),
    ("v2 length too short for UNIX", v2(1, 0x31, b"\x00" * 215), R.BAD_LENGTH),
    ("v2 UNIX path without NUL", v2(1, 0x31, b"/" * 108 + unix_field(b"/x")), R.BAD_ADDRESS),
    ("v2 TLV overrun", v2(1, 0x11, _tcp4 + b"\x05\x00\x10abc"), R.BAD_TLV),
    ("v2 stray bytes after TLVs", v2(1, 0x11, _tcp4 + tlv(0x04, b"") + b"\x04\x00"), R.BAD_TLV),
    ("v2 CRC32C length 3", v2(1, 0x11, _tcp4 + tlv(0x03, b"\x00" * 3)), R.BAD_TLV),
    ("v2 CRC32C length 5", v2(1, 0x11, _tcp4 + tlv(0x03, b"\x00" * 5)), R.BAD_TLV),
    (
        "v2 two CRC32C",
        v2(1, 0x11, _tcp4 + tlv(0x03, b"\x00" * 4) + tlv(0x03, b"\x00" * 4)),
        R.BAD_TLV,
    ),
    (
        "v2 CRC32C mismatch",
        v2(1, 0x11, _tcp4 + tlv(0x03, b"\x12\x34\x56\x78")),
        R.CHECKSUM_MISMATCH,
    ),
    ("v2 UNIQUE_ID 129 bytes", v2(1, 0x11, _tcp4 + tlv(0x05, b"u" * 129)), R.BAD_TLV),
    ("v2 AUTHORITY not UTF-8", v2(1, 0x11, _tcp4 + tlv(0x02, b"\xff")), R.BAD_TLV),
    ("v2 NETNS not ASCII", v2(1, 0x11, _tcp4 + tlv(0x30, b"n\xc3\xa9")), R.BAD_TLV),
    ("v2 SSL too short", v2(1, 0x11, _tcp4 + tlv(0x20, b"\x01\x00\x00\x00")), R.BAD_TLV),
    (
        "v2 SSL sub-TLV overrun",
        v2(1, 0x11, _tcp4 + tlv(0x20, b"\x01\x00\x00\x00\x00\x21\x00\x09TLSv1.3")),
        R.BAD_TLV,
    ),
    (
        "v2 SSL version not ASCII",
        v2(1, 0x11, _tcp4 + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLS\xff"))),
        R.BAD_TLV,
    ),
    ("v2 AWS without subtype", v2(1, 0x11, _tcp4 + tlv(0xEA, b"")), R.BAD_TLV),
    ("v2 Azure link id of 3 bytes", v2(1, 0x11, _tcp4 + tlv(0xEE, b"\x01abc")), R.BAD_TLV),
]


@pytest.mark.parametrize(
    ("data", "reason"), [(d, r) for _, d, r in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_samples(data: bytes, reason: ProxyErrorReason) -> None:
    # Whole, and byte by byte: the same reason either way.
    with pytest.raises(ProxyProtocolError) as whole:
        ProxyHeaderReader().feed(data)
    assert whole.value.reason is reason
    assert isinstance(whole.value, SMTPDTrioError)
    reader = ProxyHeaderReader()
    chunks = [data[i : i + 1] for i in range(len(data))]
    with pytest.raises(ProxyProtocolError) as bytewise:
        feed_all(reader, chunks)
    assert bytewise.value.reason is reason
    # Messages stay short and quote little peer input.
    assert len(str(whole.value)) < 150
    assert "\n" not in str(whole.value)


def test_checksum_error_class() -> None:
    data = v2(1, 0x11, _tcp4 + tlv(0x03, b"\x12\x34\x56\x78"))
    with pytest.raises(ProxyChecksumError):
        parse_proxy_header(data)
    # The same header with the right checksum parses.
    block, at = with_crc(_tcp4)
    info, _ = parse_proxy_header(v2(1, 0x11, block, crc_at=at))
    assert info.crc32c is not None


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        (b"G", R.NOT_PROXY),
        (b"\x00", R.NOT_PROXY),
        (b"PX", R.NOT_PROXY),
        (b"\r\r", R.NOT_PROXY),
        (b"PROXY TCP5", R.BAD_V1_SYNTAX),
        (b"PROXY U ", R.BAD_V1_SYNTAX),
        (b"PROXY TCP4 1.2.3.x", R.BAD_V1_SYNTAX),
        (b"PROXY TCP4 1\n", R.BAD_V1_SYNTAX),
        (b"PROXY UNKNOWN\rX", R.BAD_V1_SYNTAX),
        (SIG + b"\x10", R.BAD_V2_VERSION),
        (SIG + b"\x23", R.BAD_COMMAND),
        (SIG + b"\x21\x51", R.BAD_FAMILY),
        (SIG + b"\x21\x14", R.BAD_TRANSPORT),
        (SIG + b"\x21\x11\x00\x00", R.BAD_LENGTH),
        (SIG + b"\x21\x21\x00\x10", R.BAD_LENGTH),
    ],
)
def test_refused_as_early_as_possible(prefix: bytes, reason: ProxyErrorReason) -> None:
    reader = ProxyHeaderReader()
    for byte in prefix[:-1]:
        assert reader.feed(bytes([byte])) is None
    with pytest.raises(ProxyProtocolError) as excinfo:
        reader.feed(prefix[-1:])
    assert excinfo.value.reason is reason


def test_error_message_is_short_and_escaped() -> None:
    with pytest.raises(ProxyProtocolError) as excinfo:
        ProxyHeaderReader().feed(b"\x1b[31m" + b"A" * 10_000 + b"\r\n")
    message = str(excinfo.value)
    assert "\x1b" not in message
    assert "\\x1b" in message
    assert len(message) < 100


def test_long_v2_header_at_the_limit() -> None:
    filler = 0xFFFF - 12 - 3
    data = v2(1, 0x11, _tcp4 + tlv(0x04, b"\xaa" * filler))
    assert len(data) == MAX_V2_LENGTH
    reader = ProxyHeaderReader()
    info = reader.feed(data + b"EHLO")
    assert info is not None
    assert info.tlvs == (NoopTLV(b"\xaa" * filler),)
    assert reader.trailing == b"EHLO"


def test_never_buffers_more_than_a_header() -> None:
    reader = ProxyHeaderReader()
    chunk = b"PROXY UNKNOWN " + b"x" * 60
    assert reader.feed(chunk) is None
    assert reader.buffered == len(chunk)
    with pytest.raises(ProxyProtocolError) as excinfo:
        reader.feed(b"y" * 1_000_000)
    assert excinfo.value.reason is R.TOO_LONG
    assert reader.buffered == 0
    # v2: the length field bounds the buffer; bytes past it are trailing, not buffered.
    reader = ProxyHeaderReader()
    head = SIG + b"\x21\x11\x00\x0c"
    assert reader.feed(head + _tcp4[:5]) is None
    assert reader.buffered == 21
    assert reader.feed(_tcp4[5:] + b"z" * 100_000) is not None
    assert reader.trailing == b"z" * 100_000
    assert MAX_V1_LENGTH == 107


def test_feed_after_done_or_error_is_a_usage_error() -> None:
    reader = ProxyHeaderReader()
    assert reader.feed(b"PROXY UNKNOWN\r\nEHLO") == V1_UNKNOWN
    with pytest.raises(RuntimeError):
        reader.feed(b"more")
    assert reader.trailing == b"EHLO"
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError):
        reader.feed(b"GET")
    with pytest.raises(RuntimeError):
        reader.feed(b"PROXY UNKNOWN\r\n")


def test_empty_feed_is_harmless() -> None:
    reader = ProxyHeaderReader()
    assert reader.feed(b"") is None
    assert reader.feed(b"PROXY UNKNOWN\r\n") == V1_UNKNOWN


def test_feed_eof() -> None:
    reader = ProxyHeaderReader()
    reader.feed(b"PROXY TCP4 1.2")
    with pytest.raises(ProxyProtocolError) as excinfo:
        reader.feed_eof()
    assert excinfo.value.reason is R.TRUNCATED
    with pytest.raises(ProxyProtocolError) as excinfo:
        ProxyHeaderReader().feed_eof()
    assert excinfo.value.reason is R.TRUNCATED
    done = ProxyHeaderReader()
    done.feed(SIG + b"\x20\x00\x00\x00")
    done.feed_eof()  # nothing to complain about
    with pytest.raises(ProxyProtocolError) as excinfo:
        parse_proxy_header(SIG + b"\x21\x11\x00\x0c" + _tcp4[:3])
    assert excinfo.value.reason is R.TRUNCATED


@pytest.mark.parametrize(
    ("kwargs", "data", "ok"),
    [
        ({"accept_v1": False}, b"PROXY UNKNOWN\r\n", False),
        ({"accept_v1": False}, SIG + b"\x20\x00\x00\x00", True),
        ({"accept_v2": False}, SIG + b"\x20\x00\x00\x00", False),
        ({"accept_v2": False}, b"PROXY UNKNOWN\r\n", True),
    ],
)
def test_version_restriction(kwargs: dict[str, bool], data: bytes, ok: bool) -> None:
    reader = ProxyHeaderReader(**kwargs)
    if ok:
        assert reader.feed(data) is not None
    else:
        with pytest.raises(ProxyProtocolError) as excinfo:
            reader.feed(data)
        assert excinfo.value.reason is R.VERSION_DISABLED


# ---------------------------------------------------------------------------------------------
# Property tests: generated headers round-trip; mutations never escape as other errors.

ascii_text = st.text(st.characters(codec="ascii"), max_size=24)
utf8_text = st.text(max_size=16)
u16 = st.integers(0, 0xFFFF)
ipv4s = st.integers(0, 2**32 - 1).map(IPv4)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6)


@st.composite
def ssl_tlvs(draw: st.DrawFn) -> tuple[SSLTLV, bytes]:
    subs: list[SSLSubTLV] = []
    wire = b""
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from([*SSLSubType, 0x29, 0x2F]))
        value: str | bytes
        if kind == SSLSubType.CN:
            value = draw(utf8_text)
            raw = value.encode()
        elif kind in frozenset(SSLSubType) - {SSLSubType.CLIENT_CERT}:
            value = draw(ascii_text)
            raw = value.encode()
        else:
            value = raw = draw(st.binary(max_size=40))
        subs.append(SSLSubTLV(kind, value))
        wire += tlv(kind, raw)
    flags = draw(st.integers(0, 255))
    verify = draw(st.integers(0, 2**32 - 1))
    return (
        SSLTLV(SSLClientFlags(flags), verify, tuple(subs)),
        tlv(0x20, bytes([flags]) + verify.to_bytes(4, "big") + wire),
    )


def _pair(make: type, value: object, tlv_type: int, raw: bytes) -> tuple[TLV, bytes]:
    return make(value), tlv(tlv_type, raw)


unknown_types = st.sampled_from([0x06, 0x1F, 0x21, 0x31, 0x7F, 0xE1, 0xEF, 0xF0, 0xFF])
any_tlv: st.SearchStrategy[tuple[TLV, bytes]] = st.one_of(
    st.binary(max_size=12).map(lambda v: _pair(AlpnTLV, v, 0x01, v)),
    utf8_text.map(lambda v: _pair(AuthorityTLV, v, 0x02, v.encode())),
    st.binary(max_size=12).map(lambda v: _pair(NoopTLV, v, 0x04, v)),
    st.binary(max_size=128).map(lambda v: _pair(UniqueIdTLV, v, 0x05, v)),
    ssl_tlvs(),
    ascii_text.map(lambda v: _pair(NetnsTLV, v, 0x30, v.encode())),
    ascii_text.map(lambda v: _pair(AWSVPCEndpointTLV, v, 0xEA, b"\x01" + v.encode())),
    st.integers(0, 2**32 - 1).map(
        lambda v: _pair(AzurePrivateLinkTLV, v, 0xEE, b"\x01" + v.to_bytes(4, "little"))
    ),
    st.integers(0, 2**64 - 1).map(
        lambda v: _pair(GCPPSCConnectionTLV, v, 0xE0, v.to_bytes(8, "big"))
    ),
    st.tuples(unknown_types, st.binary(max_size=20)).map(
        lambda tv: (RawTLV(tv[0], tv[1]), tlv(tv[0], tv[1]))
    ),
    st.binary(max_size=8).map(lambda v: (RawTLV(0xEA, b"\x02" + v), tlv(0xEA, b"\x02" + v))),
)


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, ProxyInfo]:
    family = draw(st.sampled_from([ProxyFamily.INET, ProxyFamily.INET6, ProxyFamily.UNIX]))
    transport = draw(st.sampled_from([ProxyTransport.STREAM, ProxyTransport.DGRAM]))
    src: object
    dst: object
    sport: int | None
    dport: int | None
    if family is ProxyFamily.UNIX:
        paths = st.binary(max_size=107).filter(lambda p: b"\x00" not in p)
        raw_src, raw_dst = draw(paths), draw(paths)
        pad = draw(st.binary(min_size=216, max_size=216))
        src_field = raw_src + b"\x00" + pad[: 107 - len(raw_src)]
        dst_field = raw_dst + b"\x00" + pad[108 : 108 + 107 - len(raw_dst)]
        block = src_field + dst_field
        src = raw_src.decode("utf-8", "surrogateescape")
        dst = raw_dst.decode("utf-8", "surrogateescape")
        sport = dport = None
    else:
        addrs = ipv4s if family is ProxyFamily.INET else ipv6s
        src, dst = draw(addrs), draw(addrs)
        sport, dport = draw(u16), draw(u16)
        block = (
            src.packed  # type: ignore[attr-defined]
            + dst.packed  # type: ignore[attr-defined]
            + sport.to_bytes(2, "big")
            + dport.to_bytes(2, "big")
        )
    pairs = draw(st.lists(any_tlv, max_size=5))
    tlvs = [t for t, _ in pairs]
    wire = [w for _, w in pairs]
    crc_index = draw(st.none() | st.integers(0, len(pairs)))
    crc_at = None
    if crc_index is not None:
        before = block + b"".join(wire[:crc_index])
        crc_at = len(before) + 3
        block = before + tlv(0x03, b"\x00" * 4) + b"".join(wire[crc_index:])
    else:
        block += b"".join(wire)
    fam_byte = (family << 4) | transport
    header = v2(1, fam_byte, block, crc_at=crc_at)
    if crc_index is not None and crc_at is not None:
        tlvs.insert(crc_index, CRC32CTLV(int.from_bytes(header[16 + crc_at : 20 + crc_at], "big")))
    info = proxied(2, family, src, dst, sport, dport, transport=transport, tlvs=tuple(tlvs))
    return header, info


@st.composite
def v1_headers(draw: st.DrawFn) -> tuple[bytes, ProxyInfo]:
    kind = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN", "UNKNOWN long"]))
    if kind == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n", V1_UNKNOWN
    if kind == "UNKNOWN long":
        junk = draw(
            st.binary(max_size=107 - 17).filter(lambda b: b"\r" not in b and b"\n" not in b)
        )
        return b"PROXY UNKNOWN " + junk + b"\r\n", V1_UNKNOWN
    sport, dport = draw(u16), draw(u16)
    if kind == "TCP4":
        src4, dst4 = draw(ipv4s), draw(ipv4s)
        line = f"PROXY TCP4 {src4} {dst4} {sport} {dport}\r\n"
        return line.encode(), proxied(1, ProxyFamily.INET, src4, dst4, sport, dport)
    src6, dst6 = draw(ipv6s), draw(ipv6s)
    forms: list[Callable[[IPv6], str]] = [
        str,
        lambda a: a.exploded,
        lambda a: a.exploded.upper(),
        lambda a: str(a).upper(),
    ]
    render_src = draw(st.sampled_from(forms))
    render_dst = draw(st.sampled_from(forms))
    line = f"PROXY TCP6 {render_src(src6)} {render_dst(dst6)} {sport} {dport}\r\n"
    return line.encode(), proxied(1, ProxyFamily.INET6, src6, dst6, sport, dport)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.one_of(v1_headers(), v2_headers()),
    junk=st.binary(max_size=64),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
@example(sample=(b"PROXY UNKNOWN\r\n", V1_UNKNOWN), junk=b"\r\n", cuts=[14])
def test_generated_headers_round_trip(
    sample: tuple[bytes, ProxyInfo], junk: bytes, cuts: list[int]
) -> None:
    header, expected = sample
    data = header + junk
    reader = ProxyHeaderReader()
    info, rest = feed_all(reader, split(data, cuts))
    assert info == expected
    assert rest == junk
    assert reader.header == header
    assert info.has_addresses is (expected.family is not ProxyFamily.UNSPEC)


def _outcome(chunks: list[bytes]) -> ProxyInfo | ProxyErrorReason | None:
    reader = ProxyHeaderReader()
    try:
        info, _ = feed_all(reader, chunks)
        if info is None:
            assert reader.buffered <= MAX_V2_LENGTH
            reader.feed_eof()
        return info
    except ProxyProtocolError as exc:
        return exc.reason


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    header, _ = draw(st.one_of(v1_headers(), v2_headers()))
    data = bytearray(header)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_mutations_parse_or_raise_protocol_errors(data: bytes, cuts: list[int]) -> None:
    whole = _outcome([data] if data else [])
    chunked = _outcome(split(data, cuts))
    bytewise = _outcome([data[i : i + 1] for i in range(len(data))])
    # Only ProxyProtocolError escapes (anything else fails the test), and how the bytes were
    # split never changes the outcome.
    assert whole == chunked == bytewise
