"""Reading PROXY protocol headers (HAProxy's doc/proxy-protocol.txt, v1 and v2), sans-IO.

Theory of operation
-------------------

A load balancer that speaks the PROXY protocol sends one header at the very start of each
connection, before any SMTP byte, naming the real client and the address it connected to. The
receiver must only accept it from trusted proxies (see :mod:`smtpd_trio.trust`), must never
guess whether a header is present (a listener either requires it or does not), and must drop the
connection on anything malformed.

:class:`ProxyHeaderReader` is a small state machine fed with whatever bytes arrive; it does no
I/O, so the Trio layer owns reading and timeouts::

    DETECT --"P"--> V1 --CRLF--> DONE (info, trailing)
       |                |
       +--"\\r"--> V2 --16+len bytes--> DONE
       |                |
       +--other--> ERROR <-- any malformed byte, as soon as it is seen

The result is a frozen :class:`ProxyInfo`: version, command, family, transport, the two
endpoints (or None: "use the real connection's endpoints", for v1 UNKNOWN and v2 LOCAL/UNSPEC),
and for v2 the TLVs decoded into value types (:mod:`smtpd_trio.proxy.tlv`). A v2 CRC32C TLV is
always verified (:mod:`smtpd_trio.proxy.crc32c`). Bytes after the header are returned in
:attr:`ProxyHeaderReader.trailing` and belong to SMTP.

Errors::

    SMTPDTrioError                      (smtpd_trio.errors)
    └── ProxyProtocolError              .reason: a ProxyErrorReason
        └── ProxyChecksumError          reason CHECKSUM_MISMATCH
"""

from smtpd_trio.proxy._errors import ProxyChecksumError, ProxyErrorReason, ProxyProtocolError
from smtpd_trio.proxy._info import Address, ProxyCommand, ProxyFamily, ProxyInfo, ProxyTransport
from smtpd_trio.proxy.reader import (
    MAX_V1_LENGTH,
    MAX_V2_LENGTH,
    ProxyHeaderReader,
    parse_proxy_header,
)
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
    NoopTLV,
    RawTLV,
    SSLClientFlags,
    SSLSubTLV,
    SSLSubType,
    TLVType,
    UniqueIdTLV,
    decode_tlvs,
)

__all__ = [
    "CRC32CTLV",
    "MAX_V1_LENGTH",
    "MAX_V2_LENGTH",
    "SSLTLV",
    "TLV",
    "AWSVPCEndpointTLV",
    "Address",
    "AlpnTLV",
    "AuthorityTLV",
    "AzurePrivateLinkTLV",
    "GCPPSCConnectionTLV",
    "NetnsTLV",
    "NoopTLV",
    "ProxyChecksumError",
    "ProxyCommand",
    "ProxyErrorReason",
    "ProxyFamily",
    "ProxyHeaderReader",
    "ProxyInfo",
    "ProxyProtocolError",
    "ProxyTransport",
    "RawTLV",
    "SSLClientFlags",
    "SSLSubTLV",
    "SSLSubType",
    "TLVType",
    "UniqueIdTLV",
    "decode_tlvs",
    "parse_proxy_header",
]
