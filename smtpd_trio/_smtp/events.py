"""The events the SMTP machine hands to the I/O layer: small, frozen, typed values.

Events marked *decision* wait for an answer: the I/O layer must answer them (see
:meth:`~smtpd_trio._smtp.machine.SMTPMachine.respond`) before it asks for the next event. The
others are *notices*: the machine has already queued whatever reply they need.

A mail transaction is described by one :class:`Envelope`, created by the machine when MAIL is
accepted and replaced by a new value each time a recipient is accepted. Every transaction ends
with exactly one :class:`TransactionEnded`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import final

import attrs

from .dsn import DSNRequest, Recipient
from .replies import Reply
from .xclient import XClientInfo, XForwardInfo

__all__ = [
    "NEED_DATA",
    "Authenticate",
    "CloseReason",
    "Closed",
    "CommandRejected",
    "Connect",
    "DecisionEvent",
    "Envelope",
    "Event",
    "Expand",
    "Hello",
    "MailFrom",
    "MessageChunk",
    "MessageEnd",
    "MessageReceived",
    "MessageStart",
    "NeedData",
    "RcptTo",
    "StartTLS",
    "TransactionEnded",
    "TransactionOutcome",
    "Verify",
    "XClient",
]

Params = Mapping[str, str | None]


@final
@attrs.frozen
class Envelope:
    """One mail transaction as far as it has gone: the sender, the accepted recipients."""

    #: An id for this transaction, unique within the process: ``<connection id>-<n>``. It is
    #: an RFC 5321 Atom, so it can stand in the ``id`` clause of a Received header.
    id: str
    #: The reverse-path without angle brackets; ``""`` is the null sender ``<>``.
    mail_from: str
    #: MAIL's ESMTP parameters, keywords upper-cased (value None for a bare keyword).
    mail_params: Params = attrs.field(factory=dict)
    #: The accepted recipients, in order.
    rcpt_tos: tuple[str, ...] = ()
    #: The parameters of each accepted RCPT, in the same order.
    rcpt_params: tuple[Params, ...] = ()
    #: What XFORWARD said about the message's origin before MAIL (from a client allowed to
    #: send it), or None. It belongs to this transaction only.
    xforward: XForwardInfo | None = None
    #: LMTP (RFC 2033): what the message was answered for each recipient, in the order of
    #: ``rcpt_tos``, on the envelope of the transaction's end once the message was answered
    #: (empty before that). Empty in SMTP, where one reply answers for every recipient.
    rcpt_replies: tuple[Reply, ...] = ()

    @property
    def smtputf8(self) -> bool:
        """True if MAIL carried SMTPUTF8 (RFC 6531): addresses and headers may hold UTF-8."""
        return "SMTPUTF8" in self.mail_params

    @property
    def body_type(self) -> str | None:
        """``"7BIT"``, ``"8BITMIME"``, ``"BINARYMIME"`` (RFC 3030: sent with BDAT), or None if
        MAIL gave no BODY parameter."""
        value = self.mail_params.get("BODY")
        return value.upper() if value else None

    @property
    def require_tls(self) -> bool:
        """True if MAIL carried REQUIRETLS (RFC 8689): the message must only travel on over
        TLS to servers that offer REQUIRETLS, or be returned."""
        return "REQUIRETLS" in self.mail_params

    @property
    def dsn(self) -> DSNRequest:
        """MAIL's DSN parameters (RFC 3461), parsed: ``ret`` and ``envid`` (None when not
        given). Computed on each access."""
        return DSNRequest.from_params(self.mail_params)

    @property
    def recipients(self) -> tuple[Recipient, ...]:
        """The accepted recipients with their parameters, and their DSN parameters parsed
        (``notify``, ``orcpt``). Computed on each access: keep it in a variable."""
        params = self.rcpt_params
        return tuple(
            Recipient.from_params(address, params[i] if i < len(params) else {})
            for i, address in enumerate(self.rcpt_tos)
        )


class TransactionOutcome(enum.Enum):
    """How a mail transaction ended."""

    #: The message was accepted: 250 was sent for it (in LMTP, for at least one recipient).
    ACCEPTED = "accepted"
    #: The message was read and refused (by the handler, or by a limit or policy; in LMTP, for
    #: every recipient).
    REFUSED = "refused"
    #: RSET, or an accepted HELO/EHLO, ended the transaction before a message.
    RESET = "reset"
    #: The connection ended with the transaction open (QUIT, the client went away, a timeout,
    #: shutdown, too many errors): no 250 was sent, the client keeps the message.
    ABORTED = "aborted"


# ---- decisions ----------------------------------------------------------------------------


@final
@attrs.frozen
class Connect:
    """*Decision*: a client is connected; answer with the greeting (None: the 220 banner; a
    4xx becomes 421 and closes; a 5xx becomes 554, after which only QUIT is served)."""


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
    params: Params


@final
@attrs.frozen
class RcptTo:
    """*Decision*: RCPT TO with a valid path, within the recipient limit."""

    #: The transaction so far (without this recipient).
    envelope: Envelope
    address: str
    params: Params


@final
@attrs.frozen
class MessageReceived:
    """*Decision*: a complete, well-formed message (DATA read to ``<CRLF>.<CRLF>``, or the
    chunks of BDAT up to the LAST one). In LMTP it may be answered per recipient
    (:meth:`~smtpd_trio._smtp.machine.SMTPMachine.respond_recipients`)."""

    envelope: Envelope
    #: The message text, exactly as the client meant it (DATA's un-stuffed; BDAT's as sent).
    content: bytes = attrs.field(repr=lambda d: f"<{len(d)} octets>")


@final
@attrs.frozen
class MessageEnd:
    """*Decision* (streaming mode only): the message ended well (at ``<CRLF>.<CRLF>``, or with
    its LAST BDAT chunk); every chunk was handed out. Answer it as :class:`MessageReceived`."""

    envelope: Envelope
    #: Octets of message text.
    size: int


@final
@attrs.frozen
class Verify:
    """*Decision*: VRFY with an argument (the default answer is 252)."""

    argument: str


@final
@attrs.frozen
class Expand:
    """*Decision*: EXPN with an argument, when the handler answers EXPN (otherwise EXPN is
    answered 502 by the machine). The default answer is 252."""

    argument: str


@final
@attrs.frozen
class Authenticate:
    """*Decision*: a SASL exchange finished; check the credentials and answer with
    ``auth_result(identity)`` (None: 535, after the mechanism's error challenge if it has one),
    ``respond(refusal)`` or ``fail()`` (454)."""

    mechanism: str
    #: What the mechanism produced (:class:`~smtpd_trio.auth.LoginCredentials` for PLAIN and
    #: LOGIN, :class:`~smtpd_trio.auth.BearerCredentials` for OAUTHBEARER and XOAUTH2). Never
    #: shown in repr: it holds a secret.
    credentials: object = attrs.field(repr=False)


@final
@attrs.frozen
class XClient:
    """*Decision*: an authorized client sent XCLIENT, and the session restarted for the client
    it names: the attributes are already in effect (``SessionFacts.xclient``, the HELO name,
    the identity). Answer with the greeting for that client, as :class:`Connect` (None: the
    220 banner; a 4xx becomes 421 and closes; a 5xx becomes 554, after which only QUIT is
    served)."""

    #: Every XCLIENT attribute of the session so far, this command's included.
    info: XClientInfo


# ---- notices ------------------------------------------------------------------------------


@final
@attrs.frozen
class MessageStart:
    """Notice (streaming mode only): DATA was accepted and its 354 queued (or the first BDAT
    chunk is coming); the message text follows as :class:`MessageChunk` events, then
    :class:`MessageEnd`, or a :class:`TransactionEnded` if the message is refused or the
    connection ends first. Between BDAT chunks other events may come (a refused command, a
    HELO or VRFY decision)."""

    envelope: Envelope


@final
@attrs.frozen
class MessageChunk:
    """Notice (streaming mode only): the next piece of message text (un-stuffed, for DATA)."""

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} octets>")


@final
@attrs.frozen
class StartTLS:
    """Notice: STARTTLS was accepted and its 220 queued. Send it, run the TLS handshake, then
    call ``tls_established()`` (or ``close(CloseReason.TLS_FAILED)``)."""

    #: Plaintext octets the client sent after STARTTLS; they were discarded, never executed.
    discarded: int


@final
@attrs.frozen
class TransactionEnded:
    """Notice: a mail transaction is over. Exactly one per accepted MAIL.

    In LMTP, once the message was answered, ``envelope.rcpt_replies`` holds the reply each
    recipient got (see :attr:`accepted_rcpt_tos`)."""

    envelope: Envelope
    outcome: TransactionOutcome
    #: What the message was answered (ACCEPTED and REFUSED), else None. In LMTP, the first
    #: positive reply of ``envelope.rcpt_replies`` (ACCEPTED) or the first refusal (REFUSED).
    reply: Reply | None = None
    #: Octets of message text read, when a message was read.
    size: int | None = None

    @property
    def accepted_rcpt_tos(self) -> tuple[str, ...]:
        """The recipients the message was accepted for: in SMTP every one of
        ``envelope.rcpt_tos`` if the outcome is ACCEPTED, else none; in LMTP those whose reply
        in ``envelope.rcpt_replies`` is positive."""
        envelope = self.envelope
        if envelope.rcpt_replies:
            pairs = zip(envelope.rcpt_tos, envelope.rcpt_replies, strict=True)
            return tuple(address for address, reply in pairs if reply.is_positive)
        return envelope.rcpt_tos if self.outcome is TransactionOutcome.ACCEPTED else ()


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
    #: Too many protocol errors or failed AUTH attempts; 421 was queued.
    TOO_MANY_ERRORS = "too-many-errors"
    #: The client sent nothing for the command timeout; 421 4.4.2 was queued.
    TIMEOUT = "timeout"
    #: The server is shutting down; 421 4.3.2 was queued.
    SHUTDOWN = "shutdown"
    #: The client stopped reading what we send; nothing more can be said.
    STALLED = "stalled"
    #: The TLS handshake failed or timed out; nothing more can be said.
    TLS_FAILED = "tls-failed"
    #: The server (the handler, or the greeting) refused service with 421.
    REFUSED = "refused"
    #: A per-session cap (commands, messages) was reached; 421 was queued.
    LIMIT = "limit"
    #: The session lasted as long as it may; 421 4.4.2 was queued.
    SESSION_TOO_LONG = "session-too-long"
    #: The client spoke before the greeting (with a greeting pause); 554 5.5.1 was queued.
    EARLY_TALKER = "early-talker"


@final
@attrs.frozen
class Closed:
    """Notice: the session is over. Send what is queued, then close the stream."""

    reason: CloseReason


class NeedData(enum.Enum):
    """The sentinel :meth:`SMTPMachine.next_event` returns when it needs more bytes."""

    #: The only member.
    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA

DecisionEvent = (
    Connect
    | Hello
    | MailFrom
    | RcptTo
    | MessageReceived
    | MessageEnd
    | Verify
    | Expand
    | Authenticate
    | XClient
)
Event = (
    DecisionEvent
    | MessageStart
    | MessageChunk
    | StartTLS
    | TransactionEnded
    | CommandRejected
    | Closed
)
