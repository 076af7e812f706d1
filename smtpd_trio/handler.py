"""What a handler sees and returns: :class:`Session`, :class:`Envelope`, :class:`Reject` and the
:class:`Handler` base class.

A handler is any object with some of these async methods (all optional; a missing one accepts)::

    async def on_proxy(self, session, info) -> Reply | None
    async def on_connect(self, session) -> Reply | None
    async def on_helo(self, session, name, extended) -> Reply | None
    async def on_mail(self, session, envelope, address, params) -> Reply | None
    async def on_rcpt(self, session, envelope, address, params) -> Reply | None
    async def on_data(self, session, envelope) -> Reply | None
    async def on_data_chunks(self, session, envelope, chunks) -> Reply | None   (streaming)
    async def on_reset(self, session, envelope) -> None
    async def on_close(self, session) -> None

Subclass :class:`Handler` to have a type checker verify the signatures. To refuse, raise
:class:`Reject` (or return a :class:`~smtpd_trio.Reply` with a 4xx/5xx code). Any other
exception escaping a callback is logged with the connection id and answered ``451 4.3.0``; its
text never reaches the client.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from ._smtp.replies import Reply
from .errors import SMTPDTrioError

if TYPE_CHECKING:
    from .proxy import ProxyInfo

__all__ = [
    "CALLBACK_NAMES",
    "Endpoint",
    "Envelope",
    "Handler",
    "MessageAborted",
    "Reject",
    "Session",
    "TLSInfo",
]


@final
@attrs.frozen
class Endpoint:
    """One end of a connection: an IP address (or a UNIX socket path) and a port."""

    #: The IP address as text (``"192.0.2.1"``, ``"2001:db8::1"``), or a UNIX socket path.
    host: str
    #: The port, or None for UNIX sockets and unknown ports.
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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


@final
@attrs.define(eq=False)
class Session:
    """One SMTP connection, as the handler sees it. The server keeps its fields current."""

    #: A short id unique within this process; every log line about the connection carries it.
    id: str
    #: The client: after a trusted PROXY header, the real client; else the immediate peer.
    client: Endpoint
    #: The immediate peer (the load balancer, when there is one).
    peer: Endpoint
    #: The host name this server announces (banner, EHLO, Received).
    hostname: str
    #: The PROXY protocol header that was believed, if any.
    proxy: ProxyInfo | None = None
    #: The HELO/EHLO name, once accepted.
    helo_name: str | None = None
    #: True once EHLO (rather than HELO) was accepted.
    extended: bool = False
    #: TLS facts while the session is under TLS.
    tls: TLSInfo | None = None
    #: The authenticated identity (SMTP AUTH), if any.
    authenticated_as: str | None = None
    #: When the connection was accepted (UTC).
    connected_at: _dt.datetime = attrs.field(factory=lambda: _dt.datetime.now(_dt.UTC))
    #: Messages accepted (250 sent) in this session.
    messages_accepted: int = 0
    #: Free for the handler's own per-connection state.
    state: dict[str, Any] = attrs.field(factory=dict)


@final
@attrs.define(eq=False)
class Envelope:
    """One mail transaction: MAIL FROM, RCPT TOs and, after DATA, the message."""

    #: An id for this transaction, unique within the process (used in Received and logs).
    id: str
    #: The reverse-path without brackets (``""`` is the null sender), once MAIL was accepted.
    mail_from: str | None = None
    #: MAIL's ESMTP parameters, keywords upper-cased.
    mail_params: Mapping[str, str | None] = attrs.field(factory=dict)
    #: Accepted recipients, in order.
    rcpt_tos: list[str] = attrs.field(factory=list)
    #: The parameters of each accepted RCPT, in the same order.
    rcpt_params: list[Mapping[str, str | None]] = attrs.field(factory=list)
    #: The message text, un-stuffed, exactly as the client sent it (no trace header added).
    content: bytes | None = None
    #: The ``Received:`` header for this message (CRLF-terminated, folded), set before on_data.
    received_header: str | None = None

    @property
    def smtputf8(self) -> bool:
        """True if MAIL carried SMTPUTF8 (RFC 6531)."""
        return "SMTPUTF8" in self.mail_params

    @property
    def body_type(self) -> str | None:
        """``"7BIT"``, ``"8BITMIME"``, or None if MAIL gave no BODY parameter."""
        value = self.mail_params.get("BODY")
        return value.upper() if value else None

    def message_with_trace(self) -> bytes:
        """The message with the Received header prepended: what a storing handler keeps."""
        content = self.content or b""
        if self.received_header is None:
            return content
        return self.received_header.encode("utf-8") + content


class Reject(Exception):
    """Raise from a callback to refuse with ``code`` (4xx temporary, 5xx permanent)."""

    def __init__(self, code: int, enhanced: str | None = None, text: str = "Rejected") -> None:
        if not 400 <= code <= 599:
            raise ValueError(f"Reject needs a 4xx or 5xx code, not {code}")
        self.reply = Reply(code, enhanced, text)
        super().__init__(str(self.reply))


class MessageAborted(SMTPDTrioError):
    """Raised inside :meth:`Handler.on_data_chunks` iteration: the message will not be
    accepted (it broke a limit, or the connection ended). Stop processing it."""


class Handler:
    """A handler that accepts everything. Subclass it and override what you need.

    Every method is optional: the server only calls the ones your class defines or overrides.
    """

    async def on_proxy(self, session: Session, info: ProxyInfo) -> Reply | None:
        """A trusted PROXY header was read (``session.client`` is already the real client).

        Refusing (raise :class:`Reject` or return a 4xx/5xx reply) closes the connection
        before any banner is sent, as with a malformed header."""
        return None

    async def on_connect(self, session: Session) -> Reply | None:
        """A client connected. Refuse with ``Reject(554, ...)`` or ``Reject(421, ...)``.

        A greeting may only be 220, 554 or 421 (RFC 5321 §3.1): another 4xx, or an exception
        escaping this method, is sent as 421 (and the connection closed); another 5xx as 554.
        """
        return None

    async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
        """HELO (``extended`` False) or EHLO (True) with a well-formed name."""
        return None

    async def on_mail(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        """MAIL FROM. ``address`` is ``""`` for the null sender."""
        return None

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        """RCPT TO, within the recipient limit."""
        return None

    async def on_data(self, session: Session, envelope: Envelope) -> Reply | None:
        """A complete message: ``envelope.content``. Return only once it is safely stored:
        the 250 goes out when this returns."""
        return None

    async def on_data_chunks(
        self, session: Session, envelope: Envelope, chunks: AsyncIterator[bytes]
    ) -> Reply | None:
        """Streaming instead of :meth:`on_data`: define this to receive the message text as
        it arrives, for messages larger than you want in memory::

            async for chunk in chunks:
                await sink.write(chunk)

        The server reads from the client only when you ask for the next chunk (backpressure),
        so memory stays at about one read (64 KiB) whatever the message size. Iteration
        stops at the real end of the message; if the message is refused on the way (size
        limit, bare line endings) or the connection ends, it raises :class:`MessageAborted`:
        let it propagate (or catch it to clean up); the client gets the refusal, not 451.
        ``envelope.content`` stays None; ``envelope.received_header`` is set. What you do not
        read is read and dropped for you. Return only once the message is safely stored: the
        250 goes out when this returns. When a handler defines this, on_data is not called.
        """
        async for _ in chunks:
            pass
        return None

    async def on_reset(self, session: Session, envelope: Envelope) -> None:
        """RSET, or HELO/EHLO, ended the transaction ``envelope`` (which may be empty)."""

    async def on_close(self, session: Session) -> None:
        """The connection is over (the stream is being closed). It runs shielded from
        cancellation but is given at most one second."""


#: The callback names the server looks for.
CALLBACK_NAMES: Final = (
    "on_proxy",
    "on_connect",
    "on_helo",
    "on_mail",
    "on_rcpt",
    "on_data",
    "on_data_chunks",
    "on_reset",
    "on_close",
)
