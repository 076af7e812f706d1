"""Fuzz the DSN parameter parsers, ``smtpd_trio._smtp.dsn`` (RFC 3461, RFC 6533).

Input: one parameter value as bytes (no framing), decoded as UTF-8 skipping undecodable bytes,
as the machine only hands the parsers strictly decoded text. The value goes through every
parser: ``xtext_decode``, ``decode_utf8_address`` (both forms), ``parse_ret``,
``parse_envid``, ``parse_notify`` and ``parse_orcpt`` (in and outside SMTPUTF8 transactions).

Asserted: each either returns or raises ``DSNSyntaxError``, and what is accepted makes sense:

- xtext is ASCII, decodes to octets that encode back to it in canonical form, and that form
  decodes to the same octets;
- a utf-8 address encoding decodes to text without surrogates, which encodes back (when it can
  be) to a value that decodes to the same text;
- an ENVID is at most 100 characters as sent and printable ASCII once decoded;
- NOTIFY is NEVER alone (the empty set) or one to three distinct conditions;
- an ORCPT is at most 500 characters as sent, of type ``rfc822`` (printable ASCII) or, in an
  SMTPUTF8 transaction only, ``utf-8`` (a mailbox without control characters), and its
  ``to_param()`` form parses back to the same value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

import harness

with harness.instrumented(__name__, "smtpd_trio._smtp.dsn"):
    from smtpd_trio._smtp.dsn import (
        MAX_ENVID,
        MAX_ORCPT,
        DSNSyntaxError,
        decode_utf8_address,
        encode_utf8_address,
        parse_envid,
        parse_notify,
        parse_orcpt,
        parse_ret,
        xtext_decode,
        xtext_encode,
    )

MAX_LEN: Final = 1024
DICTIONARY: Final = (
    b"+2B",
    b"+3D",
    b"+20",
    b"+0D+0A",
    b"rfc822;",
    b"utf-8;",
    b"\\x{",
    b"}",
    b"\\x{F6}",
    b"NEVER",
    b"SUCCESS",
    b"FAILURE",
    b"DELAY",
    b",",
    b"FULL",
    b"HDRS",
    b"@",
    b"\xc3\xb6",
)

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_xtext(text: str) -> None:
    try:
        data = xtext_decode(text)
    except DSNSyntaxError:
        return
    assert text.isascii(), text
    canonical = xtext_encode(data)
    assert xtext_decode(canonical) == data, text
    assert len(canonical) <= len(text), text  # hexchars that could be characters are undone


def check_utf8_address(text: str) -> None:
    for unitext in (False, True):
        try:
            address = decode_utf8_address(text, unitext=unitext)
        except DSNSyntaxError:
            continue
        if not unitext:
            assert text.isascii(), text
        assert not re.search("[\ud800-\udfff]", address), text
        for form in (False, True):
            try:
                encoded = encode_utf8_address(address, unitext=form)
            except ValueError:
                continue
            assert decode_utf8_address(encoded, unitext=True) == address, text


def check_parameters(text: str) -> None:
    try:
        ret = parse_ret(text)
    except DSNSyntaxError:
        pass
    else:
        assert text.upper() == ret.value, text
    try:
        envid = parse_envid(text)
    except DSNSyntaxError:
        pass
    else:
        assert 0 < len(text) <= MAX_ENVID, text
        assert all(" " <= ch <= "~" for ch in envid), text
    try:
        notify = parse_notify(text)
    except DSNSyntaxError:
        pass
    else:
        names = text.upper().split(",")
        if names == ["NEVER"]:
            assert notify == frozenset(), text
        else:
            assert 1 <= len(notify) == len(names) <= 3, text
    for utf8 in (False, True):
        try:
            orcpt = parse_orcpt(text, utf8=utf8)
        except DSNSyntaxError:
            continue
        assert len(text) <= MAX_ORCPT, text
        assert orcpt.address, text
        assert not _CONTROL.search(orcpt.address), text
        if orcpt.type == "rfc822":
            assert orcpt.address.isascii(), text
        else:
            assert orcpt.type == "utf-8", text
            assert utf8, text
        assert parse_orcpt(orcpt.to_param(), utf8=True) == orcpt, text


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "ignore")
    check_xtext(text)
    check_utf8_address(text)
    check_parameters(text)


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """Every line of every literal, and each parameter value (after ``=``) in it."""
    for line in harness.lines_of(literals):
        yield line
        for word in line.split():
            _key, eq, value = word.partition(b"=")
            if eq and value:
                yield value


if __name__ == "__main__":
    harness.fuzz(one_input)
