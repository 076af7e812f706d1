"""SMTP AUTH (RFC 4954): SASL mechanisms and authenticators.

A *mechanism* turns the client's SASL responses into credentials; an *authenticator* (an async
callable you provide, :attr:`Config.authenticator <smtpd_trio.Config.authenticator>`) checks them::

    async def authenticator(session: Session, credentials: object) -> str | None:
        if isinstance(credentials, LoginCredentials) and await check(credentials):
            return credentials.username      # the authenticated identity
        return None                          # 535 5.7.8

It may also raise :class:`~smtpd_trio.Reject` to answer with its own 4xx/5xx reply; any other
exception is answered ``454 4.7.0`` (a temporary failure) and logged.

PLAIN (RFC 4616) and LOGIN are built in and offered by default. OAUTHBEARER (RFC 7628) and
XOAUTH2 are built in too, offered only when listed in
:attr:`smtpd_trio.Config.auth_mechanisms`: they yield :class:`BearerCredentials`, and the
authenticator validates the token. Add others (CRAM-MD5, ...) by implementing
:class:`Mechanism`: ``start()`` returns an exchange whose ``step()`` is fed the client's
responses (already base64-decoded; None before the first) and returns a :class:`Challenge` to
send, or the finished credentials object (of any type your authenticator understands). A
malformed response raises :class:`SASLError` (501).

Mechanisms are sans-IO and synchronous (the state machine runs them); only the authenticator
awaits.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, final

from ._smtp.oauth import BearerCredentials, OAuthBearer, XOAuth2
from ._smtp.sasl import (
    Challenge,
    Login,
    LoginCredentials,
    Mechanism,
    Plain,
    SASLError,
    SASLExchange,
)

if TYPE_CHECKING:
    from .handler import Session

__all__ = [
    "Authenticator",
    "BearerCredentials",
    "Challenge",
    "Login",
    "LoginCredentials",
    "Mechanism",
    "OAuthBearer",
    "Plain",
    "SASLError",
    "SASLExchange",
    "StaticAuthenticator",
    "XOAuth2",
]

#: ``async (session, credentials) -> identity | None``.
Authenticator = Callable[["Session[Any]", object], Awaitable[str | None]]


@final
class StaticAuthenticator:
    """Checks user names and passwords against a fixed table (demos, tests, the CLI's
    ``--auth``). Any other credentials, bearer tokens included, are refused. Real deployments
    pass their own authenticator."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name: password.encode("utf-8") for name, password in users.items()}

    async def __call__(self, session: Session[Any], credentials: object) -> str | None:
        if not isinstance(credentials, LoginCredentials):
            return None
        if credentials.authzid not in (None, credentials.username):
            return None
        expected = self._users.get(credentials.username)
        given = credentials.password.encode("utf-8")
        # Compare even for unknown users, so timing does not tell which names exist.
        ok = hmac.compare_digest(given, expected if expected is not None else b"\x00" + given)
        return credentials.username if ok and expected is not None else None
