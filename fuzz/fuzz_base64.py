"""Fuzz strict base64 decoding of SASL responses, as the SMTP machine does it.

Input: one line as bytes. It is decoded to text both ways the machine gets SASL text: as an AUTH
continuation line (ASCII, undecodable bytes replaced) and as the initial response of an AUTH
command (UTF-8, as the command line is), then handed to ``harness.sasl_b64decode``, the
machine's own rule (``smtpd_trio._smtp.sasl.decode_response``).

Asserted:

- only ``binascii.Error`` or ``UnicodeEncodeError`` come out of the standard library (the machine
  catches exactly those), so the rule either decodes or says "malformed";
- it accepts every well-formed RFC 4648 string, and decodes it as
  ``base64.b64decode(..., validate=True)`` does (a second implementation);
- what it accepts is RFC 4648 base64: the alphabet, a length that is a multiple of 4, at most
  two ``=`` and only at the end (no excess padding after a complete quantum, which CPython's
  strict mode alone accepts before 3.13), the output length that implies; re-encoding the
  output gives the input back except for the padding and perhaps the last data character
  (whose unused low bits strict mode does not check).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from typing import Final

import harness

MAX_LEN: Final = 1024
DICTIONARY: Final = (b"=", b"==", b"+", b"/", b"AAAA", b"\r\n", b"*")

_B64: Final = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def check(text: str) -> None:
    decoded = harness.sasl_b64decode(text)
    if text == "=":
        assert decoded == b""
        return
    if _B64.fullmatch(text):
        assert decoded is not None, text
    if decoded is None:
        return
    # A second implementation, laxer about padding: it takes all that strict mode takes.
    assert base64.b64decode(text.encode("ascii"), validate=True) == decoded, text
    assert _B64.fullmatch(text), text
    data = text.rstrip("=")
    assert len(decoded) == len(data) * 3 // 4, (text, decoded)
    again = binascii.b2a_base64(decoded, newline=False).decode("ascii")
    assert len(again) == -(-len(data) // 4) * 4, (text, again)
    # Without padding every bit of the last character is data; with it, some are not.
    significant = len(data) if len(data) % 4 == 0 else len(data) - 1
    assert again[:significant] == data[:significant], (text, again)


def one_input(data: bytes) -> None:
    check(data.decode("ascii", "replace"))
    check(data.decode("utf-8", "ignore"))


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """Each line of the tests (the last word of AUTH lines alone too), and the base64 of each
    short line."""
    for line in harness.lines_of(literals):
        yield line
        if line.upper().startswith(b"AUTH "):
            yield line.rpartition(b" ")[2]
        if len(line) <= 200:
            yield base64.b64encode(line)


if __name__ == "__main__":
    harness.fuzz(one_input, also_instrument=[base64.b64decode])
