"""XCLIENT and XFORWARD, Postfix's commands for forwarding client facts (XCLIENT_README and
XFORWARD_README): the attribute parser, xtext (RFC 3461 §4), and the records of what was sent.

Both commands take ``NAME=value`` pairs, each value xtext-encoded::

    XCLIENT ADDR=192.0.2.7 PORT=51234 NAME=client.example.org LOGIN=alice
    XFORWARD NAME=spike.example.org ADDR=IPV6:2001:db8::7 PROTO=ESMTP IDENT=4F2A1B

Everything here is a pure function of one command's argument and raises
:class:`~smtpd_trio._smtp.commands.CommandSyntaxError` (``501 5.5.4``) for anything malformed:

- no pair at all, an item without ``=`` or with an empty value, an attribute name the command
  does not have, the same name twice;
- a raw value longer than 255 characters (XCLIENT_README, note 1), or one that is not xtext:
  ASCII ``!`` to ``~`` except ``+`` and ``=``, and ``+XX`` for any octet (hexadecimal digits of
  either case, as Postfix reads them);
- a decoded value that is not UTF-8, or holds a control character (any value), non-ASCII text
  or white space (any value but ``LOGIN``, which is a SASL identity and may be UTF-8);
- per attribute: ``NAME`` a host name (letters, digits, ``-`` and ``_``, labels of at most 63,
  at most 255 in all, not all-numeric), ``ADDR``/``DESTADDR`` an IPv4 address or an IPv6
  address with or without ``IPV6:``, ``PORT``/``DESTPORT`` a decimal number up to 65535,
  XCLIENT's ``PROTO`` ``SMTP`` or ``ESMTP``, XFORWARD's ``PROTO`` at most 64 characters,
  XFORWARD's ``SOURCE`` ``LOCAL`` or ``REMOTE``.

``[UNAVAILABLE]`` (any case) is accepted for every attribute but XCLIENT's ``PROTO``, and
``[TEMPUNAVAIL]`` for XCLIENT's ``NAME``: they become :class:`Unavailable` members. Addresses
are kept in canonical text form (IPv4-mapped IPv6 as IPv4), ports as ``int``, the keywords
(``PROTO``, ``SOURCE``) upper-cased; everything else as the client sent it, decoded.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import attrs

from .commands import _HELO_LABEL, _NUMERIC, MAX_DOMAIN, CommandSyntaxError
from .replies import syntax_error

__all__ = [
    "MAX_VALUE",
    "XCLIENT_ATTRIBUTES",
    "XFORWARD_ATTRIBUTES",
    "Unavailable",
    "XClientInfo",
    "XForwardInfo",
    "decode_xtext",
    "encode_xtext",
    "parse_xclient",
    "parse_xforward",
]

#: The longest raw (encoded) attribute value, as Postfix enforces it.
MAX_VALUE: Final = 255
#: The longest XFORWARD ``PROTO`` (XFORWARD_README).
MAX_PROTO: Final = 64


class Unavailable(enum.Enum):
    """An attribute the forwarding client could not know."""

    #: ``[UNAVAILABLE]``: the information does not exist (a permanent lookup failure, say).
    UNAVAILABLE = "[UNAVAILABLE]"
    #: ``[TEMPUNAVAIL]``: XCLIENT ``NAME`` only: the host name lookup failed temporarily.
    TEMPUNAVAIL = "[TEMPUNAVAIL]"

    def __str__(self) -> str:
        return self.value


UNAVAILABLE: Final = Unavailable.UNAVAILABLE
TEMPUNAVAIL: Final = Unavailable.TEMPUNAVAIL


@final
@attrs.frozen(kw_only=True)
class XClientInfo:
    """What XCLIENT commands said about the client, merged over the session (each command
    replaces the attributes it names). ``None``: never sent."""

    #: ``NAME``: the client's host name (as the forwarder looked it up).
    name: str | Unavailable | None = None
    #: ``ADDR``: the client's IP address, canonical text (``"192.0.2.7"``, ``"2001:db8::7"``).
    addr: str | Unavailable | None = None
    #: ``PORT``: the client's TCP port (None also when the last ``ADDR`` came without one).
    port: int | Unavailable | None = None
    #: ``PROTO``: ``"SMTP"`` or ``"ESMTP"`` (HELO or EHLO).
    proto: str | None = None
    #: ``HELO``: the HELO/EHLO name the client gave the forwarder.
    helo: str | Unavailable | None = None
    #: ``LOGIN``: the SASL identity the forwarder authenticated.
    login: str | Unavailable | None = None
    #: ``DESTADDR``: the server address the client connected to.
    destaddr: str | Unavailable | None = None
    #: ``DESTPORT``: the server port the client connected to (None also when the last
    #: ``DESTADDR`` came without one).
    destport: int | Unavailable | None = None


@final
@attrs.frozen(kw_only=True)
class XForwardInfo:
    """What XFORWARD commands said about where a message came from, for one mail transaction.
    The first XFORWARD sets every attribute to ``[UNAVAILABLE]``, then each command replaces the
    attributes it names (XFORWARD_README)."""

    #: ``NAME``: the up-stream host name.
    name: str | Unavailable = UNAVAILABLE
    #: ``ADDR``: the up-stream IP address, canonical text.
    addr: str | Unavailable = UNAVAILABLE
    #: ``PORT``: the up-stream client's TCP port.
    port: int | Unavailable = UNAVAILABLE
    #: ``PROTO``: the protocol the message was received with up-stream (not only SMTP).
    proto: str | Unavailable = UNAVAILABLE
    #: ``HELO``: the name the up-stream host announced itself with.
    helo: str | Unavailable = UNAVAILABLE
    #: ``IDENT``: the message's id on the up-stream host.
    ident: str | Unavailable = UNAVAILABLE
    #: ``SOURCE``: ``"LOCAL"`` (the message originated up-stream) or ``"REMOTE"``.
    source: str | Unavailable = UNAVAILABLE


# ---- xtext (RFC 3461 §4) -------------------------------------------------------------------

#: xchar (``!`` to ``~`` except ``+`` and ``=``) and hexchar (``+XX``; either case on input).
_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*\Z")


def decode_xtext(text: str) -> bytes | None:
    """The octets ``text`` encodes, or None if it is not xtext."""
    if not _XTEXT.match(text):
        return None
    if "+" not in text:
        return text.encode("ascii")
    first, *rest = text.split("+")
    out = bytearray(first.encode("ascii"))
    for part in rest:
        out.append(int(part[:2], 16))
        out += part[2:].encode("ascii")
    return bytes(out)


def encode_xtext(data: bytes | str) -> str:
    """``data`` as xtext: ``+``, ``=`` and every octet outside ``!``-``~`` as ``+XX`` (upper
    case), text as its UTF-8 form."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return "".join(
        chr(octet) if 0x21 <= octet <= 0x7E and octet not in (0x2B, 0x3D) else f"+{octet:02X}"
        for octet in raw
    )


# ---- the attributes ------------------------------------------------------------------------

_UNSAFE: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _bad(command: str, key: str) -> CommandSyntaxError:
    return CommandSyntaxError(syntax_error(f"bad {command} {key} value"))


def _special(value: str, *, tempunavail: bool = False) -> Unavailable | None:
    upper = value.upper()
    if upper == UNAVAILABLE.value:
        return UNAVAILABLE
    if tempunavail and upper == TEMPUNAVAIL.value:
        return TEMPUNAVAIL
    return None


def _printable(value: str) -> bool:
    """Printable ASCII without white space: what every value but LOGIN must be."""
    return value.isascii() and value.isprintable() and " " not in value


def _hostname(value: str) -> str | None:
    name = value[:-1] if value.endswith(".") and not value.endswith("..") else value
    if (
        not name
        or len(name) > MAX_DOMAIN
        or _NUMERIC.match(name)
        or not all(_HELO_LABEL.match(label) for label in name.split("."))
    ):
        return None
    return value


def _address(value: str) -> str | None:
    prefixed = value[:5].upper() == "IPV6:"
    text = value[5:] if prefixed else value
    if "%" in text:  # no zone ids
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        return str(mapped) if mapped is not None else ip.compressed
    return None if prefixed else str(ip)


def _port(value: str) -> int | None:
    if not value.isdigit() or len(value) > 5:
        return None
    port = int(value)
    return port if port <= 65535 else None


def _name(value: str, *, tempunavail: bool) -> str | Unavailable | None:
    return _special(value, tempunavail=tempunavail) or _hostname(value)


def _text(value: str, *, limit: int = MAX_VALUE) -> str | None:
    return value if len(value) <= limit else None


def _login(value: str) -> str | Unavailable | None:
    special = _special(value)
    if special is not None:
        return special
    if any(unicodedata.category(ch) in _UNSAFE for ch in value):
        return None
    return value


def _keyword(*choices: str) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        upper = value.upper()
        return upper if upper in choices else None

    return parse


def _or_unavailable(parse: Callable[[str], object]) -> Callable[[str], object]:
    def either(value: str) -> object:
        return _special(value) or parse(value)

    return either


# Attribute -> (field of the record, how its decoded value is read: None if it is malformed,
# and whether the value must be printable ASCII without white space).
_Table = Mapping[str, tuple[str, Callable[[str], object], bool]]

_XCLIENT: Final[_Table] = {
    "NAME": ("name", lambda v: _name(v, tempunavail=True), True),
    "ADDR": ("addr", _or_unavailable(_address), True),
    "PORT": ("port", _or_unavailable(_port), True),
    "PROTO": ("proto", _keyword("SMTP", "ESMTP"), True),
    "HELO": ("helo", _or_unavailable(_text), True),
    "LOGIN": ("login", _login, False),  # a SASL identity: UTF-8, spaces allowed
    "DESTADDR": ("destaddr", _or_unavailable(_address), True),
    "DESTPORT": ("destport", _or_unavailable(_port), True),
}
_XFORWARD: Final[_Table] = {
    "NAME": ("name", lambda v: _name(v, tempunavail=False), True),
    "ADDR": ("addr", _or_unavailable(_address), True),
    "PORT": ("port", _or_unavailable(_port), True),
    "PROTO": ("proto", _or_unavailable(lambda v: _text(v, limit=MAX_PROTO)), True),
    "HELO": ("helo", _or_unavailable(_text), True),
    "IDENT": ("ident", _or_unavailable(_text), True),
    "SOURCE": ("source", _or_unavailable(_keyword("LOCAL", "REMOTE")), True),
}

#: The attributes XCLIENT takes (XCLIENT_README), in the order the EHLO keyword lists them.
XCLIENT_ATTRIBUTES: Final = tuple(_XCLIENT)
#: The attributes XFORWARD takes (XFORWARD_README), in the order the EHLO keyword lists them.
XFORWARD_ATTRIBUTES: Final = tuple(_XFORWARD)


def _parse(command: str, arg: str | None, table: _Table) -> dict[str, Any]:
    """The ``NAME=value`` pairs of ``arg``, each read by its entry of ``table``: a mapping of
    record field to value, in the order given. Raises CommandSyntaxError (501)."""
    if arg is None:
        raise CommandSyntaxError(syntax_error(f"{command} needs attribute=value pairs"))
    fields: dict[str, Any] = {}
    for item in arg.split(" "):
        if not item:
            continue  # several spaces between pairs are tolerated, as between a verb and them
        name, eq, raw = item.partition("=")
        if not eq or not name or not raw:
            raise CommandSyntaxError(syntax_error(f"{command} needs attribute=value pairs"))
        key = name.upper() if name.isascii() else name
        entry = table.get(key)
        if entry is None:
            raise CommandSyntaxError(syntax_error(f"unknown {command} attribute {name[:40]!r}"))
        field, read, ascii_only = entry
        if field in fields:
            raise CommandSyntaxError(syntax_error(f"{command} {key} given twice"))
        if len(raw) > MAX_VALUE:
            raise CommandSyntaxError(syntax_error(f"{command} {key} value too long"))
        decoded = decode_xtext(raw)
        if decoded is None:
            raise CommandSyntaxError(syntax_error(f"{command} {key} value is not xtext"))
        try:
            value = decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(command, key) from None
        if ascii_only and not _printable(value):
            raise _bad(command, key)
        parsed = read(value)
        if parsed is None:
            raise _bad(command, key)
        fields[field] = parsed
    if not fields:
        raise CommandSyntaxError(syntax_error(f"{command} needs attribute=value pairs"))
    return fields


def parse_xclient(arg: str | None) -> dict[str, Any]:
    """The attributes of ``XCLIENT arg``, as fields of :class:`XClientInfo` (only those
    given). Raises CommandSyntaxError (501)."""
    return _parse("XCLIENT", arg, _XCLIENT)


def parse_xforward(arg: str | None) -> dict[str, Any]:
    """The attributes of ``XFORWARD arg``, as fields of :class:`XForwardInfo` (only those
    given). Raises CommandSyntaxError (501)."""
    return _parse("XFORWARD", arg, _XFORWARD)
