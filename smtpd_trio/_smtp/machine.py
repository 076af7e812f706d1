"""The SMTP session state machine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
ENHANCEDSTATUSCODES, STARTTLS, AUTH, CHUNKING and BINARYMIME; Postfix's XCLIENT and XFORWARD
for the clients allowed them), and LMTP (RFC 2033). Sans-IO: bytes in, events out; answers in,
bytes out.

Theory of operation
-------------------
The I/O layer drives one :class:`SMTPMachine` per connection, in lockstep::

    loop:
        event = machine.next_event()
        NEED_DATA       -> send(machine.data_to_send()); machine.receive_data(await read())
                           (b"" means the peer closed)
        a decision      -> answer it: respond(reply) / fail() / auth_result(identity)
                           (HELO/EHLO, MAIL and RCPT decisions listed in ``auto_accept`` are
                           accepted by the machine itself and never handed out)
        StartTLS        -> send the 220, run the handshake, tls_established(info)
        other notices   -> log, tell the handler; the machine already queued any reply
        Closed          -> send what is queued, close the stream, stop

The machine makes every protocol decision: which command is legal where, every reply code and
text (the handler's answers are checked, completed with enhanced status codes, and a 421 from
the handler closes the session), the greeting rules of RFC 5321 §3.1, the SASL exchange (the
mechanisms are sans-IO; only the credential check is a decision), the STARTTLS reset, when a
mail transaction starts and ends, and what to say when the session ends for a reason the I/O
layer reports (:meth:`close` with a :class:`CloseReason`). The I/O layer only moves bytes,
keeps time and awaits the handler.

Commands that arrive together (PIPELINING, RFC 2920) are taken one at a time, in order, and
their replies are queued together, so the I/O layer writes them in one batch when the machine
next needs data. A decision that is pending is never overtaken: the machine refuses to produce
another event until it is answered.

States (the mail transaction is the MAIL -> RCPT -> DATA or BDAT part)::

    GREETING --Connect answered--> CONNECTED --HELO/EHLO--> READY --MAIL--> MAIL --RCPT--> RCPT
                                       ^                      ^ ^            |              |
                                       |                      | +--RSET/HELO/EHLO---------+
                                       |                      +---message read, answered--DATA
                                       |                      +---LAST chunk read, answered--+
                                       |                                                     |
                                       |                      RCPT/BDAT --BDAT n--> CHUNK --+
                                       |                                   BDAT <--n octets-+
                                       +-- STARTTLS: TLS_HANDSHAKE, then tls_established()
    READY/CONNECTED --AUTH--> AUTH (SASL responses) --> back
    READY/CONNECTED --XCLIENT--> the XClient decision, answered like the greeting --> CONNECTED
                                 (READY if XCLIENT gave HELO)
    a 554 greeting: REFUSED (only QUIT)
    any state --QUIT / too many errors / close()--> CLOSED

BDAT (RFC 3030) announces how many octets follow, so its chunk is read in CHUNK whatever state
the command came in: a BDAT out of sequence (no transaction, no recipient) or over the size
limit has its octets read and dropped, and only then is it answered, so the conversation stays
in step. Between the chunks of a message (BDAT) commands are read as usual.

LMTP (``SMTPSettings.lmtp``) is the same machine with LHLO instead of HELO and EHLO, and one
reply per accepted recipient after the message (:meth:`SMTPMachine.respond_recipients`).

Which command is legal where is the single table ``_OUT_OF_SEQUENCE`` below (LMTP's differs in
a few replies; BDAT's own is ``_BDAT_OUT_OF_SEQUENCE``); the verbs are dispatched through
``_VERBS`` (``_LMTP_VERBS``).

Memory: the machine bounds what it holds (one command line, or what the body reader keeps
under its line and size limits) only if the I/O layer drains it, calling :meth:`next_event`
until NEED_DATA after every :meth:`receive_data`, as the loop above does.
"""

from __future__ import annotations

import binascii
import enum
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, NamedTuple, final

import attrs

from . import replies
from .body import BodyProblem, BodyReader, BodyResult, ChunkReader, MemoryBudget, NulOctets
from .commands import (
    ChunkSyntaxError,
    CommandSyntaxError,
    parse_bdat,
    parse_helo_name,
    parse_path_and_params,
    split_verb,
)
from .dsn import DSNSyntaxError, parse_envid, parse_notify, parse_orcpt, parse_ret
from .events import (
    NEED_DATA,
    Authenticate,
    Closed,
    CloseReason,
    CommandRejected,
    Connect,
    DecisionEvent,
    Envelope,
    Event,
    Expand,
    Hello,
    MailFrom,
    MessageChunk,
    MessageEnd,
    MessageReceived,
    MessageStart,
    NeedData,
    Params,
    RcptTo,
    StartTLS,
    TransactionEnded,
    TransactionOutcome,
    Verify,
    XClient,
)
from .facts import SessionFacts, TLSInfo
from .replies import Reply
from .sasl import Challenge, SASLError, SASLExchange, decode_response
from .settings import DEFAULT_MAX_COMMAND_LINE, SMTPSettings
from .xclient import XClientInfo, XForwardInfo, parse_xclient, parse_xforward

__all__ = ["DEFAULT_MAX_COMMAND_LINE", "MAX_AUTH_LINE", "SMTPMachine", "State"]


class State(enum.Enum):
    """Where the session stands."""

    #: Waiting for the greeting decision (:class:`Connect`).
    GREETING = "greeting"
    #: Banner sent; no HELO/EHLO yet.
    CONNECTED = "connected"
    #: HELO/EHLO accepted; no mail transaction open.
    READY = "ready"
    #: MAIL accepted; no recipient yet.
    MAIL = "mail"
    #: At least one RCPT accepted.
    RCPT = "rcpt"
    #: Reading the message text after 354.
    DATA = "data"
    #: Reading the octets of a BDAT chunk (RFC 3030), or dropping those of a refused one.
    CHUNK = "chunk"
    #: A BDAT message has begun: its next chunk, or RSET, is awaited (commands are read).
    BDAT = "bdat"
    #: Inside an AUTH exchange: the next line is a SASL response, not a command.
    AUTH = "auth"
    #: STARTTLS was accepted: waiting for the I/O layer's TLS handshake.
    TLS_HANDSHAKE = "tls-handshake"
    #: The greeting was a refusal (554): only QUIT is served (RFC 5321 §3.1).
    REFUSED = "refused"
    #: Over; nothing more is read.
    CLOSED = "closed"

    # Members are singletons compared by identity: hash them the same way, in C.
    __hash__ = object.__hash__


# The states as module constants, for the machine's methods, which compare the state many times
# per command: ``State.READY`` goes through the enum type's attribute hook (70 ns on Python
# 3.11, 23 on 3.12), a global load 7 to 15 ns.
_AUTH: Final = State.AUTH
_BDAT: Final = State.BDAT
_CHUNK: Final = State.CHUNK
_CLOSED: Final = State.CLOSED
_CONNECTED: Final = State.CONNECTED
_DATA: Final = State.DATA
_GREETING: Final = State.GREETING
_MAIL: Final = State.MAIL
_RCPT: Final = State.RCPT
_READY: Final = State.READY
_REFUSED: Final = State.REFUSED
_TLS_HANDSHAKE: Final = State.TLS_HANDSHAKE


# (verb, state) -> the reply for a command that is not legal in that state. Everything else
# is legal everywhere a command can be read (DATA, CHUNK, AUTH and CLOSED read no commands).
# BDAT is not here: its chunk must be read even when it is out of sequence (see below).
_OUT_OF_SEQUENCE: Final[dict[tuple[str, State], Reply]] = {
    ("MAIL", State.CONNECTED): replies.NEED_HELO,
    ("MAIL", State.MAIL): replies.NESTED_MAIL,
    ("MAIL", State.RCPT): replies.NESTED_MAIL,
    ("RCPT", State.CONNECTED): replies.NEED_MAIL,
    ("RCPT", State.READY): replies.NEED_MAIL,
    ("DATA", State.CONNECTED): replies.NEED_MAIL,
    ("DATA", State.READY): replies.NEED_MAIL,
    ("DATA", State.MAIL): replies.NO_VALID_RECIPIENTS,
    ("AUTH", State.CONNECTED): replies.NEED_EHLO_FOR_AUTH,
    ("AUTH", State.MAIL): replies.AUTH_IN_TRANSACTION,
    ("AUTH", State.RCPT): replies.AUTH_IN_TRANSACTION,
    ("STARTTLS", State.MAIL): replies.BAD_SEQUENCE,
    ("STARTTLS", State.RCPT): replies.BAD_SEQUENCE,
    ("XCLIENT", State.MAIL): replies.TRANSACTION_IN_PROGRESS,
    ("XCLIENT", State.RCPT): replies.TRANSACTION_IN_PROGRESS,
    ("XFORWARD", State.MAIL): replies.TRANSACTION_IN_PROGRESS,
    ("XFORWARD", State.RCPT): replies.TRANSACTION_IN_PROGRESS,
    # Between the chunks of a BDAT message (RFC 3030 §2: DATA after BDAT is a 503).
    ("MAIL", State.BDAT): replies.NESTED_MAIL,
    ("RCPT", State.BDAT): replies.RCPT_AFTER_BDAT,
    ("DATA", State.BDAT): replies.DATA_AFTER_BDAT,
    ("AUTH", State.BDAT): replies.AUTH_IN_TRANSACTION,
    ("STARTTLS", State.BDAT): replies.BAD_SEQUENCE,
    ("XCLIENT", State.BDAT): replies.TRANSACTION_IN_PROGRESS,
    ("XFORWARD", State.BDAT): replies.TRANSACTION_IN_PROGRESS,
}

# LMTP says LHLO where SMTP says HELO/EHLO, and DATA with no successful RCPT is a 503 (RFC 2033
# §4.2).
_LMTP_OUT_OF_SEQUENCE: Final[dict[tuple[str, State], Reply]] = {
    **_OUT_OF_SEQUENCE,
    ("MAIL", State.CONNECTED): replies.NEED_LHLO,
    ("AUTH", State.CONNECTED): replies.NEED_LHLO,
    ("DATA", State.MAIL): replies.LMTP_NO_VALID_RECIPIENTS,
}

# state -> the reply for a BDAT out of sequence, given once its chunk has been read (and
# dropped). Legal in RCPT (the first chunk) and BDAT (the next ones).
_BDAT_OUT_OF_SEQUENCE: Final[dict[State, Reply]] = {
    State.CONNECTED: replies.NEED_MAIL,
    State.READY: replies.NEED_MAIL,
    State.MAIL: replies.NO_VALID_RECIPIENTS,
    State.REFUSED: replies.BAD_SEQUENCE,
}
# RFC 2033 §4.3: BDAT LAST with no successful RCPT should be a 503 in LMTP.
_LMTP_BDAT_OUT_OF_SEQUENCE: Final[dict[State, Reply]] = {
    **_BDAT_OUT_OF_SEQUENCE,
    State.MAIL: replies.LMTP_NO_VALID_RECIPIENTS,
}

# Recognised commands this server does not offer: 502. (STARTTLS, AUTH, EXPN and BDAT when not
# configured are answered 502 by their own handlers.)
_NOT_IMPLEMENTED: Final = frozenset({"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"})

#: RFC 4954 §4: a SASL response line may be up to 12288 octets.
MAX_AUTH_LINE: Final = 12288

_EXCERPT: Final = 40
_CR: Final = 0x0D
_LF: Final = 0x0A

# How each decision may be answered: the positive codes allowed, the enhanced code given to a
# positive reply that has none, and the subject.detail given to a refusal that has none
# (RFC 3463: "X.1.0" other address status, "X.7.0" other security status, "X.0.0" other).
_ANSWERS: Final[dict[type[DecisionEvent], tuple[frozenset[int], str | None, str | None]]] = {
    Connect: (frozenset({220}), None, None),
    Hello: (frozenset(), None, "0.0"),
    MailFrom: (frozenset({250}), "2.1.0", "1.0"),
    RcptTo: (frozenset({250, 251}), "2.1.5", "1.0"),
    MessageReceived: (frozenset({250}), "2.0.0", "0.0"),
    MessageEnd: (frozenset({250}), "2.0.0", "0.0"),
    # RFC 5321 §4.3.2: VRFY 250, 251, 252; EXPN 250 (a multi-line list), 252.
    Verify: (frozenset({250, 251, 252}), "2.0.0", "1.0"),
    Expand: (frozenset({250, 252}), "2.0.0", "1.0"),
    Authenticate: (frozenset(), None, "7.0"),
    XClient: (frozenset({220}), None, None),
}

_WHAT: Final[dict[type[DecisionEvent], str]] = {
    Connect: "the greeting",
    Hello: "HELO/EHLO",
    MailFrom: "MAIL FROM",
    RcptTo: "RCPT TO",
    MessageReceived: "a message",
    MessageEnd: "a message",
    Verify: "VRFY",
    Expand: "EXPN",
    Authenticate: "AUTH",
    XClient: "XCLIENT",
}

# What the client is told when the session ends for a reason the I/O layer reports.
_GOODBYE: Final[dict[CloseReason, Reply | None]] = {
    CloseReason.TIMEOUT: replies.SERVICE_CLOSING_TIMEOUT,
    CloseReason.SHUTDOWN: replies.SERVICE_SHUTTING_DOWN,
    CloseReason.STALLED: None,
    CloseReason.TLS_FAILED: None,
    CloseReason.PEER_CLOSED: None,
    CloseReason.SESSION_TOO_LONG: replies.SESSION_TOO_LONG,
    CloseReason.EARLY_TALKER: replies.EARLY_TALKER,
}

_BODY_REPLIES: Final = {
    BodyProblem.NO_MEMORY: replies.NO_STORAGE,
    BodyProblem.NUL: replies.NUL_IN_DATA,
    BodyProblem.TOO_BIG: replies.MESSAGE_TOO_BIG,
    BodyProblem.LINE_TOO_LONG: replies.TEXT_LINE_TOO_LONG,
    BodyProblem.BARE_LINE_ENDING: replies.BARE_LINE_ENDING_IN_DATA,
}

_TRANSACTION_STATES: Final = frozenset(
    {State.MAIL, State.RCPT, State.DATA, State.CHUNK, State.BDAT}
)
# The states in which the next input is a command line (or, in AUTH, a SASL response).
_READS_LINES: Final = frozenset(
    {State.CONNECTED, State.READY, State.MAIL, State.RCPT, State.BDAT, State.AUTH, State.REFUSED}
)
_READING_TEXT: Final = frozenset({State.DATA, State.CHUNK})


class _Skip(NamedTuple):
    """A BDAT chunk read and dropped, and what to answer once all of it has arrived."""

    #: The answer.
    reply: Reply
    #: The BDAT command line, for the log excerpt.
    line: bytes
    #: False: a sequence error (a protocol error; the state before BDAT comes back). True: the
    #: message is refused (a limit; the transaction ends).
    refuses: bool
    state: State
    #: The message's octets including this chunk (for a refusal's record).
    size: int


_AUTO_ACCEPTABLE: Final = frozenset({Hello, MailFrom, RcptTo})
# Every auto_accept set in use, once: machines share it (a set is about 200 bytes; an idle
# connection costs about 7 KiB in all). At most eight.
_AUTO_SETS: Final[dict[frozenset[type[DecisionEvent]], frozenset[type[DecisionEvent]]]] = {}


def _auto_accepted(kinds: Collection[type[DecisionEvent]]) -> frozenset[type[DecisionEvent]]:
    if isinstance(kinds, frozenset):
        shared = _AUTO_SETS.get(kinds)
        if shared is not None:
            return shared  # the I/O layer's usual call: one dictionary lookup per connection
    accepted = frozenset(kinds)
    if not accepted <= _AUTO_ACCEPTABLE:
        names = ", ".join(sorted(kind.__name__ for kind in accepted - _AUTO_ACCEPTABLE))
        raise ValueError(f"auto_accept takes Hello, MailFrom and RcptTo, not {names}")
    return _AUTO_SETS.setdefault(accepted, accepted)


def _excerpt(line: bytes) -> str:
    text = line[:_EXCERPT].decode("utf-8", "backslashreplace")
    return repr(text) if len(line) <= _EXCERPT else repr(text) + "..."


_Verb = Callable[["SMTPMachine", "str | None", bytes], "Event | None"]

# MAIL's DSN parameters (RFC 3461 §4.3, §4.4) and their parsers; RCPT's are in _rcpt_params.
_DSN_MAIL: Final[dict[str, Callable[[str | None], object]]] = {
    "RET": parse_ret,
    "ENVID": parse_envid,
}


def _check_dsn(parse: Callable[[str | None], object], value: str | None) -> None:
    """Validate a DSN parameter: a malformed value is 501 5.5.4 with the parser's text."""
    try:
        parse(value)
    except DSNSyntaxError as exc:
        raise CommandSyntaxError(replies.syntax_error(str(exc))) from None


@final
class SMTPMachine:
    """The protocol state of one SMTP session. See the module docstring."""

    # Thousands of these live at once (one per connection): no per-instance __dict__.
    __slots__ = (
        "_auth_failures",
        "_auth_mechanism",
        "_auth_return",
        "_auto_accept",
        "_body",
        "_body_result",
        "_budget",
        "_buf",
        "_chunk_last",
        "_chunk_left",
        "_chunk_size",
        "_chunks",
        "_close_reason",
        "_discarding",
        "_ended",
        "_exchange",
        "_expn_offered",
        "_junk",
        "_out",
        "_peer_closed",
        "_pending",
        "_pos",
        "_reserved",
        "_sequence",
        "_session_id",
        "_shutdown",
        "_skip",
        "_transactions",
        "_verbs",
        "_xclient_ok",
        "_xforward",
        "_xforward_ok",
        "envelope",
        "errors",
        "facts",
        "lines_taken",
        "settings",
        "state",
        "stream_body",
        "stressed",
    )

    def __init__(
        self,
        settings: SMTPSettings,
        *,
        facts: SessionFacts | None = None,
        session_id: str = "s",
        stream_body: bool = False,
        budget: MemoryBudget | None = None,
        xclient: bool = False,
        xforward: bool = False,
        expn: bool = False,
        auto_accept: Collection[type[Hello | MailFrom | RcptTo]] = (),
    ) -> None:
        self.settings = settings
        #: The session's facts (HELO name, TLS, identity): written here and nowhere else.
        self.facts = facts if facts is not None else SessionFacts()
        #: Hand out message text in chunks as it arrives (MessageStart, MessageChunk,
        #: MessageEnd) instead of one MessageReceived at the end.
        self.stream_body = stream_body
        # EXPN is a decision (Expand) for a handler that answers it; otherwise it is 502.
        self._expn_offered = expn
        #: The decisions the machine takes itself, accepting as respond(None) would, without
        #: handing out the event: for an I/O layer whose handler has nothing to say to them
        #: (no callback), so a pipelined MAIL, RCPT and DATA cost no trip through it.
        self._auto_accept = _auto_accepted(auto_accept)
        #: The server is nearly full (the I/O layer says so): like Postfix under stress, one
        #: protocol error or one junk command (NOOP, RSET, VRFY, HELP) too many ends the
        #: session.
        self.stressed = False
        self._junk = 0
        self.state = _GREETING
        #: The open mail transaction, or None.
        self.envelope: Envelope | None = None
        #: The number of protocol errors so far.
        self.errors = 0
        #: Complete command (or SASL response) lines taken so far: the I/O layer's measure of
        #: progress, so a client trickling bytes cannot stretch one command wait forever.
        self.lines_taken = 0
        self._session_id = session_id
        self._transactions = 0
        self._buf = bytearray()
        self._pos = 0
        # The head of an over-long command line being discarded (None when not discarding),
        # kept so its excerpt does not depend on how the line was split into chunks.
        self._discarding: bytes | None = None
        self._peer_closed = False
        self._shutdown = False
        self._close_reason = CloseReason.PEER_CLOSED
        self._out: list[bytes] = []
        self._pending: DecisionEvent | None = None
        # A TransactionEnded waiting to be handed out (it comes before anything else).
        self._ended: TransactionEnded | None = None
        self._body: BodyReader | None = None
        # Streaming: the end of a message, held back until its last chunk was handed out.
        self._body_result: BodyResult | None = None
        # The server-wide allowance for message text held in memory (not used when streaming:
        # then a session holds about one read), and what the pending message holds of it.
        self._budget = budget
        self._reserved = 0
        self._exchange: SASLExchange | None = None
        self._auth_mechanism = ""
        self._auth_return = _READY
        self._auth_failures = 0
        # BDAT: the message being received in chunks, the current chunk (its size, the octets
        # still to come, LAST or not), and the chunk being dropped, if it is one.
        self._chunks: ChunkReader | None = None
        self._chunk_size = 0
        self._chunk_left = 0
        self._chunk_last = False
        self._skip: _Skip | None = None
        # SMTP's commands and sequence rules, or LMTP's.
        if settings.lmtp:
            self._verbs = _LMTP_VERBS
            self._sequence = _LMTP_OUT_OF_SEQUENCE
            self.facts._lmtp = True
        else:
            self._verbs = _VERBS
            self._sequence = _OUT_OF_SEQUENCE
        # The client may send XCLIENT / XFORWARD (the I/O layer decides, from its address).
        self._xclient_ok = xclient
        self._xforward_ok = xforward
        # What XFORWARD said for the next mail transaction.
        self._xforward: XForwardInfo | None = None

    # ---- facts -----------------------------------------------------------------------------

    @property
    def tls_active(self) -> bool:
        """The session is under TLS (implicit TLS, or after STARTTLS)."""
        return self.facts._tls is not None

    @property
    def in_transaction(self) -> bool:
        """A mail transaction is open (MAIL accepted, no end yet)."""
        return self.envelope is not None

    @property
    def reading_data(self) -> bool:
        """True while message text is being read (between 354 and the final dot, or the octets
        of a BDAT chunk)."""
        return self.state in _READING_TEXT

    @property
    def close_reason(self) -> CloseReason:
        """Why the session ended: the reason its :class:`Closed` carries (until it has ended,
        PEER_CLOSED)."""
        return self._close_reason

    # ---- output ----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (possibly b"")."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    # ---- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            if self.state is not _CLOSED:
                self._buf += data
        else:
            self._peer_closed = True

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA if the buffered bytes hold no complete command."""
        if self._pending is not None:
            raise RuntimeError(f"answer {type(self._pending).__name__} first")
        while True:
            ended = self._ended
            if ended is not None:
                self._ended = None
                return ended
            state = self.state
            if state is _CLOSED:
                return Closed(self._close_reason)
            event: Event | NeedData | None
            if state is _DATA:
                event = self._read_body()
            elif state in _READS_LINES:  # one set lookup for seven states
                line = self._next_line()
                if line is None:
                    event = NEED_DATA
                elif state is _AUTH:
                    event = self._auth_line(line)
                else:
                    event = self._handle_line(line)
            elif state is _CHUNK:
                event = self._read_chunk()
            elif state is _GREETING:
                return self._decide(Connect())
            else:  # TLS_HANDSHAKE
                raise RuntimeError("call tls_established() (or close()) after the TLS handshake")
            if event is None:
                continue  # answered by the machine itself: take the next command
            if event is not NEED_DATA:
                return event
            if self._peer_closed:
                self._close(CloseReason.PEER_CLOSED)
            elif self._shutdown and self.envelope is None:
                self.close(CloseReason.SHUTDOWN)
            else:
                self._compact()
                return NEED_DATA

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _next_line(self) -> bytes | None:
        """The next complete command line without its CRLF, or None. Over-long lines come back
        as a line longer than the limit, truncated, so the caller answers 500 once."""
        buf = self._buf
        end = buf.find(b"\r\n", self._pos)
        limit = MAX_AUTH_LINE if self.state is _AUTH else self.settings.max_command_line
        if end < 0:
            if len(buf) - self._pos > limit:
                # Keep only a possible CR of a split CRLF; the rest of the line is junk.
                keep = buf[-1:] if buf.endswith(b"\r") else b""
                if self._discarding is None:
                    self._discarding = bytes(buf[self._pos : self._pos + _EXCERPT + 1])
                self._buf = bytearray(keep)
                self._pos = 0
            return None
        line = bytes(buf[self._pos : end])
        self._pos = end + 2
        self.lines_taken += 1
        if self._discarding is not None:
            head, self._discarding = self._discarding, None
            return head.ljust(limit + 1, b"\x00")
        return line

    # ---- ending ----------------------------------------------------------------------------

    def close(self, reason: CloseReason = CloseReason.SHUTDOWN) -> None:
        """End the session for ``reason``, reported by the I/O layer: a timeout (421 4.4.2),
        shutdown (421 4.3.2), or a stream that can take nothing more (stalled, TLS failed,
        peer gone: nothing is said). A pending decision is dropped."""
        if self.state is _CLOSED:
            return
        goodbye = _GOODBYE.get(reason)
        if goodbye is not None:
            self._reply(goodbye)
        self._close(reason)

    def request_shutdown(self) -> None:
        """The server is shutting down: end the session (421 4.3.2) as soon as no mail
        transaction is open, at the next point where the machine would wait for the client.
        A transaction already open is allowed to finish."""
        self._shutdown = True

    def _close(self, reason: CloseReason) -> None:
        self._pending = None
        self._release()
        if self.envelope is not None:
            self._end_transaction(TransactionOutcome.ABORTED)
        self.state = _CLOSED
        self._close_reason = reason
        if self._body is not None:
            self._body.abandon()
        self._body = None
        self._body_result = None
        self._skip = None
        self._chunk_left = 0
        self._exchange = None
        self._buf = bytearray()
        self._pos = 0

    def _release(self) -> None:
        """The message's text is no longer held by us: give its budget back."""
        if self._reserved:
            assert self._budget is not None
            self._budget.release(self._reserved)
            self._reserved = 0

    def _end_transaction(
        self, outcome: TransactionOutcome, reply: Reply | None = None, size: int | None = None
    ) -> None:
        envelope = self.envelope
        assert envelope is not None
        assert self._ended is None
        self.envelope = None
        chunks = self._chunks
        if chunks is not None:  # a BDAT message that will not be finished
            self._chunks = None
            chunks.abandon()
        self._ended = TransactionEnded(envelope, outcome, reply, size)
        if self.state in _TRANSACTION_STATES:
            self.state = _READY

    def _take_ended(self) -> TransactionEnded:
        """The TransactionEnded just queued by _end_transaction, to return it at once."""
        ended, self._ended = self._ended, None
        assert ended is not None
        return ended

    # ---- commands --------------------------------------------------------------------------

    def _error(self, reply: Reply, line: bytes) -> Event:
        """Answer a protocol error; the max_errors-th one ends the session with 421."""
        self.errors += 1
        if self.errors >= (1 if self.stressed else self.settings.max_errors):
            self._reply(replies.TOO_MANY_ERRORS)
            self._close(CloseReason.TOO_MANY_ERRORS)
            return CommandRejected(_excerpt(line), replies.TOO_MANY_ERRORS)
        self._reply(reply)
        return CommandRejected(_excerpt(line), reply)

    def _handle_line(self, raw: bytes) -> Event | None:
        limit = self.settings.max_commands
        if limit is not None and self.lines_taken > limit:
            self._reply(replies.TOO_MANY_COMMANDS)
            self._close(CloseReason.LIMIT)
            return CommandRejected(_excerpt(raw), replies.TOO_MANY_COMMANDS)
        if len(raw) + 2 > self.settings.max_command_line:
            return self._error(replies.LINE_TOO_LONG, raw)
        if _CR in raw or _LF in raw:  # (an int: ``b"\r" in raw`` builds a TypeError first)
            return self._error(replies.BARE_LINE_ENDING_IN_COMMAND, raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(replies.BAD_UTF8, raw)
        verb, arg = split_verb(line)
        if self.state is _REFUSED and verb != "QUIT" and verb != "BDAT":
            return self._error(replies.BAD_SEQUENCE, raw)
        sequence_error = self._sequence.get((verb, self.state))
        if sequence_error is not None:
            return self._error(sequence_error, raw)
        handler = self._verbs.get(verb)
        if handler is None:
            reply = replies.NOT_IMPLEMENTED if verb in _NOT_IMPLEMENTED else replies.UNKNOWN_COMMAND
            return self._error(reply, raw)
        try:
            return handler(self, arg, raw)
        except CommandSyntaxError as exc:
            return self._error(exc.reply, raw)

    def _no_argument(self, verb: str, arg: str | None) -> None:
        if arg is not None:
            raise CommandSyntaxError(replies.syntax_error(f"{verb} takes no argument"))

    def _helo(self, arg: str | None, raw: bytes) -> Event | None:
        return self._hello(Hello(parse_helo_name(arg), False))

    def _ehlo(self, arg: str | None, raw: bytes) -> Event | None:
        return self._hello(Hello(parse_helo_name(arg), True))

    def _hello(self, event: Hello) -> Event | None:
        if Hello in self._auto_accept:
            self._answer_hello(event, None)
            return None
        return self._decide(event)

    def _not_lmtp(self, arg: str | None, raw: bytes) -> Event:
        # RFC 2033 §4.1: HELO and EHLO are not LMTP; no positive reply, 500 recommended.
        return self._error(replies.USE_LHLO, raw)

    def _mail(self, arg: str | None, raw: bytes) -> Event | None:
        settings = self.settings
        if settings.require_tls and not self.tls_active:
            return self._error(replies.TLS_REQUIRED, raw)
        if settings.auth_required and self.facts._authenticated_as is None:
            return self._error(replies.AUTH_REQUIRED, raw)
        if settings.max_messages is not None and self._transactions >= settings.max_messages:
            self._reply(replies.TOO_MANY_MESSAGES)
            self._close(CloseReason.LIMIT)
            return CommandRejected(_excerpt(raw), replies.TOO_MANY_MESSAGES)
        address, params = parse_path_and_params(
            arg,
            prefix="FROM:",
            null_ok=True,
            postmaster_ok=False,
            bad_address=replies.BAD_SENDER_ADDRESS,
        )
        smtputf8 = False
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or not value.isascii() or len(value) > 20:
                    raise CommandSyntaxError(replies.syntax_error("SIZE needs a number"))
                limit = settings.max_message_size
                if limit is not None and int(value) > limit:
                    return self._refused(replies.MESSAGE_TOO_BIG, raw)
            elif key == "BODY":
                if value is None or not value.isascii() or value.upper() not in settings.body_types:
                    raise CommandSyntaxError(
                        replies.syntax_error(
                            "BODY must be 7BIT, 8BITMIME or BINARYMIME"
                            if settings.chunking
                            else "BODY must be 7BIT or 8BITMIME"
                        )
                    )
            elif key == "SMTPUTF8" and settings.smtputf8:
                if value is not None:
                    raise CommandSyntaxError(replies.syntax_error("SMTPUTF8 takes no value"))
                smtputf8 = True
            elif key in _DSN_MAIL and settings.dsn:
                _check_dsn(_DSN_MAIL[key], value)
            elif key == "REQUIRETLS" and settings.requiretls:
                if value is not None:
                    raise CommandSyntaxError(replies.syntax_error("REQUIRETLS takes no value"))
                if not self.tls_active:
                    return self._error(replies.TLS_REQUIRED, raw)
            else:
                raise CommandSyntaxError(replies.PARAM_NOT_RECOGNIZED)
        if not smtputf8 and not address.isascii():
            return self._refused(replies.NON_ASCII_ADDRESS, raw)
        if MailFrom in self._auto_accept:  # no MailFrom to make
            self._open_transaction(address, params)
            self._reply(replies.SENDER_OK)
            return None
        return self._decide(MailFrom(address, params))

    def _rcpt(self, arg: str | None, raw: bytes) -> Event | None:
        envelope = self.envelope
        assert envelope is not None  # the sequence table lets RCPT through only in a transaction
        address, params = parse_path_and_params(
            arg,
            prefix="TO:",
            null_ok=False,
            postmaster_ok=True,
            bad_address=replies.BAD_RECIPIENT_ADDRESS,
        )
        if params:
            self._rcpt_params(params, envelope.smtputf8)
        if not address.isascii() and not envelope.smtputf8:
            return self._refused(replies.NON_ASCII_ADDRESS, raw)
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return self._refused(replies.TOO_MANY_RECIPIENTS, raw)
        if RcptTo in self._auto_accept:  # no RcptTo to make
            self._add_recipient(envelope, address, params)
            self._reply(replies.RECIPIENT_OK)
            return None
        return self._decide(RcptTo(envelope, address, params))

    def _rcpt_params(self, params: Mapping[str, str | None], smtputf8: bool) -> None:
        """RCPT's parameters: with DSN offered, NOTIFY and ORCPT (RFC 3461; ``utf-8`` ORCPT
        addresses, RFC 6533, in SMTPUTF8 transactions); nothing else."""
        dsn = self.settings.dsn
        for key, value in params.items():
            if key == "NOTIFY" and dsn:
                _check_dsn(parse_notify, value)
            elif key == "ORCPT" and dsn:
                _check_dsn(functools.partial(parse_orcpt, utf8=smtputf8), value)
            else:
                raise CommandSyntaxError(replies.PARAM_NOT_RECOGNIZED)

    def _refused(self, reply: Reply, raw: bytes) -> Event:
        """A limit or policy refusal of MAIL/RCPT (552, 452, 553): answered and reported, but
        not a protocol error, so it does not count towards max_errors."""
        self._reply(reply)
        return CommandRejected(_excerpt(raw), reply)

    def _data(self, arg: str | None, raw: bytes) -> Event | None:
        self._no_argument("DATA", arg)
        envelope = self.envelope
        assert envelope is not None
        body = envelope.mail_params.get("BODY")
        if body is not None and body.upper() == "BINARYMIME":
            return self._error(replies.BINARYMIME_NEEDS_BDAT, raw)  # RFC 3030 §3
        self._reply(replies.START_DATA)
        self.state = _DATA
        settings = self.settings
        self._body = BodyReader(
            max_size=settings.max_message_size,
            max_line_length=settings.max_line_length,
            bare_line_endings=settings.bare_line_endings,
            nul_octets=settings.nul_octets,
            budget=None if self.stream_body else self._budget,
        )
        return MessageStart(envelope) if self.stream_body else None

    def _junk_limit_reached(self, raw: bytes) -> Event | None:
        """Count a command that does nothing for mail; past the limit, end the session."""
        self._junk += 1
        limit = 1 if self.stressed else self.settings.max_junk_commands
        if limit is None or self._junk <= limit:
            return None
        self._reply(replies.TOO_MUCH_JUNK)
        self._close(CloseReason.LIMIT)
        return CommandRejected(_excerpt(raw), replies.TOO_MUCH_JUNK)

    def _rset(self, arg: str | None, raw: bytes) -> Event | None:
        self._no_argument("RSET", arg)
        junk = self._junk_limit_reached(raw)
        if junk is not None:
            return junk
        self._reply(replies.RESET_OK)
        self._xforward = None
        if self.envelope is None:
            return None
        self._end_transaction(TransactionOutcome.RESET)
        return self._take_ended()

    def _noop(self, arg: str | None, raw: bytes) -> Event | None:
        junk = self._junk_limit_reached(raw)
        if junk is None:
            self._reply(replies.NOOP_OK)
        return junk

    def _help(self, arg: str | None, raw: bytes) -> Event | None:
        junk = self._junk_limit_reached(raw)
        if junk is None:
            settings = self.settings
            self._reply(settings.help_reply_expn if self._expn_offered else settings.help_reply)
        return junk

    def _quit(self, arg: str | None, raw: bytes) -> Event | None:
        if arg is not None:
            return self._error(replies.syntax_error("QUIT takes no argument"), raw)
        self._reply(replies.QUIT_OK)
        self._close(CloseReason.QUIT)
        return None

    def _vrfy(self, arg: str | None, raw: bytes) -> Event:
        if arg is None:
            return self._error(replies.syntax_error("VRFY requires an argument"), raw)
        return self._junk_limit_reached(raw) or self._decide(Verify(arg))

    def _expn(self, arg: str | None, raw: bytes) -> Event:
        if not self._expn_offered:
            return self._error(replies.NOT_IMPLEMENTED, raw)
        if arg is None:
            return self._error(replies.syntax_error("EXPN requires an argument"), raw)
        return self._junk_limit_reached(raw) or self._decide(Expand(arg))

    # ---- STARTTLS (RFC 3207) ---------------------------------------------------------------

    def _starttls(self, arg: str | None, raw: bytes) -> Event:
        if not self.settings.starttls and not self.tls_active:
            return self._error(replies.NOT_IMPLEMENTED, raw)
        if arg is not None:
            return self._error(replies.syntax_error("STARTTLS takes no argument"), raw)
        if self.tls_active:
            return self._error(replies.TLS_ALREADY_ACTIVE, raw)
        self._reply(replies.READY_FOR_TLS)
        # Whatever the client sent after STARTTLS in plaintext is discarded, never executed
        # inside the TLS session (CVE-2011-0411 class; aiosmtpd CVE-2024-34083).
        discarded = len(self._buf) - self._pos
        self._buf = bytearray()
        self._pos = 0
        self.state = _TLS_HANDSHAKE
        return StartTLS(discarded)

    def tls_established(self, info: TLSInfo) -> None:
        """The TLS handshake succeeded: after STARTTLS the session starts afresh (RFC 3207
        §4.2: HELO/EHLO and any authentication are forgotten; the client sends EHLO again).
        Called before the greeting, it records implicit TLS (RFC 8314)."""
        facts = self.facts
        if self.state is _GREETING and not self._out:
            facts._tls = info
            return
        if self.state is not _TLS_HANDSHAKE:
            raise RuntimeError("tls_established() without a STARTTLS")
        self._buf = bytearray()
        self._pos = 0
        facts._tls = info
        facts._helo_name = None
        facts._extended = False
        facts._authenticated_as = None
        self.state = _CONNECTED

    # ---- AUTH (RFC 4954) -------------------------------------------------------------------

    def _auth(self, arg: str | None, raw: bytes) -> Event | None:
        settings = self.settings
        if not settings.auth_mechanisms:
            return self._error(replies.NOT_IMPLEMENTED, raw)
        if not settings.auth_offered(self.tls_active):
            return self._error(replies.ENCRYPTION_REQUIRED_FOR_AUTH, raw)
        if not self.facts._extended:
            return self._error(replies.NEED_EHLO_FOR_AUTH, raw)  # RFC 4954 §4: EHLO only
        if self.facts._authenticated_as is not None:
            return self._error(replies.ALREADY_AUTHENTICATED, raw)
        if arg is None:
            return self._error(replies.syntax_error("AUTH needs a mechanism"), raw)
        name, _, initial = arg.partition(" ")
        name = name.upper() if name.isascii() else name
        mechanism = settings.mechanisms.get(name)
        if mechanism is None:
            return self._error(replies.UNKNOWN_AUTH_MECHANISM, raw)
        response: bytes | None = None
        if initial:
            if " " in initial:
                return self._error(replies.syntax_error("AUTH takes one initial response"), raw)
            response = decode_response(initial)
            if response is None:
                return self._error(replies.BAD_BASE64, raw)
        self._exchange = mechanism.start()
        self._auth_mechanism = name
        self._auth_return = self.state
        return self._auth_step(response, raw)

    def _auth_line(self, raw: bytes) -> Event | None:
        """A line inside an exchange: the client's answer to our last 334."""
        self.state = self._auth_return
        if self._exchange is None:
            # The answer to a refusal's last challenge (see auth_result): whatever it is, the
            # dummy response of RFC 7628 §3.2.3, "*" or anything else, the attempt failed.
            self._auth_refused(replies.AUTH_FAILED)
            return None
        if len(raw) + 2 > MAX_AUTH_LINE:
            self._exchange = None
            return self._error(replies.LINE_TOO_LONG, raw)
        if raw == b"*":
            self._exchange = None
            return self._error(replies.AUTH_CANCELLED, raw)
        decoded = decode_response(raw.decode("ascii", "replace"))
        if decoded is None:
            self._exchange = None
            return self._error(replies.BAD_BASE64, raw)
        return self._auth_step(decoded, raw)

    def _auth_step(self, response: bytes | None, raw: bytes) -> Event | None:
        exchange = self._exchange
        assert exchange is not None
        try:
            outcome = exchange.step(response)
        except SASLError as exc:
            self._exchange = None
            self._auth_refused(replies.BAD_SASL_RESPONSE)
            excerpt = f"malformed {self._auth_mechanism} response: {exc}"
            return CommandRejected(excerpt[: _EXCERPT * 2], replies.BAD_SASL_RESPONSE)
        if isinstance(outcome, Challenge):
            self._challenge(outcome)
            return None
        # The exchange is kept until the decision is answered: a refusal may need it.
        return self._decide(Authenticate(self._auth_mechanism, outcome))

    def _challenge(self, challenge: Challenge) -> None:
        """Send ``334 <base64>``: the next line is a SASL response."""
        self._reply(Reply(334, None, binascii.b2a_base64(challenge.data, newline=False).decode()))
        self.state = _AUTH

    def _auth_refused(self, reply: Reply) -> None:
        """A failed attempt (535, 454, 501 for a malformed response): after
        ``max_auth_failures`` of them the session ends with 421."""
        self._auth_failures += 1
        if self._auth_failures >= self.settings.max_auth_failures:
            self._reply(replies.TOO_MANY_AUTH_FAILURES)
            self._close(CloseReason.TOO_MANY_ERRORS)
        else:
            self._reply(reply)

    def auth_result(self, identity: str | None) -> None:
        """Answer :class:`Authenticate`: the identity the credentials prove (235), or None if
        they are wrong (535 5.7.8). If the exchange has a ``refused()`` that returns a
        challenge (OAUTHBEARER's error, RFC 7628 §3.2.2), that is sent as 334 first, and the
        535 answers the client's next line, whatever it says."""
        if not isinstance(self._pending, Authenticate):
            raise RuntimeError("no AUTH decision is pending")
        if identity is not None and not isinstance(identity, str):
            raise TypeError(f"an identity must be a str or None, not {type(identity).__name__}")
        self._pending = None
        exchange, self._exchange = self._exchange, None
        if identity is None:
            refused = getattr(exchange, "refused", None)
            challenge = refused() if refused is not None else None
            if isinstance(challenge, Challenge):
                self._challenge(challenge)  # with no exchange left: _auth_line ends it
                return
            self._auth_refused(replies.AUTH_FAILED)
            return
        self.facts._authenticated_as = identity
        self._reply(replies.AUTH_SUCCEEDED)

    # ---- XCLIENT and XFORWARD (Postfix's XCLIENT_README and XFORWARD_README) ---------------

    def _xclient(self, arg: str | None, raw: bytes) -> Event:
        """XCLIENT: the session restarts for the client it names (out of a transaction: the
        sequence table answers 503 inside one)."""
        if not self._xclient_ok:
            return self._error(replies.NOT_AUTHORIZED, raw)
        given = parse_xclient(arg)  # 501 if malformed: nothing changes
        # A port belongs to its address: a new address without one has no known port.
        if "addr" in given:
            given.setdefault("port", None)
        if "destaddr" in given:
            given.setdefault("destport", None)
        info = attrs.evolve(self.facts._xclient or XClientInfo(), **given)
        self._restart(info, given)
        return self._decide(XClient(info))

    def _restart(self, info: XClientInfo, given: Mapping[str, object]) -> None:
        """Back to the greeting stage for the client XCLIENT named, as Postfix does: HELO/EHLO,
        PROTO and the authenticated identity are forgotten unless this command gave them
        (``[UNAVAILABLE]`` gives nothing); TLS stays (it cannot be undone), and so do the
        input already received and the session's counters."""
        facts = self.facts
        facts._xclient = info
        helo = given.get("helo")
        facts._helo_name = helo if isinstance(helo, str) else None
        facts._extended = given.get("proto") == "ESMTP"
        login = given.get("login")
        facts._authenticated_as = login if isinstance(login, str) else None
        self._xforward = None

    def _xforward_cmd(self, arg: str | None, raw: bytes) -> Event | None:
        """XFORWARD: facts about the next mail transaction's origin; 250, nothing else."""
        if not self._xforward_ok:
            return self._error(replies.NOT_AUTHORIZED, raw)
        given = parse_xforward(arg)  # 501 if malformed: nothing changes
        self._xforward = attrs.evolve(self._xforward or XForwardInfo(), **given)
        self._reply(replies.OK)
        return None

    # ---- the message -----------------------------------------------------------------------

    def _read_body(self) -> Event | NeedData:
        body = self._body
        assert body is not None
        held = self._body_result
        if held is not None:
            self._body_result = None
            return self._end_body(held)
        buf = self._buf
        pos = self._pos
        if pos < len(buf):
            pending = bytes(buf) if pos == 0 else bytes(buf[pos:])
            self._buf = bytearray()
            self._pos = 0
            result = body.feed(pending)
        else:
            result = None
        if result is None:
            if self.stream_body:
                chunk = body.take()
                if chunk:
                    return MessageChunk(chunk)
            return NEED_DATA
        if body.trailing:
            self._buf += body.trailing
        if self.stream_body and result.content:
            self._body_result = result  # hand out the last chunk first
            return MessageChunk(result.content)
        return self._end_body(result)

    def _end_body(self, result: BodyResult) -> Event:
        self._body = None
        self.state = _READY
        envelope = self.envelope
        assert envelope is not None
        if result.problem is None:
            if self.stream_body:
                return self._decide(MessageEnd(envelope, result.size))
            self._reserved = result.reserved
            return self._decide(MessageReceived(envelope, result.content))
        return self._refuse_message(_BODY_REPLIES[result.problem], result.size)

    def _refuse_message(self, reply: Reply, size: int, *, final: bool = True) -> Event:
        """The machine refuses the message (a limit or a policy) and the transaction ends. At
        the end of the message (``final``) LMTP answers once per recipient (RFC 2033 §4.2)."""
        envelope = self.envelope
        assert envelope is not None
        if final and self.settings.lmtp:
            recipients = len(envelope.rcpt_tos)
            self._out.extend([reply.to_bytes()] * recipients)
            self.envelope = attrs.evolve(envelope, rcpt_replies=(reply,) * recipients)
        else:
            self._reply(reply)
        self._end_transaction(TransactionOutcome.REFUSED, reply, size)
        return self._take_ended()

    # ---- BDAT (RFC 3030) -------------------------------------------------------------------

    def _bdat(self, arg: str | None, raw: bytes) -> Event | None:
        settings = self.settings
        if not settings.chunking:
            return self._error(replies.NOT_IMPLEMENTED, raw)
        state = self.state
        try:
            size, last = parse_bdat(arg)
        except ChunkSyntaxError as exc:
            if exc.size is None:  # no size to go by: nothing can be read as the chunk
                return self._error(exc.reply, raw)
            self._drop_chunk(exc.size, _Skip(exc.reply, raw, False, state, exc.size))
            return None  # the 501 once its octets are read (they are not commands)
        table = _LMTP_BDAT_OUT_OF_SEQUENCE if settings.lmtp else _BDAT_OUT_OF_SEQUENCE
        refusal = table.get(state)
        if refusal is not None:
            self._drop_chunk(size, _Skip(refusal, raw, False, state, size))
            return None
        # RCPT (the first chunk) or BDAT (the next ones): a transaction with recipients.
        envelope = self.envelope
        assert envelope is not None
        chunks = self._chunks
        received = 0 if chunks is None else chunks.size
        limit = settings.max_message_size
        if limit is not None and received + size > limit:
            # Known before the octets arrive, but answered after them (RFC 3030 §2).
            skip = _Skip(replies.MESSAGE_TOO_BIG, raw, True, state, received + size)
            self._drop_chunk(size, skip, last)
            return None
        start: MessageStart | None = None
        if chunks is None:
            body = envelope.mail_params.get("BODY")
            binary = body is not None and body.upper() == "BINARYMIME"
            self._chunks = ChunkReader(
                # Binary MIME holds NUL octets as data: the policy is for text.
                nul_octets=NulOctets.KEEP if binary else settings.nul_octets,
                budget=None if self.stream_body else self._budget,
                keep=not self.stream_body,
            )
            if self.stream_body:
                start = MessageStart(envelope)
        self._chunk_size = self._chunk_left = size
        self._chunk_last = last
        self.state = _CHUNK
        return start

    def _drop_chunk(self, size: int, skip: _Skip, last: bool = False) -> None:
        """Read the ``size`` octets that follow and drop them; then answer as ``skip`` says."""
        self._skip = skip
        self._chunk_size = self._chunk_left = size
        self._chunk_last = last
        self.state = _CHUNK

    def _read_chunk(self) -> Event | NeedData | None:
        """Take what has arrived of the current chunk (never more than its size)."""
        left = self._chunk_left
        if left:
            pos = self._pos
            buf = self._buf
            end = min(pos + left, len(buf))
            if end == pos:
                return NEED_DATA
            self._pos = end
            left = self._chunk_left = left - (end - pos)
            if self._skip is None:
                chunks = self._chunks
                assert chunks is not None
                data = chunks.add(
                    bytes(buf) if pos == 0 and end == len(buf) else bytes(buf[pos:end])
                )
                if data:
                    return MessageChunk(data)  # streaming
            if left:
                return NEED_DATA
        return self._chunk_done()

    def _chunk_done(self) -> Event | None:
        """All of the chunk has arrived: answer it."""
        skip = self._skip
        if skip is not None:
            self._skip = None
            if skip.refuses:
                return self._refuse_message(skip.reply, skip.size, final=self._chunk_last)
            self.state = skip.state
            return self._error(skip.reply, skip.line)
        chunks = self._chunks
        assert chunks is not None
        problem = chunks.problem
        if problem is not None:
            return self._refuse_message(_BODY_REPLIES[problem], chunks.size, final=self._chunk_last)
        if not self._chunk_last:
            self.state = _BDAT
            self._reply(replies.chunk_received(self._chunk_size))
            return None
        self._chunks = None
        self.state = _READY
        envelope = self.envelope
        assert envelope is not None
        result = chunks.finish()
        if self.stream_body:
            return self._decide(MessageEnd(envelope, result.size))
        self._reserved = result.reserved
        return self._decide(MessageReceived(envelope, result.content))

    # ---- decisions -------------------------------------------------------------------------

    def _decide(self, event: DecisionEvent) -> DecisionEvent:
        self._pending = event
        return event

    @property
    def pending(self) -> DecisionEvent | None:
        """The decision waiting for an answer, if any."""
        return self._pending

    def _checked(self, event: DecisionEvent, reply: Reply) -> Reply:
        """The handler's reply, checked against what the decision allows and completed with
        an enhanced status code (ENHANCEDSTATUSCODES is always advertised)."""
        if not isinstance(reply, Reply):
            raise TypeError(f"an answer must be a Reply or None, not {type(reply).__name__}")
        allowed, positive_default, refusal_default = _ANSWERS[type(event)]
        if reply.is_positive:
            if reply.code not in allowed:
                accepted = "/".join(map(str, sorted(allowed))) or "None (accept)"
                raise ValueError(
                    f"{reply.code} is not an answer to {_WHAT[type(event)]}: accept with "
                    f"{accepted}, or refuse with a 4xx/5xx reply"
                )
            if reply.enhanced is None and positive_default is not None:
                return Reply(reply.code, positive_default, reply.text, reply.more)
        elif reply.enhanced is None and refusal_default is not None:
            enhanced = f"{reply.code // 100}.{refusal_default}"
            return Reply(reply.code, enhanced, reply.text, reply.more)
        return reply

    def respond(self, reply: Reply | None = None) -> None:
        """Answer the pending decision: None accepts with the standard reply; a 4xx/5xx reply
        refuses (a 421 also closes the session, RFC 5321 §3.8); a positive reply accepts with
        that text if the decision allows its code.

        Raises TypeError or ValueError (and the decision stays pending) if ``reply`` is not an
        answer this decision allows: a 354 to RCPT, any positive reply to HELO, a 220 to MAIL.
        """
        event = self._pending
        if event is None:
            raise RuntimeError("no decision is pending")
        if reply is not None:
            reply = self._checked(event, reply)
        elif type(event) is Authenticate:
            raise RuntimeError("answer Authenticate with auth_result(identity)")
        self._pending = None
        _RESPONDERS[type(event)](self, event, reply)
        if reply is not None and reply.code == 421 and self.state is not _CLOSED:
            self._close(CloseReason.REFUSED)

    def respond_recipients(self, answers: Sequence[Reply | None]) -> None:
        """LMTP (RFC 2033 §4.2): answer the pending message decision once per accepted
        recipient, in the order of ``envelope.rcpt_tos``: None accepts for that recipient (250),
        a 4xx/5xx reply refuses for it, a 250 reply accepts with that text. A 421 among them
        closes the session once every reply is sent.

        Raises TypeError or ValueError (and the decision stays pending) if this is not an LMTP
        session, no message decision is pending, ``answers`` is not a list or tuple with one
        answer per recipient, or an answer is not one a message allows.
        """
        event = self._pending
        if type(event) is not MessageReceived and type(event) is not MessageEnd:
            raise RuntimeError("no message decision is pending")
        if not self.settings.lmtp:
            raise TypeError(
                "one reply per recipient is an answer in LMTP only; in SMTP one "
                "reply answers for every recipient"
            )
        if not isinstance(answers, list | tuple):
            raise TypeError(
                f"per-recipient answers must be a list or tuple, not {type(answers).__name__}"
            )
        recipients = len(event.envelope.rcpt_tos)
        if len(answers) != recipients:
            raise ValueError(f"{len(answers)} answer(s) for {recipients} recipient(s)")
        checked = tuple(
            None if answer is None else self._checked(event, answer) for answer in answers
        )
        self._pending = None
        self._deliver(event, checked)

    def fail(self, *, timed_out: bool = False) -> None:
        """The handler could not decide (it raised, answered nonsense, or ``timed_out``):
        answer the pending decision with a temporary failure (451 4.3.0, or 451 4.4.5 after a
        timeout; 454 4.7.0 for AUTH; a 421 greeting, which closes)."""
        event = self._pending
        if event is None:
            raise RuntimeError("no decision is pending")
        if type(event) is Connect or type(event) is XClient:
            self.respond(replies.GREETING_TIMED_OUT if timed_out else replies.GREETING_FAILED)
        elif type(event) is Authenticate:
            self._pending = None
            self._exchange = None
            self._auth_refused(replies.AUTH_TEMPORARY_FAILURE)
        else:
            self.respond(replies.HANDLER_TIMED_OUT if timed_out else replies.HANDLER_FAILED)

    def _answer_connect(self, event: DecisionEvent, reply: Reply | None) -> None:
        # RFC 5321 §3.1: a greeting is 220, 554 (only QUIT is served after it) or 421 (closes).
        if reply is None:
            reply = self.settings.greeting
        elif not reply.is_positive and reply.code not in (421, 554):
            reply = Reply(421 if reply.code < 500 else 554, reply.enhanced, reply.text, reply.more)
        self._reply(reply)
        if reply.code == 421:
            self._close(CloseReason.REFUSED)
        else:
            self.state = _CONNECTED if reply.code == 220 else _REFUSED

    def _answer_hello(self, event: Hello, reply: Reply | None) -> None:
        if reply is None:
            if self.envelope is not None:
                self._end_transaction(TransactionOutcome.RESET)
            facts = self.facts
            facts._helo_name = event.name
            facts._extended = event.extended
            self.state = _READY
            self._xforward = None
            settings = self.settings
            if not event.extended:
                reply = settings.helo_reply
            elif self._xclient_ok or self._xforward_ok:
                reply = settings.ehlo_reply(
                    self.tls_active, xclient=self._xclient_ok, xforward=self._xforward_ok
                )
            else:
                reply = settings.ehlo_reply(self.tls_active)
        self._reply(reply)

    def _answer_mail(self, event: MailFrom, reply: Reply | None) -> None:
        if reply is None or reply.is_positive:
            self._open_transaction(event.address, event.params)
        self._reply(reply or replies.SENDER_OK)

    def _open_transaction(self, address: str, params: Params) -> None:
        self._transactions += 1
        self.envelope = Envelope(
            f"{self._session_id}-{self._transactions}", address, params, xforward=self._xforward
        )
        self._xforward = None
        self.state = _MAIL

    def _answer_rcpt(self, event: RcptTo, reply: Reply | None) -> None:
        if reply is None or reply.is_positive:
            self._add_recipient(event.envelope, event.address, event.params)
        self._reply(reply or replies.RECIPIENT_OK)

    def _add_recipient(self, e: Envelope, address: str, params: Params) -> None:
        self.envelope = Envelope(
            e.id,
            e.mail_from,
            e.mail_params,
            (*e.rcpt_tos, address),
            (*e.rcpt_params, params),
            e.xforward,
        )
        self.state = _RCPT

    def _answer_message(self, event: MessageReceived | MessageEnd, reply: Reply | None) -> None:
        if self.settings.lmtp:  # the same answer for every recipient
            self._deliver(event, (reply,) * len(event.envelope.rcpt_tos))
            return
        size = event.size if type(event) is MessageEnd else len(event.content)
        self._release()
        if reply is None or reply.is_positive:
            reply = reply or replies.MESSAGE_ACCEPTED
            self.facts._messages_accepted += 1
            self._junk = 0  # a client delivering mail is not idling: its junk count starts over
            outcome = TransactionOutcome.ACCEPTED
        else:
            outcome = TransactionOutcome.REFUSED
        self._reply(reply)
        self._end_transaction(outcome, reply, size)

    def _deliver(
        self, event: MessageReceived | MessageEnd, answers: tuple[Reply | None, ...]
    ) -> None:
        """LMTP: one reply per recipient (checked already); the final envelope records them."""
        size = event.size if type(event) is MessageEnd else len(event.content)
        self._release()
        envelope = event.envelope
        sent: list[Reply] = []
        for address, answer in zip(envelope.rcpt_tos, answers, strict=True):
            reply = replies.delivered(address) if answer is None else answer
            sent.append(reply)
            self._reply(reply)
        accepted = [reply for reply in sent if reply.is_positive]
        if accepted:
            self.facts._messages_accepted += 1
            self._junk = 0
            outcome, summary = TransactionOutcome.ACCEPTED, accepted[0]
        else:
            outcome, summary = TransactionOutcome.REFUSED, sent[0]
        self.envelope = attrs.evolve(envelope, rcpt_replies=tuple(sent))
        self._end_transaction(outcome, summary, size)
        if any(reply.code == 421 for reply in sent) and self.state is not _CLOSED:
            self._close(CloseReason.REFUSED)

    def _answer_verify(self, event: DecisionEvent, reply: Reply | None) -> None:
        self._reply(reply or replies.VRFY_CANNOT)

    def _answer_expand(self, event: DecisionEvent, reply: Reply | None) -> None:
        self._reply(reply or replies.EXPN_CANNOT)

    def _answer_auth(self, event: DecisionEvent, reply: Reply | None) -> None:
        assert reply is not None  # _checked lets only refusals through
        self._exchange = None
        self._auth_refused(reply)

    def _answer_xclient(self, event: XClient, reply: Reply | None) -> None:
        # The greeting of the client XCLIENT named; its HELO, if it gave one, stands for the
        # client's HELO/EHLO (XCLIENT_README: the attributes it sent are not reset).
        self._answer_connect(event, reply)
        if self.state is _CONNECTED and self.facts._helo_name is not None:
            self.state = _READY


_VERBS: Final[dict[str, _Verb]] = {
    "HELO": SMTPMachine._helo,
    "EHLO": SMTPMachine._ehlo,
    "MAIL": SMTPMachine._mail,
    "RCPT": SMTPMachine._rcpt,
    "DATA": SMTPMachine._data,
    "BDAT": SMTPMachine._bdat,
    "RSET": SMTPMachine._rset,
    "NOOP": SMTPMachine._noop,
    "QUIT": SMTPMachine._quit,
    "VRFY": SMTPMachine._vrfy,
    "EXPN": SMTPMachine._expn,
    "HELP": SMTPMachine._help,
    "STARTTLS": SMTPMachine._starttls,
    "AUTH": SMTPMachine._auth,
    "XCLIENT": SMTPMachine._xclient,
    "XFORWARD": SMTPMachine._xforward_cmd,
}

# LMTP (RFC 2033 §4.1): LHLO is EHLO under another name; HELO and EHLO are refused.
_LMTP_VERBS: Final[dict[str, _Verb]] = {
    **_VERBS,
    "LHLO": SMTPMachine._ehlo,
    "HELO": SMTPMachine._not_lmtp,
    "EHLO": SMTPMachine._not_lmtp,
}

# Each answers its own event type: the table pairs them (type checkers cannot see that).
_RESPONDERS: Final[
    Mapping[type[DecisionEvent], Callable[[SMTPMachine, Any, Reply | None], None]]
] = {
    Connect: SMTPMachine._answer_connect,
    Hello: SMTPMachine._answer_hello,
    MailFrom: SMTPMachine._answer_mail,
    RcptTo: SMTPMachine._answer_rcpt,
    MessageReceived: SMTPMachine._answer_message,
    MessageEnd: SMTPMachine._answer_message,
    Verify: SMTPMachine._answer_verify,
    Expand: SMTPMachine._answer_expand,
    Authenticate: SMTPMachine._answer_auth,
    XClient: SMTPMachine._answer_xclient,
}
