"""HELO/EHLO names: which are accepted, which are refused with 501 5.5.2, and why.

The rules mirror Postfix's ``reject_invalid_helo_hostname`` (see ``parse_helo_name`` and
docs/security.md). Most cases call the parser directly; a few go through the machine, to show
what a client sees.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from machine_driver import drive

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.commands import CommandSyntaxError, parse_helo_name
from smtpd_trio._smtp.events import Hello
from smtpd_trio._smtp.machine import State

#: Names real clients send, and names the RFCs allow, that must keep working.
ACCEPTED = [
    "client.example",
    "mx.example.",  # a trailing dot (an absolute name)
    "localhost",  # curl and msmtp by default, and many scripts
    "mypc",  # gethostname() without a domain: swaks, smtp-source, curl
    "MYPC-01",
    "my_pc",  # underscores: Windows and older clients (Postfix allows them too)
    "_dmarc.example",
    "DESKTOP-4F2A_B.corp.example",
    "xn--bcher-kva.example",  # an IDN as A-labels (RFC 6531 §3.7.1)
    "a1-2",
    "1-800-flowers.example",
    "3com.example",
    "192.0.2.1",  # a bare IPv4 address: not what RFC 5321 asks, but Postfix allows it
    "[192.0.2.1]",  # smtplib when getfqdn() has no dot
    "[IPv6:2001:db8::1]",
    "[ipv6:::1]",
    "[IPv6:2001:0db8:0000:0000:0000:0000:0000:0001]",
    "[IPv6:::ffff:192.0.2.1]",
    "a" * 63,
    ".".join(["a" * 63] * 3) + "." + "a" * 63,  # 255 octets
    ".".join(["a" * 63] * 3) + "." + "a" * 63 + ".",  # and its trailing dot
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_names_are_returned_as_sent(name: str) -> None:
    assert parse_helo_name(name) == name


#: Each is refused with 501 5.5.2, and each says why in a comment.
REFUSED = [
    "x;y",  # ";" would end the Received stamp early
    "a)b(c",  # unbalances the comment that follows the name
    "([1.2.3.4])",  # forges a TCP-info address literal
    "[1.2.3.4])",
    "a]",
    "a\\b",
    "<a@b>",
    '"quoted"',
    "a@b",
    "a,b",
    "a/b",
    "a*b",
    "a b",  # several words (Postfix would join them with a space)
    "a\tb",
    "x\x00y",
    "x\x7fy",
    "-a",  # hyphen at the start of a label
    "a-",  # or at its end
    "a.-b",
    "a-.b",
    "a..b",  # empty label
    ".a",
    ".",
    "..",
    "a..",  # only one trailing dot is forgiven
    "a" * 64,  # label over 63
    ".".join(["a" * 63] * 4) + ".a",  # name over 255 octets
    "123",  # all-numeric, and not an IPv4 address
    "1.2.3",
    "999.1.1.1",
    "01.2.3.4",
    "[]",
    "[1.2.3.4",
    "1.2.3.4]",
    "[192.0.2.256]",
    "[hostname]",
    "[x-tag:general]",  # general address literals name no host
    "[IPv6:fe80::1%eth0]",  # zone ids are not part of RFC 5321
    "[IPv6:192.0.2.1]",
    "[2001:db8::1]",  # IPv6 needs the "IPv6:" tag
    "2001:db8::1",  # and the brackets
    "[192.0.2.1].",
]


@pytest.mark.parametrize("name", REFUSED)
def test_malformed_names_are_501_5_5_2(name: str) -> None:
    with pytest.raises(CommandSyntaxError) as raised:
        parse_helo_name(name)
    assert raised.value.reply == replies.BAD_HELO_NAME
    assert (raised.value.reply.code, raised.value.reply.enhanced) == (501, "5.5.2")


@pytest.mark.parametrize(
    "name",
    [
        "b\u00fccher.example",  # a U-label: must be sent as xn--bcher-kva (RFC 6531 §3.7.1)
        "x\x85X-Injected:1",  # NEL, which str.splitlines() splits on
        "x\u2028y",
        "\u0430pple.example",  # Cyrillic a
        "[\uff11.2.3.4]",  # fullwidth digit
        "mx.example\u3002",  # ideographic full stop
    ],
)
def test_non_ascii_names_are_refused(name: str) -> None:
    with pytest.raises(CommandSyntaxError) as raised:
        parse_helo_name(name)
    assert raised.value.reply == replies.NON_ASCII_HELO_NAME
    assert (raised.value.reply.code, raised.value.reply.enhanced) == (501, "5.5.2")


def test_a_missing_name_is_501_5_5_4() -> None:
    with pytest.raises(CommandSyntaxError) as raised:
        parse_helo_name(None)
    assert (raised.value.reply.code, raised.value.reply.enhanced) == (501, "5.5.4")


# Whatever is accepted holds only characters that are inert in a header field.
_INERT = re.compile(r"[A-Za-z0-9._:\[\]-]+\Z")


@settings(max_examples=200)
@given(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet="aZ09-_.:[]()%;\\ \x85", max_size=20),
        st.from_regex(r"\[[0-9.]{1,16}\]|\[IPv6:[0-9a-f:.]{2,40}\]", fullmatch=True),
    )
)
@example("x;y")
@example("a)b(c")
def test_accepted_names_are_inert(name: str) -> None:
    reply = None
    try:
        accepted = parse_helo_name(name)
    except CommandSyntaxError as exc:
        reply = exc.reply
    if reply is not None:
        assert (reply.code, reply.enhanced) == (501, "5.5.2")
        return
    assert accepted == name
    assert _INERT.match(name), name
    assert len(name.encode()) <= 256


# ---- through the machine -------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"EHLO x;y\r\n",
        b"EHLO a)b(c\r\n",
        b"EHLO x\xc2\x85X-Injected:1\r\n",
        b"EHLO ([1.2.3.4])\r\n",
        b"HELO a b\r\n",
        b"EHLO b\xc3\xbccher.example\r\n",
    ],
)
def test_machine_refuses_hostile_names(line: bytes) -> None:
    run = drive(line + b"MAIL FROM:<a@example.com>\r\n")
    assert run.codes == [501, 503]
    assert run.enhanced == ["5.5.2", "5.5.1"]
    assert run.machine.state is State.CONNECTED
    assert run.of_type(Hello) == []


@pytest.mark.parametrize(
    "name", ["localhost", "mypc", "mx.example.", "my_pc", "[192.0.2.1]", "[IPv6:2001:db8::1]"]
)
def test_machine_accepts_what_clients_send(name: str) -> None:
    run = drive(f"EHLO {name}\r\nHELO {name}\r\n".encode())
    assert run.codes == [250, 250]
    assert run.of_type(Hello) == [Hello(name, extended=True), Hello(name, extended=False)]
