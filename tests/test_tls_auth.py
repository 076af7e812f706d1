"""STARTTLS (RFC 3207), implicit TLS (RFC 8314) and SMTP AUTH (RFC 4954) over memory streams,
plus the sans-IO machine on its own.

The client side of TLS is a :class:`trio.SSLStream` wrapped around the test client's memory
stream after the server's ``220`` to STARTTLS (or from the first byte, for implicit TLS).
Certificates come from trustme.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trustme
from machine_driver import smtp_settings

from smtpd_trio import Config, Handler, Message, Reply, Session, TLSInfo
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Authenticate,
    Closed,
    CloseReason,
    CommandRejected,
    Connect,
    Event,
    Hello,
    NeedData,
    StartTLS,
)
from smtpd_trio._smtp.machine import SMTPMachine, State
from smtpd_trio._smtp.sasl import decode_response
from smtpd_trio.auth import (
    Challenge,
    Login,
    LoginCredentials,
    Plain,
    SASLError,
    SASLExchange,
    StaticAuthenticator,
)
from smtpd_trio.testing import ClientReply, TestClient, open_test_session

USER = "alice"
PASSWORD = "Tr0ub4dor-and-3"
MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PLAIN_OK = b64(b"\x00" + USER.encode() + b"\x00" + PASSWORD.encode())
PLAIN_WRONG = b64(b"\x00" + USER.encode() + b"\x00wrong")


# ---- certificates and contexts ----------------------------------------------------------------


async def start_tls(
    client: TestClient, context: ssl.SSLContext, server_hostname: str | None = "mx.test"
) -> trio.SSLStream[trio.abc.Stream]:
    """Run the client side of the handshake on the test client's stream and keep using it."""
    tls = trio.SSLStream(client.stream, context, server_hostname=server_hostname)
    await tls.do_handshake()
    client.stream = tls
    return tls


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server still sends, until it closes (a TLS alert, say)."""
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def code(reply: ClientReply) -> tuple[int, str | None]:
    return reply.code, reply.enhanced


# ---- the handler ------------------------------------------------------------------------------


class Recorder(Handler):
    """Accepts everything; keeps the session, the commands it was asked about, the messages."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.calls: list[tuple[str, str]] = []
        self.messages: list[Message] = []

    @property
    def session(self) -> Session:
        [session] = self.sessions
        return session

    async def on_connect(self, session: Session) -> Reply | None:
        self.sessions.append(session)
        return None

    async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
        self.calls.append(("helo", name))
        return None

    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        self.calls.append(("mail", address))
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        return None


def tls_info(handler: Recorder) -> TLSInfo | None:
    return handler.session.tls


def identity(handler: Recorder) -> str | None:
    """The session's authenticated identity (a call, so type checkers re-read it each time)."""
    return handler.session.authenticated_as


def config(ctx: ssl.SSLContext | None = None, **fields: Any) -> Config:
    if "authenticator" not in fields:
        fields["authenticator"] = StaticAuthenticator({USER: PASSWORD})
    return Config(hostname="mx.test", tls_context=ctx, **fields)


@asynccontextmanager
async def tls_session(
    handler: Handler, cfg: Config, client_ctx: ssl.SSLContext
) -> AsyncIterator[TestClient]:
    """A test session already through EHLO, STARTTLS, the handshake and EHLO again."""
    async with open_test_session(handler, config=cfg) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert code(await client.command("STARTTLS")) == (220, "2.0.0")
        await start_tls(client, client_ctx)
        assert (await client.command("EHLO client.test")).code == 250
        yield client


# ---- EHLO and STARTTLS ------------------------------------------------------------------------


async def test_no_starttls_without_a_context() -> None:
    async with open_test_session(Recorder(), config=config()) as client:
        ehlo = await client.command("EHLO client.test")
        assert "STARTTLS" not in ehlo.lines
        assert not [line for line in ehlo.lines if line.startswith("AUTH")]
        assert code(await client.command("STARTTLS")) == (502, "5.5.1")


async def test_ehlo_offers_starttls_then_auth_only_under_tls(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with open_test_session(Recorder(), config=config(server_ctx)) as client:
        ehlo = await client.command("EHLO client.test")
        assert "STARTTLS" in ehlo.lines
        assert not [line for line in ehlo.lines if line.startswith("AUTH")]
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (538, "5.7.11")
        assert code(await client.command("STARTTLS")) == (220, "2.0.0")
        await start_tls(client, client_ctx)
        ehlo = await client.command("EHLO client.test")
        assert "STARTTLS" not in ehlo.lines
        assert "AUTH PLAIN LOGIN" in ehlo.lines


async def test_auth_over_plaintext_is_advertised_when_allowed(server_ctx: ssl.SSLContext) -> None:
    cfg = config(server_ctx, auth_over_plaintext=True)
    async with open_test_session(Recorder(), config=cfg) as client:
        ehlo = await client.command("EHLO client.test")
        assert {"STARTTLS", "AUTH PLAIN LOGIN"} <= set(ehlo.lines)


async def test_auth_after_helo_is_503(server_ctx: ssl.SSLContext) -> None:
    # RFC 4954 §4: AUTH belongs to ESMTP; after plain HELO it is out of sequence.
    cfg = config(server_ctx, auth_over_plaintext=True)
    async with open_test_session(Recorder(), config=cfg) as client:
        assert (await client.command("HELO client.test")).code == 250
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (503, "5.5.1")


async def test_auth_not_offered_without_an_authenticator(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with tls_session(Recorder(), config(server_ctx, authenticator=None), client_ctx) as c:
        assert code(await c.command(f"AUTH PLAIN {PLAIN_OK}")) == (502, "5.5.1")


async def test_starttls_with_a_parameter_is_501(server_ctx: ssl.SSLContext) -> None:
    async with open_test_session(Recorder(), config=config(server_ctx)) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert code(await client.command("STARTTLS now")) == (501, "5.5.4")
        # Still plaintext, still usable.
        assert code(await client.command("NOOP")) == (250, "2.0.0")


async def test_second_starttls_under_tls_is_503(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with tls_session(Recorder(), config(server_ctx), client_ctx) as client:
        reply = await client.command("STARTTLS")
        assert code(reply) == (503, "5.5.1")
        assert "TLS already active" in reply.text


async def test_starttls_inside_a_transaction_is_503(server_ctx: ssl.SSLContext) -> None:
    async with open_test_session(Recorder(), config=config(server_ctx)) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        assert code(await client.command("STARTTLS")) == (503, "5.5.1")
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        assert (await client.command("RSET")).code == 250
        assert code(await client.command("STARTTLS")) == (220, "2.0.0")


# ---- the STARTTLS injection defence and the fresh start ---------------------------------------


async def test_plaintext_pipelined_after_starttls_is_discarded(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    injected = b"EHLO x\r\nMAIL FROM:<x@evil>\r\n"
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("EHLO client.test")).code == 250
        await client.send(b"STARTTLS\r\n" + injected)
        assert code(await client.read_reply()) == (220, "2.0.0")
        await start_tls(client, client_ctx)
        # Had the injected MAIL run, RCPT would be accepted now.
        assert code(await client.command("RCPT TO:<v@y>")) == (503, "5.5.1")
        # Had the injected EHLO run, MAIL would be accepted now.
        reply = await client.command("MAIL FROM:<a@example.com>")
        assert code(reply) == (503, "5.5.1")
        assert "HELO" in reply.text
    assert handler.calls == [("helo", "client.test")]
    notes = [r for r in caplog.records if "after STARTTLS" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelno == logging.INFO  # caused by the client: INFO, never an error
    assert f"discarded {len(injected)} octet(s)" in notes[0].getMessage()


async def test_clean_starttls_logs_no_discard(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    async with tls_session(Recorder(), config(server_ctx), client_ctx):
        pass
    assert not [r for r in caplog.records if "discarded" in r.getMessage()]
    assert [r for r in caplog.records if "TLS started: TLSv1.3" in r.getMessage()]


async def test_helo_and_auth_are_forgotten_after_starttls(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    cfg = config(server_ctx, auth_over_plaintext=True, auth_required=True)
    async with open_test_session(handler, config=cfg) as client:
        assert (await client.command("EHLO before.test")).code == 250
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (235, "2.7.0")
        assert identity(handler) == USER
        assert code(await client.command("STARTTLS")) == (220, "2.0.0")
        await start_tls(client, client_ctx)
        assert code(await client.command("MAIL FROM:<a@example.com>")) == (503, "5.5.1")
        assert handler.session.helo_name is None
        assert identity(handler) is None
        assert (await client.command("EHLO after.test")).code == 250
        # Authenticated in plaintext only: that is forgotten too.
        assert code(await client.command("MAIL FROM:<a@example.com>")) == (530, "5.7.0")
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (235, "2.7.0")
        reply = await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert code(reply) == (250, "2.0.0")
    [message] = handler.messages
    assert "from after.test (" in message.received_header
    assert " with ESMTPSA id " in message.received_header


async def test_proxy_facts_survive_starttls(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    cfg = config(server_ctx, proxy_protocol=True, trusted_proxies=["192.0.2.0/24"])
    async with open_test_session(handler, config=cfg, read_greeting=False) as client:
        await client.send(b"PROXY TCP4 203.0.113.7 198.51.100.25 51000 25\r\n")
        assert (await client.read_reply()).code == 220
        before = (handler.session.client, handler.session.peer, handler.session.proxy)
        assert before[0].host == "203.0.113.7"
        assert before[2] is not None
        assert (await client.command("EHLO client.test")).code == 250
        assert (await client.command("STARTTLS")).code == 220
        await start_tls(client, client_ctx)
        assert (await client.command("EHLO client.test")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    session = handler.session
    assert (session.client, session.peer, session.proxy) == before
    assert session.client.host == "203.0.113.7"
    assert session.client.port == 51000
    assert session.peer.host == "192.0.2.1"
    [message] = handler.messages
    assert "([203.0.113.7])" in message.received_header
    assert " with ESMTPS id " in message.received_header


# ---- policies -----------------------------------------------------------------------------------


async def test_require_tls(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    async with open_test_session(Recorder(), config=config(server_ctx, require_tls=True)) as c:
        assert (await c.command("EHLO client.test")).code == 250
        reply = await c.command("MAIL FROM:<a@example.com>")
        assert code(reply) == (530, "5.7.0")
        assert "STARTTLS" in reply.text
        assert (await c.command("STARTTLS")).code == 220
        await start_tls(c, client_ctx)
        assert (await c.command("EHLO client.test")).code == 250
        assert code(await c.command("MAIL FROM:<a@example.com>")) == (250, "2.1.0")


async def test_auth_required(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    async with tls_session(Recorder(), config(server_ctx, auth_required=True), client_ctx) as c:
        reply = await c.command("MAIL FROM:<a@example.com>")
        assert code(reply) == (530, "5.7.0")
        assert "Authentication required" in reply.text
        assert (await c.command(f"AUTH PLAIN {PLAIN_OK}")).code == 235
        assert code(await c.command("MAIL FROM:<a@example.com>")) == (250, "2.1.0")


# ---- AUTH mechanisms -----------------------------------------------------------------------------


@pytest.fixture
async def authed(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> AsyncIterator[tuple[TestClient, Recorder]]:
    """A session under TLS, after EHLO, with AUTH offered (nothing required)."""
    handler = Recorder()
    async with tls_session(handler, config(server_ctx), client_ctx) as client:
        yield client, handler


async def test_plain_with_initial_response(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert code(reply) == (235, "2.7.0")
    assert identity(handler) == USER


async def test_plain_with_authzid_of_someone_else_is_refused(
    authed: tuple[TestClient, Recorder],
) -> None:
    client, handler = authed
    blob = b64(b"bob\x00" + USER.encode() + b"\x00" + PASSWORD.encode())
    assert code(await client.command(f"AUTH PLAIN {blob}")) == (535, "5.7.8")
    assert identity(handler) is None


async def test_plain_without_initial_response(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    challenge = await client.command("AUTH PLAIN")
    assert challenge.code == 334
    assert challenge.lines == ("",)
    assert code(await client.command(PLAIN_OK)) == (235, "2.7.0")
    assert identity(handler) == USER


async def test_plain_with_empty_initial_response_is_malformed(
    authed: tuple[TestClient, Recorder],
) -> None:
    client, handler = authed
    assert code(await client.command("AUTH PLAIN =")) == (501, "5.5.2")
    assert identity(handler) is None
    assert (await client.command(f"AUTH PLAIN {PLAIN_OK}")).code == 235


async def test_login(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    first = await client.command("AUTH LOGIN")
    assert first.code == 334
    assert first.lines == ("VXNlcm5hbWU6",)
    second = await client.command(b64(USER.encode()))
    assert second.code == 334
    assert second.lines == ("UGFzc3dvcmQ6",)
    assert code(await client.command(b64(PASSWORD.encode()))) == (235, "2.7.0")
    assert identity(handler) == USER


async def test_login_with_initial_response(authed: tuple[TestClient, Recorder]) -> None:
    client, _ = authed
    second = await client.command(f"AUTH LOGIN {b64(USER.encode())}")
    assert second.lines == ("UGFzc3dvcmQ6",)
    assert code(await client.command(b64(PASSWORD.encode()))) == (235, "2.7.0")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_star_cancels(authed: tuple[TestClient, Recorder], mechanism: str) -> None:
    client, handler = authed
    assert (await client.command(f"AUTH {mechanism}")).code == 334
    assert code(await client.command("*")) == (501, "5.7.0")
    assert identity(handler) is None
    # Back to commands: "*" was the end of the exchange.
    assert code(await client.command("NOOP")) == (250, "2.0.0")
    assert (await client.command(f"AUTH PLAIN {PLAIN_OK}")).code == 235


async def test_bad_base64_initial_response(authed: tuple[TestClient, Recorder]) -> None:
    client, _ = authed
    assert code(await client.command("AUTH PLAIN not*base64")) == (501, "5.5.2")
    assert code(await client.command("AUTH PLAIN AGFsaWNl=")) == (501, "5.5.2")  # bad padding
    assert (await client.command(f"AUTH PLAIN {PLAIN_OK}")).code == 235


async def test_bad_base64_in_the_exchange(authed: tuple[TestClient, Recorder]) -> None:
    client, _ = authed
    assert (await client.command("AUTH LOGIN")).code == 334
    assert code(await client.command("%%%")) == (501, "5.5.2")
    assert code(await client.command("NOOP")) == (250, "2.0.0")


async def test_wrong_password_is_535(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    reply = await client.command(f"AUTH PLAIN {PLAIN_WRONG}")
    assert code(reply) == (535, "5.7.8")
    assert identity(handler) is None
    assert code(await client.command("NOOP")) == (250, "2.0.0")


async def test_unknown_user_is_535(authed: tuple[TestClient, Recorder]) -> None:
    client, _ = authed
    blob = b64(b"\x00mallory\x00" + PASSWORD.encode())
    assert code(await client.command(f"AUTH PLAIN {blob}")) == (535, "5.7.8")


async def test_third_failure_closes_with_421(authed: tuple[TestClient, Recorder]) -> None:
    client, _ = authed
    assert code(await client.command(f"AUTH PLAIN {PLAIN_WRONG}")) == (535, "5.7.8")
    assert (await client.command("AUTH LOGIN")).code == 334
    assert (await client.command(b64(USER.encode()))).code == 334
    assert code(await client.command(b64(b"nope"))) == (535, "5.7.8")
    assert code(await client.command(f"AUTH PLAIN {PLAIN_WRONG}")) == (421, "4.7.0")
    assert await client.at_eof()


async def test_max_auth_failures_is_configurable(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with tls_session(Recorder(), config(server_ctx, max_auth_failures=1), client_ctx) as c:
        assert code(await c.command(f"AUTH PLAIN {PLAIN_WRONG}")) == (421, "4.7.0")
        assert await c.at_eof()


async def test_unknown_mechanism_is_504(authed: tuple[TestClient, Recorder]) -> None:
    client, _ = authed
    assert code(await client.command("AUTH CRAM-MD5")) == (504, "5.5.4")
    assert code(await client.command("AUTH")) == (501, "5.5.4")


async def test_auth_twice_is_503(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    assert (await client.command(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert code(reply) == (503, "5.5.1")
    assert "Already authenticated" in reply.text
    assert identity(handler) == USER


async def test_auth_during_a_transaction_is_503(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
    assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (503, "5.5.1")
    assert (await client.command("RCPT TO:<b@example.org>")).code == 250
    assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (503, "5.5.1")
    assert identity(handler) is None


async def test_auth_before_ehlo_is_503(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    cfg = config(server_ctx, implicit_tls=True)
    async with open_test_session(Recorder(), config=cfg, read_greeting=False) as client:
        await start_tls(client, client_ctx)
        assert (await client.read_reply()).code == 220
        reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
        assert code(reply) == (503, "5.5.1")
        assert "EHLO" in reply.text


class Boom(Exception):
    pass


async def failing_authenticator(session: Session, credentials: object) -> str | None:
    raise Boom("directory at ldap://10.1.2.3 unreachable")


async def test_authenticator_raising_is_454_without_its_text(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    cfg = config(server_ctx, authenticator=failing_authenticator)
    async with tls_session(handler, cfg, client_ctx) as client:
        reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
        assert code(reply) == (454, "4.7.0")
        assert identity(handler) is None
        # A temporary failure: the client may try again.
        assert (await client.command(f"AUTH PLAIN {PLAIN_OK}")).code == 454
        transcript = bytes(client.transcript)
    assert b"ldap" not in transcript
    assert b"Boom" not in transcript
    assert any(r.exc_info and "authenticator failed" in r.getMessage() for r in caplog.records)


# A pluggable mechanism: a toy XOAUTH2 (one response: user=...^Aauth=Bearer token^A^A).


@attrs.frozen
class BearerToken:
    """Credentials with an ordinary repr, token included: the server must not log it."""

    user: str
    token: str


class _XOAuth2Exchange:
    def step(self, response: bytes | None) -> Challenge | BearerToken:
        if response is None:
            return Challenge(b"")
        fields = response.split(b"\x01")
        if len(fields) != 4 or fields[2:] != [b"", b""]:
            raise SASLError("XOAUTH2 response must be user=...^Aauth=...^A^A")
        user, auth = fields[0], fields[1]
        if not user.startswith(b"user=") or not auth.startswith(b"auth=Bearer "):
            raise SASLError("XOAUTH2 response needs user= and auth=Bearer")
        return BearerToken(user[5:].decode(), auth[len(b"auth=Bearer ") :].decode())


class XOAuth2:
    name = "XOAUTH2"

    def start(self) -> SASLExchange:
        return _XOAuth2Exchange()


class ToyMechanism:
    """A second custom name, to see several are advertised in order."""

    name = "X-TOY"

    def start(self) -> SASLExchange:
        return _XOAuth2Exchange()


TOKEN = "ya29.secret-token"


async def token_authenticator(session: Session, credentials: object) -> str | None:
    if isinstance(credentials, BearerToken) and credentials.token == TOKEN:
        return credentials.user
    return None


async def test_custom_mechanism(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpd_trio")
    handler = Recorder()
    cfg = config(
        server_ctx, authenticator=token_authenticator, auth_mechanisms=(XOAuth2(), ToyMechanism())
    )
    async with open_test_session(handler, config=cfg) as client:
        assert (await client.command("STARTTLS")).code == 220
        await start_tls(client, client_ctx)
        ehlo = await client.command("EHLO client.test")
        assert "AUTH XOAUTH2 X-TOY" in ehlo.lines
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (504, "5.5.4")
        bad = b64(b"user=carol@example.org\x01auth=Bearer expired\x01\x01")
        assert code(await client.command(f"AUTH XOAUTH2 {bad}")) == (535, "5.7.8")
        assert code(await client.command(f"AUTH xoauth2 {b64(b'garbage')}")) == (501, "5.5.2")
        good = b64(f"user=carol@example.org\x01auth=Bearer {TOKEN}\x01\x01".encode())
        assert (await client.command("AUTH XOAUTH2")).code == 334
        assert code(await client.command(good)) == (235, "2.7.0")
    assert identity(handler) == "carol@example.org"
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]
    assert not [r for r in caplog.records if "expired" in r.getMessage()]


# ---- what AUTH and TLS leave behind: Received, session.tls, logs --------------------------------


async def test_received_says_esmtpsa_after_starttls_and_auth(
    authed: tuple[TestClient, Recorder],
) -> None:
    client, handler = authed
    assert (await client.command(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    [message] = handler.messages
    assert " with ESMTPSA id " in message.received_header


async def test_received_says_esmtps_with_tls_only(authed: tuple[TestClient, Recorder]) -> None:
    client, handler = authed
    assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    [message] = handler.messages
    assert " with ESMTPS id " in message.received_header


async def test_received_says_esmtpa_with_auth_over_plaintext() -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config(auth_over_plaintext=True)) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (235, "2.7.0")
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    assert tls_info(handler) is None
    [message] = handler.messages
    assert " with ESMTPA id " in message.received_header


async def test_password_never_logged_nor_in_repr(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpd_trio")
    handler = Recorder()
    async with tls_session(handler, config(server_ctx), client_ctx) as client:
        assert (await client.command(f"AUTH PLAIN {PLAIN_WRONG}")).code == 535
        assert (await client.command("AUTH LOGIN")).code == 334
        assert (await client.command(b64(USER.encode()))).code == 334
        assert (await client.command(b64(b"wrong-" + PASSWORD.encode()))).code == 535
        assert (await client.command("AUTH PLAIN")).code == 334
        assert (await client.command(PLAIN_OK)).code == 235
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    texts = [r.getMessage() for r in caplog.records]
    assert any("authentication failed" in t for t in texts)
    assert any(f"authenticated as {USER}" in t for t in texts)
    for text in texts:
        assert PASSWORD not in text
        assert PLAIN_OK not in text
        assert "wrong" not in text
    assert PASSWORD not in repr(handler.session)
    assert PASSWORD not in repr(handler.messages)
    credentials = LoginCredentials(USER, PASSWORD)
    assert PASSWORD not in repr(credentials)
    assert PASSWORD not in str(credentials)
    assert USER in repr(credentials)


# ---- session.tls ------------------------------------------------------------------------------


async def test_session_tls_facts(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert tls_info(handler) is None
        assert (await client.command("STARTTLS")).code == 220
        tls = await start_tls(client, client_ctx)
        assert (await client.command("NOOP")).code == 250  # the server's handshake is done too
        info = tls_info(handler)
        assert info is not None
        assert info.version == "TLSv1.3"
        assert tls.version() == "TLSv1.3"
        cipher = tls.cipher()
        assert cipher is not None
        assert info.cipher == cipher[0]
        assert info.server_name == "mx.test"
        assert info.peer_certificate is None


async def test_session_tls_without_sni(
    ca: trustme.CA, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    client_ctx.check_hostname = False
    handler = Recorder()
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("STARTTLS")).code == 220
        await start_tls(client, client_ctx, server_hostname=None)
        assert (await client.command("NOOP")).code == 250
    info = tls_info(handler)
    assert info is not None
    assert info.server_name is None


async def test_other_sni_names_are_recorded(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("STARTTLS")).code == 220
        await start_tls(client, client_ctx, server_hostname="localhost")
        assert (await client.command("NOOP")).code == 250
    info = tls_info(handler)
    assert info is not None
    assert info.server_name == "localhost"


async def test_client_certificate_is_recorded_when_required(
    ca: trustme.CA, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.issue_cert("relay.client.test").configure_cert(client_ctx)
    handler = Recorder()
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("STARTTLS")).code == 220
        await start_tls(client, client_ctx)
        # TLS 1.3 checks the client certificate after the client's handshake is done: the
        # first reply proves the server accepted it.
        assert code(await client.command("NOOP")) == (250, "2.0.0")
    info = tls_info(handler)
    assert info is not None
    assert info.peer_certificate is not None
    assert ("DNS", "relay.client.test") in info.peer_certificate["subjectAltName"]


async def test_missing_client_certificate_fails_the_handshake(
    ca: trustme.CA,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    handler = Recorder()
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("STARTTLS")).code == 220
        tls = trio.SSLStream(client.stream, client_ctx, server_hostname="mx.test")

        async def talk() -> None:
            # Under TLS 1.3 the client may finish its side first; the refusal is an alert.
            await tls.do_handshake()
            await tls.send_all(b"NOOP\r\n")
            await tls.receive_some(100)

        with pytest.raises(trio.BrokenResourceError):
            await talk()
    assert tls_info(handler) is None
    assert [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]


# ---- handshake failures -----------------------------------------------------------------------


async def test_garbage_instead_of_a_client_hello(
    server_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    async with open_test_session(handler, config=config(server_ctx)) as client:
        assert (await client.command("STARTTLS")).code == 220
        await client.send(b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n")
        rest = await read_to_eof(client.stream)
    assert b"220" not in rest
    assert b"421" not in rest
    assert tls_info(handler) is None
    failed = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert [r for r in caplog.records if "closed" in r.getMessage()]


async def test_garbage_under_implicit_tls(
    server_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    cfg = config(server_ctx, implicit_tls=True)
    async with open_test_session(Recorder(), config=cfg, read_greeting=False) as client:
        await client.send(b"EHLO plaintext.test\r\n")
        rest = await read_to_eof(client.stream)
    assert b"220" not in rest
    assert [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_client_that_never_handshakes_is_dropped(
    server_ctx: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    cfg = config(server_ctx, tls_handshake_timeout=7)
    async with open_test_session(Recorder(), config=cfg) as client:
        assert (await client.command("STARTTLS")).code == 220
        start = trio.current_time()
        rest = await read_to_eof(client.stream)
        waited = trio.current_time() - start
    assert rest == b""
    assert 7 <= waited < 8
    assert [r for r in caplog.records if "TLS handshake timed out" in r.getMessage()]


async def test_implicit_tls_client_that_never_handshakes_is_dropped(
    server_ctx: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = config(server_ctx, implicit_tls=True, tls_handshake_timeout=3)
    async with open_test_session(Recorder(), config=cfg, read_greeting=False) as client:
        start = trio.current_time()
        assert await read_to_eof(client.stream) == b""
        assert 3 <= trio.current_time() - start < 4


# ---- implicit TLS ------------------------------------------------------------------------------


async def test_implicit_tls_banner_comes_after_the_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    handler = Recorder()
    cfg = config(server_ctx, implicit_tls=True)
    async with open_test_session(handler, config=cfg, read_greeting=False) as client:
        with trio.move_on_after(10):
            early = await client.stream.receive_some(65536)
            pytest.fail(f"the server spoke before the handshake: {early!r}")
        assert handler.sessions == []  # on_connect waits for TLS too
        await start_tls(client, client_ctx)
        greeting = await client.read_reply()
        assert greeting.code == 220
        assert greeting.lines[0].startswith("mx.test ")
        assert tls_info(handler) is not None


async def test_auth_under_implicit_tls(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    cfg = config(server_ctx, implicit_tls=True, auth_required=True)
    async with open_test_session(handler, config=cfg, read_greeting=False) as client:
        await start_tls(client, client_ctx)
        assert (await client.read_reply()).code == 220
        ehlo = await client.command("EHLO client.test")
        assert "AUTH PLAIN LOGIN" in ehlo.lines
        assert "STARTTLS" not in ehlo.lines
        assert code(await client.command("STARTTLS")) == (503, "5.5.1")
        assert code(await client.command("MAIL FROM:<a@example.com>")) == (530, "5.7.0")
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (235, "2.7.0")
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    assert identity(handler) == USER
    [message] = handler.messages
    assert " with ESMTPSA id " in message.received_header


# ---- the sans-IO machine ----------------------------------------------------------------------

TLS = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")


def machine(*, tls: bool = False, **fields: Any) -> SMTPMachine:
    m = SMTPMachine(smtp_settings(**fields), session_id="t")
    if tls:
        m.tls_established(TLS)  # implicit TLS: before the greeting
    assert isinstance(m.next_event(), Connect)
    m.respond(None)
    m.data_to_send()
    return m


def state(m: SMTPMachine) -> State:
    return m.state


def feed(m: SMTPMachine, data: bytes) -> Event | NeedData:
    m.receive_data(data)
    return m.next_event()


def sent(m: SMTPMachine) -> list[bytes]:
    return m.data_to_send().split(b"\r\n")[:-1]


def ehlo(m: SMTPMachine) -> list[bytes]:
    assert isinstance(feed(m, b"EHLO client.test\r\n"), Hello)
    m.respond(None)
    return sent(m)


PLAIN_LOGIN = (Plain(), Login())


def test_machine_ehlo_keywords() -> None:
    def keywords(tls: bool, **fields: Any) -> list[str]:
        return smtp_settings(**fields).ehlo_keywords(tls)

    assert "STARTTLS" not in keywords(False)
    assert "STARTTLS" in keywords(False, starttls=True)
    assert "STARTTLS" not in keywords(True, starttls=True)
    assert not [k for k in keywords(False, auth_mechanisms=PLAIN_LOGIN) if k.startswith("AUTH")]
    assert "AUTH PLAIN LOGIN" in keywords(True, auth_mechanisms=PLAIN_LOGIN)
    assert "AUTH PLAIN LOGIN" in keywords(
        False, auth_mechanisms=PLAIN_LOGIN, auth_over_plaintext=True
    )
    # The machine sends the list that fits its TLS state.
    assert b"250-STARTTLS" in b"\r\n".join(ehlo(machine(starttls=True)))
    assert b"250-STARTTLS" not in b"\r\n".join(ehlo(machine(starttls=True, tls=True)))


def test_machine_starttls_discards_the_rest_and_starts_afresh() -> None:
    m = machine(starttls=True, auth_mechanisms=(Plain(),), auth_over_plaintext=True)
    ehlo(m)
    assert isinstance(feed(m, b"AUTH PLAIN " + b64(b"\0u\0right").encode() + b"\r\n"), Authenticate)
    m.auth_result("u")
    assert sent(m) == [b"235 2.7.0 Authentication successful"]
    assert (m.facts.helo_name, m.facts.authenticated_as) == ("client.test", "u")
    tail = b"EHLO x\r\nMAIL FROM:<x@evil>\r\n"
    event = feed(m, b"STARTTLS\r\n" + tail)
    assert event == StartTLS(discarded=len(tail))
    assert sent(m) == [b"220 2.0.0 Ready to start TLS"]
    assert state(m) is State.TLS_HANDSHAKE
    with pytest.raises(RuntimeError):
        m.next_event()
    # Plaintext arriving before the I/O layer wraps the stream is not executed either.
    m.receive_data(b"RSET\r\n")
    m.tls_established(TLS)
    facts = m.facts
    assert (m.state, facts.tls, facts.authenticated_as, facts.extended, facts.helo_name) == (
        State.CONNECTED,
        TLS,
        None,
        False,
        None,
    )
    assert m.next_event() is NEED_DATA
    assert sent(m) == []
    event = feed(m, b"RCPT TO:<v@y>\r\n")
    assert isinstance(event, CommandRejected)
    assert event.reply.code == 503
    assert "STARTTLS" not in " ".join(k.decode() for k in ehlo(m))
    with pytest.raises(RuntimeError):
        m.tls_established(TLS)


def test_machine_tls_failure_closes_without_a_word() -> None:
    m = machine(starttls=True)
    ehlo(m)
    assert isinstance(feed(m, b"STARTTLS\r\n"), StartTLS)
    sent(m)
    m.close(CloseReason.TLS_FAILED)
    assert sent(m) == []
    assert m.next_event() == Closed(CloseReason.TLS_FAILED)


def test_machine_starttls_replies() -> None:
    m = machine(starttls=True)
    ehlo(m)
    event = feed(m, b"STARTTLS x\r\n")
    assert isinstance(event, CommandRejected)
    assert sent(m) == [b"501 5.5.4 Syntax error: STARTTLS takes no argument"]
    assert feed(m, b"MAIL FROM:<a@b.example>\r\n") is not NEED_DATA
    m.respond(None)
    sent(m)
    event = feed(m, b"STARTTLS\r\n")
    assert isinstance(event, CommandRejected)
    assert sent(m) == [b"503 5.5.1 Bad sequence of commands"]
    no_tls = machine()
    assert isinstance(feed(no_tls, b"STARTTLS\r\n"), CommandRejected)
    assert sent(no_tls) == [b"502 5.5.1 Command not implemented"]
    m2 = machine(starttls=True, tls=True)
    assert isinstance(feed(m2, b"STARTTLS\r\n"), CommandRejected)
    assert sent(m2) == [b"503 5.5.1 TLS already active"]


def test_machine_runs_the_sasl_exchange_and_asks_only_for_the_decision() -> None:
    m = machine(auth_mechanisms=PLAIN_LOGIN, tls=True)
    event = feed(m, b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert isinstance(event, CommandRejected)
    assert sent(m) == [b"503 5.5.1 Send EHLO first"]
    ehlo(m)
    # LOGIN: the machine asks for the user name and the password itself (334s)...
    assert feed(m, b"AUTH login\r\n") is NEED_DATA
    assert sent(m) == [b"334 VXNlcm5hbWU6"]
    assert state(m) is State.AUTH
    assert feed(m, b64(USER.encode()).encode() + b"\r\n") is NEED_DATA
    assert sent(m) == [b"334 UGFzc3dvcmQ6"]
    # ...and only the finished credentials are a decision.
    event = feed(m, b64(PASSWORD.encode()).encode() + b"\r\n")
    assert isinstance(event, Authenticate)
    assert event.mechanism == "LOGIN"
    assert event.credentials == LoginCredentials(USER, PASSWORD)
    assert PASSWORD not in repr(event)
    with pytest.raises(RuntimeError, match="auth_result"):
        m.respond(None)
    m.auth_result(USER)
    assert sent(m) == [b"235 2.7.0 Authentication successful"]
    assert m.facts.authenticated_as == USER
    assert state(m) is State.READY
    assert isinstance(feed(m, b"AUTH PLAIN\r\n"), CommandRejected)
    assert sent(m) == [b"503 5.5.1 Already authenticated"]


def test_machine_auth_cancel_bad_base64_and_malformed_responses() -> None:
    m = machine(auth_mechanisms=(Plain(),), auth_over_plaintext=True)
    ehlo(m)
    assert feed(m, b"AUTH PLAIN\r\n") is NEED_DATA
    assert sent(m) == [b"334 "]
    event = feed(m, b"*\r\n")
    assert isinstance(event, CommandRejected)
    assert event.reply.code == 501
    assert sent(m) == [b"501 5.7.0 Authentication cancelled"]
    assert feed(m, b"AUTH PLAIN\r\n") is NEED_DATA
    sent(m)
    assert isinstance(feed(m, b"!!!!\r\n"), CommandRejected)
    assert sent(m) == [b"501 5.5.2 Cannot decode response: not valid base64"]
    assert isinstance(feed(m, b"AUTH PLAIN !!!!\r\n"), CommandRejected)
    assert sent(m) == [b"501 5.5.2 Cannot decode response: not valid base64"]
    # "=" is an empty initial response: base64 is fine, but PLAIN cannot use it.
    event = feed(m, b"AUTH PLAIN =\r\n")
    assert isinstance(event, CommandRejected)
    assert sent(m) == [b"501 5.5.2 Malformed authentication response"]


def test_machine_auth_failures_and_gating() -> None:
    m = machine(auth_mechanisms=(Plain(),), tls=True, auth_required=True)
    ehlo(m)
    assert isinstance(feed(m, b"MAIL FROM:<a@b.example>\r\n"), CommandRejected)
    assert sent(m) == [b"530 5.7.0 Authentication required"]
    for _ in range(2):
        event = feed(m, b"AUTH PLAIN " + PLAIN_WRONG.encode() + b"\r\n")
        assert isinstance(event, Authenticate)
        m.auth_result(None)
        assert sent(m) == [b"535 5.7.8 Authentication credentials invalid"]
    assert isinstance(feed(m, b"AUTH PLAIN " + PLAIN_WRONG.encode() + b"\r\n"), Authenticate)
    m.fail()  # the authenticator broke: a temporary failure, which counts too
    assert sent(m) == [b"421 4.7.0 Too many failed authentication attempts, closing connection"]
    assert state(m) is State.CLOSED


@pytest.mark.parametrize(
    ("answer", "sent_back"),
    [
        ("fail", b"454 4.7.0 Temporary authentication failure"),
        (Reply(550), b"550 5.7.0 "),
        (Reply(454, "4.7.0", "Come back later"), b"454 4.7.0 Come back later"),
    ],
)
def test_machine_auth_refusals(answer: object, sent_back: bytes) -> None:
    m = machine(auth_mechanisms=(Plain(),), tls=True)
    ehlo(m)
    assert isinstance(feed(m, b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n"), Authenticate)
    if answer == "fail":
        m.fail()
    else:
        assert isinstance(answer, Reply)
        m.respond(answer)
    assert sent(m) == [sent_back]
    assert m.facts.authenticated_as is None


class _Explained:
    """An exchange whose refusals carry a last challenge (like OAUTHBEARER's error)."""

    def __init__(self, explanation: bytes | None) -> None:
        self.explanation = explanation

    def step(self, response: bytes | None) -> Challenge | LoginCredentials:
        if response is None:
            return Challenge(b"")
        user, _, password = response.decode().partition(":")
        return LoginCredentials(user, password)

    def refused(self) -> Challenge | None:
        return None if self.explanation is None else Challenge(self.explanation)


class Explained:
    name = "X-EXPLAINED"

    def __init__(self, explanation: bytes | None = b"why") -> None:
        self.explanation = explanation

    def start(self) -> SASLExchange:
        return _Explained(self.explanation)


@pytest.mark.parametrize("last_word", [b"AQ==", b"", b"*", b"%%%", b"AUTH PLAIN"])
def test_machine_refusal_sends_the_mechanisms_last_challenge_first(last_word: bytes) -> None:
    m = machine(auth_mechanisms=(Explained(),), tls=True, max_auth_failures=2)
    ehlo(m)
    event = feed(m, b"AUTH X-EXPLAINED " + b64(b"u:wrong").encode() + b"\r\n")
    assert isinstance(event, Authenticate)
    m.auth_result(None)
    assert sent(m) == [b"334 " + b64(b"why").encode()]
    assert state(m) is State.AUTH
    # Whatever the client answers ends the attempt: 535, one failure, no protocol error.
    assert feed(m, last_word + b"\r\n") is NEED_DATA
    assert sent(m) == [b"535 5.7.8 Authentication credentials invalid"]
    assert (state(m), m.errors, m.facts.authenticated_as) == (State.READY, 0, None)
    # The second failure is the last: the 421 comes in place of the 535, after the last word.
    assert isinstance(feed(m, b"AUTH X-EXPLAINED " + b64(b"u:x").encode() + b"\r\n"), Authenticate)
    m.auth_result(None)
    assert sent(m) == [b"334 " + b64(b"why").encode()]
    assert isinstance(feed(m, last_word + b"\r\n"), Closed)
    assert sent(m) == [b"421 4.7.0 Too many failed authentication attempts, closing connection"]


def test_machine_refusal_answers_at_once_without_a_last_challenge() -> None:
    m = machine(auth_mechanisms=(Explained(None),), tls=True)
    ehlo(m)
    assert isinstance(feed(m, b"AUTH X-EXPLAINED " + b64(b"u:x").encode() + b"\r\n"), Authenticate)
    m.auth_result(None)
    assert sent(m) == [b"535 5.7.8 Authentication credentials invalid"]
    assert state(m) is State.READY


@pytest.mark.parametrize("answer", ["fail", "reply", "success"])
def test_machine_only_a_plain_refusal_sends_the_last_challenge(answer: str) -> None:
    m = machine(auth_mechanisms=(Explained(),), tls=True)
    ehlo(m)
    assert isinstance(feed(m, b"AUTH X-EXPLAINED " + b64(b"u:x").encode() + b"\r\n"), Authenticate)
    if answer == "fail":
        m.fail()
        assert sent(m) == [b"454 4.7.0 Temporary authentication failure"]
    elif answer == "reply":
        m.respond(Reply(454, "4.7.0", "Directory unavailable"))
        assert sent(m) == [b"454 4.7.0 Directory unavailable"]
    else:
        m.auth_result("u")
        assert sent(m) == [b"235 2.7.0 Authentication successful"]
    assert state(m) is State.READY
    assert feed(m, b"NOOP\r\n") is NEED_DATA
    assert sent(m) == [b"250 2.0.0 OK"]


def test_machine_require_tls_and_plaintext_auth() -> None:
    m = machine(starttls=True, require_tls=True, auth_mechanisms=(Plain(),))
    ehlo(m)
    assert isinstance(feed(m, b"MAIL FROM:<a@b.example>\r\n"), CommandRejected)
    assert sent(m) == [b"530 5.7.0 Must issue a STARTTLS command first"]
    assert isinstance(feed(m, b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n"), CommandRejected)
    assert sent(m) == [b"538 5.7.11 Encryption required for requested authentication mechanism"]


def test_auth_event_hides_the_credentials_in_repr() -> None:
    event = Authenticate("PLAIN", LoginCredentials("alice", PASSWORD))
    assert PASSWORD not in repr(event)
    assert "alice" not in repr(event)


# ---- PROXY protocol in front of implicit TLS ------------------------------------------------


class CoalescingStream(trio.abc.Stream):
    """Sends ``prefix`` glued to the first write, as a load balancer may deliver its PROXY
    header and the client's first bytes (a TLS ClientHello) in one segment."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self.prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data, self.prefix = self.prefix + bytes(data), b""
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_implicit_tls_behind_proxy_with_client_hello_in_the_header_segment(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    cfg = config(
        server_ctx, implicit_tls=True, proxy_protocol=True, trusted_proxies=["192.0.2.0/24"]
    )
    header = b"PROXY TCP4 203.0.113.7 198.51.100.25 51000 465\r\n"
    async with open_test_session(handler, config=cfg, read_greeting=False) as client:
        client.stream = CoalescingStream(client.stream, header)
        with trio.fail_after(5):
            await start_tls(client, client_ctx)
            assert (await client.read_reply()).code == 220
        assert "AUTH PLAIN LOGIN" in (await client.command("EHLO client.test")).lines
        assert code(await client.command(f"AUTH PLAIN {PLAIN_OK}")) == (235, "2.7.0")
    assert handler.session.client.host == "203.0.113.7"
    assert tls_info(handler) is not None


@pytest.mark.parametrize("text", ["AAAA=", "AGFsaWNl=", "AAAA==", "AA=A", "A===", "AAA==="])
def test_excess_or_misplaced_base64_padding_is_malformed(text: str) -> None:
    # CPython's strict mode takes "AAAA=" before 3.13; the server never does.
    assert decode_response(text) is None


@pytest.mark.parametrize(
    ("text", "data"), [("=", b""), ("AA==", b"\0"), ("AAA=", b"\0\0"), ("AAAA", b"\0\0\0")]
)
def test_well_formed_base64_decodes(text: str, data: bytes) -> None:
    assert decode_response(text) == data
