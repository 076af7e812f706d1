"""OAUTHBEARER (RFC 7628) and XOAUTH2 exchanges end to end: in the sans-IO machine (what goes
on the wire, line by line), then in whole sessions over memory streams, under STARTTLS.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from machine_driver import smtp_settings

from smtpd_trio import Config, Handler, Message, Reject, Reply, Session, TLSInfo
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Authenticate,
    Closed,
    CommandRejected,
    Connect,
    Event,
    Hello,
    NeedData,
)
from smtpd_trio._smtp.machine import SMTPMachine, State
from smtpd_trio._smtp.oauth import oauthbearer_response, xoauth2_response
from smtpd_trio.auth import (
    BearerCredentials,
    Login,
    OAuthBearer,
    Plain,
    StaticAuthenticator,
    XOAuth2,
)
from smtpd_trio.testing import ClientReply, TestClient, TLSContexts, open_test_session, tls_contexts

SCOPE = "https://mail.example.org/"
ERROR = {"status": "invalid_token", "schemes": "bearer", "scope": SCOPE}
ALL_FOUR = (Plain(), Login(), OAuthBearer(scope=SCOPE), XOAuth2(scope=SCOPE))
TOKEN = "ya29.a0-good_token~1"
OWNER = "alice@example.org"
EXPIRED = "ya29.expired"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def code(reply: ClientReply) -> tuple[int, str | None]:
    return reply.code, reply.enhanced


def error_challenge(line: bytes) -> object:
    """The JSON object in a ``334 <base64>`` line."""
    assert line.startswith(b"334 ")
    return json.loads(base64.b64decode(line[4:], validate=True))


# ---- the sans-IO machine ----------------------------------------------------------------------

TLS = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
FAILED = b"535 5.7.8 Authentication credentials invalid"
TOO_MANY = b"421 4.7.0 Too many failed authentication attempts, closing connection"


def machine(**fields: Any) -> SMTPMachine:
    """A machine under implicit TLS, through the greeting and EHLO."""
    fields.setdefault("auth_mechanisms", ALL_FOUR)
    m = SMTPMachine(smtp_settings(**fields), session_id="t")
    m.tls_established(TLS)
    assert isinstance(m.next_event(), Connect)
    m.respond(None)
    m.data_to_send()
    assert isinstance(feed(m, b"EHLO client.test\r\n"), Hello)
    m.respond(None)
    m.data_to_send()
    return m


def feed(m: SMTPMachine, data: bytes) -> Event | NeedData:
    m.receive_data(data)
    return m.next_event()


def sent(m: SMTPMachine) -> list[bytes]:
    return m.data_to_send().split(b"\r\n")[:-1]


def authenticate(m: SMTPMachine, line: bytes) -> BearerCredentials:
    """Feed an AUTH line (or a response), expect the Authenticate decision."""
    event = feed(m, line + b"\r\n")
    assert isinstance(event, Authenticate), event
    assert sent(m) == []
    assert isinstance(event.credentials, BearerCredentials)
    return event.credentials


def fail_token(m: SMTPMachine, mechanism: bytes, response: bytes, dummy: bytes) -> list[bytes]:
    """One refused token: the AUTH line, the refusal, the client's last word; what was sent."""
    authenticate(m, b"AUTH " + mechanism + b" " + b64(response))
    m.auth_result(None)
    assert error_challenge(sent(m)[0]) == ERROR
    assert state(m) is State.AUTH
    m.receive_data(dummy + b"\r\n")
    event = m.next_event()
    assert event is NEED_DATA or isinstance(event, Closed)
    return sent(m)


def state(m: SMTPMachine) -> State:
    return m.state


def test_offered_only_when_configured() -> None:
    default = smtp_settings(auth_mechanisms=(Plain(), Login()))
    assert "AUTH PLAIN LOGIN" in default.ehlo_keywords(True)
    assert "AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2" in smtp_settings(
        auth_mechanisms=ALL_FOUR
    ).ehlo_keywords(True)
    m = machine(auth_mechanisms=(Plain(), Login()))
    assert isinstance(feed(m, b"AUTH OAUTHBEARER " + b64(b"x") + b"\r\n"), CommandRejected)
    assert sent(m) == [b"504 5.5.4 Unrecognized authentication type"]


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        (b"OAUTHBEARER", oauthbearer_response(OWNER, TOKEN, host="mx.test", port=465)),
        (b"oauthbearer", oauthbearer_response(None, TOKEN)),
        (b"XOAUTH2", xoauth2_response(OWNER, TOKEN)),
    ],
)
def test_success_with_initial_response(mechanism: bytes, response: bytes) -> None:
    m = machine()
    credentials = authenticate(m, b"AUTH " + mechanism + b" " + b64(response))
    assert credentials.token == TOKEN
    m.auth_result(OWNER)
    assert sent(m) == [b"235 2.7.0 Authentication successful"]
    assert (state(m), m.facts.authenticated_as) == (State.READY, OWNER)


@pytest.mark.parametrize(
    ("mechanism", "response", "expected"),
    [
        (
            b"OAUTHBEARER",
            oauthbearer_response(OWNER, TOKEN, host="mx.test", port=587),
            BearerCredentials(OWNER, TOKEN, "mx.test", 587),
        ),
        (b"XOAUTH2", xoauth2_response(OWNER, TOKEN), BearerCredentials(OWNER, TOKEN)),
    ],
)
def test_success_after_a_334_prompt(
    mechanism: bytes, response: bytes, expected: BearerCredentials
) -> None:
    m = machine()
    assert feed(m, b"AUTH " + mechanism + b"\r\n") is NEED_DATA
    assert sent(m) == [b"334 "]
    assert authenticate(m, b64(response)) == expected
    m.auth_result(OWNER)
    assert sent(m) == [b"235 2.7.0 Authentication successful"]


@pytest.mark.parametrize(
    ("mechanism", "response", "dummy"),
    [
        (b"OAUTHBEARER", oauthbearer_response(OWNER, EXPIRED), b"AQ=="),  # ^A, RFC 7628 §3.2.3
        (b"XOAUTH2", xoauth2_response(OWNER, EXPIRED), b""),  # an empty line, as Gmail asks
        # Whatever the client answers, the exchange is over: "*" too, and anything else.
        (b"OAUTHBEARER", oauthbearer_response(OWNER, EXPIRED), b"*"),
        (b"XOAUTH2", xoauth2_response(OWNER, EXPIRED), b"*"),
        (b"XOAUTH2", xoauth2_response(OWNER, EXPIRED), b"AQ=="),
        (b"OAUTHBEARER", oauthbearer_response(OWNER, EXPIRED), b"not base64!"),
        (b"OAUTHBEARER", oauthbearer_response(OWNER, EXPIRED), b"QUIT"),
    ],
)
def test_refused_token_error_challenge_then_dummy_then_535(
    mechanism: bytes, response: bytes, dummy: bytes
) -> None:
    m = machine()
    assert fail_token(m, mechanism, response, dummy) == [FAILED]
    assert (state(m), m.facts.authenticated_as, m.errors) == (State.READY, None, 0)
    # Back to commands; the next attempt is a fresh exchange.
    assert feed(m, b"NOOP\r\n") is NEED_DATA
    assert sent(m) == [b"250 2.0.0 OK"]
    authenticate(m, b"AUTH " + mechanism + b" " + b64(response.replace(b"expired", b"renewed")))
    m.auth_result(OWNER)
    assert sent(m) == [b"235 2.7.0 Authentication successful"]


def test_the_error_challenge_arrives_after_a_334_prompt_too() -> None:
    m = machine()
    assert feed(m, b"AUTH XOAUTH2\r\n") is NEED_DATA
    assert sent(m) == [b"334 "]
    authenticate(m, b64(xoauth2_response(OWNER, EXPIRED)))
    m.auth_result(None)
    assert error_challenge(sent(m)[0]) == ERROR
    assert feed(m, b"\r\n") is NEED_DATA
    assert sent(m) == [FAILED]


def test_pipelined_dummy_response_is_answered_after_the_decision() -> None:
    # A client that sends its dummy response early is not served early: the decision comes
    # first, then the error challenge and the 535, in order.
    m = machine()
    m.receive_data(
        b"AUTH OAUTHBEARER " + b64(oauthbearer_response(None, EXPIRED)) + b"\r\nAQ==\r\n"
    )
    assert isinstance(m.next_event(), Authenticate)
    m.auth_result(None)
    assert m.next_event() is NEED_DATA
    lines = sent(m)
    assert len(lines) == 2
    assert error_challenge(lines[0]) == ERROR
    assert lines[1] == FAILED


def test_too_many_failures_end_with_421_after_the_last_dummy() -> None:
    m = machine(max_auth_failures=3)
    expired = oauthbearer_response(OWNER, EXPIRED)
    assert fail_token(m, b"OAUTHBEARER", expired, b"AQ==") == [FAILED]
    # A malformed response (501) counts as a failure too...
    assert isinstance(
        feed(m, b"AUTH OAUTHBEARER " + b64(b"n,,\x01\x01") + b"\r\n"), CommandRejected
    )
    assert sent(m) == [b"501 5.5.2 Malformed authentication response"]
    # ...so the third refusal still sends its error challenge, then 421 in place of the 535.
    assert fail_token(m, b"XOAUTH2", xoauth2_response(OWNER, EXPIRED), b"") == [TOO_MANY]
    assert state(m) is State.CLOSED
    assert isinstance(m.next_event(), Closed)


def test_star_at_the_first_prompt_still_cancels() -> None:
    # Before any token was sent, "*" is the usual cancel (RFC 4954 §4), not a failure.
    m = machine()
    assert feed(m, b"AUTH OAUTHBEARER\r\n") is NEED_DATA
    assert sent(m) == [b"334 "]
    event = feed(m, b"*\r\n")
    assert isinstance(event, CommandRejected)
    assert sent(m) == [b"501 5.7.0 Authentication cancelled"]


@pytest.mark.parametrize(
    ("response", "sent_back"),
    [
        (b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01", b"501 5.5.2"),  # channel binding
        (b"n,,\x01auth=Bearer t\x01", b"501 5.5.2"),
        (b"\x01", b"501 5.5.2"),
    ],
)
def test_malformed_responses_are_501(response: bytes, sent_back: bytes) -> None:
    m = machine()
    event = feed(m, b"AUTH OAUTHBEARER " + b64(response) + b"\r\n")
    assert isinstance(event, CommandRejected)
    assert event.reply.code == 501
    [line] = sent(m)
    assert line.startswith(sent_back)
    assert state(m) is State.READY


def test_a_temporary_failure_or_a_handlers_reply_sends_no_error_challenge() -> None:
    m = machine()
    authenticate(m, b"AUTH XOAUTH2 " + b64(xoauth2_response(OWNER, TOKEN)))
    m.fail()
    assert sent(m) == [b"454 4.7.0 Temporary authentication failure"]
    authenticate(m, b"AUTH XOAUTH2 " + b64(xoauth2_response(OWNER, TOKEN)))
    m.respond(Reply(535, "5.7.8", "Token revoked"))
    assert sent(m) == [b"535 5.7.8 Token revoked"]
    assert state(m) is State.READY


# ---- whole sessions over memory streams, under STARTTLS -----------------------------------------


@pytest.fixture(scope="module")
def tls() -> TLSContexts:
    return tls_contexts()


async def validator(session: Session, credentials: object) -> str | None:
    """The test's token check: TOKEN belongs to OWNER, nothing else is valid."""
    if not isinstance(credentials, BearerCredentials) or credentials.token != TOKEN:
        return None
    if credentials.user not in (None, OWNER):
        return None  # a good token, but someone else's
    return OWNER


class Recorder(Handler):
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        return None


def config(tls: TLSContexts, **fields: Any) -> Config:
    fields.setdefault("authenticator", validator)
    fields.setdefault("auth_mechanisms", ALL_FOUR)
    return Config(hostname="mx.test", tls_context=tls.server, **fields)


async def under_tls(client: TestClient, tls: TLSContexts) -> ClientReply:
    """STARTTLS and the second EHLO; that EHLO's reply."""
    assert (await client.ehlo()).code == 250
    assert code(await client.starttls(tls.client)) == (220, "2.0.0")
    return await client.ehlo()


@pytest.fixture
async def client(tls: TLSContexts) -> AsyncIterator[TestClient]:
    async with open_test_session(Recorder(), config=config(tls)) as client:
        await under_tls(client, tls)
        yield client


async def test_session_offers_them_under_tls_only(tls: TLSContexts) -> None:
    async with open_test_session(Recorder(), config=config(tls)) as client:
        before = await client.ehlo()
        assert not [line for line in before.lines if line.startswith("AUTH")]
        assert code(await client.auth_xoauth2(OWNER, TOKEN)) == (538, "5.7.11")
        after = await under_tls(client, tls)
        assert "AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2" in after.lines


async def test_session_oauthbearer_success_and_mail(tls: TLSContexts) -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config(tls)) as client:
        await under_tls(client, tls)
        reply = await client.auth_oauthbearer(OWNER, TOKEN, host="mx.test", port=587)
        assert code(reply) == (235, "2.7.0")
        assert client.session.authenticated_as == OWNER
        message = b"Subject: t\r\n\r\nbody\r\n"
        assert (await client.sendmail(OWNER, ["b@example.net"], message)).code == 250
    [received] = handler.messages
    assert " with ESMTPSA id " in received.received_header


@pytest.mark.parametrize("initial_response", [True, False])
async def test_session_xoauth2_success(client: TestClient, initial_response: bool) -> None:
    reply = await client.auth_xoauth2(OWNER, TOKEN, initial_response=initial_response)
    assert code(reply) == (235, "2.7.0")
    assert client.session.authenticated_as == OWNER


async def test_session_refused_token_on_the_wire(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    response = b64(oauthbearer_response(OWNER, EXPIRED, host="mx.test", port=587)).decode()
    challenge = await client.command(f"AUTH OAUTHBEARER {response}")
    assert challenge.code == 334
    assert json.loads(base64.b64decode(challenge.text, validate=True)) == ERROR
    assert code(await client.command("AQ==")) == (535, "5.7.8")
    assert client.session.authenticated_as is None
    # A good token, but in someone else's name: refused the same way.
    assert code(await client.auth_xoauth2("mallory@example.org", TOKEN)) == (535, "5.7.8")
    assert code(await client.auth_xoauth2(OWNER, TOKEN)) == (235, "2.7.0")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        "authentication failed (BearerCredentials(user='alice@example.org', host='mx.test', "
        "port=587))" in logged
    )
    assert EXPIRED not in logged
    assert TOKEN not in logged


async def test_session_star_during_the_error_challenge_is_535(client: TestClient) -> None:
    response = b64(xoauth2_response(OWNER, EXPIRED)).decode()
    assert (await client.command(f"AUTH XOAUTH2 {response}")).code == 334
    assert code(await client.command("*")) == (535, "5.7.8")
    assert code(await client.command("NOOP")) == (250, "2.0.0")


async def test_session_too_many_failures_is_421(client: TestClient) -> None:
    assert code(await client.auth_oauthbearer(OWNER, EXPIRED)) == (535, "5.7.8")
    assert code(await client.auth_plain(OWNER, "a password")) == (535, "5.7.8")
    assert code(await client.auth_xoauth2(OWNER, EXPIRED)) == (421, "4.7.0")
    assert await client.at_eof()


async def test_session_static_authenticator_refuses_tokens_but_not_passwords(
    tls: TLSContexts,
) -> None:
    cfg = config(tls, authenticator=StaticAuthenticator({OWNER: "s3cret-pass"}))
    async with open_test_session(Recorder(), config=cfg) as client:
        await under_tls(client, tls)
        assert code(await client.auth_oauthbearer(OWNER, "s3cret-pass")) == (535, "5.7.8")
        assert code(await client.auth_xoauth2(OWNER, TOKEN)) == (535, "5.7.8")
        assert code(await client.auth_plain(OWNER, "s3cret-pass")) == (235, "2.7.0")


async def directory_down(session: Session, credentials: object) -> str | None:
    raise Reject(454, "4.7.0", "Token service unavailable")


async def test_session_authenticator_reject_is_sent_without_the_error_challenge(
    tls: TLSContexts,
) -> None:
    async with open_test_session(
        Recorder(), config=config(tls, authenticator=directory_down)
    ) as client:
        await under_tls(client, tls)
        reply = await client.command(
            "AUTH OAUTHBEARER " + b64(oauthbearer_response(OWNER, TOKEN)).decode()
        )
        assert code(reply) == (454, "4.7.0")
        assert reply.text == "4.7.0 Token service unavailable"
