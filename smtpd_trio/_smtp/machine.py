"""The SMTP session state machine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and
ENHANCEDSTATUSCODES). Sans-IO: bytes in, events out; replies in, bytes out.

Theory of operation
-------------------
The I/O layer drives one :class:`SMTPMachine` per connection, in lockstep::

    machine.greet(None)                      # queue the 220 banner
    loop:
        send(machine.data_to_send())
        machine.receive_data(await read())   # b"" means the peer closed
        while (event := machine.next_event()) is not NEED_DATA:
            decision event -> machine.respond(await handler(...))
            Closed         -> send what is queued, close the stream, stop

Commands that arrive together (PIPELINING, RFC 2920) are taken one at a time, in order, and
their replies are queued together, so the I/O layer writes them in one batch when the machine
next needs data. A command whose handler decision is pending is never overtaken: the machine
refuses to produce another event until :meth:`respond` is called.

The machine answers by itself everything that needs no handler: syntax errors (500/501),
out-of-sequence commands (503), unsupported parameters (555), limits (552/452), RSET, NOOP,
HELP, QUIT. Only well-formed, in-sequence commands reach the handler, as decision events.

States (the mail transaction is the MAIL → RCPT → DATA part)::

    CONNECTED --HELO/EHLO--> READY --MAIL--> MAIL --RCPT--> RCPT --DATA--> DATA
        ^                      ^ ^            |              |              |
        |                      | +---RSET/HELO/EHLO---------+              |
        |                      +-----------message read, answered ---------+
    any state --QUIT / too many errors / close()--> CLOSED

Which command is legal where is the single table ``_OUT_OF_SEQUENCE`` below.

Memory: the machine bounds what it holds (one command line, or what the body reader keeps
under its line and size limits) only if the I/O layer drains it, calling :meth:`next_event`
until NEED_DATA after every :meth:`receive_data`, as the loop above does.
"""

from __future__ import annotations

import enum
from typing import Final, final

from . import replies
from .body import BareLineEndings, BodyProblem, BodyReader
from .commands import CommandSyntaxError, parse_helo_name, parse_path_and_params, split_verb
from .events import (
    NEED_DATA,
    Closed,
    CloseReason,
    CommandRejected,
    DecisionEvent,
    Event,
    Hello,
    MailFrom,
    MessageReceived,
    MessageRefused,
    NeedData,
    RcptTo,
    TransactionReset,
    Verify,
)
from .replies import Reply


class State(enum.Enum):
    """Where the session stands."""

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
    #: The greeting was a refusal (554): only QUIT is served (RFC 5321 §3.1).
    REFUSED = "refused"
    #: Over; nothing more is read.
    CLOSED = "closed"


# (verb, state) -> the reply for a command that is not legal in that state. Everything else
# is legal everywhere a command can be read (DATA and CLOSED read no commands).
_OUT_OF_SEQUENCE: Final[dict[tuple[str, State], Reply]] = {
    ("MAIL", State.CONNECTED): replies.NEED_HELO,
    ("MAIL", State.MAIL): replies.NESTED_MAIL,
    ("MAIL", State.RCPT): replies.NESTED_MAIL,
    ("RCPT", State.CONNECTED): replies.NEED_MAIL,
    ("RCPT", State.READY): replies.NEED_MAIL,
    ("DATA", State.CONNECTED): replies.NEED_MAIL,
    ("DATA", State.READY): replies.NEED_MAIL,
    ("DATA", State.MAIL): replies.NO_VALID_RECIPIENTS,
}

# Recognised commands this server does not offer (yet): 502, not 500.
_NOT_IMPLEMENTED: Final = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "STARTTLS", "AUTH", "BDAT"}
)

#: RFC 5321 §4.5.3.1.4: 512 octets with CRLF, plus what extensions allow: SIZE (RFC 1870, 26),
#: BODY=8BITMIME (RFC 6152, 14) and SMTPUTF8 (RFC 6531, 10).
DEFAULT_MAX_COMMAND_LINE: Final = 512 + 26 + 14 + 10

_EXCERPT: Final = 40
_HELP: Final = Reply(
    214,
    "2.0.0",
    "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
)


def _excerpt(line: bytes) -> str:
    text = line[:_EXCERPT].decode("utf-8", "backslashreplace")
    return repr(text) if len(line) <= _EXCERPT else repr(text) + "..."


@final
class SMTPMachine:
    """The protocol state of one SMTP session. See the module docstring."""

    def __init__(
        self,
        *,
        hostname: str,
        max_message_size: int | None = 10_240_000,
        max_recipients: int = 1000,
        max_command_line: int = DEFAULT_MAX_COMMAND_LINE,
        max_line_length: int | None = 1000,
        max_errors: int = 20,
        bare_line_endings: BareLineEndings = BareLineEndings.REJECT,
        smtputf8: bool = True,
        banner: str = "ESMTP smtpd-trio ready",
    ) -> None:
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.max_command_line = max_command_line
        self.max_line_length = max_line_length
        self.max_errors = max_errors
        self.bare_line_endings = bare_line_endings
        self.smtputf8 = smtputf8
        self.banner = banner

        self.state = State.CONNECTED
        #: The number of protocol errors so far.
        self.errors = 0
        #: Recipients accepted in the open transaction.
        self.recipients = 0
        #: True if the open transaction's MAIL carried SMTPUTF8.
        self.transaction_smtputf8 = False
        self.extended = False
        self._greeted = False
        self._buf = bytearray()
        self._pos = 0
        # The head of an over-long command line being discarded (None when not discarding),
        # kept so its excerpt does not depend on how the line was split into chunks.
        self._discarding: bytes | None = None
        self._peer_closed = False
        self._close_reason: CloseReason | None = None
        self._dropped = False
        self._out: list[bytes] = []
        self._pending: DecisionEvent | None = None
        self._body: BodyReader | None = None

    # ---- output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (possibly b"")."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def greet(self, reply: Reply | None = None) -> None:
        """Queue the greeting: 220 by default; a 554 reply refuses service (RFC 5321 §3.1),
        a 421 closes at once."""
        if self._greeted:
            raise RuntimeError("greet() was already called")
        self._greeted = True
        if reply is None:
            reply = Reply(220, None, f"{self.hostname} {self.banner}")
        self._reply(reply)
        if reply.code == 421:
            self._close(CloseReason.SERVER)
        elif not reply.is_positive:
            self.state = State.REFUSED

    def close(self, reply: Reply | None = replies.SERVICE_SHUTTING_DOWN) -> None:
        """End the session from the server side, queueing ``reply`` (421 by default)."""
        if self.state is State.CLOSED:
            return
        self._pending = None
        if reply is not None:
            self._reply(reply)
        self._close(CloseReason.SERVER)

    def _close(self, reason: CloseReason) -> None:
        self._dropped = self.state in (State.MAIL, State.RCPT, State.DATA)
        self.state = State.CLOSED
        self._close_reason = reason
        self._body = None

    # ---- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            if self.state is not State.CLOSED:
                self._buf += data
        else:
            self._peer_closed = True

    @property
    def in_transaction(self) -> bool:
        return self.state in (State.MAIL, State.RCPT, State.DATA)

    @property
    def reading_data(self) -> bool:
        """True while the message text is being read (between 354 and the final dot)."""
        return self.state is State.DATA

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA if the buffered bytes hold no complete command."""
        if not self._greeted:
            raise RuntimeError("call greet() first")
        if self._pending is not None:
            raise RuntimeError(f"respond() to {type(self._pending).__name__} first")
        while True:
            if self.state is State.CLOSED:
                return Closed(self._close_reason or CloseReason.PEER_CLOSED, self._dropped)
            event: Event | NeedData | None
            if self.state is State.DATA:
                event = self._read_body()
            else:
                line = self._next_line()
                event = NEED_DATA if line is None else self._handle_line(line)
            if event is None:
                continue  # answered by the machine itself: take the next command
            if event is not NEED_DATA:
                return event
            if self._peer_closed:
                self._close(CloseReason.PEER_CLOSED)
                continue
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
        if end < 0:
            if len(buf) - self._pos > self.max_command_line:
                # Keep only a possible CR of a split CRLF; the rest of the line is junk.
                keep = buf[-1:] if buf.endswith(b"\r") else b""
                if self._discarding is None:
                    self._discarding = bytes(buf[self._pos : self._pos + _EXCERPT + 1])
                self._buf = bytearray(keep)
                self._pos = 0
            return None
        line = bytes(buf[self._pos : end])
        self._pos = end + 2
        if self._discarding is not None:
            head, self._discarding = self._discarding, None
            return head.ljust(self.max_command_line + 1, b"\x00")
        return line

    # ---- commands ------------------------------------------------------------------------

    def _error(self, reply: Reply, line: bytes) -> Event:
        """Answer a protocol error; the max_errors-th one ends the session with 421."""
        self.errors += 1
        if self.errors >= self.max_errors:
            self._reply(replies.TOO_MANY_ERRORS)
            self._close(CloseReason.TOO_MANY_ERRORS)
            return CommandRejected(_excerpt(line), replies.TOO_MANY_ERRORS)
        self._reply(reply)
        return CommandRejected(_excerpt(line), reply)

    def _handle_line(self, raw: bytes) -> Event | None:
        if len(raw) + 2 > self.max_command_line:
            return self._error(replies.LINE_TOO_LONG, raw)
        if b"\r" in raw or b"\n" in raw:
            return self._error(replies.BARE_LINE_ENDING_IN_COMMAND, raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(replies.BAD_UTF8, raw)
        verb, arg = split_verb(line)
        if self.state is State.REFUSED and verb != "QUIT":
            return self._error(replies.BAD_SEQUENCE, raw)
        sequence_error = _OUT_OF_SEQUENCE.get((verb, self.state))
        if sequence_error is not None:
            return self._error(sequence_error, raw)
        try:
            if verb in ("HELO", "EHLO"):
                return self._decide(Hello(parse_helo_name(arg), verb == "EHLO"))
            if verb == "MAIL":
                return self._refuse(self._mail(arg), raw)
            if verb == "RCPT":
                return self._refuse(self._rcpt(arg), raw)
            if verb == "DATA":
                return self._data(arg)
            if verb == "RSET":
                return self._rset(arg)
            if verb == "NOOP":
                self._reply(replies.NOOP_OK)
                return None
            if verb == "QUIT":
                if arg is not None:
                    return self._error(replies.syntax_error("QUIT takes no argument"), raw)
                self._reply(replies.QUIT_OK)
                self._close(CloseReason.QUIT)
                return Closed(CloseReason.QUIT, self._dropped)
            if verb == "VRFY":
                if arg is None:
                    return self._error(replies.syntax_error("VRFY requires an argument"), raw)
                return self._decide(Verify(arg))
            if verb == "HELP":
                self._reply(_HELP)
                return None
        except CommandSyntaxError as exc:
            return self._error(exc.reply, raw)
        if verb in _NOT_IMPLEMENTED:
            return self._error(replies.NOT_IMPLEMENTED, raw)
        return self._error(replies.UNKNOWN_COMMAND, raw)

    def _refuse(self, outcome: Event | Reply, raw: bytes) -> Event:
        """A limit or policy refusal of MAIL/RCPT (552, 452, 553): answered and reported, but
        not a protocol error, so it does not count towards max_errors."""
        if isinstance(outcome, Reply):
            self._reply(outcome)
            return CommandRejected(_excerpt(raw), outcome)
        return outcome

    def _decide(self, event: DecisionEvent) -> DecisionEvent:
        self._pending = event
        return event

    def _mail(self, arg: str | None) -> Event | Reply:
        address, params = parse_path_and_params(
            arg,
            prefix="FROM:",
            null_ok=True,
            postmaster_ok=False,
            bad_address=replies.Reply(501, "5.1.7", "Syntax error in sender address"),
        )
        smtputf8 = False
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or not value.isascii() or len(value) > 20:
                    raise CommandSyntaxError(replies.syntax_error("SIZE needs a number"))
                if self.max_message_size is not None and int(value) > self.max_message_size:
                    return replies.MESSAGE_TOO_BIG
            elif key == "BODY":
                if (
                    value is None
                    or not value.isascii()
                    or value.upper() not in ("7BIT", "8BITMIME")
                ):
                    raise CommandSyntaxError(replies.syntax_error("BODY must be 7BIT or 8BITMIME"))
            elif key == "SMTPUTF8" and self.smtputf8:
                if value is not None:
                    raise CommandSyntaxError(replies.syntax_error("SMTPUTF8 takes no value"))
                smtputf8 = True
            else:
                raise CommandSyntaxError(replies.PARAM_NOT_RECOGNIZED)
        if not smtputf8 and not address.isascii():
            return replies.NON_ASCII_ADDRESS
        self.transaction_smtputf8 = smtputf8
        return self._decide(MailFrom(address, params))

    def _rcpt(self, arg: str | None) -> Event | Reply:
        address, params = parse_path_and_params(
            arg,
            prefix="TO:",
            null_ok=False,
            postmaster_ok=True,
            bad_address=replies.Reply(501, "5.1.3", "Syntax error in recipient address"),
        )
        if params:
            raise CommandSyntaxError(replies.PARAM_NOT_RECOGNIZED)
        if not self.transaction_smtputf8 and not address.isascii():
            return replies.NON_ASCII_ADDRESS
        if self.recipients >= self.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        return self._decide(RcptTo(address, params))

    def _data(self, arg: str | None) -> Event | None:
        if arg is not None:
            raise CommandSyntaxError(replies.syntax_error("DATA takes no argument"))
        self._reply(replies.START_DATA)
        self.state = State.DATA
        self._body = BodyReader(
            max_size=self.max_message_size,
            max_line_length=self.max_line_length,
            bare_line_endings=self.bare_line_endings,
        )
        return None

    def _rset(self, arg: str | None) -> Event | None:
        if arg is not None:
            raise CommandSyntaxError(replies.syntax_error("RSET takes no argument"))
        self._reset_transaction()
        self._reply(replies.RESET_OK)
        return TransactionReset()

    def _reset_transaction(self) -> None:
        self.recipients = 0
        self.transaction_smtputf8 = False
        if self.state in (State.MAIL, State.RCPT):
            self.state = State.READY

    def _read_body(self) -> Event | NeedData:
        body = self._body
        assert body is not None
        pending = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        result = body.feed(pending) if pending else None
        if result is None:
            return NEED_DATA
        self._buf += body.trailing
        self._body = None
        self.state = State.READY
        self.recipients = 0
        self.transaction_smtputf8 = False
        if result.problem is None:
            return self._decide(MessageReceived(result.content))
        reply = {
            BodyProblem.TOO_BIG: replies.MESSAGE_TOO_BIG,
            BodyProblem.LINE_TOO_LONG: replies.TEXT_LINE_TOO_LONG,
            BodyProblem.BARE_LINE_ENDING: replies.BARE_LINE_ENDING_IN_DATA,
        }[result.problem]
        self._reply(reply)
        return MessageRefused(result.problem, result.size, reply)

    # ---- decisions -----------------------------------------------------------------------

    def respond(self, reply: Reply | None = None) -> None:
        """Answer the pending decision event: None accepts with the standard reply; a 4xx or 5xx
        reply refuses (the state does not move); a positive reply accepts with that text."""
        event = self._pending
        if event is None:
            raise RuntimeError("no decision is pending")
        self._pending = None
        accepted = reply is None or reply.is_positive
        if isinstance(event, Hello):
            if reply is None or reply.is_positive:
                self._reset_transaction()
                self.state = State.READY
                self.extended = event.extended
                reply = self._ehlo_reply() if event.extended else Reply(250, None, self.hostname)
        elif isinstance(event, MailFrom):
            if accepted:
                self.state = State.MAIL
            else:
                self.transaction_smtputf8 = False
            reply = reply or replies.SENDER_OK
        elif isinstance(event, RcptTo):
            if accepted:
                self.state = State.RCPT
                self.recipients += 1
            reply = reply or replies.RECIPIENT_OK
        elif isinstance(event, MessageReceived):
            reply = reply or replies.MESSAGE_ACCEPTED
        else:
            reply = reply or replies.VRFY_CANNOT
        self._reply(reply)

    def ehlo_keywords(self) -> list[str]:
        """The extensions advertised in the EHLO reply."""
        keywords = []
        if self.max_message_size is not None:
            keywords.append(f"SIZE {self.max_message_size}")
        else:
            keywords.append("SIZE")
        keywords.append("8BITMIME")
        if self.smtputf8:
            keywords.append("SMTPUTF8")
        keywords += ["PIPELINING", "ENHANCEDSTATUSCODES", "HELP"]
        return keywords

    def _ehlo_reply(self) -> Reply:
        return Reply(250, None, self.hostname, tuple(self.ehlo_keywords()))
