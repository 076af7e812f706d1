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

import binascii
import enum
import functools
from typing import Final, final

from . import replies
from .body import BareLineEndings, BodyProblem, BodyReader, BodyResult
from .commands import CommandSyntaxError, parse_helo_name, parse_path_and_params, split_verb
from .events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Closed,
    CloseReason,
    CommandRejected,
    DecisionEvent,
    Event,
    Hello,
    MailFrom,
    MessageChunk,
    MessageEnd,
    MessageReceived,
    MessageRefused,
    MessageStart,
    NeedData,
    RcptTo,
    StartTLS,
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
    #: Inside an AUTH exchange: the next line is a SASL response, not a command.
    AUTH = "auth"
    #: STARTTLS was accepted: waiting for the I/O layer's TLS handshake.
    TLS_HANDSHAKE = "tls-handshake"
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
    ("AUTH", State.CONNECTED): replies.NEED_EHLO_FOR_AUTH,
    ("AUTH", State.MAIL): replies.AUTH_IN_TRANSACTION,
    ("AUTH", State.RCPT): replies.AUTH_IN_TRANSACTION,
    ("STARTTLS", State.MAIL): replies.BAD_SEQUENCE,
    ("STARTTLS", State.RCPT): replies.BAD_SEQUENCE,
}

# Recognised commands this server does not offer (STARTTLS and AUTH: when not configured): 502.
_NOT_IMPLEMENTED: Final = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "STARTTLS", "AUTH", "BDAT"}
)

#: RFC 4954 §4: a SASL response line may be up to 12288 octets.
MAX_AUTH_LINE: Final = 12288

#: RFC 5321 §4.5.3.1.4: 512 octets with CRLF, plus what extensions allow: SIZE (RFC 1870, 26),
#: BODY=8BITMIME (RFC 6152, 14) and SMTPUTF8 (RFC 6531, 10).
DEFAULT_MAX_COMMAND_LINE: Final = 512 + 26 + 14 + 10

_EXCERPT: Final = 40
_HELP: Final = Reply(
    214,
    "2.0.0",
    "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
)


# Built once per distinct server setup, not once per connection.
@functools.lru_cache(maxsize=64)
def _greeting(hostname: str, banner: str) -> Reply:
    return Reply(220, None, f"{hostname} {banner}")


@functools.lru_cache(maxsize=64)
def _ehlo(hostname: str, keywords: tuple[str, ...]) -> Reply:
    return Reply(250, None, hostname, keywords)


def _b64decode(text: str) -> bytes | None:
    """Strict base64 (RFC 4954 §4): ``=`` alone is an empty response; None if malformed."""
    if text == "=":
        return b""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _excerpt(line: bytes) -> str:
    text = line[:_EXCERPT].decode("utf-8", "backslashreplace")
    return repr(text) if len(line) <= _EXCERPT else repr(text) + "..."


@final
class SMTPMachine:
    """The protocol state of one SMTP session. See the module docstring."""

    # Thousands of these live at once (one per connection): no per-instance __dict__.
    __slots__ = (
        "_auth_return",
        "_body",
        "_body_result",
        "_buf",
        "_close_reason",
        "_discarding",
        "_dropped",
        "_greeted",
        "_out",
        "_peer_closed",
        "_pending",
        "_pos",
        "auth_failures",
        "auth_mechanisms",
        "auth_over_plaintext",
        "auth_required",
        "authenticated",
        "banner",
        "bare_line_endings",
        "errors",
        "extended",
        "hostname",
        "lines_taken",
        "max_auth_failures",
        "max_command_line",
        "max_errors",
        "max_line_length",
        "max_message_size",
        "max_recipients",
        "recipients",
        "require_tls",
        "smtputf8",
        "starttls",
        "state",
        "stream_body",
        "tls_active",
        "transaction_smtputf8",
    )

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
        starttls: bool = False,
        tls_active: bool = False,
        require_tls: bool = False,
        auth_mechanisms: tuple[str, ...] = (),
        auth_over_plaintext: bool = False,
        auth_required: bool = False,
        max_auth_failures: int = 3,
        stream_body: bool = False,
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
        #: STARTTLS is offered (a TLS context exists); ignored once TLS is active.
        self.starttls = starttls
        #: The session is under TLS (implicit TLS, or after STARTTLS).
        self.tls_active = tls_active
        self.require_tls = require_tls
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.auth_over_plaintext = auth_over_plaintext
        self.auth_required = auth_required
        self.max_auth_failures = max_auth_failures
        #: Hand out message text in chunks as it arrives (MessageStart, MessageChunk,
        #: MessageEnd) instead of one MessageReceived at the end.
        self.stream_body = stream_body
        #: True once AUTH succeeded.
        self.authenticated = False
        self.auth_failures = 0

        self.state = State.CONNECTED
        #: The number of protocol errors so far.
        self.errors = 0
        #: Complete command (or SASL response) lines taken so far: the I/O layer's measure of
        #: progress, so a client trickling bytes cannot stretch one command wait forever.
        self.lines_taken = 0
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
        self._auth_return = State.READY
        # Streaming: the end of a message, held back until its last chunk was handed out.
        self._body_result: BodyResult | None = None

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
            reply = _greeting(self.hostname, self.banner)
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
        if self.state is State.TLS_HANDSHAKE:
            raise RuntimeError("call tls_established() (or close()) after the TLS handshake")
        while True:
            if self.state is State.CLOSED:
                return Closed(self._close_reason or CloseReason.PEER_CLOSED, self._dropped)
            event: Event | NeedData | None
            if self.state is State.DATA:
                event = self._read_body()
            else:
                line = self._next_line()
                if line is None:
                    event = NEED_DATA
                elif self.state is State.AUTH:
                    event = self._auth_line(line)
                else:
                    event = self._handle_line(line)
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
        limit = MAX_AUTH_LINE if self.state is State.AUTH else self.max_command_line
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
            if verb == "STARTTLS" and (self.starttls or self.tls_active):
                return self._starttls(arg, raw)
            if verb == "AUTH" and self.auth_mechanisms:
                return self._auth(arg, raw)
        except CommandSyntaxError as exc:
            return self._error(exc.reply, raw)
        if verb in _NOT_IMPLEMENTED:
            return self._error(replies.NOT_IMPLEMENTED, raw)
        return self._error(replies.UNKNOWN_COMMAND, raw)

    def _refuse(self, outcome: Event | Reply, raw: bytes) -> Event:
        """A limit or policy refusal of MAIL/RCPT (552, 452, 553): answered and reported, but
        not a protocol error, so it does not count towards max_errors. A 530 (TLS or AUTH
        required first) does count: a client ignoring it is not going to get anywhere."""
        if isinstance(outcome, Reply):
            if outcome.code == 530:
                return self._error(outcome, raw)
            self._reply(outcome)
            return CommandRejected(_excerpt(raw), outcome)
        return outcome

    # ---- STARTTLS (RFC 3207) --------------------------------------------------------------

    def _starttls(self, arg: str | None, raw: bytes) -> Event:
        if arg is not None:
            return self._error(replies.syntax_error("STARTTLS takes no argument"), raw)
        if self.tls_active:
            return self._error(replies.TLS_ALREADY_ACTIVE, raw)
        self._reply(replies.READY_FOR_TLS)
        # Whatever the client sent after STARTTLS in plaintext is discarded, never executed
        # inside the TLS session (CVE-2011-0411 class; aiosmtpd CVE-2024-34083).
        discarded = len(self._buf) - self._pos
        self._buf.clear()
        self._pos = 0
        self.state = State.TLS_HANDSHAKE
        return StartTLS(discarded)

    def tls_established(self) -> None:
        """The TLS handshake after STARTTLS succeeded: the session starts afresh (RFC 3207
        §4.2: HELO/EHLO, the transaction and any authentication are forgotten)."""
        if self.state is not State.TLS_HANDSHAKE:
            raise RuntimeError("tls_established() without a STARTTLS")
        self._buf.clear()
        self._pos = 0
        self.tls_active = True
        self.extended = False
        self.authenticated = False
        self._reset_transaction()
        self.state = State.CONNECTED

    # ---- AUTH (RFC 4954) -----------------------------------------------------------------

    @property
    def auth_offered(self) -> bool:
        return bool(self.auth_mechanisms) and (self.tls_active or self.auth_over_plaintext)

    def _auth(self, arg: str | None, raw: bytes) -> Event:
        if not self.auth_offered:
            return self._error(replies.ENCRYPTION_REQUIRED_FOR_AUTH, raw)
        if not self.extended:
            return self._error(replies.NEED_EHLO_FOR_AUTH, raw)  # RFC 4954 §4: EHLO only
        if self.authenticated:
            return self._error(replies.ALREADY_AUTHENTICATED, raw)
        if arg is None:
            return self._error(replies.syntax_error("AUTH needs a mechanism"), raw)
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper() if mechanism.isascii() else mechanism
        if mechanism not in self.auth_mechanisms:
            return self._error(replies.UNKNOWN_AUTH_MECHANISM, raw)
        response: bytes | None = None
        if initial:
            if " " in initial:
                return self._error(replies.syntax_error("AUTH takes one initial response"), raw)
            decoded = _b64decode(initial)
            if decoded is None:
                return self._error(replies.BAD_BASE64, raw)
            response = decoded
        self._auth_return = self.state
        return self._decide(AuthStart(mechanism, response))

    def _auth_line(self, raw: bytes) -> Event:
        if len(raw) + 2 > MAX_AUTH_LINE:
            self.state = self._auth_return
            return self._error(replies.LINE_TOO_LONG, raw)
        if raw == b"*":
            self.state = self._auth_return
            return AuthAborted(self._count_auth_error(replies.AUTH_CANCELLED))
        decoded = _b64decode(raw.decode("ascii", "replace"))
        if decoded is None:
            self.state = self._auth_return
            return AuthAborted(self._count_auth_error(replies.BAD_BASE64))
        self.state = self._auth_return
        return self._decide(AuthResponse(decoded))

    def _count_auth_error(self, reply: Reply) -> Reply:
        """Queue a protocol error ending an exchange; returns what was really sent."""
        self.errors += 1
        if self.errors >= self.max_errors:
            self._reply(replies.TOO_MANY_ERRORS)
            self._close(CloseReason.TOO_MANY_ERRORS)
            return replies.TOO_MANY_ERRORS
        self._reply(reply)
        return reply

    def auth_challenge(self, challenge: bytes) -> None:
        """Answer AuthStart/AuthResponse with a ``334`` challenge; the client's next line
        comes back as an :class:`AuthResponse` (or an :class:`AuthAborted`)."""
        event = self._pending
        if not isinstance(event, AuthStart | AuthResponse):
            raise RuntimeError("no AUTH exchange is waiting for a challenge")
        self._pending = None
        self._reply(Reply(334, None, binascii.b2a_base64(challenge, newline=False).decode()))
        self.state = State.AUTH

    def auth_finish(self, reply: Reply | None = None) -> None:
        """End the pending exchange: None succeeds (235); a 4xx/5xx reply fails (535 5.7.8,
        454 4.7.0 for a temporary failure, 501 for a malformed response). After
        ``max_auth_failures`` failures the session ends with 421."""
        event = self._pending
        if not isinstance(event, AuthStart | AuthResponse):
            raise RuntimeError("no AUTH exchange is pending")
        self._pending = None
        if reply is None or reply.is_positive:
            self.authenticated = True
            self._reply(reply or replies.AUTH_SUCCEEDED)
            return
        self.auth_failures += 1
        if self.auth_failures >= self.max_auth_failures:
            self._reply(replies.TOO_MANY_AUTH_FAILURES)
            self._close(CloseReason.TOO_MANY_ERRORS)
            return
        self._reply(reply)

    def _decide(self, event: DecisionEvent) -> DecisionEvent:
        self._pending = event
        return event

    def _mail(self, arg: str | None) -> Event | Reply:
        if self.require_tls and not self.tls_active:
            return replies.TLS_REQUIRED
        if self.auth_required and not self.authenticated:
            return replies.AUTH_REQUIRED
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
            bad_address=replies.BAD_RECIPIENT_ADDRESS,
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
        return MessageStart() if self.stream_body else None

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
        held = self._body_result
        if held is not None:
            self._body_result = None
            return self._end_body(held)
        pending = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        result = body.feed(pending) if pending else None
        if result is None:
            if self.stream_body:
                chunk = body.take()
                if chunk:
                    return MessageChunk(chunk)
            return NEED_DATA
        self._buf += body.trailing
        if self.stream_body and result.content:
            self._body_result = result  # hand out the last chunk first
            return MessageChunk(result.content)
        return self._end_body(result)

    def _end_body(self, result: BodyResult) -> Event:
        self._body = None
        self.state = State.READY
        self.recipients = 0
        self.transaction_smtputf8 = False
        if result.problem is None:
            if self.stream_body:
                return self._decide(MessageEnd(result.size))
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
        reply refuses (the state does not move); a positive reply accepts with that text.
        (AUTH events are answered with :meth:`auth_challenge` / :meth:`auth_finish`.)"""
        event = self._pending
        if event is None:
            raise RuntimeError("no decision is pending")
        if isinstance(event, AuthStart | AuthResponse):
            raise RuntimeError("answer AUTH with auth_challenge() or auth_finish()")
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
        elif isinstance(event, MessageReceived | MessageEnd):
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
        keywords += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        if self.starttls and not self.tls_active:
            keywords.append("STARTTLS")
        if self.auth_offered:
            keywords.append("AUTH " + " ".join(self.auth_mechanisms))
        keywords.append("HELP")
        return keywords

    def _ehlo_reply(self) -> Reply:
        return _ehlo(self.hostname, tuple(self.ehlo_keywords()))
