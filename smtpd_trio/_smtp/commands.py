"""Command-line parsing: the verb, and the arguments of MAIL and RCPT (RFC 5321 §4.1, RFC 6531).

Everything here is a pure function of one command line (its CRLF already removed) and raises
:class:`CommandSyntaxError` carrying the reply to send when the line is malformed.

Address syntax follows RFC 5321 §4.1.2 strictly (a path must be in angle brackets; source routes
are accepted and dropped, as §4.1.1.3 asks), with one leniency that every widely used server
shares: spaces between ``FROM:``/``TO:`` and the path are allowed. With SMTPUTF8 (RFC 6531) the
local part and domain may also hold non-ASCII UTF-8.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from . import replies
from .replies import Reply

MAX_LOCAL_PART: Final = 64
MAX_DOMAIN: Final = 255
MAX_LABEL: Final = 63
MAX_PATH: Final = 256


class CommandSyntaxError(Exception):
    """A command line is malformed; ``reply`` says how to answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


_ATEXT: Final = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_NON_ASCII: Final = r"\u0080-\U0010ffff"
_LDH_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_U_LABEL: Final = rf"[A-Za-z0-9{_NON_ASCII}](?:[A-Za-z0-9{_NON_ASCII}-]*[A-Za-z0-9{_NON_ASCII}])?"


def _mailbox_re(utf8: bool) -> re.Pattern[str]:
    atext = _ATEXT + (_NON_ASCII if utf8 else "")
    label = _U_LABEL if utf8 else _LDH_LABEL
    qtext = r"\x20\x21\x23-\x5b\x5d-\x7e" + (_NON_ASCII if utf8 else "")
    dot_string = rf"[{atext}]+(?:\.[{atext}]+)*"
    quoted = rf'"(?:[{qtext}]|\\[\x20-\x7e])*"'
    domain = rf"{label}(?:\.{label})*"
    literal = r"\[[^\[\]\\\s]+\]"
    return re.compile(rf"(?P<local>{dot_string}|{quoted})@(?P<domain>{domain}|{literal})\Z")


_MAILBOX_ASCII: Final = _mailbox_re(False)
_MAILBOX_UTF8: Final = _mailbox_re(True)
_SOURCE_ROUTE: Final = re.compile(r"@[^,:]+(?:,@[^,:]+)*:")
_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VALUE_ASCII: Final = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")
_VALUE_UTF8: Final = re.compile(rf"[\x21-\x3c\x3e-\x7e{_NON_ASCII}]+\Z")
_GENERAL_LITERAL: Final = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")
# A HELO/EHLO host name label (see parse_helo_name): LDH plus "_", no hyphen at either end.
_HELO_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_NUMERIC: Final = re.compile(r"[0-9.]+\Z")


def split_verb(line: str) -> tuple[str, str | None]:
    """Split a command line into its upper-cased verb and its argument (None if absent).

    The verb and its argument are separated by one space; more are tolerated, as are trailing
    spaces, which several clients send.
    """
    verb, sep, rest = line.partition(" ")
    arg = rest.strip(" ") if sep else None
    # Only ASCII letters fold: str.upper() would turn "ma\u0131l" (dotless i) into "MAIL".
    return (verb.upper() if verb.isascii() else verb), (arg or None)


def is_ascii(text: str) -> bool:
    return text.isascii()


def check_address_literal(literal: str) -> bool:
    """True if ``[...]`` holds a valid IPv4, IPv6 or general address literal (RFC 5321 §4.1.3)."""
    inner = literal[1:-1]
    if inner[:5].upper() != "IPV6:" and _GENERAL_LITERAL.match(inner) and not inner[0].isdigit():
        return True
    return check_ip_literal(literal)


def check_ip_literal(literal: str) -> bool:
    """True if ``[...]`` holds an IPv4 or an ``IPv6:`` address literal (RFC 5321 §4.1.3)."""
    inner = literal[1:-1]
    if not inner.isascii():
        return False
    if inner[:5].upper() == "IPV6:":
        if "%" in inner:  # ipaddress accepts a scope id ("fe80::1%eth0"); RFC 5321 does not
            return False
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def parse_mailbox(text: str, *, utf8: bool) -> str | None:
    """Return the mailbox if ``text`` is a valid RFC 5321 Mailbox, else None."""
    m = (_MAILBOX_UTF8 if utf8 else _MAILBOX_ASCII).match(text)
    if m is None:
        return None
    local, domain = m.group("local"), m.group("domain")
    if len(local.encode()) > MAX_LOCAL_PART or len(domain.encode()) > MAX_DOMAIN:
        return None
    if domain.startswith("["):
        if not check_address_literal(domain):
            return None
    elif utf8 and any(len(label) > MAX_LABEL and label.isascii() for label in domain.split(".")):
        # The UTF-8 label pattern has no length bound; an ASCII label is still an LDH label of
        # at most 63 octets (RFC 1035 §2.3.4), as in the ASCII grammar.
        return None
    return text


#: The common shape, ``<dot-atom@LDH.domain>`` with optional parameters, matched in one go: a
#: strict subset of what the full grammar accepts (tests/test_smtp_commands.py checks that both
#: give the same answer on it), taken before the full parse.
_COMMON_PATH: Final = re.compile(
    rf"<([{_ATEXT}]+(?:\.[{_ATEXT}]+)*@{_LDH_LABEL}(?:\.{_LDH_LABEL})*)>(?: (.*))?\Z"
)


def parse_path_and_params(
    arg: str | None, *, prefix: str, null_ok: bool, postmaster_ok: bool, bad_address: Reply
) -> tuple[str, dict[str, str | None]]:
    """Parse ``FROM:<path> params`` or ``TO:<path> params``.

    Returns the address without its angle brackets (``""`` for the null path ``<>``) and the
    ESMTP parameters with upper-cased keywords (value None for a bare keyword).
    """
    if arg is None or arg[: len(prefix)].upper() != prefix:
        raise CommandSyntaxError(replies.syntax_error(f"expected {prefix}<address>"))
    rest = arg[len(prefix) :].lstrip(" ")
    common = _COMMON_PATH.match(rest)
    if common is not None:
        path = common.group(1)
        # (Within MAX_PATH the domain is always within MAX_DOMAIN.)
        if path.find("@") <= MAX_LOCAL_PART and len(path) + 2 <= MAX_PATH:
            tail = common.group(2)
            return path, parse_params(tail, utf8=not tail.isascii()) if tail else {}
    return _parse_path_and_params(
        rest, null_ok=null_ok, postmaster_ok=postmaster_ok, bad_address=bad_address
    )


def _parse_path_and_params(
    rest: str, *, null_ok: bool, postmaster_ok: bool, bad_address: Reply
) -> tuple[str, dict[str, str | None]]:
    """The full grammar, for ``rest`` after ``FROM:``/``TO:`` and any spaces."""
    if not rest.startswith("<"):
        raise CommandSyntaxError(bad_address)
    end = rest.find(">")
    if end < 0:
        raise CommandSyntaxError(bad_address)
    path = rest[1:end]
    tail = rest[end + 1 :]
    if tail and not tail.startswith(" "):
        raise CommandSyntaxError(bad_address)
    if len(path.encode()) + 2 > MAX_PATH:
        raise CommandSyntaxError(bad_address)
    params = parse_params(tail, utf8=not path.isascii() or not tail.isascii())
    if path == "":
        if not null_ok:
            raise CommandSyntaxError(bad_address)
        return "", params
    route = _SOURCE_ROUTE.match(path)
    if route:
        path = path[route.end() :]
    if postmaster_ok and path.upper() == "POSTMASTER":
        return path, params
    if parse_mailbox(path, utf8=not path.isascii()) is None:
        raise CommandSyntaxError(bad_address)
    return path, params


def parse_params(text: str, *, utf8: bool) -> dict[str, str | None]:
    """Parse space-separated ``KEYWORD[=value]`` ESMTP parameters (RFC 5321 §4.1.2)."""
    params: dict[str, str | None] = {}
    value_re = _VALUE_UTF8 if utf8 else _VALUE_ASCII
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _KEYWORD.match(keyword) or (eq and not value_re.match(value)):
            raise CommandSyntaxError(replies.syntax_error(f"malformed parameter {item[:40]!r}"))
        key = keyword.upper()
        if key in params:
            raise CommandSyntaxError(replies.syntax_error(f"duplicate parameter {key[:40]}"))
        params[key] = value if eq else None
    return params


#: The longest chunk size BDAT may announce, in digits: 10**20 octets is more than anyone can
#: send, and a bound keeps int() cheap whatever ``max_command_line`` allows.
MAX_CHUNK_DIGITS: Final = 20

_BDAT_SYNTAX: Final = "BDAT needs a chunk size in octets, optionally followed by LAST"


class ChunkSyntaxError(CommandSyntaxError):
    """A malformed BDAT command; ``size`` is its chunk size if that much could be read (the
    client sends that many octets all the same, and they are not commands)."""

    def __init__(self, reply: Reply, size: int | None = None) -> None:
        super().__init__(reply)
        self.size = size


def parse_bdat(arg: str | None) -> tuple[int, bool]:
    """The arguments of ``BDAT chunk-size [LAST]`` (RFC 3030 §2): the chunk size in octets and
    whether this is the last chunk.

    ``chunk-size`` is ``1*DIGIT`` (ASCII digits; leading zeros allowed, at most
    :data:`MAX_CHUNK_DIGITS` of them) and ``LAST`` is matched without regard to case, as SMTP
    keywords are. The two are separated by spaces; nothing else may follow. Raises
    :class:`ChunkSyntaxError`, with the size when it is well-formed and something after it is
    not (``BDAT 5 FIRST``).
    """
    words = [word for word in arg.split(" ") if word] if arg is not None else []
    if not words:
        raise ChunkSyntaxError(replies.syntax_error(_BDAT_SYNTAX))
    size = words[0]
    if not (size.isascii() and size.isdigit()):
        raise ChunkSyntaxError(replies.syntax_error(_BDAT_SYNTAX))
    if len(size) > MAX_CHUNK_DIGITS:
        raise ChunkSyntaxError(replies.syntax_error("BDAT chunk size too large"))
    last = len(words) == 2
    # Only ASCII letters fold: str.upper() would turn "la\u017ft" (long s) into "LAST".
    if len(words) > 2 or (last and not (words[1].isascii() and words[1].upper() == "LAST")):
        raise ChunkSyntaxError(replies.syntax_error(_BDAT_SYNTAX), int(size))
    return int(size), last


def parse_helo_name(arg: str | None) -> str:
    """The HELO/EHLO argument: a host name or an IPv4/IPv6 address literal, returned as sent.

    RFC 5321 §4.1.1.1 asks for a Domain or an address literal; this accepts what Postfix's
    ``reject_invalid_helo_hostname`` accepts, so the clients that pass there pass here:

    - a host name of ASCII letters, digits, hyphens and underscores (Windows and older clients
      send ``my_pc``): labels of 1-63 characters not starting or ending with a hyphen, at most
      255 octets, one trailing dot allowed (``mx.example.``), dots optional (``localhost``);
      an all-numeric name only if it is a dotted-quad IPv4 address (``192.0.2.1``);
    - ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (no zone id). General address literals
      (``[tag:...]``) name no host and are refused, as Postfix refuses them.

    Non-ASCII names are refused: the client speaks before it can know that SMTPUTF8 is offered,
    so internationalized names MUST be sent as A-labels (RFC 6531 §3.7.1). Anything else,
    including the characters that would end or nest a ``Received:`` header field (``;``,
    ``(``, ``)``, ``[``, ``\\``, ``<``, control characters), is answered ``501 5.5.2``.
    """
    if arg is None:
        raise CommandSyntaxError(
            replies.syntax_error("HELO/EHLO requires a domain name or address")
        )
    if not arg.isascii():
        raise CommandSyntaxError(replies.NON_ASCII_HELO_NAME)
    if arg.startswith("["):
        if arg.endswith("]") and check_ip_literal(arg):
            return arg
        raise CommandSyntaxError(replies.BAD_HELO_NAME)
    name = arg[:-1] if arg.endswith(".") and not arg.endswith("..") else arg
    if (
        not name
        or len(name) > MAX_DOMAIN
        or not all(_HELO_LABEL.match(label) for label in name.split("."))
    ):
        raise CommandSyntaxError(replies.BAD_HELO_NAME)
    if _NUMERIC.match(name):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise CommandSyntaxError(replies.BAD_HELO_NAME) from None
    return arg
