"""The Received: trace header (RFC 5321 §4.4, RFC 3848, RFC 6531).

The exact layout is pinned for ordinary input; for every client-controlled field (HELO name,
forward-path, client address, the host name XCLIENT forwarded, the client's name from reverse
DNS) and every other Session/Envelope value, a property test checks the header against the RFC
grammar in tests/received_grammar.py.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import re
import urllib.parse

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from received_grammar import REGISTERED_PROTOCOLS, ExtendedDomain, check_one_header_field
from received_grammar import check_received as check_grammar

from smtpd_trio import (
    Endpoint,
    Envelope,
    Session,
    TLSInfo,
    Unavailable,
    XClientInfo,
    received_header,
)
from smtpd_trio._smtp.commands import CommandSyntaxError, parse_helo_name
from smtpd_trio.trace import (
    address_literal,
    host_name,
    id_atom,
    percent_encode,
    protocol_name,
)

WHEN = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
DATE = "Wed, 25 Nov 2026 10:00:00 +0000"


def session(
    host: str = "192.0.2.1",
    *,
    helo: str | None = "client.example",
    ext: bool = True,
    hostname: str = "mx.example.org",
    tls: TLSInfo | None = None,
    user: str | None = None,
    lmtp: bool = False,
    name: str | Unavailable | None = None,
    client_name: str | None = None,
    looked_up: bool = False,
) -> Session:
    return Session(
        id="abc1",
        client=Endpoint(host, 40000),
        peer=Endpoint(host, 40000),
        hostname=hostname,
        helo_name=helo,
        extended=ext,
        lmtp=lmtp,
        tls=tls,
        authenticated_as=user,
        xclient=None if name is None else XClientInfo(name=name, addr=host),
        client_name=client_name,
        client_name_looked_up=looked_up,
    )


def envelope(*rcpts: str, utf8: bool = False, id: str = "abc1-1") -> Envelope:
    return Envelope(
        id=id,
        mail_from="a@example.com",
        mail_params={"SMTPUTF8": None} if utf8 else {},
        rcpt_tos=rcpts,
    )


def header_of(sess: Session, env: Envelope) -> str:
    """The header, checked against the grammar and against what email makes of it."""
    header = received_header(sess, env, now=WHEN)
    check_grammar(header.encode(), utf8=env.smtputf8)
    check_one_header_field(header.encode())
    return header


def test_exact_header_for_one_recipient() -> None:
    assert header_of(session(), envelope("b@example.org")) == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby mx.example.org (smtpd-trio) with ESMTP id abc1-1\r\n"
        "\tfor <b@example.org>;\r\n"
        "\tWed, 25 Nov 2026 10:00:00 +0000\r\n"
    )


def test_no_for_clause_with_several_recipients() -> None:
    header = header_of(session(), envelope("b@example.org", "c@example.org"))
    assert "for <" not in header
    assert "b@example.org" not in header
    assert header == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby mx.example.org (smtpd-trio) with ESMTP id abc1-1;\r\n"
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
        # A UNIX path from a PROXY v2 header may hold anything but NUL: each octet that could
        # end the literal, the comment or the line is percent-encoded.
        ("unix:/run/a b]\r\nX-Injected: 1", "[unix:/run/a%20b%5D%0D%0AX-Injected:%201]"),
        ("unix:/tmp/(x);%", "[unix:/tmp/%28x%29%3B%25]"),
        ("unix:\x00abstract", "[unix:%00abstract]"),
        ("unix:/\udcff\u00e9", "[unix:/%FF%C3%A9]"),  # surrogateescape'd octet, then UTF-8
    ],
)
def test_address_literal(host: str, literal: str) -> None:
    assert address_literal(host) == literal
    header = header_of(session(host), envelope("b@example.org"))
    assert header.startswith(f"Received: from client.example ({literal})\r\n")


@pytest.mark.parametrize(
    "host", ["unix:", "", "unknown", "192.0.2.1\r\n", "192.0.2.300", "[192.0.2.1]", "x" * 500]
)
def test_no_tcp_info_without_an_address(host: str) -> None:
    # An unnamed UNIX socket or a stream without an address has no address literal: RFC 5321
    # lets the from clause be a bare Domain.
    assert address_literal(host) is None
    header = header_of(session(host), envelope("b@example.org"))
    assert header.startswith("Received: from client.example\r\n\tby mx.example.org ")


@pytest.mark.parametrize(
    ("name", "host", "first_line"),
    [
        (
            "mail.client.example",
            "192.0.2.7",
            "from client.example (mail.client.example [192.0.2.7])",
        ),
        (
            "Mail.Client.Example.",
            "2001:db8::7",
            "from client.example (Mail.Client.Example [IPv6:2001:db8::7])",
        ),
        ("my_pc.example", "192.0.2.7", "from client.example ([192.0.2.7])"),  # not a Domain
        (Unavailable.UNAVAILABLE, "192.0.2.7", "from client.example ([192.0.2.7])"),
        (Unavailable.TEMPUNAVAIL, "192.0.2.7", "from client.example ([192.0.2.7])"),
        ("mail.client.example", "unknown", "from client.example"),  # no address: no TCP-info
        ("a) (b", "192.0.2.7", "from client.example ([192.0.2.7])"),
        ("10.0.0.1", "192.0.2.7", "from client.example ([192.0.2.7])"),  # could pass for one
    ],
)
def test_the_name_xclient_forwarded(name: str | Unavailable, host: str, first_line: str) -> None:
    # Postfix's layout, "from HELO (NAME [ADDRESS])", when the name is a Domain.
    header = header_of(session(host, name=name), envelope("b@example.org"))
    assert header.startswith(f"Received: {first_line}\r\n\tby mx.example.org ")


@pytest.mark.parametrize(
    ("host", "name", "tcp_info"),
    [
        ("192.0.2.1", "mail.example.net", "mail.example.net [192.0.2.1]"),
        ("192.0.2.1", "Mail.Example.NET.", "Mail.Example.NET [192.0.2.1]"),
        ("2001:db8::1", "v6.example.net", "v6.example.net [IPv6:2001:db8::1]"),
        ("192.0.2.1", None, "unknown [192.0.2.1]"),
        # A PTR record says what its owner likes: anything that is not a host name is unknown.
        ("192.0.2.1", "evil.example ([10.0.0.1])", "unknown [192.0.2.1]"),
        ("192.0.2.1", "x;y", "unknown [192.0.2.1]"),
        ("192.0.2.1", "10.0.0.1", "unknown [192.0.2.1]"),
        ("192.0.2.1", "a.b\r\nX-Injected: 1", "unknown [192.0.2.1]"),
        ("192.0.2.1", "b\u00fccher.example", "unknown [192.0.2.1]"),
    ],
)
def test_the_client_name_from_reverse_dns(host: str, name: str | None, tcp_info: str) -> None:
    header = header_of(session(host, client_name=name, looked_up=True), envelope("b@example.org"))
    assert header.startswith(f"Received: from client.example ({tcp_info})\r\n")


def test_no_client_name_without_a_lookup_or_an_address() -> None:
    # Not looked up (reverse DNS off): the TCP-info is the address alone, as before.
    header = header_of(session(client_name="mail.example.net"), envelope("b@example.org"))
    assert header.startswith("Received: from client.example ([192.0.2.1])\r\n")
    # No address literal: there is no TCP-info to hold a name.
    header = header_of(session("", client_name="mail.example.net", looked_up=True), envelope())
    assert header.startswith("Received: from client.example\r\n\tby ")


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
    # No "SMTPS" is registered: HELO over TLS is plain SMTP.
    assert protocol_name(session(ext=False, tls=info, user="user"), one) == "SMTP"
    assert " with SMTP id " in header_of(session(ext=False), one)
    assert " with UTF8SMTP id " in header_of(session(), envelope("b@example.org", utf8=True))


def test_lmtp_protocol_names() -> None:
    one = envelope("b@example.org")
    utf8 = envelope("b@example.org", utf8=True)
    info = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")
    assert protocol_name(session(lmtp=True), one) == "LMTP"
    assert protocol_name(session(lmtp=True, tls=info), one) == "LMTPS"
    assert protocol_name(session(lmtp=True, user="u"), one) == "LMTPA"
    assert protocol_name(session(lmtp=True, tls=info, user="u"), utf8) == "UTF8LMTPSA"
    assert " with LMTP id " in header_of(session(lmtp=True), one)


def test_unknown_helo_name() -> None:
    header = header_of(session(helo=None), envelope("b@example.org"))
    assert header.startswith("Received: from unknown ([192.0.2.1])\r\n\tby ")


# ---- HELO names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("helo", "written"),
    [
        ("mx.example.", "mx.example"),  # the trailing dot of an absolute name is dropped
        ("localhost", "localhost"),
        ("192.0.2.9", "192.0.2.9"),  # digits are Let-dig: a valid Domain
        ("[192.0.2.9]", "[192.0.2.9]"),
        ("[IPv6:2001:DB8:0:0:0:0:0:1]", "[IPv6:2001:db8::1]"),  # IP literals in canonical form
        ("[ipv6:::ffff:192.0.2.9]", "[IPv6:::ffff:c000:209]"),
    ],
)
def test_helo_names_written_as_the_from_domain(helo: str, written: str) -> None:
    header = header_of(session(helo=helo), envelope("b@example.org"))
    assert header.startswith(f"Received: from {written} ([192.0.2.1])\r\n\tby ")


@pytest.mark.parametrize(
    ("helo", "comment"),
    [
        # What main wrote for these, verbatim, broke the header (see tests/test_received_grammar).
        ("x;y", "x%3By"),
        ("a)b(c", "a%29b%28c"),
        ("x\x85X-Injected:1", "x%C2%85X-Injected:1"),
        ("([1.2.3.4])", "%28%5B1.2.3.4%5D%29"),
        # Accepted by parse_helo_name but not RFC 5321 Domains: kept, as a comment.
        ("my_pc", "my_pc"),
        ("a-", "a-"),
        ("b\u00fccher.example", "b%C3%BCcher.example"),
        ("[x-tag:y]", "%5Bx-tag:y%5D"),
        ("a\r\n\tb", "a%0D%0A%09b"),
        ("\ud800\udcff", "%ED%A0%80%FF"),
        ("%41", "%2541"),
    ],
)
def test_other_helo_names_become_a_comment(helo: str, comment: str) -> None:
    header = header_of(session(helo=helo), envelope("b@example.org"))
    assert header.startswith(f"Received: from unknown ([192.0.2.1]) (helo={comment})\r\n\tby ")


def test_a_helo_literal_without_tcp_info_becomes_a_comment() -> None:
    # RFC 5321: an address literal is an Extended-Domain only with TCP-info after it.
    header = header_of(session("unix:", helo="[192.0.2.9]"), envelope("b@example.org"))
    assert header.startswith("Received: from unknown (helo=%5B192.0.2.9%5D)\r\n\tby ")


def test_a_long_comment_is_cut() -> None:
    header = header_of(session(helo=";" * 500), envelope("b@example.org"))
    first = header.split("\r\n")[0]
    assert first == "Received: from unknown ([192.0.2.1]) (helo=" + "%3B" * 84 + "...)"


@pytest.mark.parametrize(
    ("hostname", "by"),
    [
        ("mx.example.org.", "mx.example.org (smtpd-trio)"),
        ("my_host", "unknown (smtpd-trio) (hostname=my_host)"),
        ("mx;(x)", "unknown (smtpd-trio) (hostname=mx%3B%28x%29)"),
    ],
)
def test_the_server_host_name(hostname: str, by: str) -> None:
    header = header_of(session(hostname=hostname), envelope("b@example.org"))
    assert f"\r\n\tby {by} with ESMTP id abc1-1\r\n" in header


# ---- the id ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_", "atom"),
    [
        ("bbd0242-1", "bbd0242-1"),
        ("bbd0242.1", "bbd0242-1"),  # the old shape: a dot is not atext
        ("a b;c(d)\r\n", "a-b-c-d---"),
        ("q\u00e9", "q-"),
        ("x" * 100, "x" * 64),
    ],
)
def test_the_id_is_an_atom(id_: str, atom: str) -> None:
    assert id_atom(id_) == atom
    header = header_of(session(), envelope("b@example.org", id=id_))
    assert f" with ESMTP id {atom}\r\n" in header


def test_an_empty_id_leaves_the_id_clause_out() -> None:
    header = header_of(session(), envelope("b@example.org", "c@example.org", id=""))
    assert "\tby mx.example.org (smtpd-trio) with ESMTP;\r\n" in header


# ---- the forward-path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpt", "utf8"),
    [
        ('"a b;c(d)"@example.org', False),  # a quoted local part is a valid Mailbox
        ("user@[192.0.2.1]", False),
        ("user@[IPv6:2001:db8::1]", False),
        (
            "\u043f\u0440\u0438\u043c\u0435\u0440@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
            True,
        ),
        ("\u00fc@b\u00fccher.example", True),
    ],
)
def test_forward_paths_written(rcpt: str, utf8: bool) -> None:
    header = header_of(session(), envelope(rcpt, utf8=utf8))
    assert f"\r\n\tfor <{rcpt}>;\r\n" in header


@pytest.mark.parametrize(
    ("rcpt", "utf8"),
    [
        ("a\x85b@example.org", True),  # NEL: str.splitlines() splits there
        ("a\u2028b@example.org", True),
        ("a\u2029b@example.org", True),
        ("a@exa\u0085mple.org", True),
        ("a\ud800@example.org", True),  # cannot even be encoded
        ("\u00fc@example.org", False),  # UTF-8 without SMTPUTF8
        ("Postmaster", False),  # RCPT TO:<Postmaster> names no domain: not a Mailbox
        ("a@b>\r\nX-Injected: 1", False),
        ("x;y@example.org", False),
        ("a@" + ".".join(["b" * 63] * 3) + "." + "c" * 61, False),  # path of 257 octets
        ("", False),
    ],
)
def test_unsafe_forward_paths_are_left_out(rcpt: str, utf8: bool) -> None:
    header = header_of(session(), envelope(rcpt, utf8=utf8))
    assert "for <" not in header
    assert header.endswith(f" id abc1-1;\r\n\t{DATE}\r\n")


# ---- the whole message ------------------------------------------------------------------------


def test_header_parses_as_a_received_header() -> None:
    header = header_of(session("2001:db8::1"), envelope("b@example.org"))
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


# ---- every client-controlled field, against the grammar ------------------------------------

#: Characters that have broken, or could break, a header field or its reading.
HOSTILE = (
    "\r\n\x00\t \x0b\x0c\x1c\x1d\x1e\x7f\x80\x85\x9f\u2028\u2029\ufeff\u202e"
    ';()[]<>\\"@,:%.-_\ud800\udc85\udcff\u00e9\u043f\U0001f600'
)
hostile_text = st.text(alphabet=st.sampled_from(HOSTILE) | st.characters(), max_size=40)
any_text = st.text(max_size=300) | hostile_text

LOWER = "abcdefghijklmnopqrstuvwxyz"
#: Latin-1 and Cyrillic letters, and the division sign, which is no letter.
U_LETTERS = LOWER + "".join(map(chr, range(0xE0, 0x100))) + "".join(map(chr, range(0x430, 0x450)))


def _names(labels: st.SearchStrategy[str], *, max_size: int = 4) -> st.SearchStrategy[str]:
    return st.builds(
        lambda parts, dot: ".".join(parts) + dot,
        st.lists(labels, min_size=1, max_size=max_size),
        st.sampled_from(["", "", "."]),
    )


ldh_label = st.builds(
    lambda a, b: f"{a}-{b}" if b else a,
    st.text(LOWER + "0123456789", min_size=1, max_size=8),
    st.text(LOWER + "0123456789", max_size=4),
)
ldh_domain = _names(ldh_label)
u_domain = _names(st.text(U_LETTERS, min_size=1, max_size=8), max_size=3)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)

helo_names = st.one_of(
    st.none(),
    st.sampled_from(["x;y", "a)b(c", "x\x85X-Injected:1", "([1.2.3.4])", "my_pc", "mx.example."]),
    ldh_domain,
    u_domain,
    ipv4,
    ipv4.map(lambda a: f"[{a}]"),
    ipv6.map(lambda a: f"[IPv6:{a}]"),
    st.text("aZ09_.-[]:", min_size=1, max_size=30),
    any_text,
)
local_parts = st.one_of(
    _names(st.text(LOWER + "0123456789!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8), max_size=3),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12).map(
        lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x80) | st.sampled_from("ab.-"),
        min_size=1,
        max_size=12,
    ),
    hostile_text,
)
domains = st.one_of(
    ldh_domain,
    u_domain,
    ipv4.map(lambda a: f"[{a}]"),
    ipv6.map(lambda a: f"[IPv6:{a}]"),
    hostile_text,
)
ascii_addresses = st.builds(
    "{}@{}".format,
    _names(st.text(LOWER + "0123456789_+-", min_size=1, max_size=8), max_size=2).map(
        lambda local: local.rstrip(".")
    ),
    ldh_domain.map(lambda d: d.rstrip(".")) | ipv4.map(lambda a: f"[{a}]"),
)
utf8_addresses = st.builds(
    "{}@{}".format,
    st.text(U_LETTERS + "\u4e00\u4e01\u4e03", min_size=1, max_size=10),
    u_domain.map(lambda d: d.rstrip(".")),
)
addresses = st.one_of(
    ascii_addresses,
    utf8_addresses,
    # a valid address with one hostile character put somewhere in it
    st.builds(
        lambda a, c, i: a[: i % (len(a) + 1)] + c + a[i % (len(a) + 1) :],
        ascii_addresses | utf8_addresses,
        st.sampled_from(HOSTILE),
        st.integers(0, 40),
    ),
    st.builds("{}@{}".format, local_parts, domains),
    st.sampled_from(["Postmaster", "", "a\x85b@example.org", "a\u2028b@example.org"]),
    any_text,
)
recipients = st.one_of(st.lists(addresses, min_size=1, max_size=1), st.lists(addresses, max_size=3))
client_hosts = st.one_of(
    ipv4,
    ipv6,
    ipv4.map(lambda a: f"::ffff:{a}"),
    ipv6.map(lambda a: f"{a}%eth0"),
    st.builds(lambda path: f"unix:{path}", st.text(max_size=108) | hostile_text),
    st.sampled_from(["unix:", "unknown", ""]),
    any_text,
)
hostnames = st.one_of(
    st.sampled_from(["mx.example.org", "localhost", "mx.example."]), ldh_domain, any_text
)
#: What a PTR record may say (reverse DNS; when it is written, the lookup has been made).
client_names = st.one_of(
    st.none(),
    ldh_domain,
    u_domain,
    ipv4,
    st.sampled_from(["unknown", "x ([10.0.0.1])", "a.b\r\nX: 1", "host.123", "mx.example."]),
    any_text,
)
ids = st.one_of(st.builds("{:x}-{}".format, st.integers(0, 2**32), st.integers(1, 99999)), any_text)
times = st.one_of(
    st.none(),
    st.datetimes(
        min_value=dt.datetime(1900, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [
                dt.UTC,
                dt.timezone(dt.timedelta(hours=5, minutes=30)),
                dt.timezone(-dt.timedelta(hours=8)),
            ]
        ),
    ),
)

#: A host name a PTR record may well hold, which must be written as it is.
_PTR_NAME = re.compile(r"(?:[a-z0-9]{1,8}(?:-[a-z0-9]{1,4})?\.)*[a-z]{1,8}(?:-[a-z0-9]{1,4})?\.?")
_SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9_+-]{1,20}@([a-z0-9]{1,10}\.){1,3}[a-z]{2,6}\Z")
_SIMPLE_UTF8_ADDRESS = re.compile(
    r"[a-z\u00e0-\u00f6\u0430-\u044f]{1,10}@([a-z\u0430-\u044f]{1,8}\.){1,2}[a-z]{2,5}\Z"
)


def _written_helo(helo: str) -> str:
    """The helo name as the from-domain, as a reader would compare it."""
    if helo.startswith("["):
        return str(ipaddress.ip_address(helo[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")))
    return helo.removesuffix(".")


@settings(max_examples=250, deadline=None)
@given(
    helo=helo_names,
    host=client_hosts,
    hostname=hostnames,
    rcpts=recipients,
    utf8=st.booleans(),
    extended=st.booleans(),
    tls=st.booleans(),
    user=st.none() | any_text,
    id_=ids,
    now=times,
    name=st.none() | st.sampled_from(list(Unavailable)) | hostnames | any_text,
    client_name=client_names,
    looked_up=st.booleans(),
)
@example(
    helo="x;y",
    host="127.0.0.1",
    hostname="mx",
    rcpts=["b@example.org"],
    utf8=False,
    extended=True,
    tls=False,
    user=None,
    id_="bbd0242.1",
    now=None,
    name="a [1.2.3.4]",
    client_name="x ([10.0.0.1])",
    looked_up=True,
)
@example(
    helo="x\x85X-Injected:1",
    host="unix:/a]\r\n",
    hostname="mx",
    rcpts=["a\u2028b@c.d"],
    utf8=True,
    extended=True,
    tls=True,
    user="u",
    id_="a-1",
    now=None,
    name="mx.example.",
    client_name="mail.example.net",
    looked_up=True,
)
@example(
    helo="([1.2.3.4])",
    host="::ffff:10.0.0.1",
    hostname="my_host",
    rcpts=["a\x85@b.c"],
    utf8=True,
    extended=False,
    tls=False,
    user=None,
    id_="",
    now=None,
    name=None,
    client_name=None,
    looked_up=False,
)
def test_every_header_is_well_formed(
    helo: str | None,
    host: str,
    hostname: str,
    rcpts: list[str],
    utf8: bool,
    extended: bool,
    tls: bool,
    user: str | None,
    id_: str,
    now: dt.datetime | None,
    name: str | Unavailable | None,
    client_name: str | None,
    looked_up: bool,
) -> None:
    info = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256") if tls else None
    sess = session(
        host,
        helo=helo,
        ext=extended,
        hostname=hostname,
        tls=info,
        user=user,
        name=name,
        client_name=client_name,
        looked_up=looked_up,
    )
    env = envelope(*rcpts, utf8=utf8, id=id_)

    header = received_header(sess, env, now=now)
    raw = header.encode("utf-8")  # never an unpaired surrogate
    stamp = check_grammar(raw, utf8=utf8)
    check_one_header_field(raw)

    event(f"from: {'unknown' if stamp.from_.domain == 'unknown' else 'name'}")
    event(f"helo comment: {any(c.startswith('helo=') for c in stamp.comments)}")
    event(f"tcp-info: {stamp.from_.tcp_info is not None}")
    event(f"for: {stamp.for_ is not None} (non-ASCII: {not (stamp.for_ or '').isascii()})")

    # The client address is where a reader looks for it, and nothing else is; before it, once
    # reverse DNS was asked, the client's name as the PTR record gave it, or "unknown"; without
    # reverse DNS, only a host name that XCLIENT forwarded as the client's name.
    literal = address_literal(host)
    if literal is None:
        assert stamp.from_.tcp_info is None
    elif not looked_up:
        domain = host_name(name) if isinstance(name, str) else None
        expected = literal if domain is None else f"{domain} {literal}"
        assert stamp.from_.tcp_info == expected
    else:
        assert stamp.from_.tcp_info is not None
        written_name, _, written = stamp.from_.tcp_info.partition(" ")
        assert written == literal
        event(f"client name: {'unknown' if written_name == 'unknown' else 'name'}")
        if written_name != "unknown" or client_name == "unknown":
            assert client_name is not None
            assert written_name == client_name.removesuffix(".")
            assert not written_name.rpartition(".")[2].isdigit()
        if client_name and _PTR_NAME.fullmatch(client_name):
            assert written_name == client_name.removesuffix(".")
    # The HELO name is the from-domain, or a comment that decodes back to it.
    if stamp.from_.domain == "unknown" and helo and helo.lower().rstrip(".") != "unknown":
        assert stamp.comments[0].startswith("helo=")
        encoded = stamp.comments[0].removeprefix("helo=")
        if not encoded.endswith("...") and not re.search("[\ud800-\udfff]", helo):
            assert urllib.parse.unquote(encoded, errors="strict") == helo
    elif helo:
        assert stamp.from_.domain.lower() in (
            helo.lower().removesuffix("."),
            f"[{_written_helo(helo)}]".lower(),
            f"[ipv6:{_written_helo(helo)}]".lower(),
        )
    # A name that parse_helo_name accepts is never lost: only underscores make it a comment.
    accepted = True
    try:
        parse_helo_name(helo)
    except CommandSyntaxError:
        accepted = False
    if accepted and helo is not None and "_" not in helo and (literal or not helo.startswith("[")):
        assert stamp.from_.domain != "unknown"
    # by, with, id, for
    assert stamp.by.domain in (hostname.removesuffix("."), "unknown")
    assert stamp.protocol == protocol_name(sess, env)
    assert stamp.protocol in REGISTERED_PROTOCOLS
    assert stamp.id == (id_atom(id_) or None)
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,64}", id_):
        assert stamp.id == id_
    if len(rcpts) != 1:
        assert stamp.for_ is None
    elif stamp.for_ is not None:
        assert stamp.for_ == f"<{rcpts[0]}>"
    elif _SIMPLE_ADDRESS.match(rcpts[0]) or (utf8 and _SIMPLE_UTF8_ADDRESS.match(rcpts[0])):
        pytest.fail(f"a plain address was left out: {rcpts[0]!r}")
    assert stamp.date == (now or stamp.date).replace(microsecond=0)
    # Ordinary input keeps the exact layout.
    if (
        helo is not None
        and re.fullmatch(r"[a-z0-9.-]+", helo)
        and stamp.from_ == ExtendedDomain(helo, literal)
        and name is None
        and stamp.by == ExtendedDomain(hostname, None)
        and literal is not None
    ):
        lines = [
            f"Received: from {helo} ({literal})",
            f"\tby {hostname} (smtpd-trio) with {stamp.protocol}"
            + (f" id {stamp.id}" if stamp.id else ""),
        ]
        if stamp.for_:
            lines.append(f"\tfor {stamp.for_};")
        else:
            lines[-1] += ";"
        assert header.startswith("\r\n".join(lines) + "\r\n\t")


@settings(max_examples=200, deadline=None)
@given(rcpt=addresses, utf8=st.booleans())
@example(rcpt="a\x85b@example.org", utf8=True)
@example(rcpt="a\u2028b@example.org", utf8=True)
@example(rcpt="\u00fc@b\u00fccher.example", utf8=True)
def test_every_forward_path(rcpt: str, utf8: bool) -> None:
    header = received_header(session(), envelope(rcpt, utf8=utf8), now=WHEN)
    stamp = check_grammar(header.encode(), utf8=utf8)
    check_one_header_field(header.encode())
    event(f"for: {stamp.for_ is not None}, SMTPUTF8: {utf8}, ASCII: {rcpt.isascii()}")
    if stamp.for_ is not None:
        assert stamp.for_ == f"<{rcpt}>"
        assert utf8 or rcpt.isascii()
    else:
        assert not _SIMPLE_ADDRESS.match(rcpt)
        assert not (utf8 and _SIMPLE_UTF8_ADDRESS.match(rcpt))
        assert header.endswith(f" id abc1-1;\r\n\t{DATE}\r\n")


@settings(max_examples=100, deadline=None)
@given(any_text)
def test_percent_encoding_is_inert_ascii(text: str) -> None:
    encoded = percent_encode(text)
    assert re.fullmatch(r"[A-Za-z0-9\-._~/:+,=@%]*", encoded)
    assert re.fullmatch(r"([^%]|%[0-9A-F]{2})*", encoded)
    if not re.search("[\ud800-\udfff]", text):
        assert urllib.parse.unquote(encoded, errors="strict") == text
