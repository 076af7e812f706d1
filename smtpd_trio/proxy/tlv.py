"""PROXY v2 TLVs (type-length-value records after the address block), decoded into value types.

Each TLV is one byte of type, two bytes of big-endian length, then the value. The registered types
(HAProxy's doc/proxy-protocol.txt, section 2.2) and the cloud vendors' custom types decode into
the frozen classes below; every other type is kept as :class:`RawTLV`, in wire order, so nothing
the proxy sent is lost. The rules enforced here (anything else is :attr:`BAD_TLV
<smtpd_trio.proxy.ProxyErrorReason.BAD_TLV>`):

- a TLV may not overrun the area, and no bytes may be left that are too short for a TLV header;
- CRC32C is exactly 4 bytes and appears at most once; UNIQUE_ID is at most 128 bytes;
- AUTHORITY and the SSL common name are UTF-8; NETNS, the SSL version, cipher, algorithm, group
  and signature-scheme names and the AWS VPC endpoint id are US-ASCII;
- SSL holds a flags byte, a 32-bit verify result and then sub-TLVs obeying the same framing;
- AWS (0xEA) and Azure (0xEE) values start with a subtype byte; subtype 0x01 is decoded (an AWS
  VPC endpoint id; an Azure private link id, exactly 4 bytes little-endian), others stay raw;
- GCP (0xE0) is a 64-bit big-endian PSC connection id; as 0xE0 opens the range any application
  may use, a 0xE0 TLV that is not exactly 8 bytes is kept raw rather than refused.

Checking the CRC32C against the header is the reader's job (it needs the whole header).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import ClassVar, Final, final

import attrs

from smtpd_trio.proxy._errors import ProxyErrorReason, ProxyProtocolError

__all__ = [
    "CRC32CTLV",
    "SSLTLV",
    "TLV",
    "AWSVPCEndpointTLV",
    "AlpnTLV",
    "AuthorityTLV",
    "AzurePrivateLinkTLV",
    "GCPPSCConnectionTLV",
    "NetnsTLV",
    "NoopTLV",
    "RawTLV",
    "SSLClientFlags",
    "SSLSubTLV",
    "SSLSubType",
    "TLVType",
    "UniqueIdTLV",
    "decode_tlvs",
]

Buffer = bytes | bytearray | memoryview

#: The longest UNIQUE_ID value the specification allows.
MAX_UNIQUE_ID: Final = 128


@final
class TLVType(enum.IntEnum):
    """The TLV types this package decodes."""

    #: Application-Layer Protocol Negotiation: the protocol the client negotiated (bytes).
    ALPN = 0x01
    #: The host name the client asked for (TLS SNI, or similar), UTF-8.
    AUTHORITY = 0x02
    #: CRC32C of the whole header, computed with this field zeroed.
    CRC32C = 0x03
    #: Padding; ignored.
    NOOP = 0x04
    #: An opaque id of up to 128 bytes the proxy gave the connection.
    UNIQUE_ID = 0x05
    #: Facts about the client's TLS connection to the proxy, with sub-TLVs.
    SSL = 0x20
    #: The network namespace the connection came through, US-ASCII.
    NETNS = 0x30
    #: Google Cloud Private Service Connect: the PSC connection id (custom range).
    GCP = 0xE0
    #: Amazon Web Services: subtype 0x01 is the VPC endpoint id (custom range).
    AWS = 0xEA
    #: Microsoft Azure: subtype 0x01 is the private endpoint link id (custom range).
    AZURE = 0xEE


@final
class SSLSubType(enum.IntEnum):
    """The sub-TLV types inside an :class:`SSLTLV`."""

    #: The TLS version, e.g. ``"TLSv1.3"``.
    VERSION = 0x21
    #: The Common Name of the client certificate's subject, UTF-8.
    CN = 0x22
    #: The cipher, e.g. ``"ECDHE-RSA-AES128-GCM-SHA256"``.
    CIPHER = 0x23
    #: The signature algorithm of the proxy's (frontend's) certificate, e.g. ``"RSA-SHA256"``.
    SIG_ALG = 0x24
    #: The key algorithm of the proxy's (frontend's) certificate, e.g. ``"RSA2048"``.
    KEY_ALG = 0x25
    #: The key-exchange group, e.g. ``"secp256r1"``.
    GROUP = 0x26
    #: The signature scheme of the handshake, e.g. ``"rsa_pss_rsae_sha256"``.
    SIG_SCHEME = 0x27
    #: The client certificate, DER-encoded (bytes).
    CLIENT_CERT = 0x28


@final
class SSLClientFlags(enum.IntFlag):
    """The ``client`` bit field of an :class:`SSLTLV` (unknown bits are kept)."""

    #: The client connected over SSL/TLS.
    SSL = 0x01
    #: The client presented a certificate on this connection.
    CERT_CONN = 0x02
    #: The client presented a certificate at least once in this TLS session.
    CERT_SESS = 0x04


@final
@attrs.frozen
class AlpnTLV:
    """``PP2_TYPE_ALPN``: the application protocol negotiated with the client."""

    type: ClassVar[int] = TLVType.ALPN
    #: The protocol name as sent, e.g. ``b"smtp"``.
    protocol: bytes


@final
@attrs.frozen
class AuthorityTLV:
    """``PP2_TYPE_AUTHORITY``: the host name the client asked for (TLS SNI, usually)."""

    type: ClassVar[int] = TLVType.AUTHORITY
    host_name: str


@final
@attrs.frozen
class CRC32CTLV:
    """``PP2_TYPE_CRC32C``: the header checksum (already verified when the reader returns it)."""

    type: ClassVar[int] = TLVType.CRC32C
    checksum: int


@final
@attrs.frozen
class NoopTLV:
    """``PP2_TYPE_NOOP``: padding, to be ignored."""

    type: ClassVar[int] = TLVType.NOOP
    padding: bytes


@final
@attrs.frozen
class UniqueIdTLV:
    """``PP2_TYPE_UNIQUE_ID``: an opaque connection id of at most 128 bytes."""

    type: ClassVar[int] = TLVType.UNIQUE_ID
    unique_id: bytes


@final
@attrs.frozen
class SSLSubTLV:
    """One sub-TLV of an :class:`SSLTLV`.

    ``value`` is a ``str`` for the text subtypes (VERSION, CN, CIPHER, SIG_ALG, KEY_ALG, GROUP,
    SIG_SCHEME) and ``bytes`` for CLIENT_CERT and for subtypes this package does not know.
    """

    type: int
    value: str | bytes


@final
@attrs.frozen
class SSLTLV:
    """``PP2_TYPE_SSL``: facts about the client's TLS connection to the proxy.

    The properties return the first sub-TLV of each subtype, or None when it is absent.
    """

    type: ClassVar[int] = TLVType.SSL
    #: Which facts are present (SSL, CERT_CONN, CERT_SESS).
    client: SSLClientFlags
    #: Zero if the client presented a certificate and it was verified; non-zero otherwise.
    verify: int
    #: The sub-TLVs in wire order.
    sub_tlvs: tuple[SSLSubTLV, ...] = ()

    def _text(self, subtype: SSLSubType) -> str | None:
        for sub in self.sub_tlvs:
            if sub.type == subtype and isinstance(sub.value, str):
                return sub.value
        return None

    @property
    def verified(self) -> bool:
        """True when the client presented a certificate and the proxy verified it."""
        has_cert = bool(self.client & (SSLClientFlags.CERT_CONN | SSLClientFlags.CERT_SESS))
        return has_cert and self.verify == 0

    @property
    def version(self) -> str | None:
        """The TLS version, e.g. ``"TLSv1.3"``."""
        return self._text(SSLSubType.VERSION)

    @property
    def cn(self) -> str | None:
        """The Common Name of the client certificate."""
        return self._text(SSLSubType.CN)

    @property
    def cipher(self) -> str | None:
        """The cipher name."""
        return self._text(SSLSubType.CIPHER)

    @property
    def sig_alg(self) -> str | None:
        """The signature algorithm of the proxy's certificate."""
        return self._text(SSLSubType.SIG_ALG)

    @property
    def key_alg(self) -> str | None:
        """The key algorithm of the proxy's certificate."""
        return self._text(SSLSubType.KEY_ALG)

    @property
    def group(self) -> str | None:
        """The key-exchange group."""
        return self._text(SSLSubType.GROUP)

    @property
    def sig_scheme(self) -> str | None:
        """The handshake signature scheme."""
        return self._text(SSLSubType.SIG_SCHEME)

    @property
    def client_cert(self) -> bytes | None:
        """The client certificate, DER-encoded."""
        for sub in self.sub_tlvs:
            if sub.type == SSLSubType.CLIENT_CERT and isinstance(sub.value, bytes):
                return sub.value
        return None


@final
@attrs.frozen
class NetnsTLV:
    """``PP2_TYPE_NETNS``: the name of the network namespace."""

    type: ClassVar[int] = TLVType.NETNS
    name: str


@final
@attrs.frozen
class AWSVPCEndpointTLV:
    """AWS ``0xEA``, subtype ``0x01``: the VPC endpoint id, e.g. ``"vpce-08d2bf15fac5001c9"``."""

    type: ClassVar[int] = TLVType.AWS
    vpc_endpoint_id: str


@final
@attrs.frozen
class AzurePrivateLinkTLV:
    """Azure ``0xEE``, subtype ``0x01``: the private endpoint's link id."""

    type: ClassVar[int] = TLVType.AZURE
    link_id: int


@final
@attrs.frozen
class GCPPSCConnectionTLV:
    """GCP ``0xE0``: the Private Service Connect connection id."""

    type: ClassVar[int] = TLVType.GCP
    connection_id: int


@final
@attrs.frozen
class RawTLV:
    """A TLV of a type (or vendor subtype) this package does not decode, kept as sent."""

    type: int
    #: The value bytes (for vendor types, including the subtype byte).
    value: bytes


#: Any decoded TLV.
TLV = (
    AlpnTLV
    | AuthorityTLV
    | CRC32CTLV
    | NoopTLV
    | UniqueIdTLV
    | SSLTLV
    | NetnsTLV
    | AWSVPCEndpointTLV
    | AzurePrivateLinkTLV
    | GCPPSCConnectionTLV
    | RawTLV
)

_SSL_SUBTYPES: Final = {int(m): m for m in SSLSubType}
_SSL_FLAGS: Final = tuple(SSLClientFlags(n) for n in range(256))
_SSL_TEXT_UTF8: Final = frozenset({SSLSubType.CN})
_SSL_TEXT_ASCII: Final = frozenset(
    {
        SSLSubType.VERSION,
        SSLSubType.CIPHER,
        SSLSubType.SIG_ALG,
        SSLSubType.KEY_ALG,
        SSLSubType.GROUP,
        SSLSubType.SIG_SCHEME,
    }
)


def _bad(message: str) -> ProxyProtocolError:
    return ProxyProtocolError(ProxyErrorReason.BAD_TLV, message)


def iter_spans(
    area: Buffer, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(type, value_start, value_end)`` for each TLV in ``area[start:end]``.

    Raises :class:`ProxyProtocolError` (BAD_TLV) if a TLV overruns the area or the area ends
    with fewer than 3 bytes left.
    """
    stop = len(area) if end is None else end
    pos = start
    while pos < stop:
        if stop - pos < 3:
            raise _bad(f"{stop - pos} stray byte(s) after the last TLV")
        tlv_type = area[pos]
        length = (area[pos + 1] << 8) | area[pos + 2]
        value_start = pos + 3
        pos = value_start + length
        if pos > stop:
            raise _bad(f"TLV 0x{tlv_type:02X} of length {length} overruns its area")
        yield tlv_type, value_start, pos


def _text(value: bytes, encoding: str, what: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise _bad(f"{what} is not {encoding.upper()}") from None


def _decode_ssl(value: bytes) -> SSLTLV:
    if len(value) < 5:
        raise _bad(f"SSL TLV of {len(value)} bytes is shorter than its 5-byte header")
    client = _SSL_FLAGS[value[0]]
    verify = int.from_bytes(value[1:5], "big")
    subs = []
    for sub_type, start, end in iter_spans(value, 5):
        raw = value[start:end]
        decoded: str | bytes
        if sub_type in _SSL_TEXT_ASCII:
            decoded = _text(raw, "ascii", f"SSL sub-TLV 0x{sub_type:02X}")
        elif sub_type in _SSL_TEXT_UTF8:
            decoded = _text(raw, "utf-8", "SSL CN")
        else:
            decoded = raw
        kind: int = _SSL_SUBTYPES.get(sub_type, sub_type)
        subs.append(SSLSubTLV(kind, decoded))
    return SSLTLV(client, verify, tuple(subs))


def decode_tlv(tlv_type: int, value: bytes) -> TLV:
    """Decode the value of one TLV of type ``tlv_type``."""
    if tlv_type == TLVType.ALPN:
        return AlpnTLV(value)
    if tlv_type == TLVType.AUTHORITY:
        return AuthorityTLV(_text(value, "utf-8", "AUTHORITY"))
    if tlv_type == TLVType.CRC32C:
        if len(value) != 4:
            raise _bad(f"CRC32C TLV has {len(value)} bytes, not 4")
        return CRC32CTLV(int.from_bytes(value, "big"))
    if tlv_type == TLVType.NOOP:
        return NoopTLV(value)
    if tlv_type == TLVType.UNIQUE_ID:
        if len(value) > MAX_UNIQUE_ID:
            raise _bad(f"UNIQUE_ID TLV has {len(value)} bytes, over {MAX_UNIQUE_ID}")
        return UniqueIdTLV(value)
    if tlv_type == TLVType.SSL:
        return _decode_ssl(value)
    if tlv_type == TLVType.NETNS:
        return NetnsTLV(_text(value, "ascii", "NETNS"))
    if tlv_type == TLVType.AWS:
        if not value:
            raise _bad("AWS TLV has no subtype")
        if value[0] == 0x01:
            return AWSVPCEndpointTLV(_text(value[1:], "ascii", "AWS VPC endpoint id"))
    elif tlv_type == TLVType.AZURE:
        if not value:
            raise _bad("Azure TLV has no subtype")
        if value[0] == 0x01:
            if len(value) != 5:
                raise _bad(f"Azure private link id has {len(value) - 1} bytes, not 4")
            return AzurePrivateLinkTLV(int.from_bytes(value[1:], "little"))
    elif tlv_type == TLVType.GCP and len(value) == 8:
        return GCPPSCConnectionTLV(int.from_bytes(value, "big"))
    return RawTLV(tlv_type, value)


def decode_tlvs(area: Buffer) -> tuple[TLV, ...]:
    """Decode a whole TLV area (the bytes after the address block) into TLVs, in wire order.

    This checks each TLV's own rules but not a CRC32C against the header; use
    :class:`~smtpd_trio.proxy.ProxyHeaderReader` for that. A second CRC32C TLV is refused.
    """
    data = bytes(area)
    tlvs: list[TLV] = []
    seen_crc = False
    for tlv_type, start, end in iter_spans(data):
        if tlv_type == TLVType.CRC32C:
            if seen_crc:
                raise _bad("more than one CRC32C TLV")
            seen_crc = True
        tlvs.append(decode_tlv(tlv_type, data[start:end]))
    return tuple(tlvs)
