"""PROXY protocol v2: the binary header.

Layout (doc/proxy-protocol.txt, section 2.2)::

    offset  size  field
    0       12    signature  \\r\\n\\r\\n\\x00\\r\\nQUIT\\n
    12      1     version (high nibble, must be 2) | command (low nibble: 0 LOCAL, 1 PROXY)
    13      1     family (high nibble: 0-3) | transport (low nibble: 0-2)
    14      2     length of what follows, big-endian
    16      len   address block (12 INET, 36 INET6, 216 UNIX), then TLVs

Each fixed field is checked as soon as its byte arrives (:func:`check_command`,
:func:`check_family`, :func:`check_length`), so garbage is refused without waiting for the
announced length. For LOCAL the family byte and the whole block are skipped, as the
specification says. For PROXY with an UNSPEC family or transport the block is skipped too (the
receiver "should ignore address information"); only the six address-carrying combinations
(TCP/UDP over IPv4/IPv6, UNIX stream/datagram) have their addresses and TLVs decoded.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from smtpd_trio.proxy._errors import (
    ProxyChecksumError,
    ProxyErrorReason,
    ProxyProtocolError,
)
from smtpd_trio.proxy._info import Address, ProxyCommand, ProxyFamily, ProxyInfo, ProxyTransport
from smtpd_trio.proxy.crc32c import crc32c
from smtpd_trio.proxy.tlv import TLV, TLVType, decode_tlv, iter_spans

#: The 12 bytes every v2 header starts with.
SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: The fixed part: signature, version/command, family/transport, length.
FIXED_LENGTH: Final = 16
#: The longest v2 header: the fixed part plus the largest 16-bit length.
MAX_LENGTH: Final = FIXED_LENGTH + 0xFFFF

_ADDRESS_LENGTH: Final = {ProxyFamily.INET: 12, ProxyFamily.INET6: 36, ProxyFamily.UNIX: 216}
_UNIX_PATH: Final = 108
_INET: Final = struct.Struct("!4s4sHH")
_INET6: Final = struct.Struct("!16s16sHH")


def _error(reason: ProxyErrorReason, message: str) -> ProxyProtocolError:
    return ProxyProtocolError(reason, message)


_COMMANDS: Final = tuple(ProxyCommand)
_FAMILIES: Final = tuple(ProxyFamily)
_TRANSPORTS: Final = tuple(ProxyTransport)


def check_command(byte: int) -> ProxyCommand:
    """Check byte 13 (version and command) and return the command."""
    if byte >> 4 != 2:
        raise _error(ProxyErrorReason.BAD_V2_VERSION, f"v2 version nibble is {byte >> 4}, not 2")
    command = byte & 0x0F
    if command > ProxyCommand.PROXY:
        raise _error(ProxyErrorReason.BAD_COMMAND, f"v2 command {command} is not LOCAL or PROXY")
    return _COMMANDS[command]


def check_family(byte: int, command: ProxyCommand) -> tuple[ProxyFamily, ProxyTransport]:
    """Check byte 14 (family and transport); LOCAL ignores it and reports UNSPEC for both."""
    if command is ProxyCommand.LOCAL:
        return ProxyFamily.UNSPEC, ProxyTransport.UNSPEC
    family, transport = byte >> 4, byte & 0x0F
    if family > ProxyFamily.UNIX:
        raise _error(ProxyErrorReason.BAD_FAMILY, f"v2 address family {family} is unknown")
    if transport > ProxyTransport.DGRAM:
        raise _error(ProxyErrorReason.BAD_TRANSPORT, f"v2 transport {transport} is unknown")
    return _FAMILIES[family], _TRANSPORTS[transport]


def _carries_addresses(
    command: ProxyCommand, family: ProxyFamily, transport: ProxyTransport
) -> bool:
    return (
        command is ProxyCommand.PROXY
        and family is not ProxyFamily.UNSPEC
        and transport is not ProxyTransport.UNSPEC
    )


def check_length(
    length: int, command: ProxyCommand, family: ProxyFamily, transport: ProxyTransport
) -> None:
    """Check the length field against the address block the family needs."""
    if not _carries_addresses(command, family, transport):
        return
    need = _ADDRESS_LENGTH[family]
    if length < need:
        raise _error(
            ProxyErrorReason.BAD_LENGTH,
            f"v2 length {length} is shorter than the {need}-byte {family.name} address block",
        )


def _unix_path(field: bytes) -> str:
    end = field.find(b"\x00")
    if end < 0:
        raise _error(ProxyErrorReason.BAD_ADDRESS, "v2 UNIX path is not NUL-terminated")
    return field[:end].decode("utf-8", "surrogateescape")


def _tlvs(header: bytes, start: int) -> tuple[TLV, ...]:
    spans = list(iter_spans(header, start))
    crc_span: tuple[int, int] | None = None
    for tlv_type, value_start, value_end in spans:
        if tlv_type != TLVType.CRC32C:
            continue
        if value_end - value_start != 4:
            raise _error(
                ProxyErrorReason.BAD_TLV,
                f"CRC32C TLV has {value_end - value_start} bytes, not 4",
            )
        if crc_span is not None:
            raise _error(ProxyErrorReason.BAD_TLV, "more than one CRC32C TLV")
        crc_span = (value_start, value_end)
    if crc_span is not None:
        value_start, value_end = crc_span
        expected = int.from_bytes(header[value_start:value_end], "big")
        actual = crc32c(header[:value_start])
        actual = crc32c(b"\x00\x00\x00\x00", actual)
        actual = crc32c(header[value_end:], actual)
        if actual != expected:
            raise ProxyChecksumError(
                f"CRC32C is 0x{expected:08X} in the header, 0x{actual:08X} computed"
            )
    return tuple(decode_tlv(t, header[s:e]) for t, s, e in spans)


def parse_v2(
    header: bytes, command: ProxyCommand, family: ProxyFamily, transport: ProxyTransport
) -> ProxyInfo:
    """Parse a complete v2 header (exactly 16 + length bytes) whose fixed part was checked.

    ``command``, ``family`` and ``transport`` are what :func:`check_command` and
    :func:`check_family` returned for it.
    """
    if not _carries_addresses(command, family, transport):
        return ProxyInfo(2, command, family, transport)
    source: Address
    destination: Address
    source_port: int | None
    destination_port: int | None
    body = FIXED_LENGTH
    if family is ProxyFamily.INET:
        raw_src, raw_dst, source_port, destination_port = _INET.unpack_from(header, body)
        source = ipaddress.IPv4Address(raw_src)
        destination = ipaddress.IPv4Address(raw_dst)
    elif family is ProxyFamily.INET6:
        raw_src, raw_dst, source_port, destination_port = _INET6.unpack_from(header, body)
        source = ipaddress.IPv6Address(raw_src)
        destination = ipaddress.IPv6Address(raw_dst)
    else:
        source = _unix_path(header[body : body + _UNIX_PATH])
        destination = _unix_path(header[body + _UNIX_PATH : body + 2 * _UNIX_PATH])
        source_port = destination_port = None
    return ProxyInfo(
        version=2,
        command=command,
        family=family,
        transport=transport,
        source_address=source,
        destination_address=destination,
        source_port=source_port,
        destination_port=destination_port,
        tlvs=_tlvs(header, body + _ADDRESS_LENGTH[family]),
    )
