"""Fuzz the SASL exchanges of ``smtpd_trio.auth``: PLAIN and LOGIN, through their public names.

Input: a framed input (``harness.unframe``). Flags: bit 0 picks LOGIN (else PLAIN); bit 1 sends
the responses as base64 lines, the payload split at CRLF, each decoded as the machine does
(``harness.sasl_b64decode``; a malformed line aborts the exchange, as the machine answers 501),
else the chunks are the already-decoded responses; bit 2 makes the first response the initial
response of the AUTH command (else the exchange starts with ``step(None)``); bit 3 repeats
``step(None)`` after the first challenge.

Driven like the machine drives a mechanism: ``start()``, then ``step()`` with each response
while it returns a ``Challenge``. Asserted: only ``SASLError`` escapes; ``step`` returns a
``Challenge`` of bytes or ``LoginCredentials``; credentials are ``str`` and are exactly what the
client sent (PLAIN: ``authzid NUL user NUL password`` re-encodes to the response, user and
password non-empty, an empty authzid is None; LOGIN: the user name is the first response, the
password the second); LOGIN asks ``Username:`` then ``Password:``; PLAIN refuses a second
``step(None)``.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import harness

# The mechanisms live in smtpd_trio._smtp.sasl; smtpd_trio.auth re-exports them.
with harness.instrumented(__name__, "smtpd_trio.auth", "smtpd_trio._smtp.sasl"):
    from smtpd_trio.auth import Challenge, Login, LoginCredentials, Plain, SASLError

MAX_LEN: Final = 2048
DICTIONARY: Final = (b"\x00", b"=", b"\r\n", b"AGFsaWNl", b"\xc3\xa9", b"\xff")


def responses(flags: int, framed: harness.Framed) -> Iterator[bytes | None]:
    """The client's responses, decoded; None stands for a line the machine refuses."""
    if flags & 2:
        for line in framed.payload.split(b"\r\n"):
            yield harness.sasl_b64decode(line.decode("ascii", "replace"))
    else:
        yield from framed.chunks


def check_credentials(credentials: LoginCredentials, sent: list[bytes], login: bool) -> None:
    assert isinstance(credentials.username, str)
    assert isinstance(credentials.password, str)
    assert credentials.username
    if login:
        assert credentials.authzid is None
        assert sent == [credentials.username.encode(), credentials.password.encode()], sent
        return
    assert credentials.password
    authzid = credentials.authzid
    if authzid is not None:
        assert isinstance(authzid, str)
        assert authzid
    wire = b"\x00".join(
        [(authzid or "").encode(), credentials.username.encode(), credentials.password.encode()]
    )
    assert sent == [wire], sent


def one_input(data: bytes) -> None:
    framed = harness.unframe(data)
    flags = framed.flags
    login = bool(flags & 1)
    mechanism = Login() if login else Plain()
    assert mechanism.name == ("LOGIN" if login else "PLAIN")
    exchange = mechanism.start()
    pending = responses(flags, framed)
    sent: list[bytes] = []
    try:
        if flags & 4:
            first = next(pending)
            if first is None:
                return  # the machine refuses a malformed initial response before any step
            sent.append(first)
            result = exchange.step(first)
        else:
            result = exchange.step(None)
            assert result == Challenge(b"Username:" if login else b"")
            if flags & 8:
                try:
                    again = exchange.step(None)
                except SASLError:
                    assert not login
                else:
                    assert login
                    assert again == Challenge(b"Username:")
        while isinstance(result, Challenge):
            assert isinstance(result.data, bytes)
            if login:
                assert result.data == (b"Password:" if sent else b"Username:")
            response = next(pending, None)
            if response is None:
                return  # the client stopped, or sent a line the machine refuses
            sent.append(response)
            result = exchange.step(response)
    except SASLError as error:
        assert isinstance(str(error), str)
        return
    assert isinstance(result, LoginCredentials), result
    check_credentials(result, sent, login)


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """PLAIN responses: the tests' NUL-separated strings, and pairs of short literals as user
    and password; LOGIN: the same pairs. Each raw or as base64 lines, with or without an
    initial response, cycling through the four."""
    words = [w for w in literals if 0 < len(w) <= 32 and not any(c in w for c in b" \r\n")]
    pairs = list(itertools.pairwise(words))
    plain = [literal for literal in literals if b"\x00" in literal and len(literal) <= 255]
    plain += [b"\x00" + user + b"\x00" + password for user, password in pairs]
    for i, response in enumerate(plain):
        encoded = base64.b64encode(response)
        yield (
            harness.frame(response, 0b000),
            harness.frame(response, 0b100),
            harness.frame(encoded, 0b010),
            harness.frame(encoded, 0b110),
        )[i % 4]
    for i, (user, password) in enumerate(pairs):
        lines = base64.b64encode(user) + b"\r\n" + base64.b64encode(password)
        yield (
            harness.frame(user + password, 0b001, [len(user)]),
            harness.frame(user + password, 0b101, [len(user)]),
            harness.frame(lines, 0b011),
            harness.frame(lines, 0b111),
        )[i % 4]


if __name__ == "__main__":
    harness.fuzz(one_input)
