"""The PROXY protocol errors.

::

    SMTPDTrioError                      (smtpd_trio.errors)
    └── ProxyProtocolError              the peer sent a malformed PROXY header; see .reason
        └── ProxyChecksumError          a v2 header's CRC32C TLV does not match the header

Every error carries a :class:`ProxyErrorReason`, so callers can count and log failures by kind
without parsing messages. Messages are short and safe to log: they quote at most a few dozen
bytes of peer input, escaped with ``repr``.
"""

from __future__ import annotations

import enum
from typing import final

from smtpd_trio.errors import SMTPDTrioError

__all__ = ["ProxyChecksumError", "ProxyErrorReason", "ProxyProtocolError"]

#: The most bytes of peer input an error message ever quotes.
_SNIPPET_MAX = 32


@final
class ProxyErrorReason(enum.Enum):
    """Why a PROXY header was refused."""

    #: The bytes are not the start of a PROXY header of any version (e.g. a plain SMTP client).
    NOT_PROXY = "not-proxy"
    #: The header is of a version this reader was configured not to accept.
    VERSION_DISABLED = "version-disabled"
    #: A v1 line breaks the grammar: spaces, protocol word, field count, bare CR or LF.
    BAD_V1_SYNTAX = "bad-v1-syntax"
    #: An address is not valid text (v1) or a UNIX path is not NUL-terminated (v2).
    BAD_ADDRESS = "bad-address"
    #: A v1 port is not a decimal integer in 0..65535 without leading zeros.
    BAD_PORT = "bad-port"
    #: A v1 address does not belong to the family named by the protocol word.
    FAMILY_MISMATCH = "family-mismatch"
    #: No CRLF within the first 107 bytes of a v1 header.
    TOO_LONG = "too-long"
    #: The v2 version nibble is not 2.
    BAD_V2_VERSION = "bad-v2-version"
    #: The v2 command nibble is neither LOCAL (0) nor PROXY (1).
    BAD_COMMAND = "bad-command"
    #: The v2 address family nibble is not UNSPEC, INET, INET6 or UNIX.
    BAD_FAMILY = "bad-family"
    #: The v2 transport nibble is not UNSPEC, STREAM or DGRAM.
    BAD_TRANSPORT = "bad-transport"
    #: The v2 length field is too short for the address family it announces.
    BAD_LENGTH = "bad-length"
    #: The v2 TLV area is malformed, or a TLV value breaks its type's rules.
    BAD_TLV = "bad-tlv"
    #: The v2 CRC32C TLV does not match the checksum of the header.
    CHECKSUM_MISMATCH = "checksum-mismatch"
    #: The stream ended before the header was complete.
    TRUNCATED = "truncated"


class ProxyProtocolError(SMTPDTrioError):
    """The peer sent bytes that are not a valid PROXY protocol header.

    The connection must be dropped: the PROXY protocol forbids falling back to treating the
    bytes as the application protocol.
    """

    def __init__(self, reason: ProxyErrorReason, message: str) -> None:
        super().__init__(message)
        #: Why the header was refused.
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.args[0]}"


@final
class ProxyChecksumError(ProxyProtocolError):
    """A v2 header carries a CRC32C TLV that does not match the header's checksum."""

    def __init__(self, message: str) -> None:
        super().__init__(ProxyErrorReason.CHECKSUM_MISMATCH, message)


def snippet(data: bytes | bytearray | memoryview) -> str:
    """Return a short, escaped rendering of peer bytes, safe to put in a log line."""
    raw = bytes(data[:_SNIPPET_MAX])
    more = "..." if len(data) > _SNIPPET_MAX else ""
    return f"{raw!r}{more}"
