"""Delivery Status Notification parameters (RFC 3461, RFC 6533): parsing, validation, values.

Pure functions of one parameter value. The MAIL parameters are ``RET=FULL|HDRS`` and
``ENVID=<xtext>``; the RCPT parameters are ``NOTIFY=NEVER|<list of SUCCESS, FAILURE, DELAY>`` and
``ORCPT=<addr-type>;<address>``. A malformed value raises
:class:`~smtpd_trio.dsn.DSNSyntaxError` (a ``ValueError``) whose text says what is expected;
the state machine turns it into ``501 5.5.4``.

xtext (RFC 3461 §4)::

    xtext   = *( xchar / hexchar )
    xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive, except "+" and "="
    hexchar = "+" followed by two upper case hexadecimal digits

The ``utf-8`` address type of RFC 6533 §3 writes an address as ``utf-8-addr-xtext`` (ASCII,
with ``\\x{HEX}`` for each code point outside printable ASCII) or ``utf-8-addr-unitext`` (the
same, with UTF-8 characters as themselves)::

    QCHAR               = %x21-2a / %x2c-3c / %x3e-5b / %x5d-7e   ; not "+", "=", "\\"
    EmbeddedUnicodeChar = "\\x{" HEXPOINT "}"

where HEXPOINT is 2 to 6 hexadecimal digits without superfluous leading zeros naming "\\", a
code point outside ASCII (no surrogate), or one of the characters xtext cannot carry as itself.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from typing import Final, final

import attrs

from .commands import parse_mailbox

__all__ = [
    "MAX_ENVID",
    "MAX_ORCPT",
    "DSNRequest",
    "DSNReturn",
    "DSNSyntaxError",
    "Notify",
    "OriginalRecipient",
    "Recipient",
    "decode_utf8_address",
    "encode_utf8_address",
    "parse_envid",
    "parse_notify",
    "parse_orcpt",
    "parse_ret",
    "xtext_decode",
    "xtext_encode",
]

#: RFC 3461 §4.4: an ENVID value (the xtext as sent) is at most 100 characters.
MAX_ENVID: Final = 100
#: RFC 3461 §4.2: an ORCPT value (``addr-type;xtext`` as sent) is at most 500 characters.
MAX_ORCPT: Final = 500

Params = Mapping[str, str | None]


class DSNSyntaxError(ValueError):
    """A DSN parameter value is malformed; the text says what was expected."""


class DSNReturn(enum.Enum):
    """``RET``: what a failure report should carry of the message (RFC 3461 §4.3)."""

    #: ``RET=FULL``: the whole message.
    FULL = "FULL"
    #: ``RET=HDRS``: only its header.
    HEADERS = "HDRS"


class Notify(enum.Enum):
    """One condition under which a recipient asked for a report (RFC 3461 §4.1)."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


@final
@attrs.frozen
class OriginalRecipient:
    """``ORCPT``: the recipient as the message's originator gave it (RFC 3461 §4.2)."""

    #: The address type, lower-cased: ``"rfc822"``, or ``"utf-8"`` (RFC 6533).
    type: str
    #: The address, decoded.
    address: str

    def to_param(self) -> str:
        """The ``ORCPT`` value to send on: ``rfc822;`` with the address as xtext, or ``utf-8;``
        as ``utf-8-addr-xtext`` (pure ASCII, safe whatever the next server offers)."""
        if self.type == "utf-8":
            return f"utf-8;{encode_utf8_address(self.address)}"
        return f"{self.type};{xtext_encode(self.address)}"


@final
@attrs.frozen
class DSNRequest:
    """What MAIL asked of delivery status notifications for the whole transaction."""

    #: ``RET``: how much of the message a failure report returns; None if not given (the
    #: reporting server chooses).
    ret: DSNReturn | None = None
    #: ``ENVID``, decoded: the sender's identifier for the transaction, to be quoted in every
    #: report; None if not given.
    envid: str | None = None

    @classmethod
    def from_params(cls, params: Params) -> DSNRequest:
        """The request in MAIL ``params`` (raises :class:`~smtpd_trio.dsn.DSNSyntaxError` if
        malformed)."""
        return cls(
            parse_ret(params["RET"]) if "RET" in params else None,
            parse_envid(params["ENVID"]) if "ENVID" in params else None,
        )


@final
@attrs.frozen
class Recipient:
    """One accepted recipient, with the DSN requests its RCPT carried."""

    #: The forward-path without angle brackets.
    address: str
    #: RCPT's ESMTP parameters, keywords upper-cased (value None for a bare keyword).
    params: Params = attrs.field(factory=dict)
    #: ``NOTIFY``: the conditions to report (an empty set for ``NOTIFY=NEVER``); None if not
    #: given, which RFC 3461 §4.1 says is to be taken as ``FAILURE`` (and ``DELAY``, at the
    #: reporting server's choice).
    notify: frozenset[Notify] | None = None
    #: ``ORCPT``: the original recipient; None if not given.
    orcpt: OriginalRecipient | None = None

    @classmethod
    def from_params(cls, address: str, params: Params) -> Recipient:
        """The recipient with the DSN parameters in ``params`` parsed (raises
        :class:`~smtpd_trio.dsn.DSNSyntaxError` if one is malformed)."""
        return cls(
            address,
            params,
            parse_notify(params["NOTIFY"]) if "NOTIFY" in params else None,
            parse_orcpt(params["ORCPT"], utf8=True) if "ORCPT" in params else None,
        )

    @property
    def never_notify(self) -> bool:
        """True for ``NOTIFY=NEVER``: no report of any kind, not even of a failure."""
        return self.notify is not None and not self.notify


# ---- xtext (RFC 3461 §4) ----------------------------------------------------------------------

_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
_HEXCHAR: Final = re.compile(r"\+([0-9A-F]{2})")
#: What xtext_encode writes as itself: xchar.
_XCHAR: Final = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}


def xtext_decode(text: str) -> bytes:
    """The octets ``text`` encodes; :class:`~smtpd_trio.dsn.DSNSyntaxError` unless it is valid
    xtext (every ``+`` followed by two upper-case hexadecimal digits, nothing outside
    ``!``-``~``, no ``=``)."""
    if not _XTEXT.match(text):
        raise DSNSyntaxError("not valid xtext")
    if "+" not in text:
        return text.encode("ascii")
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")


def xtext_encode(data: bytes | str) -> str:
    """``data`` (text is taken as UTF-8) as xtext: xchars as themselves, every other octet as
    ``+XX``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return "".join(chr(b) if b in _XCHAR else f"+{b:02X}" for b in raw)


# ---- utf-8-addr-xtext and utf-8-addr-unitext (RFC 6533 §3) ------------------------------------

_NON_ASCII: Final = "\u0080-\U0010ffff"
_UTF8_ADDR: Final = re.compile(rf"(?:[!-*,-<>-\[\]-~{_NON_ASCII}]|\\x\{{[0-9A-Fa-f]{{2,6}}\}})+\Z")
_EMBEDDED: Final = re.compile(r"\\x\{([0-9A-Fa-f]{2,6})\}")
#: HEXPOINT's two-digit forms below 0x80: the characters xtext cannot carry as themselves.
_TWO_DIGIT_ASCII: Final = frozenset(
    [*range(0x01, 0x0A), *range(0x10, 0x1A), 0x20, 0x2B, 0x3D, 0x5C, 0x7F]
)
_SURROGATES: Final = range(0xD800, 0xE000)


def _hexpoint(digits: str) -> int:
    """The code point of a HEXPOINT, or DSNSyntaxError if the digits are not one."""
    point = int(digits, 16)
    shortest = max(2, len(f"{point:X}"))
    if (
        len(digits) != shortest
        or point > 0x10FFFF
        or point in _SURROGATES
        or (point < 0x80 and point not in _TWO_DIGIT_ASCII)
    ):
        raise DSNSyntaxError(f"\\x{{{digits}}} does not name a character to escape")
    return point


def decode_utf8_address(text: str, *, unitext: bool) -> str:
    """The address a ``utf-8-addr-xtext`` (``unitext`` False: ASCII only) or
    ``utf-8-addr-unitext`` (``unitext`` True: UTF-8 characters allowed) encodes."""
    if not _UTF8_ADDR.match(text) or (not unitext and not text.isascii()):
        raise DSNSyntaxError("not a valid utf-8 address encoding (RFC 6533)")
    if "\\" not in text:
        return text
    return _EMBEDDED.sub(lambda m: chr(_hexpoint(m.group(1))), text)


def encode_utf8_address(address: str, *, unitext: bool = False) -> str:
    """``address`` as ``utf-8-addr-xtext`` (``\\x{HEX}`` for every character outside QCHAR), or
    with ``unitext`` as ``utf-8-addr-unitext`` (characters outside ASCII as themselves).

    Raises ValueError for a character RFC 6533 cannot carry: NUL, the C0 controls from U+000A
    to U+000F and from U+001A to U+001F, and surrogates."""
    out: list[str] = []
    for ch in address:
        point = ord(ch)
        if 0x21 <= point <= 0x7E and ch not in "+=\\":
            out.append(ch)
        elif point in _SURROGATES or (point < 0x80 and point not in _TWO_DIGIT_ASCII):
            raise ValueError(f"RFC 6533 cannot encode {ch!r}")
        elif unitext and point >= 0x80:
            out.append(ch)
        else:
            out.append(f"\\x{{{point:02X}}}")
    return "".join(out)


# ---- the parameters --------------------------------------------------------------------------

_NOTIFY_NAMES: Final = {member.value: member for member in Notify}
_RET_NAMES: Final = {member.value: member for member in DSNReturn}
#: Never in an address from ORCPT: C0 and C1 controls, DEL, surrogates, U+2028 and U+2029.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
_ATOM: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+\Z")


def parse_ret(value: str | None) -> DSNReturn:
    """``RET=FULL`` or ``RET=HDRS`` (any case)."""
    ret = _RET_NAMES.get(value.upper()) if value is not None and value.isascii() else None
    if ret is None:
        raise DSNSyntaxError("RET must be FULL or HDRS")
    return ret


def parse_envid(value: str | None) -> str:
    """``ENVID=<xtext>``: at most 100 characters as sent, decoding to printable ASCII."""
    if not value or len(value) > MAX_ENVID:
        raise DSNSyntaxError(f"ENVID must be xtext of 1 to {MAX_ENVID} characters")
    try:
        decoded = xtext_decode(value)
    except DSNSyntaxError:
        raise DSNSyntaxError("ENVID is not valid xtext") from None
    if not all(0x20 <= b <= 0x7E for b in decoded):
        raise DSNSyntaxError("ENVID must decode to printable ASCII")
    return decoded.decode("ascii")


def parse_notify(value: str | None) -> frozenset[Notify]:
    """``NOTIFY=NEVER`` (the empty set) or a comma-separated list of ``SUCCESS``, ``FAILURE``
    and ``DELAY`` (any case, each at most once)."""
    if value is None or not value.isascii():
        raise DSNSyntaxError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    names = value.upper().split(",")
    if names == ["NEVER"]:
        return frozenset()
    if "NEVER" in names:
        raise DSNSyntaxError("NOTIFY=NEVER cannot be combined with another condition")
    found = frozenset(_NOTIFY_NAMES.get(name) for name in names)
    if None in found:
        raise DSNSyntaxError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    if len(found) != len(names):
        raise DSNSyntaxError("NOTIFY names a condition twice")
    return found  # type: ignore[return-value]  # None is not in it


def parse_orcpt(value: str | None, *, utf8: bool) -> OriginalRecipient:
    """``ORCPT=rfc822;<xtext>`` (the address decoding to printable ASCII), or with ``utf8`` (an
    SMTPUTF8 transaction) also ``ORCPT=utf-8;<address>`` as RFC 6533 writes it (decoding to a
    valid RFC 6531 mailbox). At most 500 characters as sent."""
    if value is None or len(value) > MAX_ORCPT:
        raise DSNSyntaxError(f"ORCPT must be addr-type;address of at most {MAX_ORCPT} characters")
    kind, semicolon, encoded = value.partition(";")
    if not semicolon or not _ATOM.match(kind):
        raise DSNSyntaxError("ORCPT must be addr-type;address")
    kind = kind.lower()
    if kind == "rfc822":
        try:
            decoded = xtext_decode(encoded)
        except DSNSyntaxError:
            raise DSNSyntaxError("ORCPT address is not valid xtext") from None
        if not decoded or not all(0x20 <= b <= 0x7E for b in decoded):
            raise DSNSyntaxError("ORCPT rfc822 address must decode to printable ASCII")
        return OriginalRecipient(kind, decoded.decode("ascii"))
    if kind == "utf-8" and utf8:
        address = decode_utf8_address(encoded, unitext=True)
        if parse_mailbox(address, utf8=True) is None or any(
            unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in address
        ):
            raise DSNSyntaxError("ORCPT utf-8 address is not a valid mailbox")
        return OriginalRecipient(kind, address)
    raise DSNSyntaxError(
        "ORCPT address type must be rfc822"
        + (" or utf-8" if utf8 else " (utf-8 needs an SMTPUTF8 transaction)")
    )
