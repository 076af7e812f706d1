"""The events the SMTP machine hands to the I/O layer: small, frozen, typed values.

Events marked *decision* wait for an answer: the I/O layer must call
:meth:`~smtpd_trio._smtp.machine.SMTPMachine.respond` (with a reply, or None for the default
positive one) before it asks for the next event. The others are notices; the machine has already
queued their reply.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import final

import attrs

from .body import BodyProblem
from .replies import Reply


@final
@attrs.frozen
class Hello:
    """*Decision*: HELO or EHLO with a syntactically valid name."""

    name: str
    #: True for EHLO.
    extended: bool


@final
@attrs.frozen
class MailFrom:
    """*Decision*: MAIL FROM with a valid path and parameters the server supports."""

    #: The reverse-path without angle brackets; ``""`` is the null path ``<>``.
    address: str
    params: Mapping[str, str | None]


@final
@attrs.frozen
class RcptTo:
    """*Decision*: RCPT TO with a valid path, within the recipient limit."""

    address: str
    params: Mapping[str, str | None]


@final
@attrs.frozen
class MessageReceived:
    """*Decision*: a complete, well-formed message (DATA read to ``<CRLF>.<CRLF>``)."""

    #: The un-stuffed message text, exactly as the client meant it.
    content: bytes


@final
@attrs.frozen
class MessageStart:
    """Notice (streaming mode only): DATA was accepted and its 354 queued; the message text
    follows as :class:`MessageChunk` events, then :class:`MessageEnd` or
    :class:`MessageRefused` (or :class:`Closed` if the connection ends first)."""


@final
@attrs.frozen
class MessageChunk:
    """Notice (streaming mode only): the next piece of un-stuffed message text."""

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} octets>")


@final
@attrs.frozen
class MessageEnd:
    """*Decision* (streaming mode only): the message ended well at ``<CRLF>.<CRLF>``; every
    chunk was handed out. Answer it with ``respond()`` as for :class:`MessageReceived`."""

    #: Octets of message text.
    size: int


@final
@attrs.frozen
class Verify:
    """*Decision*: VRFY with an argument (the default answer is 252)."""

    argument: str


@final
@attrs.frozen
class StartTLS:
    """Notice: STARTTLS was accepted and its 220 queued. Send it, run the TLS handshake, then
    call ``tls_established()`` (or ``close()`` if the handshake failed)."""

    #: Plaintext octets the client sent after STARTTLS; they were discarded, never executed.
    discarded: int


@final
@attrs.frozen
class AuthStart:
    """*Decision*: AUTH with an offered mechanism. Run it, then answer with
    ``auth_challenge()`` or ``auth_finish()``."""

    mechanism: str
    #: The decoded initial response, or None if the client gave none.
    initial_response: bytes | None = attrs.field(repr=False)


@final
@attrs.frozen
class AuthResponse:
    """*Decision*: the client's (decoded) answer to the last 334 challenge."""

    data: bytes = attrs.field(repr=False)


@final
@attrs.frozen
class AuthAborted:
    """Notice: the client cancelled the exchange (``*``) or sent malformed base64; the reply
    is queued."""

    #: What was sent: 501, or 421 if this was one error too many.
    reply: Reply


@final
@attrs.frozen
class TransactionReset:
    """Notice: RSET ended the mail transaction (the 250 is queued). An accepted HELO/EHLO
    also ends it; the I/O layer sees that from the :class:`Hello` it answered."""


@final
@attrs.frozen
class MessageRefused:
    """Notice: a message was read to its real end and refused (the reply is queued)."""

    problem: BodyProblem
    #: Octets of message text read (past the limit too, when it was counted).
    size: int
    reply: Reply


@final
@attrs.frozen
class CommandRejected:
    """Notice: a command was refused by the machine itself: a protocol error (syntax,
    sequence; these count towards ``max_errors``) or a limit (552, 452, 553; these do not)."""

    #: The first few dozen characters of the offending line, safe to log.
    excerpt: str
    reply: Reply


class CloseReason(enum.Enum):
    """Why the session is over."""

    #: The client sent QUIT.
    QUIT = "quit"
    #: The client closed its side (or the stream broke) before QUIT.
    PEER_CLOSED = "peer-closed"
    #: Too many protocol errors; 421 was queued.
    TOO_MANY_ERRORS = "too-many-errors"
    #: The server ended the session (timeout, shutdown, refused greeting); 421 or 554 was queued.
    SERVER = "server"


@final
@attrs.frozen
class Closed:
    """Notice: the session is over. Send what is queued, then close the stream."""

    reason: CloseReason
    #: True if a mail transaction was open and is dropped (no 250 was sent for it).
    transaction_dropped: bool = False


class NeedData(enum.Enum):
    """The sentinel :meth:`SMTPMachine.next_event` returns when it needs more bytes."""

    #: The only member.
    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA

Event = (
    MessageStart
    | MessageChunk
    | MessageEnd
    | StartTLS
    | AuthStart
    | AuthResponse
    | AuthAborted
    | Hello
    | MailFrom
    | RcptTo
    | MessageReceived
    | Verify
    | TransactionReset
    | MessageRefused
    | CommandRejected
    | Closed
)
DecisionEvent = (
    MessageEnd | Hello | MailFrom | RcptTo | MessageReceived | Verify | AuthStart | AuthResponse
)
