"""The Received grammar checker (tests/received_grammar.py) accepts what the RFCs allow and
refuses what they do not, the headers written before the trace hardening included."""

from __future__ import annotations

import datetime as dt

import pytest
from received_grammar import (
    ExtendedDomain,
    GrammarError,
    check_one_header_field,
    check_received,
)

DATE = "Wed, 25 Nov 2026 10:00:00 +0000"
WHEN = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)


def field(first: str, *more: str) -> bytes:
    """A field from its lines: CRLF after each, a tab before each continuation line."""
    return ("\r\n\t".join((first, *more)) + "\r\n").encode()


def ours(
    from_: str = "client.example ([192.0.2.1])", rest: str = "", *, id_: str = "abc1-1"
) -> str:
    return f"Received: from {from_}{rest}\r\n\tby mx.example.org (smtpd-trio) with ESMTP id {id_}"


# ---- accepted ------------------------------------------------------------------------------


def test_our_layout_and_what_it_says() -> None:
    stamp = check_received(
        field(
            "Received: from client.example ([192.0.2.1])",
            "by mx.example.org (smtpd-trio) with ESMTPSA id bbd0242-1",
            "for <b@example.org>;",
            DATE,
        ),
        utf8=False,
    )
    assert stamp.from_ == ExtendedDomain("client.example", "[192.0.2.1]")
    assert stamp.by == ExtendedDomain("mx.example.org", None)
    assert (stamp.protocol, stamp.id, stamp.for_) == ("ESMTPSA", "bbd0242-1", "<b@example.org>")
    assert stamp.via is None
    assert stamp.additional == ()
    assert stamp.comments == ("smtpd-trio",)
    assert stamp.date == WHEN


@pytest.mark.parametrize(
    "header",
    [
        # RFC 5321 appendix-style minimal stamp: CFWS before ";" and nothing optional.
        field(f"Received: from bar.com by foo.com ; {DATE}"),
        field(f"Received: from bar.com by foo.com; {DATE}"),
        # TCP-info with a Domain, and an address literal as the Extended-Domain.
        field(f"Received: from [192.0.2.1] (host.example [192.0.2.1]) by mx.example; {DATE}"),
        field(f"Received: from x.example (y.example [IPv6:2001:db8::1]) by mx.example; {DATE}"),
        # Comments anywhere CFWS is: nested, with quoted-pairs, several in a row.
        field(f"Received: from a.example (x) (y (z) \\) w) by b.example (c) ; {DATE}"),
        # Via, With, ID as a msg-id, For as a Path with a source route, and as a Mailbox.
        field(
            "Received: from a.example by b.example via TCP with SMTP",
            f"id <1.2@b.example> for <@r.example,@s.example:u@c.example>; {DATE}",
        ),
        field(f"Received: from a.example by b.example for u@c.example; {DATE}"),
        field(f'Received: from a.example by b.example for <"a b;c"@d.example>; {DATE}'),
        field(f"Received: from a.example by b.example for <u@[192.0.2.1]>; {DATE}"),
        # An additional registered clause (Atom FWS String).
        field(f'Received: from a.example by b.example with ESMTP clause "value"; {DATE}'),
        # Folding wherever FWS may be, with spaces or tabs; keywords in any case.
        b"Received:\r\n from a.example\r\n  BY b.example\r\n\tWith esmtp\r\n ;\r\n "
        + DATE.encode()
        + b"\r\n",
        # date-time variations: no day of the week, no seconds, one-digit day, another zone.
        field("Received: from a.example by b.example; 5 Nov 2026 10:00 -0730"),
        field("Received: from a.example by b.example; Thu, 29 Feb 2024 23:59:60 +1400 (x)"),
    ],
)
def test_valid_fields_are_accepted(header: bytes) -> None:
    check_received(header, utf8=False)
    check_received(header, utf8=True)


@pytest.mark.parametrize(
    "literal",
    [
        "[0.0.0.0]",
        "[255.255.255.255]",
        "[IPv6:::]",
        "[IPv6:::1]",
        "[ipv6:2001:DB8::1]",
        "[IPv6:1:2:3:4:5:6:7:8]",
        "[IPv6:1:2:3:4:5:6::]",  # "::" for two groups, six written
        "[IPv6:1:2:3:4:5:6:192.0.2.1]",
        "[IPv6:::ffff:192.0.2.1]",
        "[IPv6:1:2:3:4::192.0.2.1]",
        "[x-tag:any/thing]",
        "[unix:/run/smtp.sock]",
    ],
)
def test_address_literals_in_tcp_info(literal: str) -> None:
    stamp = check_received(field(ours(f"a.example ({literal})") + f"; {DATE}"), utf8=False)
    assert stamp.from_.tcp_info == literal


def test_utf8_for_path_and_u_labels_under_smtputf8() -> None:
    path = (
        "<\u043f\u0440\u0438\u043c\u0435\u0440@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444>"
    )
    header = field(
        "Received: from client.example ([192.0.2.1])",
        "by mx.example.org (smtpd-trio) with UTF8SMTP id abc1-1",
        f"for {path};",
        DATE,
    )
    assert check_received(header, utf8=True).for_ == path
    with pytest.raises(GrammarError, match="non-ASCII"):
        check_received(header, utf8=False)


def test_protocol_registration_can_be_waived() -> None:
    header = field(f"Received: from a.example by b.example with FOO; {DATE}")
    with pytest.raises(GrammarError, match="not registered"):
        check_received(header, utf8=False)
    assert check_received(header, utf8=False, registered_protocols=False).protocol == "FOO"


# ---- refused: what the server wrote before the trace hardening -----------------------------


@pytest.mark.parametrize(
    ("header", "why"),
    [
        # "EHLO x;y": the ";" ends the stamp early.
        (
            field(
                "Received: from x;y ([127.0.0.1])", "by mx (smtpd-trio) with ESMTP id a-1;", DATE
            ),
            "expected",
        ),
        # "EHLO a)b(c": unbalanced comment.
        (
            field(
                "Received: from a)b(c ([127.0.0.1])", "by mx (smtpd-trio) with ESMTP id a-1;", DATE
            ),
            "expected",
        ),
        # "EHLO ([1.2.3.4])": a forged address literal in the place of the name.
        (
            field("Received: from ([1.2.3.4]) ([127.0.0.1])", "by mx with ESMTP id a-1;", DATE),
            "expected",
        ),
        # The id with a dot is not an Atom.
        (field(ours() + ";", DATE).replace(b"abc1-1", b"bbd0242.1"), "expected ';'"),
    ],
)
def test_old_headers_are_refused(header: bytes, why: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(GrammarError, match=why):
            check_received(header, utf8=utf8)


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"])
def test_line_separators_are_refused(separator: str) -> None:
    # "EHLO x\xc2\x85X-Injected:1", and a forward-path holding U+0085 or U+2028 under SMTPUTF8.
    for header in (
        field(f"Received: from x{separator}X-Injected:1 ([127.0.0.1])", f"by mx; {DATE}"),
        field(ours() + f" for <a{separator}b@example.org>;", DATE),
    ):
        with pytest.raises(GrammarError, match="non-ASCII"):
            check_received(header, utf8=False)
        with pytest.raises(GrammarError, match=f"U\\+{ord(separator):04X}"):
            check_received(header, utf8=True)


# ---- refused: header field rules (RFC 5322) ------------------------------------------------

GOOD = field(ours() + ";", DATE)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (GOOD[:-2], "does not end in CRLF"),
        (GOOD[:-2] + b"\n", "does not end in CRLF"),
        (GOOD.replace(b"\r\n\t", b"\n\t", 1), "bare CR or LF"),
        (GOOD.replace(b"\r\n\t", b"\r\t", 1), "bare CR or LF"),
        (GOOD.replace(b"\r\n\t", b"\r\n", 1), "must start with WSP"),
        (GOOD.replace(b"\r\n\t", b"\r\n\t\r\n\t", 1), "white space only"),
        (GOOD.replace(b"\r\n\t", b"\r\n \t\r\n\t", 1), "white space only"),
        (GOOD + b"\r\n", "must start with WSP"),
        (GOOD.replace(b"(smtpd-trio)", b"(" + b"x" * 1000 + b")"), "over 998"),
        (GOOD.replace(b"smtpd-trio", b"smtpd\x00trio"), "U\\+0000"),
        (GOOD.replace(b"smtpd-trio", b"smtpd\x7ftrio"), "U\\+007F"),
        (GOOD.replace(b"smtpd-trio", b"smtpd\x0btrio"), "U\\+000B"),
        (GOOD.replace(b"smtpd-trio", b"smtpd\x1ctrio"), "U\\+001C"),
        (GOOD.replace(b"smtpd-trio", b"smtpd\xfftrio"), "non-ASCII|not UTF-8"),
        (GOOD.replace(b"Received:", b"Received :"), "not a Received field"),
        (GOOD.replace(b"Received:", b"X-Received:"), "not a Received field"),
    ],
)
def test_field_rules(header: bytes, why: str) -> None:
    check_received(GOOD, utf8=True)
    with pytest.raises(GrammarError, match=why):
        check_received(header, utf8=True)


def test_a_line_of_998_octets_is_allowed() -> None:
    first = b"Received: from client.example ([192.0.2.1]) ("
    header = first + b"x" * (997 - len(first)) + b")\r\n\tby mx; " + DATE.encode() + b"\r\n"
    assert len(header.split(b"\r\n")[0]) == 998
    check_received(header, utf8=False)


def test_a_fold_inside_a_token_is_refused() -> None:
    with pytest.raises(GrammarError):
        check_received(GOOD.replace(b"example.org", b"exam\r\n\tple.org"), utf8=False)


# ---- refused: the stamp (RFC 5321 §4.4) ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        ours("client.example ([192.0.2.1])", id_="a.1"),  # ID not an Atom
        ours("client.example ([192.0.2.1])", id_="a(1"),
        ours("client.example ([192.0.2.1])", id_=""),
        ours("client.example ([192.0.2.1]") + ";",  # unclosed
        ours("client.example ([192.0.2.1]))"),  # one ")" too many
        ours("client.example ((comment)"),
        ours("client.example ([192.0.2.1]) (helo=(x)"),
        ours("[192.0.2.1]"),  # an address literal needs TCP-info after it
        ours("-client.example ([192.0.2.1])"),  # label rules
        ours("client-.example ([192.0.2.1])"),
        ours("client..example ([192.0.2.1])"),
        ours("client.example. ([192.0.2.1])"),
        ours("my_pc ([192.0.2.1])"),
        ours("a" * 64 + ".example ([192.0.2.1])"),
        ours(".".join(["a" * 63] * 4) + ".a ([192.0.2.1])"),  # over 255 octets
        ours("client.example ([192.0.2.1])").replace("from", "frum"),
        ours("client.example ([192.0.2.1])").replace("\tby", "\t"),
        ours("client.example ([192.0.2.1])").replace("from ", "from"),
        ours().replace("ESMTP", "E SMTP"),
        ours() + " for <>",  # the null path
        ours() + " for <b@example.org",
        ours() + " for <b@@example.org>",
        ours() + " for <b.@example.org>",
        ours() + " for <b;c@example.org>",
        ours() + " for <" + "b" * 65 + "@example.org>",
        ours() + " for <b@" + ".".join(["a" * 63] * 3) + "." + "a" * 61 + ">",  # path 257
        ours() + ' for <"b\x01"@example.org>',
        ours() + " for <b@bad_domain.example>",
        ours() + " trailing",  # additional clause without a value
    ],
)
def test_malformed_stamps_are_refused(text: str) -> None:
    header = field(text + ";" if not text.endswith(";") else text, DATE)
    for utf8 in (False, True):
        with pytest.raises(GrammarError):
            check_received(header, utf8=utf8)


@pytest.mark.parametrize(
    "literal",
    [
        "[192.0.2.256]",
        "[192.0.2]",
        "[192.0.2.1.5]",
        "[IPv6:1:2:3:4:5:6:7::]",  # "::" standing for one group
        "[IPv6:1:2:3:4:5::192.0.2.1]",  # five groups besides "::" and the IPv4 tail
        "[IPv6:1:2:3:4:5:6:7]",
        "[IPv6:1:2:3:4:5:6:7:8:9]",
        "[IPv6:1::2::3]",
        "[IPv6:12345::]",
        "[IPv6:fe80::1%eth0]",
        "[IPv6:garbage]",  # the IPv6 tag is not a general literal
        "[IPv6:192.0.2.1]",
        "[x-tag:]",
        "[-tag:x]",
        "[a b]",
        "[]",
    ],
)
def test_malformed_address_literals(literal: str) -> None:
    # As the Extended-Domain, or in a mailbox, it is refused.
    for text in (ours(f"{literal} ([192.0.2.1])"), ours() + f" for <u@{literal}>"):
        with pytest.raises(GrammarError):
            check_received(field(text + ";", DATE), utf8=False)
    # Where TCP-info would be, it is only a comment (RFC 5321's grammar allows CFWS there):
    # a reader looking for the client address does not find it there.
    stamp = check_received(field(ours(f"client.example ({literal})") + ";", DATE), utf8=False)
    assert stamp.from_ == ExtendedDomain("client.example", None)
    assert stamp.comments[0] == literal


def test_u_labels_need_smtputf8_and_must_be_labels() -> None:
    ok = field(ours() + " for <a@b\u00fccher.example>;", DATE)
    check_received(ok, utf8=True)
    with pytest.raises(GrammarError):
        check_received(ok, utf8=False)
    for bad in ("a@b\u00fc-.example", "a@\u2603.example", "a@\u00a0x.example", "a@u\u0308.example"):
        with pytest.raises(GrammarError):
            check_received(field(ours() + f" for <{bad}>;", DATE), utf8=True)


# ---- refused: date-time (RFC 5322 §3.3) -----------------------------------------------------


@pytest.mark.parametrize(
    "date",
    [
        "Thu, 25 Nov 2026 10:00:00 +0000",  # 25 Nov 2026 is a Wednesday
        "Wed, 31 Nov 2026 10:00:00 +0000",
        "Thu, 29 Feb 2026 10:00:00 +0000",
        "Wed, 25 Nov 1899 10:00:00 +0000",
        "Wed, 25 Nov 26 10:00:00 +0000",  # obs-year
        "Wed, 25 Nov 2026 24:00:00 +0000",
        "Wed, 25 Nov 2026 10:60:00 +0000",
        "Wed, 25 Nov 2026 10:00:61 +0000",
        "Wed, 25 Nov 2026 10:00:00 +0060",
        "Wed, 25 Nov 2026 10:00:00 UT",  # obs-zone
        "Wed, 25 Nov 2026 10:00:00 GMT",
        "Wed, 25 Nov 2026 10:00:00",
        "Wed, 25 Nov 2026 1:00:00 +0000",
        "Wed 25 Nov 2026 10:00:00 +0000",
        "Wed, 25 November 2026 10:00:00 +0000",
        "Wed, 25 Nov 2026 10:00:00 +0000 trailing",
        "",
    ],
)
def test_bad_dates_are_refused(date: str) -> None:
    with pytest.raises(GrammarError):
        check_received(field(ours() + ";", date), utf8=False)


# ---- what email makes of it ----------------------------------------------------------------


def test_email_sees_one_field_with_the_whole_value() -> None:
    check_one_header_field(GOOD)
    check_one_header_field(field(ours() + " for <\u00fc@example.org>;", DATE))


@pytest.mark.parametrize(
    "header",
    [
        # A bare LF ends the field early and starts a forged one.
        GOOD.replace(b"\r\n\t" + DATE.encode(), b"\nX-Injected: 1\r\n\t" + DATE.encode()),
        # A blank line ends the header section: the rest becomes the body.
        GOOD.replace(b"\r\n\t", b"\r\n\r\n\t", 1),
    ],
)
def test_email_parse_check_can_fail(header: bytes) -> None:
    with pytest.raises(GrammarError):
        check_one_header_field(header)
