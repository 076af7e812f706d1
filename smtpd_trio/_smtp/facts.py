"""What the protocol has established about a connection: one record, written by the machine.

:class:`SessionFacts` is the single source of truth for the facts the SMTP conversation
establishes (the HELO/EHLO/LHLO name, TLS, the authenticated identity, messages accepted, what
XCLIENT forwarded). The state machine writes them; everyone else reads them. The
handler-facing :class:`smtpd_trio.Session` *is* a ``SessionFacts`` (a subclass adding the
connection's endpoints and the handler's state), so there is nothing to copy and nothing to
keep in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import attrs

from .xclient import XClientInfo

__all__ = ["SessionFacts", "TLSInfo"]


@final
@attrs.frozen
class TLSInfo:
    """What was negotiated when the session is under TLS."""

    version: str
    cipher: str
    #: The SNI name the client asked for, if any.
    server_name: str | None = None
    #: The client certificate (as ``ssl.SSLSocket.getpeercert()`` gives it), when verified.
    peer_certificate: Mapping[str, Any] | None = None


@attrs.define(slots=True, eq=False, kw_only=True, repr=False)
class SessionFacts:
    """The protocol facts of one session. Read them through the properties; only the state
    machine changes them (the constructor arguments exist for tests and tools that build a
    session by hand)."""

    _helo_name: str | None = None
    _extended: bool = False
    _tls: TLSInfo | None = None
    _authenticated_as: str | None = None
    _messages_accepted: int = 0
    _xclient: XClientInfo | None = None
    _lmtp: bool = False

    @property
    def helo_name(self) -> str | None:
        """The HELO/EHLO name, once accepted (forgotten again after STARTTLS; after XCLIENT, its
        ``HELO`` until the client's next HELO/EHLO)."""
        return self._helo_name

    @property
    def extended(self) -> bool:
        """True once EHLO (rather than HELO) was accepted."""
        return self._extended

    @property
    def tls(self) -> TLSInfo | None:
        """TLS facts while the session is under TLS (implicit TLS, or after STARTTLS)."""
        return self._tls

    @property
    def authenticated_as(self) -> str | None:
        """The identity SMTP AUTH (or XCLIENT ``LOGIN``) established, if any (forgotten after
        STARTTLS and after an XCLIENT without ``LOGIN``)."""
        return self._authenticated_as

    @property
    def messages_accepted(self) -> int:
        """Messages acknowledged with 250 in this session."""
        return self._messages_accepted

    @property
    def xclient(self) -> XClientInfo | None:
        """What XCLIENT commands forwarded about the client, or None if none was accepted."""
        return self._xclient

    @property
    def lmtp(self) -> bool:
        """True if the session speaks LMTP (RFC 2033) rather than SMTP."""
        return self._lmtp
