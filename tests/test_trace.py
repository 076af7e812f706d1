"""The Received: trace header (RFC 5321 §4.4, RFC 3848, RFC 6531)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from smtpd_trio import Endpoint, Envelope, Session, TLSInfo, received_header
from smtpd_trio.trace import address_literal, protocol_name

WHEN = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)


def session(
    host: str = "192.0.2.1",
    *,
    helo: str | None = "client.example",
    ext: bool = True,
    tls: TLSInfo | None = None,
    user: str | None = None,
) -> Session:
    return Session(
        id="abc1",
        client=Endpoint(host, 40000),
        peer=Endpoint(host, 40000),
        hostname="mx.example.org",
        helo_name=helo,
        extended=ext,
        tls=tls,
        authenticated_as=user,
    )


def envelope(*rcpts: str, utf8: bool = False) -> Envelope:
    return Envelope(
        id="abc1.1",
        mail_from="a@example.com",
        mail_params={"SMTPUTF8": None} if utf8 else {},
        rcpt_tos=rcpts,
    )


def test_exact_header_for_one_recipient() -> None:
    header = received_header(session(), envelope("b@example.org"), now=WHEN)
    assert header == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby mx.example.org (smtpd-trio) with ESMTP id abc1.1\r\n"
        "\tfor <b@example.org>;\r\n"
        "\tWed, 25 Nov 2026 10:00:00 +0000\r\n"
    )


def test_no_for_clause_with_several_recipients() -> None:
    header = received_header(session(), envelope("b@example.org", "c@example.org"), now=WHEN)
    assert "for <" not in header
    assert "b@example.org" not in header
    assert header == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby mx.example.org (smtpd-trio) with ESMTP id abc1.1;\r\n"
        "\tWed, 25 Nov 2026 10:00:00 +0000\r\n"
    )


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("192.0.2.1", "[192.0.2.1]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "[IPv6:2001:db8::1]"),
        ("::ffff:192.0.2.7", "[192.0.2.7]"),
        ("fe80::1%eth0", "[IPv6:fe80::1]"),
        ("unix:/run/smtp.sock", "[unix:/run/smtp.sock]"),
        ("", "[unknown]"),
    ],
)
def test_address_literal(host: str, literal: str) -> None:
    assert address_literal(host) == literal
    header = received_header(session(host), envelope("b@example.org"), now=WHEN)
    assert header.startswith(f"Received: from client.example ({literal})\r\n")


def test_protocol_names() -> None:
    one = envelope("b@example.org")
    assert protocol_name(session(ext=False), one) == "SMTP"
    assert protocol_name(session(), one) == "ESMTP"
    assert protocol_name(session(), envelope("b@example.org", utf8=True)) == "UTF8SMTP"
    info = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")
    assert protocol_name(session(tls=info), one) == "ESMTPS"
    assert protocol_name(session(user="user"), one) == "ESMTPA"
    tls_auth = session(tls=info, user="user")
    assert protocol_name(tls_auth, one) == "ESMTPSA"
    assert protocol_name(tls_auth, envelope("b@example.org", utf8=True)) == "UTF8SMTPSA"
    assert " with SMTP id " in received_header(session(ext=False), one, now=WHEN)
    assert " with UTF8SMTP id " in received_header(
        session(), envelope("b@example.org", utf8=True), now=WHEN
    )


def test_unknown_helo_name() -> None:
    header = received_header(session(helo=None), envelope("b@example.org"), now=WHEN)
    assert header.startswith("Received: from unknown ([192.0.2.1])\r\n")


def test_header_parses_as_a_received_header() -> None:
    header = received_header(session("2001:db8::1"), envelope("b@example.org"), now=WHEN)
    raw = header.encode() + b"Subject: x\r\n\r\nbody\r\n"
    for policy in (email.policy.compat32, email.policy.default):
        message = email.message_from_bytes(raw, policy=policy)
        assert message.keys() == ["Received", "Subject"]
        value = str(message["Received"])
        assert "from client.example ([IPv6:2001:db8::1])" in value
        assert "for <b@example.org>;" in value
        assert message.get_payload() == "body\r\n"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.defects == []
    # The date after the last ";" is an RFC 5322 date-time.
    date = str(message["Received"]).rsplit(";", 1)[1].strip()
    assert email.utils.parsedate_to_datetime(date) == WHEN
    # Every line is short and every continuation line is folded with whitespace.
    lines = header.split("\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith("\t") for line in lines[1:])


def test_default_time_is_now_in_utc() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    header = received_header(session(), envelope("b@example.org"))
    date = email.utils.parsedate_to_datetime(header.rsplit(";", 1)[1].strip())
    assert before <= date <= dt.datetime.now(dt.UTC)
