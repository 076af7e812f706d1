"""SASL mechanisms for SMTP AUTH (RFC 4954): sans-IO and synchronous.

A *mechanism* turns the client's SASL responses into credentials. The state machine runs it:
``start()`` returns an exchange whose ``step()`` is fed the client's responses (already
base64-decoded; None when AUTH carried no initial response) and returns a :class:`Challenge` to
send as ``334``, or the finished credentials (any object the authenticator understands). A
malformed response raises :class:`SASLError` (answered ``501 5.5.2``).

An exchange may also have a ``refused()`` method, for mechanisms whose failure carries
information (OAUTHBEARER, RFC 7628 §3.2.2): when the authenticator refuses the credentials the
machine calls it, and a :class:`Challenge` it returns is sent as ``334`` before the ``535``,
which then answers the client's next line, whatever it says (``*`` included). Without the
method, or when it returns None, the refusal is answered ``535`` at once.

PLAIN (RFC 4616) and LOGIN are built in here, OAUTHBEARER and XOAUTH2 in :mod:`.oauth`;
:mod:`smtpd_trio.auth` re-exports them together with the authenticator types.
"""

from __future__ import annotations

import binascii
from typing import Protocol, final

import attrs

__all__ = [
    "Challenge",
    "Login",
    "LoginCredentials",
    "Mechanism",
    "Plain",
    "SASLError",
    "SASLExchange",
    "decode_response",
]


class SASLError(Exception):
    """The client's SASL response is malformed (answered ``501 5.5.2``)."""


@final
@attrs.frozen
class Challenge:
    """A server challenge: sent as ``334 <base64>``."""

    data: bytes = b""


@final
@attrs.frozen(repr=False)
class LoginCredentials:
    """A user name and password (from PLAIN or LOGIN). The password never appears in repr."""

    username: str
    password: str
    #: PLAIN's authorization identity, if the client asked to act as someone else.
    authzid: str | None = None

    def __repr__(self) -> str:
        return f"LoginCredentials(username={self.username!r}, authzid={self.authzid!r})"


class SASLExchange(Protocol):
    """One authentication exchange in progress. (It may also define ``refused() -> Challenge
    | None``, the last challenge to send when the credentials are refused: see the module
    docstring.)"""

    def step(self, response: bytes | None) -> Challenge | object:
        """Take the next client response (None: there was no initial response); return a
        Challenge to send, or the credentials when the exchange is complete."""
        ...


class Mechanism(Protocol):
    """A SASL mechanism, such as PLAIN."""

    #: The name advertised in EHLO and given in ``AUTH <name>``, upper case.
    @property
    def name(self) -> str: ...

    def start(self) -> SASLExchange: ...


def decode_response(text: str) -> bytes | None:
    """A SASL response as the client sent it (RFC 4954 §4): strict base64 (RFC 4648: the
    alphabet, whole 4-character groups, at most two ``=`` and only where they belong), ``=``
    alone for an empty initial response; None if malformed.

    CPython's strict mode alone accepts excess padding (``AAAA=``) before 3.13: refused here on
    every version."""
    if text == "=":
        return b""
    data = text.rstrip("=")
    padding = len(text) - len(data)
    if padding and (padding > 2 or (len(data) + padding) % 4 or len(data) % 4 != 4 - padding):
        return None
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} is not UTF-8") from None


@final
class _PlainExchange:
    def __init__(self) -> None:
        self._asked = False

    def step(self, response: bytes | None) -> Challenge | LoginCredentials:
        if response is None:
            if self._asked:
                raise SASLError("PLAIN needs a response")
            self._asked = True
            return Challenge(b"")
        parts = response.split(b"\x00")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SASLError("PLAIN response must be authzid NUL authcid NUL password")
        authzid = _text(parts[0], "authorization identity") or None
        return LoginCredentials(_text(parts[1], "user name"), _text(parts[2], "password"), authzid)


@final
class Plain:
    """SASL PLAIN (RFC 4616): one response holding ``authzid NUL user NUL password``."""

    name = "PLAIN"

    def start(self) -> SASLExchange:
        return _PlainExchange()


@final
class _LoginExchange:
    def __init__(self) -> None:
        self._username: str | None = None

    def step(self, response: bytes | None) -> Challenge | LoginCredentials:
        if response is None:
            return Challenge(b"Username:")
        if self._username is None:
            self._username = _text(response, "user name")
            if not self._username:
                raise SASLError("empty user name")
            return Challenge(b"Password:")
        return LoginCredentials(self._username, _text(response, "password"))


@final
class Login:
    """The LOGIN mechanism (draft-murchison-sasl-login): user name, then password."""

    name = "LOGIN"

    def start(self) -> SASLExchange:
        return _LoginExchange()
