"""A checker for ``Received:`` header fields, written from the RFCs (not from our code).

:func:`check_received` takes the octets of one header field, CRLF included, and raises
:class:`GrammarError` unless they are all of:

- an RFC 5322 header field (§2.2, §2.2.3, §2.1.1): every line ends in CRLF, there is no other CR
  or LF, no line is longer than 998 octets, continuation lines start with WSP and none is made
  of WSP only; pure ASCII, or for an SMTPUTF8 message (``utf8=True``) valid UTF-8 (RFC 6532)
  with no C0 control but HTAB, no DEL, no C1 control and no U+2028/U+2029, so that
  :meth:`str.splitlines` finds exactly the CRLF-ended lines;
- once unfolded, an RFC 5321 §4.4 ``Time-stamp-line``::

      Time-stamp-line = "Received:" FWS Stamp CRLF
      Stamp           = From-domain By-domain Opt-info [CFWS] ";" FWS date-time
      From-domain     = "FROM" FWS Extended-Domain
      By-domain       = CFWS "BY" FWS Extended-Domain
      Extended-Domain = Domain / ( Domain FWS "(" TCP-info ")" )
                        / ( address-literal FWS "(" TCP-info ")" )
      TCP-info        = address-literal / ( Domain FWS address-literal )
      Opt-info        = [Via] [With] [ID] [For] [Additional-Registered-Clauses]
      Via             = CFWS "VIA" FWS Link               Link = "TCP" / Addtl-Link(Atom)
      With            = CFWS "WITH" FWS Protocol          Protocol = "ESMTP" / "SMTP" / Atom
      ID              = CFWS "ID" FWS ( Atom / msg-id )
      For             = CFWS "FOR" FWS ( Path / Mailbox )
      Additional-Registered-Clauses = 1*( CFWS Atom FWS String )

  with Domain, address-literal (IPv4, the IPv6 forms of §4.1.3 with their group counts, and
  General-address-literal), Path, Mailbox, Atom and Quoted-string from RFC 5321 §4.1.2/§4.1.3,
  the §4.5.3.1 size limits (label 63, domain 255, local part 64, path 256 octets), CFWS,
  comments, quoted-pairs and msg-id from RFC 5322 §3.2.2/§3.6.4, and ``date-time`` from RFC 5322
  §3.3 without the obsolete forms (the day of the week must match the date, the year be 1900 or
  later, every field in range). With ``utf8=True`` the RFC 6531 §3.3 extensions apply
  (``atext``/``qtextSMTP`` =/ UTF8-non-ascii, ``sub-domain =/ U-label``) and RFC 6532's to
  comments; a U-label is approximated as NFC letters, marks, digits and hyphens whose A-label
  fits in 63 octets.

``With`` must also name a protocol registered with IANA (RFC 5321 §4.4: "SMTP servers SHOULD
NOT use unregistered names"), unless ``registered_protocols=False``.

Keywords match case-insensitively (RFC 5234 §2.3). FWS is matched after unfolding, where it is
``1*WSP``; a fold inside a token therefore leaves a WSP there and is refused.

:func:`check_one_header_field` checks what :mod:`email` makes of the field followed by a
message: exactly one ``Received`` field, with the whole value, and the message's own fields
intact after it.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import string
import unicodedata
from collections.abc import Callable
from typing import Final, TypeVar

import attrs

T = TypeVar("T")


class GrammarError(ValueError):
    """The header field is not what the RFCs allow; the message says where and why."""


#: The IANA "Mail Transmission Types" names for SMTP and LMTP (RFC 3848, RFC 6531 §3.7.3,
#: RFC 2033).
REGISTERED_PROTOCOLS: Final = frozenset(
    {
        "SMTP",
        "ESMTP",
        "ESMTPA",
        "ESMTPS",
        "ESMTPSA",
        "LMTP",
        "LMTPA",
        "LMTPS",
        "LMTPSA",
        "UTF8SMTP",
        "UTF8SMTPA",
        "UTF8SMTPS",
        "UTF8SMTPSA",
        "UTF8LMTP",
        "UTF8LMTPA",
        "UTF8LMTPS",
        "UTF8LMTPSA",
    }
)

_WSP: Final = " \t"
_ALPHA_DIGIT: Final = frozenset(string.ascii_letters + string.digits)
_ATEXT: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
# Character classes as ranges of code points, as the ABNF gives them.
_VCHAR: Final = ((0x21, 0x7E),)
_CTEXT: Final = ((33, 39), (42, 91), (93, 126))  # RFC 5322 §3.2.2, without obs-ctext
_QTEXT_SMTP: Final = ((32, 33), (35, 91), (93, 126))  # RFC 5321 §4.1.2
_QPAIR_SMTP: Final = ((32, 126),)  # what may follow the backslash of a quoted-pairSMTP
_DCONTENT: Final = ((33, 90), (94, 126))  # RFC 5321 §4.1.3
_LABEL: Final = re.compile(r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+")
_LDH_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_SNUM: Final = re.compile(r"[0-9]{1,3}\Z")
_HEX: Final = re.compile(r"[0-9A-Fa-f]{1,4}\Z")


@attrs.frozen
class ExtendedDomain:
    """``Domain`` or an address literal, and the TCP-info after it, if any."""

    domain: str
    tcp_info: str | None


@attrs.frozen
class Stamp:
    """What a valid header field says."""

    from_: ExtendedDomain
    by: ExtendedDomain
    via: str | None
    protocol: str | None
    id: str | None
    for_: str | None
    additional: tuple[tuple[str, str], ...]
    date: dt.datetime
    #: Every top-level comment's text (nested comments included, quoted-pairs as written).
    comments: tuple[str, ...]
    #: The unfolded field value (after "Received:").
    value: str


# ---- the header field --------------------------------------------------------------------


def check_received(header: bytes, *, utf8: bool, registered_protocols: bool = True) -> Stamp:
    """Check one ``Received:`` header field (CRLF included); return what it says."""
    text = _check_field_lines(header, utf8=utf8)
    unfolded = text[:-2].replace("\r\n", "")
    if not unfolded.startswith("Received:"):
        raise GrammarError("the field is not a Received field")
    stamp = _Parser(unfolded, len("Received:"), utf8=utf8).parse()
    protocol = stamp.protocol
    if (
        registered_protocols
        and protocol is not None
        and protocol.upper() not in REGISTERED_PROTOCOLS
    ):
        raise GrammarError(f"protocol {protocol!r} is not registered with IANA")
    return stamp


def _check_field_lines(header: bytes, *, utf8: bool) -> str:
    if not header.endswith(b"\r\n"):
        raise GrammarError("the field does not end in CRLF")
    lines = header[:-2].split(b"\r\n")
    for number, line in enumerate(lines):
        if b"\r" in line or b"\n" in line:
            raise GrammarError(f"line {number}: bare CR or LF")
        if len(line) > 998:
            raise GrammarError(f"line {number}: {len(line)} octets, over 998")
        if number and line[:1] not in (b" ", b"\t"):
            raise GrammarError(f"line {number}: a continuation line must start with WSP")
        if not line.strip(b" \t"):
            raise GrammarError(f"line {number}: a line of white space only")
    if not utf8 and not header.isascii():
        raise GrammarError("non-ASCII octets in a message without SMTPUTF8")
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GrammarError(f"not UTF-8: {exc}") from None
    for ch in text[:-2].replace("\r\n", ""):
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or 0x7F <= code <= 0x9F or ch in "\u2028\u2029":
            raise GrammarError(f"control or separator character U+{code:04X}")
    if text.splitlines(keepends=True) != [line + "\r\n" for line in text[:-2].split("\r\n")]:
        raise GrammarError("str.splitlines() splits the field elsewhere than at its CRLFs")
    return text


def check_one_header_field(header: bytes) -> None:
    """:mod:`email` reads ``header`` + a message as one Received field and the message intact."""
    message_text = b"Subject: probe\r\nX-Probe: 1\r\n\r\nbody\r\n"
    expected = header[:-2].replace(b"\r\n", b"").partition(b":")[2].lstrip(b" \t")
    for policy in (email.policy.compat32, email.policy.SMTPUTF8):
        message = email.message_from_bytes(header + message_text, policy=policy)
        if message.keys() != ["Received", "Subject", "X-Probe"]:
            raise GrammarError(f"{policy!r}: email sees the fields {message.keys()}")
        [raw] = [value for name, value in message.raw_items() if name == "Received"]
        got = str(raw).replace("\r\n", "").lstrip(" \t").encode("utf-8", "surrogateescape")
        if got != expected:
            raise GrammarError(f"{policy!r}: email sees the value {got!r}, not {expected!r}")
        if message.get_payload() != "body\r\n":
            raise GrammarError(f"{policy!r}: the body became {message.get_payload()!r}")


# ---- the parser --------------------------------------------------------------------------


class _Fail(Exception):
    pass


class _Parser:
    """Recursive descent with backtracking over the unfolded field value."""

    def __init__(self, text: str, pos: int, *, utf8: bool) -> None:
        self.text = text
        self.pos = pos
        self.utf8 = utf8
        self.comments: list[str] = []
        self.deepest = pos
        self.expected = ""

    # -- machinery

    def fail(self, expected: str) -> _Fail:
        if self.pos >= self.deepest:
            self.deepest, self.expected = self.pos, expected
        return _Fail(expected)

    def attempt(self, rule: Callable[[], T]) -> T | None:
        """Run ``rule``; on failure restore the position (and comments) and return None."""
        pos, comments = self.pos, len(self.comments)
        try:
            return rule()
        except _Fail:
            self.pos = pos
            del self.comments[comments:]
            return None

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def literal(self, word: str) -> None:
        """A case-insensitive string (RFC 5234 §2.3)."""
        end = self.pos + len(word)
        if self.text[self.pos : end].upper() != word.upper():
            raise self.fail(repr(word))
        self.pos = end

    def char(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.fail(repr(ch))
        self.pos += 1

    def non_ascii(self, ch: str) -> bool:
        return self.utf8 and ord(ch) >= 0x80

    # -- RFC 5322 §3.2: white space, comments, atoms

    def fws(self) -> None:
        start = self.pos
        while self.peek() and self.peek() in _WSP:
            self.pos += 1
        if self.pos == start:
            raise self.fail("white space")

    def optional_fws(self) -> None:
        self.attempt(self.fws)

    def comment(self) -> str:
        start = self.pos
        self.char("(")
        while True:
            self.optional_fws()
            ch = self.peek()
            if ch == ")":
                self.pos += 1
                return self.text[start + 1 : self.pos - 1]
            if ch == "(":
                self.comment()
            elif ch == "\\":  # quoted-pair = "\" (VCHAR / WSP); RFC 6532: VCHAR =/ non-ASCII
                self.pos += 1
                quoted = self.peek()
                if not (
                    quoted and (_in(quoted, _VCHAR) or quoted in _WSP or self.non_ascii(quoted))
                ):
                    raise self.fail("a quoted-pair")
                self.pos += 1
            elif ch and (_in(ch, _CTEXT) or self.non_ascii(ch)):  # RFC 6532: ctext =/ non-ASCII
                self.pos += 1
            else:
                raise self.fail("comment text or ')'")

    def cfws(self) -> None:
        """CFWS = (1*([FWS] comment) [FWS]) / FWS"""
        start = self.pos
        while True:
            found = self.attempt(self._fws_comment)
            if found is None:
                break
            self.comments.append(found)
        self.optional_fws()
        if self.pos == start:
            raise self.fail("white space or a comment")

    def _fws_comment(self) -> str:
        self.optional_fws()
        return self.comment()

    def atom(self) -> str:
        """RFC 5321 Atom = 1*atext (RFC 6531: atext =/ UTF8-non-ascii)."""
        start = self.pos
        while self.peek() and (self.peek() in _ATEXT or self.non_ascii(self.peek())):
            self.pos += 1
        if self.pos == start:
            raise self.fail("an Atom")
        return self.text[start : self.pos]

    def keyword(self, word: str) -> None:
        """A keyword, which the grammar always follows with FWS."""
        self.literal(word)
        if not self.peek() or self.peek() not in _WSP:
            raise self.fail(f"white space after {word!r}")

    # -- RFC 5321 §4.1.2/§4.1.3: domains, literals, mailboxes

    def domain(self) -> str:
        start = self.pos
        while True:
            self.sub_domain()
            if self.peek() != ".":
                break
            self.pos += 1
        name = self.text[start : self.pos]
        if len(name.encode()) > 255:
            raise self.fail("a domain of at most 255 octets")
        return name

    def sub_domain(self) -> None:
        m = _LABEL.match(self.text, self.pos)
        if m is None:
            raise self.fail("a domain label")
        label = m.group()
        if label.isascii():
            # Let-dig [Ldh-str]: the longest prefix that ends in a letter or digit.
            end = len(label.rstrip("-"))
            if end == 0 or label[0] == "-" or not _LDH_LABEL.match(label[:end]):
                raise self.fail("an LDH label")
            if end > 63:
                raise self.fail("a label of at most 63 octets")
            self.pos += end
            return
        if not self.utf8 or not _u_label(label):
            raise self.fail("a U-label (SMTPUTF8 only)")
        self.pos += len(label)

    def address_literal(self) -> str:
        start = self.pos
        self.char("[")
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.fail("']'")
        inner = self.text[self.pos : end]
        if not _valid_literal(inner):
            raise self.fail("an IPv4, IPv6 or general address literal")
        self.pos = end + 1
        return self.text[start : self.pos]

    def tcp_info(self) -> str:
        """TCP-info = address-literal / ( Domain FWS address-literal )"""
        start = self.pos
        if self.attempt(self.address_literal) is None:
            self.domain()
            self.fws()
            self.address_literal()
        return self.text[start : self.pos]

    def extended_domain(self) -> ExtendedDomain:
        for first in (self.address_literal, self.domain):

            def with_info(first: Callable[[], str] = first) -> ExtendedDomain:
                name = first()
                self.fws()
                self.char("(")
                info = self.tcp_info()
                self.char(")")
                return ExtendedDomain(name, info)

            found = self.attempt(with_info)
            if found is not None:
                return found
        return ExtendedDomain(self.domain(), None)

    def quoted_string(self) -> str:
        """Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 6531: qtextSMTP =/ non-ASCII)."""
        start = self.pos
        self.char('"')
        while self.peek() != '"':
            ch = self.peek()
            if ch == "\\":  # quoted-pairSMTP = %d92 %d32-126
                self.pos += 1
                ch = self.peek()
                if not (ch and _in(ch, _QPAIR_SMTP)):
                    raise self.fail("a quoted-pairSMTP")
            elif not (ch and (_in(ch, _QTEXT_SMTP) or self.non_ascii(ch))):
                raise self.fail("qtextSMTP or '\"'")
            self.pos += 1
        self.pos += 1
        return self.text[start : self.pos]

    def local_part(self) -> str:
        """Local-part = Dot-string / Quoted-string, at most 64 octets."""
        start = self.pos
        if self.peek() == '"':
            self.quoted_string()
        else:
            self.dot_atom_text()
        local = self.text[start : self.pos]
        if len(local.encode()) > 64:
            raise self.fail("a local part of at most 64 octets")
        return local

    def mailbox(self) -> str:
        start = self.pos
        self.local_part()
        self.char("@")
        if self.attempt(self.address_literal) is None:
            self.domain()
        return self.text[start : self.pos]

    def path(self) -> str:
        start = self.pos
        self.char("<")
        if self.peek() == "@":  # A-d-l = At-domain *( "," At-domain ), then ":"
            while True:
                self.char("@")
                self.domain()
                if self.peek() != ",":
                    break
                self.pos += 1
            self.char(":")
        self.mailbox()
        self.char(">")
        path = self.text[start : self.pos]
        if len(path.encode()) > 256:
            raise self.fail("a path of at most 256 octets")
        return path

    def msg_id(self) -> str:
        """RFC 5322 §3.6.4: "<" dot-atom-text "@" ( dot-atom-text / no-fold-literal ) ">"."""
        start = self.pos
        self.char("<")
        self.dot_atom_text()
        self.char("@")
        if self.peek() == "[":
            self.pos += 1
            while self.peek() and self.peek() not in "[]\\" and ord(self.peek()) > 32:
                self.pos += 1
            self.char("]")
        else:
            self.dot_atom_text()
        self.char(">")
        return self.text[start : self.pos]

    def dot_atom_text(self) -> None:
        self.atom()
        while self.peek() == ".":
            self.pos += 1
            self.atom()

    # -- RFC 5321 §4.4: the stamp

    def clause(self, word: str, value: Callable[[], str]) -> str:
        self.cfws()
        self.keyword(word)
        self.fws()
        return value()

    def time_stamp_line(self) -> Stamp:
        self.fws()
        self.keyword("FROM")
        self.fws()
        from_ = self.extended_domain()
        self.cfws()
        self.keyword("BY")
        self.fws()
        by = self.extended_domain()
        via = self.attempt(lambda: self.clause("VIA", self.atom))
        protocol = self.attempt(lambda: self.clause("WITH", self.atom))
        id_ = self.attempt(
            lambda: self.clause("ID", lambda: self.attempt(self.msg_id) or self.atom())
        )
        for_ = self.attempt(
            lambda: self.clause("FOR", lambda: self.attempt(self.path) or self.mailbox())
        )
        additional: list[tuple[str, str]] = []
        while (found := self.attempt(self.additional_clause)) is not None:
            additional.append(found)
        self.attempt(self.cfws)
        self.char(";")
        self.fws()
        date = self.date_time()
        if self.pos != len(self.text):
            raise self.fail("the end of the field")
        return Stamp(
            from_=from_,
            by=by,
            via=via,
            protocol=protocol,
            id=id_,
            for_=for_,
            additional=tuple(additional),
            date=date,
            comments=tuple(self.comments),
            value=self.text[len("Received:") :],
        )

    def additional_clause(self) -> tuple[str, str]:
        self.cfws()
        name = self.atom()
        self.fws()
        value = self.attempt(self.quoted_string) or self.atom()
        return name, value

    def parse(self) -> Stamp:
        try:
            return self.time_stamp_line()
        except _Fail:
            raise GrammarError(
                f"at {self.deepest}: expected {self.expected} in {self.text!r}"
            ) from None

    # -- RFC 5322 §3.3: date-time

    def digits(self, low: int, high: int) -> int:
        start = self.pos
        while self.peek().isascii() and self.peek().isdigit() and self.pos - start < high:
            self.pos += 1
        if not low <= self.pos - start <= high:
            raise self.fail(f"{low} to {high} digits")
        return int(self.text[start : self.pos])

    def name_of(self, names: tuple[str, ...]) -> int:
        word = self.text[self.pos : self.pos + 3]
        for index, name in enumerate(names):
            if word.upper() == name.upper():
                self.pos += 3
                return index
        raise self.fail(" or ".join(names))

    def date_time(self) -> dt.datetime:
        weekday = self.attempt(self._day_of_week)
        self.optional_fws()  # day = ([FWS] 1*2DIGIT FWS)
        day = self.digits(1, 2)
        self.fws()
        month = self.name_of(_MONTHS) + 1
        self.fws()
        year = self.digits(4, 9)
        self.fws()
        hour = self.digits(2, 2)
        self.char(":")
        minute = self.digits(2, 2)
        second = 0
        if self.peek() == ":":
            self.pos += 1
            second = self.digits(2, 2)
        self.fws()
        sign = self.peek()
        if sign not in ("+", "-"):
            raise self.fail("a zone '+hhmm' or '-hhmm'")
        self.pos += 1
        zone = self.digits(4, 4)
        self.attempt(self.cfws)
        if year < 1900:
            raise self.fail("a year of 1900 or later")
        if hour > 23 or minute > 59 or second > 60 or zone % 100 > 59:
            raise self.fail("a time in range")
        offset = dt.timedelta(hours=zone // 100, minutes=zone % 100)
        try:
            when = dt.datetime(
                year,
                month,
                day,
                hour,
                minute,
                min(second, 59),
                tzinfo=dt.timezone(-offset if sign == "-" else offset),
            )
        except ValueError:
            raise self.fail("a day that exists in its month") from None
        if weekday is not None and weekday != when.weekday():
            raise self.fail(f"the day of the week of {when.date()}")
        return when

    def _day_of_week(self) -> int:
        self.optional_fws()
        day = self.name_of(_DAYS)
        self.char(",")
        return day


def _in(ch: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= ord(ch) <= high for low, high in ranges)


def _u_label(label: str) -> bool:
    """RFC 5890 U-label, approximately: NFC letters, marks and digits, inner hyphens only."""
    if label[0] == "-" or label[-1] == "-" or unicodedata.normalize("NFC", label) != label:
        return False
    if not all(
        ch in _ALPHA_DIGIT or ch == "-" or unicodedata.category(ch)[0] in "LMN" for ch in label
    ):
        return False
    try:
        a_label = b"xn--" + label.lower().encode("punycode")
    except UnicodeError:
        return False
    return len(a_label) <= 63


def _valid_literal(inner: str) -> bool:
    """RFC 5321 §4.1.3: IPv4-address-literal / IPv6-address-literal / General-address-literal."""
    if _ipv4(inner):
        return True
    tag, colon, rest = inner.partition(":")
    if not colon:
        return False
    if tag.upper() == "IPV6":
        return _ipv6(rest)
    return (
        _LDH_LABEL.match(tag) is not None  # Standardized-tag = Ldh-str
        and bool(rest)
        and all(_in(ch, _DCONTENT) for ch in rest)
    )


def _ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(_SNUM.match(p) and int(p) <= 255 for p in parts)


def _ipv6(text: str) -> bool:
    """IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp, with RFC 5321's group counts.

    The IPv4 tail stands for two groups; "::" stands for at least two, so besides it at most
    six groups (four and the IPv4 tail) may be written.
    """
    if "." in text:
        head, colon, ipv4 = text.rpartition(":")
        if not colon or not _ipv4(ipv4):
            return False
        text = head + ":0:0"
    if "::" in text:
        left, _, right = text.partition("::")
        pieces = (left.split(":") if left else []) + (right.split(":") if right else [])
        return len(pieces) <= 6 and all(_HEX.match(piece) for piece in pieces)
    pieces = text.split(":")
    return len(pieces) == 8 and all(_HEX.match(piece) for piece in pieces)
