"""Fuzz the command-line parser, ``smtpd_trio._smtp.commands``.

Input: one command line as bytes (no framing). It is decoded as UTF-8 skipping undecodable
bytes, because the machine only hands the parser strictly decoded text: a lone surrogate from
``surrogateescape`` is outside the parser's contract. The line goes through every function, as
the machine would use it and also directly:

- ``split_verb(line)``, then ``parse_helo_name(arg)`` and ``parse_path_and_params(arg, ...)``
  in the MAIL shape (``FROM:``, null path allowed) and the RCPT shape (``TO:``,
  ``<Postmaster>`` allowed);
- ``parse_params``, ``parse_mailbox`` (ASCII and SMTPUTF8) and ``check_address_literal`` on the
  whole line.

Asserted: each either returns or raises ``CommandSyntaxError`` (``parse_mailbox`` and
``check_address_literal`` never raise), and what is accepted makes sense:

- a verb holds no space; an argument is trimmed and non-empty;
- a HELO name is the argument unchanged: an ASCII host name (labels of 1-63 letters, digits,
  ``-`` and ``_``, at most 255 octets, all-numeric only as an IPv4 address) or an IPv4/IPv6
  literal, never holding a character that could break a ``Received:`` field;
- a mailbox has its ``@``, a local part of at most 64 octets, a domain of at most 255 whose
  labels are well formed (ASCII ones at most 63 octets), a path of at most 256; an address
  literal is valid; the ASCII grammar accepts only ASCII, and on ASCII text the SMTPUTF8 grammar
  accepts exactly what the ASCII one does;
- parameter keywords are upper-cased ESMTP keywords, values have no ``=`` or space.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Iterable, Sequence
from typing import Final

import harness

with harness.instrumented(__name__, "smtpd_trio._smtp.commands"):
    from smtpd_trio._smtp import replies
    from smtpd_trio._smtp.commands import (
        MAX_DOMAIN,
        MAX_LOCAL_PART,
        MAX_PATH,
        CommandSyntaxError,
        check_address_literal,
        parse_helo_name,
        parse_mailbox,
        parse_params,
        parse_path_and_params,
        split_verb,
    )

MAX_LEN: Final = 2048
DICTIONARY: Final = (
    b"MAIL FROM:",
    b"RCPT TO:",
    b"EHLO ",
    b"<>",
    b"<Postmaster>",
    b"@",
    b"[IPv6:",
    b"]",
    b'"',
    b"\\",
    b"SIZE=",
    b"BODY=8BITMIME",
    b" SMTPUTF8",
    b"@a,@b:",
    b"\xc3\xa9",
    b"\xe2\x80\x83",
)

_KEYWORD_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_HELO_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_")


def _split_mailbox(mailbox: str) -> tuple[str, str]:
    """Split an accepted mailbox into local part and domain, independently of the parser's
    regular expression: a quoted local part ends at its closing unescaped quote, a dot-string
    one at the first ``@``."""
    if mailbox.startswith('"'):
        i = 1
        while mailbox[i] != '"':
            i += 2 if mailbox[i] == "\\" else 1
        end = i + 1
    else:
        end = mailbox.index("@")
    assert mailbox[end] == "@", mailbox
    return mailbox[:end], mailbox[end + 1 :]


def _check_mailbox(mailbox: str, utf8: bool) -> None:
    local, domain = _split_mailbox(mailbox)
    assert local, mailbox
    assert domain, mailbox
    assert len(local.encode()) <= MAX_LOCAL_PART, mailbox
    assert len(domain.encode()) <= MAX_DOMAIN, mailbox
    if not utf8:
        assert mailbox.isascii(), mailbox
    if domain.startswith("["):
        assert domain.endswith("]"), mailbox
        assert check_address_literal(domain), mailbox
    else:
        for label in domain.split("."):
            assert label, mailbox
            assert not label.startswith("-"), mailbox
            assert not label.endswith("-"), mailbox
            if label.isascii():
                assert len(label) <= 63, mailbox
    if not local.startswith('"'):
        assert all(local.split(".")), mailbox  # no empty atom: no leading, trailing or double dot


def check_mailbox(text: str) -> None:
    for utf8 in (False, True):
        result = parse_mailbox(text, utf8=utf8)
        if result is not None:
            assert result == text
            _check_mailbox(result, utf8)
    # SMTPUTF8 only widens the syntax to non-ASCII characters.
    if text.isascii():
        assert parse_mailbox(text, utf8=False) == parse_mailbox(text, utf8=True), text


def check_literal(text: str) -> None:
    for literal in (text, f"[{text}]"):
        ok = check_address_literal(literal)
        assert isinstance(ok, bool)
        inner = literal[1:-1]
        if ok and inner[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(inner[5:])
            assert "%" not in inner, literal


def check_helo_name(name: str) -> None:
    """An accepted HELO name is an ASCII host name or an IP address literal, and holds nothing
    that could end or nest a Received header field."""
    assert name.isascii(), name
    if name.startswith("["):
        assert name.endswith("]"), name
        inner = name[1:-1]
        if inner[:5].upper() == "IPV6:":
            assert "%" not in inner, name
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
        return
    assert not any(c in name for c in ";()[]\\<>\"'"), name
    host = name.removesuffix(".")
    assert 0 < len(host) <= MAX_DOMAIN, name
    for label in host.split("."):
        assert 0 < len(label) <= 63, name
        assert set(label) <= _HELO_CHARS, name
        assert not label.startswith("-"), name
        assert not label.endswith("-"), name
    if set(host) <= set("0123456789."):
        ipaddress.IPv4Address(host)


def check_params(text: str) -> None:
    for utf8 in (False, True):
        try:
            params = parse_params(text, utf8=utf8)
        except CommandSyntaxError:
            continue
        assert len(params) == len(text.split()), text
        for key, value in params.items():
            assert set(key) <= _KEYWORD_CHARS, text
            assert key[:1].isalnum(), text
            if value is not None:
                assert value, text
                assert "=" not in value, text
                assert not any(c.isspace() for c in value), text
                if not utf8:
                    assert value.isascii(), text


def check_path(arg: str | None, prefix: str, *, null_ok: bool, postmaster_ok: bool) -> None:
    try:
        path, params = parse_path_and_params(
            arg,
            prefix=prefix,
            null_ok=null_ok,
            postmaster_ok=postmaster_ok,
            bad_address=replies.BAD_SENDER_ADDRESS,
        )
    except CommandSyntaxError:
        return
    assert arg is not None
    assert arg[: len(prefix)].upper() == prefix, arg
    assert path in arg, arg
    assert len(path.encode()) + 2 <= MAX_PATH, arg
    assert all(key == key.upper() for key in params), arg
    if path == "":
        assert null_ok, arg
    elif postmaster_ok and path.upper() == "POSTMASTER":
        pass
    else:
        assert parse_mailbox(path, utf8=not path.isascii()) == path, arg
        _check_mailbox(path, utf8=not path.isascii())


def check_line(line: str) -> None:
    verb, arg = split_verb(line)
    assert " " not in verb, line
    assert line.startswith(verb) or line[: len(verb)].upper() == verb, line
    if arg is not None:
        assert arg, line
        assert arg == arg.strip(" "), line
        assert arg in line, line
    try:
        name = parse_helo_name(arg)
    except CommandSyntaxError:
        pass
    else:
        assert name == arg, line
        check_helo_name(name)
    check_path(arg, "FROM:", null_ok=True, postmaster_ok=False)
    check_path(arg, "TO:", null_ok=False, postmaster_ok=True)


def one_input(data: bytes) -> None:
    line = data.decode("utf-8", "ignore")
    check_line(line)
    check_params(line)
    check_mailbox(line)
    check_literal(line)


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """Every line of every literal, and what sits between ``<`` and ``>`` in it."""
    for line in harness.lines_of(literals):
        yield line
        start = line.find(b"<")
        end = line.find(b">", start + 1)
        if 0 <= start < end:
            yield line[start + 1 : end]
            yield line[line.find(b" ") + 1 :]


if __name__ == "__main__":
    harness.fuzz(one_input)
