"""PROXY protocol v1: the text header.

The grammar (doc/proxy-protocol.txt, section 2.1), with single spaces and a CRLF within 107
bytes::

    "PROXY TCP4 " ipv4 " " ipv4 " " port " " port CRLF
    "PROXY TCP6 " ipv6 " " ipv6 " " port " " port CRLF
    "PROXY UNKNOWN" CRLF
    "PROXY UNKNOWN " <anything but CR and LF> CRLF

IPv4 octets and ports are decimal without leading zeros (``0`` itself is fine). IPv6 takes any
textual form Python's :mod:`ipaddress` accepts except scoped addresses (``%zone``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from smtpd_trio.proxy._errors import ProxyErrorReason, ProxyProtocolError, snippet
from smtpd_trio.proxy._info import ProxyCommand, ProxyFamily, ProxyInfo, ProxyTransport

#: Every v1 header starts with these bytes.
PREFIX: Final = b"PROXY "
#: The longest v1 header, CRLF included.
MAX_LENGTH: Final = 107

#: What may follow PREFIX; a header whose next bytes fit none of these is refused at once.
_PROTOCOLS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN\r", b"UNKNOWN ")

_IPV4: Final = re.compile(rb"(?:(?:0|[1-9][0-9]{0,2})\.){3}(?:0|[1-9][0-9]{0,2})")
_IPV6_CHARS: Final = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_PORT: Final = re.compile(rb"0|[1-9][0-9]{0,4}")

_OCTET = rb"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PORT_TEXT = rb"(0|[1-9][0-9]{0,4})"
#: A complete, valid TCP4 line (the common case), matched in one go.
_TCP4_LINE: Final = re.compile(
    rb"PROXY TCP4 "
    + rb"\.".join([_OCTET] * 4)
    + rb" "
    + rb"\.".join([_OCTET] * 4)
    + rb" "
    + _PORT_TEXT
    + rb" "
    + _PORT_TEXT
    + rb"\r\n"
)

_UNKNOWN: Final = ProxyInfo(1, ProxyCommand.PROXY, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC)


def _error(reason: ProxyErrorReason, message: str) -> ProxyProtocolError:
    return ProxyProtocolError(reason, message)


def check_protocol_prefix(after_prefix: bytes) -> None:
    """Refuse early a header whose protocol word cannot become TCP4, TCP6 or UNKNOWN."""
    if after_prefix.startswith(_PROTOCOLS):
        return
    for candidate in _PROTOCOLS:
        n = min(len(after_prefix), len(candidate))
        if after_prefix[:n] == candidate[:n]:
            return
    raise _error(
        ProxyErrorReason.BAD_V1_SYNTAX, f"unknown v1 protocol in {snippet(PREFIX + after_prefix)}"
    )


def _ipv4(text: bytes) -> ipaddress.IPv4Address:
    if b":" in text:
        raise _error(ProxyErrorReason.FAMILY_MISMATCH, f"TCP4 with address {snippet(text)}")
    if _IPV4.fullmatch(text) is None or any(int(octet) > 255 for octet in text.split(b".")):
        raise _error(ProxyErrorReason.BAD_ADDRESS, f"bad IPv4 address {snippet(text)}")
    return ipaddress.IPv4Address(text.decode("ascii"))


def _ipv6(text: bytes) -> ipaddress.IPv6Address:
    if b":" not in text and _IPV4.fullmatch(text) is not None:
        raise _error(ProxyErrorReason.FAMILY_MISMATCH, f"TCP6 with address {snippet(text)}")
    if _IPV6_CHARS.fullmatch(text) is None:
        raise _error(ProxyErrorReason.BAD_ADDRESS, f"bad IPv6 address {snippet(text)}")
    try:
        return ipaddress.IPv6Address(text.decode("ascii"))
    except ValueError:
        raise _error(ProxyErrorReason.BAD_ADDRESS, f"bad IPv6 address {snippet(text)}") from None


def _port(text: bytes) -> int:
    if _PORT.fullmatch(text) is None or (port := int(text)) > 65535:
        raise _error(ProxyErrorReason.BAD_PORT, f"bad port {snippet(text)}")
    return port


def parse_tcp4_fast(line: bytes) -> ProxyInfo | None:
    """Parse a complete, valid ``PROXY TCP4`` line in one step; None for anything else."""
    match = _TCP4_LINE.fullmatch(line)
    if match is None:
        return None
    g = [int(x) for x in match.groups()]
    if g[8] > 65535 or g[9] > 65535:
        return None
    return ProxyInfo(
        1,
        ProxyCommand.PROXY,
        ProxyFamily.INET,
        ProxyTransport.STREAM,
        ipaddress.IPv4Address((g[0] << 24) | (g[1] << 16) | (g[2] << 8) | g[3]),
        ipaddress.IPv4Address((g[4] << 24) | (g[5] << 16) | (g[6] << 8) | g[7]),
        g[8],
        g[9],
    )


def parse_v1(line: bytes) -> ProxyInfo:
    """Parse a complete v1 header: ``line`` starts with ``PROXY `` and ends with its CRLF.

    The caller has already checked that the only CR and LF are the final CRLF.
    """
    if line.startswith(b"PROXY TCP4 "):
        fast = parse_tcp4_fast(line)
        if fast is not None:
            return fast
    body = line[len(PREFIX) : -2]
    if body == b"UNKNOWN" or body.startswith(b"UNKNOWN "):
        return _UNKNOWN
    fields = body.split(b" ")
    protocol = fields[0]
    if protocol not in (b"TCP4", b"TCP6"):
        raise _error(ProxyErrorReason.BAD_V1_SYNTAX, f"unknown v1 protocol in {snippet(line)}")
    if len(fields) != 5 or not all(fields):
        raise _error(
            ProxyErrorReason.BAD_V1_SYNTAX,
            f"v1 header needs 6 single-spaced fields: {snippet(line)}",
        )
    if protocol == b"TCP4":
        family = ProxyFamily.INET
        source: ipaddress.IPv4Address | ipaddress.IPv6Address = _ipv4(fields[1])
        destination: ipaddress.IPv4Address | ipaddress.IPv6Address = _ipv4(fields[2])
    else:
        family = ProxyFamily.INET6
        source = _ipv6(fields[1])
        destination = _ipv6(fields[2])
    return ProxyInfo(
        version=1,
        command=ProxyCommand.PROXY,
        family=family,
        transport=ProxyTransport.STREAM,
        source_address=source,
        destination_address=destination,
        source_port=_port(fields[3]),
        destination_port=_port(fields[4]),
    )
