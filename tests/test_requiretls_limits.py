"""REQUIRETLS (RFC 8689) and LIMITS (RFC 9422): the EHLO keywords, the MAIL parameter, the
envelope, and an RFC 8689 exchange over a real STARTTLS.

Every reply asserts its exact code and enhanced status code.
"""

from __future__ import annotations

from typing import Any

import pytest
from machine_driver import Run, drive, parse_replies, smtp_settings

from smtpd_trio import Config, ConfigError, Envelope, Handler, Message, Session
from smtpd_trio._smtp.events import Connect, MailFrom
from smtpd_trio._smtp.facts import TLSInfo
from smtpd_trio._smtp.machine import SMTPMachine
from smtpd_trio.testing import open_test_session, tls_contexts

EHLO = b"EHLO client.example\r\n"
MAIL_REQUIRETLS = b"MAIL FROM:<roger@example.org> REQUIRETLS\r\n"
TLS = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")


def under_tls(data: bytes, **options: Any) -> Run:
    """``data`` through a machine whose session is under TLS from the start (implicit TLS)."""
    options.setdefault("starttls", True)
    m = SMTPMachine(smtp_settings(**options), session_id="t")
    m.tls_established(TLS)
    event = m.next_event()
    assert isinstance(event, Connect)
    m.respond(None)
    run = Run(machine=m, banner=m.data_to_send())
    run.feed(data)
    return run


def test_requiretls_is_advertised_only_under_tls() -> None:
    plain = drive(EHLO, requiretls=True, starttls=True)
    assert "REQUIRETLS" not in plain.replies[0].lines
    assert "STARTTLS" in plain.replies[0].lines
    secure = under_tls(EHLO, requiretls=True)
    assert secure.replies[0].lines[-3:] == (
        "REQUIRETLS",
        "LIMITS RCPTMAX=1000 MAILMAX=10000",
        "HELP",
    )
    # Not offered at all: not advertised, even under TLS.
    assert "REQUIRETLS" not in under_tls(EHLO).replies[0].lines


def test_requiretls_under_tls_is_accepted_and_on_the_envelope() -> None:
    run = under_tls(EHLO + MAIL_REQUIRETLS + b"RCPT TO:<editor@example.net>\r\n", requiretls=True)
    assert run.codes == [250, 250, 250]
    assert run.of_type(MailFrom)[0].params == {"REQUIRETLS": None}
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.require_tls


def test_requiretls_without_tls_is_530() -> None:
    run = drive(EHLO + MAIL_REQUIRETLS + b"RCPT TO:<editor@example.net>\r\n", requiretls=True)
    assert run.codes == [250, 530, 503]
    assert run.replies[1].enhanced == "5.7.0"
    assert run.replies[1].text == "Must issue a STARTTLS command first"
    assert run.machine.envelope is None
    assert run.machine.errors == 2


@pytest.mark.parametrize("tls", [False, True])
def test_requiretls_not_offered_is_555(tls: bool) -> None:
    run = (under_tls if tls else drive)(EHLO + MAIL_REQUIRETLS)
    assert run.codes == [250, 555]
    assert run.replies[1].enhanced == "5.5.4"


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (
            b"MAIL FROM:<a@example.org> REQUIRETLS=YES\r\n",
            "Syntax error: REQUIRETLS takes no value",
        ),
        (
            b"MAIL FROM:<a@example.org> REQUIRETLS requiretls\r\n",
            "Syntax error: duplicate parameter REQUIRETLS",
        ),
    ],
)
def test_malformed_requiretls_is_501(line: bytes, text: str) -> None:
    run = under_tls(EHLO + line, requiretls=True)
    assert run.codes == [250, 501]
    assert run.replies[1].enhanced == "5.5.4"
    assert run.replies[1].text == text


def test_envelope_without_requiretls() -> None:
    assert not Envelope("x-1", "a@example.org").require_tls
    assert Envelope("x-1", "a@example.org", {"REQUIRETLS": None}).require_tls


def test_requiretls_needs_a_tls_context() -> None:
    with pytest.raises(ConfigError, match="requiretls needs a tls_context"):
        Config(requiretls=True)


def test_requiretls_makes_room_on_the_command_line() -> None:
    context = tls_contexts().server
    base = Config(hostname="mx.test", tls_context=context).smtp.max_command_line
    assert Config(
        hostname="mx.test", tls_context=context, requiretls=True
    ).smtp.max_command_line == (base + len(" REQUIRETLS"))


# ---- LIMITS (RFC 9422) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "keyword"),
    [
        ({}, "LIMITS RCPTMAX=1000 MAILMAX=10000"),
        ({"max_recipients": 50, "max_messages": 7}, "LIMITS RCPTMAX=50 MAILMAX=7"),
        ({"max_recipients": 1, "max_messages": None}, "LIMITS RCPTMAX=1"),
    ],
)
def test_limits_keyword_follows_the_configured_limits(
    options: dict[str, Any], keyword: str
) -> None:
    lines = drive(EHLO, **options).replies[0].lines
    assert [line for line in lines if line.startswith("LIMITS")] == [keyword]


def test_limits_are_the_limits_enforced() -> None:
    """What LIMITS announces is exactly where the server starts refusing: RCPTMAX recipients
    are accepted, the next one gets 452 4.5.3; MAILMAX transactions, the next MAIL 421."""
    run = drive(
        EHLO
        + b"MAIL FROM:<a@example.org>\r\n"
        + b"RCPT TO:<b@example.org>\r\n" * 3
        + b"RSET\r\n"
        + b"MAIL FROM:<a@example.org>\r\n",
        max_recipients=2,
        max_messages=1,
    )
    assert "LIMITS RCPTMAX=2 MAILMAX=1" in run.replies[0].lines
    assert run.codes == [250, 250, 250, 250, 452, 250, 421]
    assert [r.enhanced for r in run.replies[4:]] == ["4.5.3", "2.0.0", "4.7.0"]


def test_limits_keyword_through_config() -> None:
    config = Config(hostname="mx.test", max_recipients=20, max_messages_per_session=None)
    assert "LIMITS RCPTMAX=20" in config.smtp.ehlo_reply(False).lines


# ---- after RFC 8689 Appendix A: a REQUIRETLS transaction, and a TLS-Required: No message -----


async def test_rfc8689_example_over_starttls() -> None:
    contexts = tls_contexts("mail.example.net")
    config = Config(hostname="mail.example.net", tls_context=contexts.server, requiretls=True)
    received: list[Message] = []

    class Keep(Handler):
        async def on_data(self, session: Session, message: Message) -> None:
            received.append(message)

    async with open_test_session(Keep(), config=config) as client:
        before = await client.ehlo("mail.example.org")
        assert "REQUIRETLS" not in before.lines
        refused = await client.command("MAIL FROM:<roger@example.org> REQUIRETLS")
        assert (refused.code, refused.enhanced) == (530, "5.7.0")
        assert (
            await client.starttls(contexts.client, server_hostname="mail.example.net")
        ).code == 220
        after = await client.ehlo("mail.example.org")
        assert "REQUIRETLS" in after.lines
        reply = await client.command("MAIL FROM:<roger@example.org> REQUIRETLS")
        assert (reply.code, reply.enhanced) == (250, "2.1.0")
        assert (await client.command("RCPT TO:<editor@example.net>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: Message sent with REQUIRETLS\r\n\r\nbody\r\n.\r\n")
        assert (await client.read_reply()).code == 250
        # As in Appendix A.2, a message that asks for the opposite, in a TLS-Required field.
        # That is the sender's business: the header travels untouched, the envelope says no.
        assert (await client.command("MAIL FROM:<roger@example.org>")).code == 250
        assert (await client.command("RCPT TO:<editor@example.net>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(TLS_REQUIRED_NO + b".\r\n")
        assert (await client.read_reply()).code == 250
        assert (await client.command("QUIT")).code == 221
    first, second = received
    assert first.envelope.require_tls
    assert "with ESMTPS" in first.received_header
    assert not second.envelope.require_tls
    assert second.content == TLS_REQUIRED_NO


TLS_REQUIRED_NO = (
    b"From: roger@example.org\r\n"
    b"To: editor@example.net\r\n"
    b"Subject: Certificate problem?\r\n"
    b"TLS-Required: No\r\n"
    b"\r\n"
    b"Your certificate has expired.\r\n"
)


def test_every_new_keyword_at_once() -> None:
    (reply,) = parse_replies(under_tls(EHLO, requiretls=True, dsn=True).output)
    assert reply.lines[-4:] == (
        "DSN",
        "REQUIRETLS",
        "LIMITS RCPTMAX=1000 MAILMAX=10000",
        "HELP",
    )
