"""ProxyInfo, the result of reading a PROXY header, and its enums."""

from __future__ import annotations

import enum
import ipaddress
from typing import Literal, TypeVar, final

import attrs

from smtpd_trio.proxy.tlv import (
    CRC32CTLV,
    SSLTLV,
    TLV,
    AlpnTLV,
    AuthorityTLV,
    AWSVPCEndpointTLV,
    AzurePrivateLinkTLV,
    GCPPSCConnectionTLV,
    NetnsTLV,
    UniqueIdTLV,
)

__all__ = ["Address", "ProxyCommand", "ProxyFamily", "ProxyInfo", "ProxyTransport"]

_T = TypeVar("_T")

#: An endpoint address: an IP address, or a UNIX socket path.
Address = ipaddress.IPv4Address | ipaddress.IPv6Address | str


@final
class ProxyCommand(enum.IntEnum):
    """What the proxy says the connection is (v2's command nibble; v1 is always PROXY)."""

    #: The proxy opened the connection itself (a health check): use the real endpoints.
    LOCAL = 0x0
    #: The connection is relayed on behalf of a client; the header describes it.
    PROXY = 0x1


@final
class ProxyFamily(enum.IntEnum):
    """The address family of the relayed connection (v2's family nibble)."""

    #: Unknown or unsupported (v1 ``UNKNOWN``, v2 ``AF_UNSPEC``): use the real endpoints.
    UNSPEC = 0x0
    #: IPv4 (v1 ``TCP4``).
    INET = 0x1
    #: IPv6 (v1 ``TCP6``).
    INET6 = 0x2
    #: UNIX sockets (v2 only); addresses are paths.
    UNIX = 0x3


@final
class ProxyTransport(enum.IntEnum):
    """The transport protocol of the relayed connection (v2's transport nibble)."""

    #: Unknown or unsupported: use the real endpoints.
    UNSPEC = 0x0
    #: A stream socket: TCP, or a UNIX stream socket. v1 ``TCP4``/``TCP6`` are STREAM.
    STREAM = 0x1
    #: A datagram socket: UDP, or a UNIX datagram socket.
    DGRAM = 0x2


@final
@attrs.frozen
class ProxyInfo:
    """What a PROXY header said about the connection.

    When :attr:`has_addresses` is False (v1 ``UNKNOWN``, v2 ``LOCAL``, or a v2 family or
    transport of UNSPEC), the four endpoint fields are None and the receiver must use the real
    connection's endpoints, as if there had been no header. Otherwise the source is the client
    and the destination is the address the client connected to; ports are None for UNIX.
    """

    #: 1 for the text header, 2 for the binary one.
    version: Literal[1, 2]
    command: ProxyCommand
    family: ProxyFamily
    transport: ProxyTransport
    source_address: Address | None = None
    destination_address: Address | None = None
    source_port: int | None = None
    destination_port: int | None = None
    #: v2 TLVs in wire order (always empty for v1, and for v2 headers without addresses).
    tlvs: tuple[TLV, ...] = ()

    @property
    def has_addresses(self) -> bool:
        """True when the header carries the original endpoints; False: use the real ones."""
        return self.source_address is not None

    def _first(self, kind: type[_T]) -> _T | None:
        for tlv in self.tlvs:
            if isinstance(tlv, kind):
                return tlv
        return None

    @property
    def alpn(self) -> bytes | None:
        """The ALPN protocol, from the first ALPN TLV."""
        tlv = self._first(AlpnTLV)
        return None if tlv is None else tlv.protocol

    @property
    def authority(self) -> str | None:
        """The host name the client asked for, from the first AUTHORITY TLV."""
        tlv = self._first(AuthorityTLV)
        return None if tlv is None else tlv.host_name

    @property
    def unique_id(self) -> bytes | None:
        """The proxy's id for the connection, from the first UNIQUE_ID TLV."""
        tlv = self._first(UniqueIdTLV)
        return None if tlv is None else tlv.unique_id

    @property
    def ssl(self) -> SSLTLV | None:
        """The client's TLS facts, from the first SSL TLV."""
        return self._first(SSLTLV)

    @property
    def crc32c(self) -> int | None:
        """The header checksum, which the reader has verified, or None when absent."""
        tlv = self._first(CRC32CTLV)
        return None if tlv is None else tlv.checksum

    @property
    def netns(self) -> str | None:
        """The network namespace name, from the first NETNS TLV."""
        tlv = self._first(NetnsTLV)
        return None if tlv is None else tlv.name

    @property
    def aws_vpc_endpoint_id(self) -> str | None:
        """The AWS VPC endpoint id (AWS PrivateLink / NLB)."""
        tlv = self._first(AWSVPCEndpointTLV)
        return None if tlv is None else tlv.vpc_endpoint_id

    @property
    def azure_private_link_id(self) -> int | None:
        """The Azure private endpoint link id."""
        tlv = self._first(AzurePrivateLinkTLV)
        return None if tlv is None else tlv.link_id

    @property
    def gcp_psc_connection_id(self) -> int | None:
        """The Google Cloud Private Service Connect connection id."""
        tlv = self._first(GCPPSCConnectionTLV)
        return None if tlv is None else tlv.connection_id
