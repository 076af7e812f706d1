"""SMTP replies: one value type and every standard reply the server sends, in one place.

Replies never carry internal details (exception text, paths) to the peer. Enhanced status codes
follow RFC 3463 and are sent when ENHANCEDSTATUSCODES (RFC 2034) is in effect, which it always is
here: the codes go on every reply except the greeting, the EHLO/HELO answers and the 354
that starts the message text (RFC 2034 §3 leaves those out).
"""

from __future__ import annotations

import re
from typing import Final, final

import attrs

_ENHANCED_RE: Final = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")


def _check_code(instance: object, attribute: object, value: int) -> None:
    if not 200 <= value <= 599:
        raise ValueError(f"SMTP reply code must be within 200-599, not {value}")


def _check_enhanced(instance: Reply, attribute: object, value: str | None) -> None:
    if value is None:
        return
    if not _ENHANCED_RE.match(value):
        raise ValueError(f"enhanced status code must look like '5.1.1', not {value!r}")
    if value[0] != str(instance.code)[0]:
        raise ValueError(
            f"enhanced status {value!r} does not match the class of code {instance.code}"
        )


def _check_text(instance: object, attribute: object, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError("reply text must not contain CR or LF; pass several lines as a tuple")


@final
@attrs.frozen
class Reply:
    """One SMTP reply: a code, an optional enhanced status code and text.

    A multi-line reply has its first line in ``text`` and the others in ``more``; each line is
    checked to carry no CR or LF, so a handler cannot inject extra replies.
    """

    #: The three-digit reply code.
    code: int = attrs.field(validator=_check_code)
    #: The RFC 3463 enhanced status code such as ``"2.1.0"``, or None.
    enhanced: str | None = attrs.field(default=None, validator=_check_enhanced)
    #: The first line of text.
    text: str = attrs.field(default="", validator=_check_text)
    #: Further lines, for multi-line replies such as EHLO's.
    more: tuple[str, ...] = attrs.field(default=())

    #: The wire form, computed once (replies are mostly constants sent again and again).
    _wire: bytes = attrs.field(init=False, default=b"", repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        for line in self.more:
            _check_text(self, None, line)
        object.__setattr__(self, "_wire", self._format())

    @property
    def is_positive(self) -> bool:
        """True for 2xx and 3xx replies."""
        return self.code < 400

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text, *self.more)

    def to_bytes(self) -> bytes:
        """The reply on the wire, CRLF-terminated, one line per text line."""
        return self._wire

    def _format(self) -> bytes:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        lines = self.lines
        last = len(lines) - 1
        out = [
            f"{self.code}{' ' if i == last else '-'}{prefix}{line}\r\n"
            for i, line in enumerate(lines)
        ]
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8").rstrip("\r\n").replace("\r\n", " | ")


# The standard replies. Names read as what happened.
OK: Final = Reply(250, "2.0.0", "OK")
SENDER_OK: Final = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK: Final = Reply(250, "2.1.5", "Recipient OK")
MESSAGE_ACCEPTED: Final = Reply(250, "2.0.0", "Message accepted")
RESET_OK: Final = Reply(250, "2.0.0", "Reset OK")
NOOP_OK: Final = Reply(250, "2.0.0", "OK")
START_DATA: Final = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
VRFY_CANNOT: Final = Reply(
    252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
)
EXPN_CANNOT: Final = Reply(
    252, "2.5.0", "Cannot EXPN list, but will accept message and attempt delivery"
)

SERVICE_CLOSING_TIMEOUT: Final = Reply(421, "4.4.2", "Timeout, closing connection")
SERVICE_SHUTTING_DOWN: Final = Reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_CONNECTIONS: Final = Reply(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_ERRORS: Final = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_COMMANDS: Final = Reply(421, "4.7.0", "Too many commands in one session, closing")
TOO_MUCH_JUNK: Final = Reply(
    421, "4.7.0", "Too many NOOP, RSET, VRFY or HELP commands, closing connection"
)
TOO_MANY_MESSAGES: Final = Reply(
    421, "4.7.0", "Too many messages in one session, send the rest in a new one"
)
SESSION_TOO_LONG: Final = Reply(421, "4.4.2", "Connection time limit reached, closing connection")
TOO_MANY_FROM_CLIENT: Final = Reply(
    421, "4.7.0", "Too many connections from your address, try again later"
)
CONNECTION_RATE_EXCEEDED: Final = Reply(
    421, "4.7.0", "Too many new connections from your address, try again later"
)
EARLY_TALKER: Final = Reply(554, "5.5.1", "Protocol error: client spoke before the greeting")
HANDLER_TIMED_OUT: Final = Reply(451, "4.4.5", "Local processing took too long, try again later")
GREETING_TIMED_OUT: Final = Reply(421, "4.4.5", "Local processing took too long, closing")
NO_STORAGE: Final = Reply(452, "4.3.1", "Insufficient system storage, try again later")
HANDLER_FAILED: Final = Reply(451, "4.3.0", "Requested action aborted: local error in processing")
GREETING_FAILED: Final = Reply(421, "4.3.0", "Local error in processing, closing connection")
TOO_MANY_RECIPIENTS: Final = Reply(452, "4.5.3", "Too many recipients")

UNKNOWN_COMMAND: Final = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG: Final = Reply(500, "5.5.2", "Line too long")
BARE_LINE_ENDING_IN_COMMAND: Final = Reply(
    500, "5.5.2", "Syntax error: bare CR or LF in command (lines end with CRLF)"
)
BAD_UTF8: Final = Reply(500, "5.5.2", "Syntax error: command is not valid UTF-8")
NOT_IMPLEMENTED: Final = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE: Final = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO: Final = Reply(503, "5.5.1", "Send HELO or EHLO first")
NESTED_MAIL: Final = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL: Final = Reply(503, "5.5.1", "Need MAIL command first")
BAD_HELO_NAME: Final = Reply(
    501, "5.5.2", "Syntax error: HELO/EHLO needs a host name or an address literal"
)
NON_ASCII_HELO_NAME: Final = Reply(
    501, "5.5.2", "Syntax error: HELO/EHLO names are ASCII; send A-labels (xn--)"
)
BAD_SENDER_ADDRESS: Final = Reply(501, "5.1.7", "Syntax error in sender address")
BAD_RECIPIENT_ADDRESS: Final = Reply(501, "5.1.3", "Syntax error in recipient address")
NO_VALID_RECIPIENTS: Final = Reply(554, "5.5.1", "No valid recipients")
MESSAGE_TOO_BIG: Final = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TEXT_LINE_TOO_LONG: Final = Reply(500, "5.5.2", "Line too long in message text")
BARE_LINE_ENDING_IN_DATA: Final = Reply(
    550, "5.6.0", "Message refused: bare CR or LF in message text (lines must end with CRLF)"
)
NUL_IN_DATA: Final = Reply(550, "5.6.0", "Message refused: NUL octet in message text")
PARAM_NOT_RECOGNIZED: Final = Reply(
    555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized or not implemented"
)
NON_ASCII_ADDRESS: Final = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
QUIT_OK: Final = Reply(221, "2.0.0", "Bye")


# CHUNKING and BINARYMIME (RFC 3030)
DATA_AFTER_BDAT: Final = Reply(503, "5.5.1", "Bad sequence of commands: DATA after BDAT")
RCPT_AFTER_BDAT: Final = Reply(503, "5.5.1", "Bad sequence of commands: RCPT after BDAT")
BINARYMIME_NEEDS_BDAT: Final = Reply(
    503, "5.5.1", "Bad sequence of commands: a BODY=BINARYMIME message is sent with BDAT"
)


def chunk_received(size: int) -> Reply:
    """The answer to a BDAT chunk that is not the last: RFC 3030 §2 asks for a 250."""
    return Reply(250, "2.0.0", f"{size} octets received")


# LMTP (RFC 2033)
USE_LHLO: Final = Reply(500, "5.5.1", "This is an LMTP server: send LHLO")
NEED_LHLO: Final = Reply(503, "5.5.1", "Send LHLO first")
#: RFC 2033 §4.2: DATA (and BDAT, §4.3) with no successful RCPT is a 503 in LMTP.
LMTP_NO_VALID_RECIPIENTS: Final = Reply(503, "5.5.1", "No valid recipients")


def delivered(address: str) -> Reply:
    """LMTP's standard answer for one recipient of an accepted message (RFC 2033 §4.2)."""
    return Reply(250, "2.0.0", f"<{address}> Message accepted")


# STARTTLS (RFC 3207) and AUTH (RFC 4954)
READY_FOR_TLS: Final = Reply(220, "2.0.0", "Ready to start TLS")
TLS_ALREADY_ACTIVE: Final = Reply(503, "5.5.1", "TLS already active")
TLS_REQUIRED: Final = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED: Final = Reply(530, "5.7.0", "Authentication required")
AUTH_SUCCEEDED: Final = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED: Final = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPORARY_FAILURE: Final = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_CANCELLED: Final = Reply(501, "5.7.0", "Authentication cancelled")
BAD_BASE64: Final = Reply(501, "5.5.2", "Cannot decode response: not valid base64")
BAD_SASL_RESPONSE: Final = Reply(501, "5.5.2", "Malformed authentication response")
ENCRYPTION_REQUIRED_FOR_AUTH: Final = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
UNKNOWN_AUTH_MECHANISM: Final = Reply(504, "5.5.4", "Unrecognized authentication type")
ALREADY_AUTHENTICATED: Final = Reply(503, "5.5.1", "Already authenticated")
NEED_EHLO_FOR_AUTH: Final = Reply(503, "5.5.1", "Send EHLO first")
AUTH_IN_TRANSACTION: Final = Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
TOO_MANY_AUTH_FAILURES: Final = Reply(
    421, "4.7.0", "Too many failed authentication attempts, closing connection"
)

# XCLIENT and XFORWARD (Postfix's XCLIENT_README and XFORWARD_README)
NOT_AUTHORIZED: Final = Reply(550, "5.7.0", "Insufficient authorization")
TRANSACTION_IN_PROGRESS: Final = Reply(503, "5.5.1", "Mail transaction in progress")


def syntax_error(text: str) -> Reply:
    """501 with our text: the command was recognised but its arguments were not."""
    return Reply(501, "5.5.4", f"Syntax error: {text}")
