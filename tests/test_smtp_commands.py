"""Commands through the machine: every verb, its replies, sequence errors, syntax errors, paths.

Every case asserts the exact reply code and enhanced status code the client sees.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import Run, drive, outcomes, parse_replies, refuse

from smtpd_trio._smtp import commands, replies
from smtpd_trio._smtp.events import (
    Closed,
    CloseReason,
    CommandRejected,
    Hello,
    MailFrom,
    RcptTo,
    TransactionOutcome,
    Verify,
)
from smtpd_trio._smtp.machine import State

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<alice@example.com>\r\n"
RCPT = b"RCPT TO:<bob@example.org>\r\n"


def after(prefix: bytes, line: bytes, **options: Any) -> Run:
    """Run ``prefix`` then ``line``; return the run (its last reply answers ``line``)."""
    return drive(prefix + line, **options)


def rcpt_of(run: Run) -> str:
    """The address of the last event, which must be an RcptTo without parameters."""
    event = run.events[-1]
    assert isinstance(event, RcptTo)
    assert event.params == {}
    return event.address


def last(run: Run) -> tuple[int, str | None]:
    reply = run.replies[-1]
    return reply.code, reply.enhanced


# ---- greeting, HELO/EHLO ---------------------------------------------------------------------


def test_banner_is_220_with_hostname() -> None:
    run = drive(b"")
    assert run.banner == b"220 mx.example.org ESMTP smtpd-trio ready\r\n"
    assert run.machine.state is State.CONNECTED


def test_ehlo_lists_exactly_the_extensions() -> None:
    run = drive(EHLO, max_message_size=12345)
    assert run.output == (
        b"250-mx.example.org\r\n"
        b"250-SIZE 12345\r\n"
        b"250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n"
        b"250-PIPELINING\r\n"
        b"250-CHUNKING\r\n"
        b"250-BINARYMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250-LIMITS RCPTMAX=1000 MAILMAX=10000\r\n"
        b"250 HELP\r\n"
    )
    assert run.events == [Hello("client.example", extended=True)]
    assert run.machine.state is State.READY
    assert run.machine.facts.extended


def test_ehlo_without_size_limit_smtputf8_or_chunking() -> None:
    run = drive(EHLO, max_message_size=None, smtputf8=False, max_messages=None, chunking=False)
    assert run.replies[0].lines == (
        "mx.example.org",
        "SIZE",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "LIMITS RCPTMAX=1000",
        "HELP",
    )


def test_helo_is_one_line_and_not_extended() -> None:
    run = drive(b"HELO client.example\r\n")
    assert run.output == b"250 mx.example.org\r\n"
    assert run.events == [Hello("client.example", extended=False)]
    assert not run.machine.facts.extended


@pytest.mark.parametrize("line", [b"HELO\r\n", b"EHLO\r\n", b"EHLO \r\n"])
def test_helo_without_a_name_is_501(line: bytes) -> None:
    run = drive(line)
    assert run.codes == [501]
    assert run.enhanced == ["5.5.4"]
    assert run.machine.state is State.CONNECTED
    assert isinstance(run.events[0], CommandRejected)


def test_helo_address_literal_name_is_accepted() -> None:
    run = drive(b"EHLO [192.0.2.1]\r\n")
    assert run.events == [Hello("[192.0.2.1]", extended=True)]


def test_refused_helo_keeps_state() -> None:
    run = drive(EHLO + MAIL, refuse(Hello))
    assert run.codes == [550, 503]
    assert run.enhanced == ["5.7.1", "5.5.1"]
    assert run.machine.state is State.CONNECTED


def test_helo_resets_an_open_transaction() -> None:
    run = drive(EHLO + MAIL + RCPT + b"HELO again.example\r\n" + b"DATA\r\n")
    assert run.codes == [250, 250, 250, 250, 503]
    assert run.replies[-1].enhanced == "5.5.1"
    assert run.machine.envelope is None
    assert outcomes(run) == [TransactionOutcome.RESET]


# ---- verbs are case-insensitive --------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        b"ehlo c\r\nmail from:<a@b.example>\r\nrcpt to:<c@d.example>\r\nrset\r\nnoop\r\nquit\r\n",
        b"EhLo c\r\nMaIl FrOm:<a@b.example>\r\nRcPt To:<c@d.example>\r\nRsEt\r\nNoOp\r\nQuIt\r\n",
    ],
)
def test_verbs_and_prefixes_are_case_insensitive(script: bytes) -> None:
    run = drive(script)
    assert run.codes == [250, 250, 250, 250, 250, 221]
    assert run.events[-1] == Closed(CloseReason.QUIT)


def test_non_ascii_letters_do_not_fold_into_a_verb() -> None:
    # str.upper() maps U+0131 (dotless i) to "I": "MA\u0131L" must not run as MAIL.
    run = drive(EHLO + "MA\u0131L FROM:<a@b.example>\r\n".encode())
    assert run.codes == [250, 500]
    assert run.enhanced[-1] == "5.5.2"
    assert not run.of_type(MailFrom)


# ---- the simple verbs ------------------------------------------------------------------------


def test_noop_with_and_without_argument() -> None:
    run = drive(b"NOOP\r\nNOOP anything at all\r\n")
    assert run.output == b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
    assert run.events == []


def test_help_is_214() -> None:
    run = drive(b"HELP\r\nHELP MAIL\r\n")
    assert run.codes == [214, 214]
    assert run.enhanced == ["2.0.0", "2.0.0"]


def test_vrfy_is_a_decision_answered_252_by_default() -> None:
    run = drive(b"VRFY postmaster\r\n")
    assert run.events == [Verify("postmaster")]
    assert run.output == (
        b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )


def test_vrfy_without_argument_is_501() -> None:
    run = drive(b"VRFY\r\n")
    assert (run.codes, run.enhanced) == ([501], ["5.5.4"])


def test_rset_clears_the_transaction() -> None:
    run = drive(EHLO + MAIL + RCPT + b"RSET\r\nRCPT TO:<x@y.example>\r\n")
    assert run.codes == [250, 250, 250, 250, 503]
    assert run.replies[3].enhanced == "2.0.0"
    assert run.replies[4].enhanced == "5.5.1"
    assert outcomes(run) == [TransactionOutcome.RESET]
    assert run.machine.state is State.READY


def test_rset_before_helo_is_fine() -> None:
    run = drive(b"RSET\r\n")
    assert run.output == b"250 2.0.0 Reset OK\r\n"
    assert run.machine.state is State.CONNECTED
    assert run.events == []  # no transaction, so none ends


def test_quit_says_bye_and_closes() -> None:
    run = drive(b"QUIT\r\nNOOP\r\n")
    assert run.output == b"221 2.0.0 Bye\r\n"
    assert run.events == [Closed(CloseReason.QUIT)]
    assert run.machine.state is State.CLOSED


def test_quit_inside_a_transaction_reports_it_dropped() -> None:
    run = drive(EHLO + MAIL + b"QUIT\r\n")
    assert outcomes(run) == [TransactionOutcome.ABORTED]
    assert run.events[-1] == Closed(CloseReason.QUIT)


@pytest.mark.parametrize(
    ("prefix", "line"),
    [
        (EHLO + MAIL + RCPT, b"DATA now\r\n"),
        (EHLO, b"RSET everything\r\n"),
        (EHLO, b"QUIT please\r\n"),
    ],
)
def test_argument_to_argumentless_verb_is_501(prefix: bytes, line: bytes) -> None:
    run = after(prefix, line)
    assert last(run) == (501, "5.5.4")
    assert run.machine.state is not State.CLOSED
    assert run.machine.state is not State.DATA


def test_trailing_spaces_after_argumentless_verb_are_tolerated() -> None:
    run = drive(EHLO + b"RSET \r\nQUIT  \r\n")
    assert run.codes == [250, 250, 221]


@pytest.mark.parametrize("verb", [b"EXPN", b"STARTTLS", b"AUTH", b"TURN", b"ETRN"])
def test_known_but_unoffered_commands_are_502(verb: bytes) -> None:
    run = after(EHLO, verb + b" x\r\n")
    assert last(run) == (502, "5.5.1")
    assert isinstance(run.events[-1], CommandRejected)


def test_bdat_without_chunking_is_502_and_reads_no_chunk() -> None:
    run = drive(EHLO + b"BDAT 4 LAST\r\nNOOP\r\n", chunking=False)
    assert run.codes == [250, 502, 250]
    assert "CHUNKING" not in run.replies[0].lines


@pytest.mark.parametrize("line", [b"FOO\r\n", b"\r\n", b" NOOP\r\n", b"MAILFROM:<a@b>\r\n"])
def test_unknown_commands_are_500(line: bytes) -> None:
    run = after(EHLO, line)
    assert last(run) == (500, "5.5.2")


def test_invalid_utf8_command_is_500() -> None:
    run = after(EHLO, b"NOOP \xff\xfe\r\n")
    assert last(run) == (500, "5.5.2")
    assert run.replies[-1].text == "Syntax error: command is not valid UTF-8"


# ---- sequence errors (503 / 554) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "line", "text"),
    [
        (b"", MAIL, "Send HELO or EHLO first"),
        (EHLO + MAIL, b"MAIL FROM:<c@d.example>\r\n", "Sender already specified"),
        (EHLO + MAIL + RCPT, b"MAIL FROM:<c@d.example>\r\n", "Sender already specified"),
        (b"", RCPT, "Need MAIL command first"),
        (EHLO, RCPT, "Need MAIL command first"),
        (b"", b"DATA\r\n", "Need MAIL command first"),
        (EHLO, b"DATA\r\n", "Need MAIL command first"),
    ],
)
def test_out_of_sequence_is_503(prefix: bytes, line: bytes, text: str) -> None:
    run = after(prefix, line)
    assert last(run) == (503, "5.5.1")
    assert run.replies[-1].text == text
    rejected = run.events[-1]
    assert isinstance(rejected, CommandRejected)
    assert rejected.reply.code == 503


def test_data_with_mail_but_no_accepted_recipient_is_554() -> None:
    run = drive(EHLO + MAIL + RCPT + b"DATA\r\n", refuse(RcptTo))
    assert run.codes == [250, 250, 550, 554]
    assert run.enhanced[-1] == "5.5.1"
    assert run.machine.state is State.MAIL


def test_sequence_check_comes_before_syntax() -> None:
    # A malformed MAIL before HELO is still told to say HELO first.
    run = drive(b"MAIL FROM:<bad\r\n")
    assert (run.codes, run.enhanced) == ([503], ["5.5.1"])


# ---- MAIL FROM -------------------------------------------------------------------------------


def test_mail_accepted_with_standard_reply() -> None:
    run = after(EHLO, MAIL)
    assert run.output.endswith(b"250 2.1.0 Sender OK\r\n")
    assert run.events[-1] == MailFrom("alice@example.com", {})
    assert run.machine.state is State.MAIL


def test_null_reverse_path() -> None:
    run = after(EHLO, b"MAIL FROM:<>\r\n")
    assert run.events[-1] == MailFrom("", {})


def test_space_after_from_colon_is_tolerated() -> None:
    run = after(EHLO, b"MAIL FROM: <a@b.example>\r\n")
    assert run.events[-1] == MailFrom("a@b.example", {})


@pytest.mark.parametrize(
    ("line", "enhanced"),
    [
        (b"MAIL FROM:<bad address\r\n", "5.1.7"),
        (b"MAIL FROM:<a@b.example\r\n", "5.1.7"),
        (b"MAIL FROM:<bad address>\r\n", "5.1.7"),
        (b"MAIL FROM:bad@x.example\r\n", "5.1.7"),
        (b"MAIL FROM:<a@b.example>junk\r\n", "5.1.7"),
        (b"MAIL FROM:<@a.example:>\r\n", "5.1.7"),
        (b"MAIL FROM:<a@>\r\n", "5.1.7"),
        (b"MAIL FROM:<@b.example>\r\n", "5.1.7"),
        (b"MAIL FROM:<a..b@c.example>\r\n", "5.1.7"),
        (b"MAIL FROM:<a@-b.example>\r\n", "5.1.7"),
        (b"MAIL FROM:<Postmaster>\r\n", "5.1.7"),
        (b"MAIL <a@b.example>\r\n", "5.5.4"),
        (b"MAIL TO:<a@b.example>\r\n", "5.5.4"),
        (b"MAIL\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> =x\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SIZE=\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> -X=1\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SIZE=1 size=2\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SIZE=abc\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SIZE\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SIZE=-1\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SIZE=123456789012345678901\r\n", "5.5.4"),
        ("MAIL FROM:<a@b.example> SIZE=\u0661\u0662\r\n".encode(), "5.5.4"),
        (b"MAIL FROM:<a@b.example> BODY=9BIT\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> BODY\r\n", "5.5.4"),
        (b"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n", "5.5.4"),
    ],
)
def test_mail_syntax_errors_are_501(line: bytes, enhanced: str) -> None:
    run = after(EHLO, line)
    assert last(run) == (501, enhanced)
    assert not run.of_type(MailFrom)
    assert run.machine.state is State.READY


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@b.example> FOO=bar\r\n",
        b"MAIL FROM:<a@b.example> RET=HDRS\r\n",
        b"MAIL FROM:<a@b.example> SIZE=10 XYZ\r\n",
        "MAIL FROM:<a@b.example> X=\u00e9\r\n".encode(),
    ],
)
def test_mail_unknown_parameters_are_555(line: bytes) -> None:
    run = after(EHLO, line)
    assert last(run) == (555, "5.5.4")
    assert not run.of_type(MailFrom)


def test_mail_smtputf8_param_is_unknown_when_not_offered() -> None:
    run = after(EHLO, b"MAIL FROM:<a@b.example> SMTPUTF8\r\n", smtputf8=False)
    assert last(run) == (555, "5.5.4")


def test_mail_known_parameters() -> None:
    run = after(EHLO, b"MAIL FROM:<a@b.example> size=100 body=8bitmime SMTPUTF8\r\n")
    assert run.events[-1] == MailFrom(
        "a@b.example", {"SIZE": "100", "BODY": "8bitmime", "SMTPUTF8": None}
    )
    assert run.machine.envelope is not None
    assert run.machine.envelope.smtputf8


def test_body_value_does_not_fold_non_ascii() -> None:
    run = after(EHLO, "MAIL FROM:<a@b.example> BODY=8B\u0131TM\u0131ME\r\n".encode())
    assert last(run) == (501, "5.5.4")


def test_mail_size_at_the_limit_is_accepted_over_it_is_552() -> None:
    ok = after(EHLO, b"MAIL FROM:<a@b.example> SIZE=1000\r\n", max_message_size=1000)
    assert last(ok) == (250, "2.1.0")
    big = after(EHLO, b"MAIL FROM:<a@b.example> SIZE=1001\r\n" + RCPT, max_message_size=1000)
    assert big.codes == [250, 552, 503]
    assert big.enhanced[1:] == ["5.3.4", "5.5.1"]
    assert big.machine.state is State.READY


def test_mail_size_is_not_checked_without_a_limit() -> None:
    run = after(EHLO, b"MAIL FROM:<a@b.example> SIZE=99999999999999\r\n", max_message_size=None)
    assert last(run) == (250, "2.1.0")


def test_refused_mail_keeps_state_so_rcpt_gets_503() -> None:
    run = drive(EHLO + MAIL + RCPT, refuse(MailFrom))
    assert run.codes == [250, 550, 503]
    assert run.enhanced[1:] == ["5.7.1", "5.5.1"]
    assert not run.of_type(RcptTo)
    assert run.machine.state is State.READY


def test_positive_custom_reply_is_sent() -> None:
    custom = replies.Reply(250, "2.1.0", "Hello sender")
    run = drive(EHLO + MAIL, lambda e: custom if isinstance(e, MailFrom) else None)
    assert run.output.endswith(b"250 2.1.0 Hello sender\r\n")


# ---- RCPT TO ---------------------------------------------------------------------------------


def test_rcpt_accepted() -> None:
    run = after(EHLO + MAIL, RCPT)
    assert run.output.endswith(b"250 2.1.5 Recipient OK\r\n")
    rcpt = run.events[-1]
    assert isinstance(rcpt, RcptTo)
    assert (rcpt.address, rcpt.params, rcpt.envelope.rcpt_tos) == ("bob@example.org", {}, ())
    assert run.machine.state is State.RCPT
    assert run.machine.envelope is not None
    assert run.machine.envelope.rcpt_tos == ("bob@example.org",)


@pytest.mark.parametrize("line", [b"RCPT TO:<Postmaster>\r\n", b"RCPT TO:<postmaster>\r\n"])
def test_rcpt_bare_postmaster(line: bytes) -> None:
    run = after(EHLO + MAIL, line)
    assert last(run) == (250, "2.1.5")
    rcpt = run.events[-1]
    assert isinstance(rcpt, RcptTo)
    assert rcpt.address.upper() == "POSTMASTER"


@pytest.mark.parametrize(
    ("line", "enhanced"),
    [
        (b"RCPT TO:<>\r\n", "5.1.3"),
        (b"RCPT TO:<bad address\r\n", "5.1.3"),
        (b"RCPT TO:<c@d.example\r\n", "5.1.3"),
        (b"RCPT TO:bob@example.org\r\n", "5.1.3"),
        (b"RCPT TO:<a@b.example>x\r\n", "5.1.3"),
        (b"RCPT FROM:<a@b.example>\r\n", "5.5.4"),
        (b"RCPT <a@b.example>\r\n", "5.5.4"),
        (b"RCPT\r\n", "5.5.4"),
        (b"RCPT TO:<a@b.example> X=1 X=2\r\n", "5.5.4"),
    ],
)
def test_rcpt_syntax_errors_are_501(line: bytes, enhanced: str) -> None:
    run = after(EHLO + MAIL, line)
    assert last(run) == (501, enhanced)
    assert not run.of_type(RcptTo)
    assert run.machine.state is State.MAIL


@pytest.mark.parametrize(
    "line", [b"RCPT TO:<a@b.example> NOTIFY=NEVER\r\n", b"RCPT TO:<a@b.example> FOO\r\n"]
)
def test_rcpt_unknown_parameters_are_555(line: bytes) -> None:
    run = after(EHLO + MAIL, line)
    assert last(run) == (555, "5.5.4")
    assert not run.of_type(RcptTo)


def test_refused_rcpt_does_not_count() -> None:
    run = drive(EHLO + MAIL + RCPT + RCPT, refuse(RcptTo))
    assert run.codes == [250, 250, 550, 550]
    assert run.machine.envelope is not None
    assert run.machine.envelope.rcpt_tos == ()
    assert run.machine.state is State.MAIL


# ---- addresses: SMTPUTF8, source routes, literals, lengths, quoting -----------------------------


def test_non_ascii_mail_without_smtputf8_is_553() -> None:
    run = after(EHLO, "MAIL FROM:<j\u00f6rg@b\u00fccher.example>\r\n".encode())
    assert last(run) == (553, "5.6.7")
    assert not run.of_type(MailFrom)
    assert run.machine.state is State.READY


def test_non_ascii_mail_with_smtputf8_is_250() -> None:
    run = after(EHLO, "MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8\r\n".encode())
    assert last(run) == (250, "2.1.0")
    assert run.events[-1] == MailFrom("j\u00f6rg@b\u00fccher.example", {"SMTPUTF8": None})


def test_non_ascii_rcpt_without_smtputf8_is_553() -> None:
    run = after(EHLO + MAIL, "RCPT TO:<\u7528\u6237@\u4f8b\u5b50.example>\r\n".encode())
    assert last(run) == (553, "5.6.7")
    assert not run.of_type(RcptTo)


def test_non_ascii_rcpt_with_smtputf8_is_250() -> None:
    run = after(
        EHLO + b"MAIL FROM:<a@b.example> SMTPUTF8\r\n",
        "RCPT TO:<\u7528\u6237@\u4f8b\u5b50.example>\r\n".encode(),
    )
    assert last(run) == (250, "2.1.5")
    assert rcpt_of(run) == "\u7528\u6237@\u4f8b\u5b50.example"


def test_smtputf8_does_not_outlive_its_transaction() -> None:
    run = drive(
        EHLO
        + b"MAIL FROM:<a@b.example> SMTPUTF8\r\nRSET\r\n"
        + MAIL
        + "RCPT TO:<\u00fc@b.example>\r\n".encode()
    )
    assert run.codes == [250, 250, 250, 250, 553]


def test_source_route_is_dropped() -> None:
    run = drive(EHLO + b"MAIL FROM:<@a.example,@b.example:user@c.example>\r\n")
    assert run.events[-1] == MailFrom("user@c.example", {})
    run = after(EHLO + MAIL, b"RCPT TO:<@relay.example:bob@d.example>\r\n")
    assert rcpt_of(run) == "bob@d.example"


@pytest.mark.parametrize(
    "address",
    [
        "user@[192.0.2.1]",
        "user@[IPv6:2001:db8::1]",
        "user@[ipv6:::1]",
        "user@[IPv6:::ffff:192.0.2.1]",
        "user@[x-tag:anything]",
    ],
)
def test_address_literals_accepted(address: str) -> None:
    run = after(EHLO + MAIL, f"RCPT TO:<{address}>\r\n".encode())
    assert rcpt_of(run) == address


@pytest.mark.parametrize(
    "address",
    [
        "user@[192.0.2.256]",
        "user@[192.0.2]",
        "user@[1.2.3.4.5]",
        "user@[IPv6:2001:db8::g]",
        "user@[IPv6:192.0.2.1]",
        "user@[IPv6:fe80::1%eth0]",
        "user@[2001:db8::1]",
        "user@[hostname]",
        "user@[]",
        "user@[1.2.3.4",
    ],
)
def test_bad_address_literals_rejected(address: str) -> None:
    run = after(EHLO + MAIL, f"RCPT TO:<{address}>\r\n".encode())
    assert last(run) == (501, "5.1.3")


def test_local_part_length_limit() -> None:
    ok = after(EHLO, b"MAIL FROM:<" + b"a" * 64 + b"@b.example>\r\n")
    assert last(ok) == (250, "2.1.0")
    bad = after(EHLO, b"MAIL FROM:<" + b"a" * 65 + b"@b.example>\r\n")
    assert last(bad) == (501, "5.1.7")


def test_domain_and_path_length_limit() -> None:
    # RFC 5321 4.5.3.1.3: a path is at most 256 octets, angle brackets included.
    label = "a" * 63
    domain = ".".join([label] * 3) + "." + "b" * 60  # 252 octets: <x@...> is 256
    ok = after(EHLO, f"MAIL FROM:<x@{domain}>\r\n".encode())
    assert last(ok) == (250, "2.1.0")
    bad = after(EHLO, f"MAIL FROM:<x@{domain}b>\r\n".encode())  # 257
    assert last(bad) == (501, "5.1.7")
    # A domain over 255 octets is refused by the mailbox check itself.
    assert commands.parse_mailbox("x@" + ".".join([label] * 4) + ".b", utf8=False) is None
    assert commands.parse_mailbox("x@" + domain, utf8=False) == "x@" + domain


def test_label_over_63_octets_rejected() -> None:
    run = after(EHLO, b"MAIL FROM:<x@" + b"a" * 64 + b".example>\r\n")
    assert last(run) == (501, "5.1.7")


def test_ascii_label_over_63_octets_rejected_under_smtputf8() -> None:
    # A non-ASCII local part puts the whole address under the UTF-8 grammar; its ASCII labels
    # keep their 63-octet limit.
    domain = "a" * 64 + ".example"
    run = after(EHLO, f"MAIL FROM:<j\u00f6rg@{domain}> SMTPUTF8\r\n".encode())
    assert last(run) == (501, "5.1.7")
    assert commands.parse_mailbox("x@" + domain, utf8=True) is None
    assert commands.parse_mailbox("x@" + domain[1:], utf8=True) == "x@" + domain[1:]
    assert commands.parse_mailbox("j\u00f6rg@" + domain[1:], utf8=True) is not None


@pytest.mark.parametrize(
    "address", ['"john doe"@example.org', '"a\\"b"@example.org', '"@"@example.org']
)
def test_quoted_local_parts_accepted(address: str) -> None:
    run = after(EHLO, f"MAIL FROM:<{address}>\r\n".encode())
    assert run.events[-1] == MailFrom(address, {})


@pytest.mark.parametrize("address", ['"unterminated@example.org', '"a"b"@example.org'])
def test_bad_quoted_local_parts_rejected(address: str) -> None:
    run = after(EHLO, f"MAIL FROM:<{address}>\r\n".encode())
    assert last(run) == (501, "5.1.7")


# ---- pure parsing helpers --------------------------------------------------------------------


def test_split_verb() -> None:
    assert commands.split_verb("mail FROM:<a@b>") == ("MAIL", "FROM:<a@b>")
    assert commands.split_verb("DATA") == ("DATA", None)
    assert commands.split_verb("DATA   ") == ("DATA", None)
    assert commands.split_verb("NOOP  x  ") == ("NOOP", "x")


def test_parse_params_uppercases_keywords() -> None:
    assert commands.parse_params(" size=10  Body=7BIT X", utf8=False) == {
        "SIZE": "10",
        "BODY": "7BIT",
        "X": None,
    }
    with pytest.raises(commands.CommandSyntaxError) as info:
        commands.parse_params("A=1 a=2", utf8=False)
    assert info.value.reply.code == 501


def test_reply_rendering() -> None:
    assert replies.Reply(250, "2.0.0", "OK").to_bytes() == b"250 2.0.0 OK\r\n"
    multi = replies.Reply(250, None, "first", ("second", "third")).to_bytes()
    assert parse_replies(multi)[0].lines == ("first", "second", "third")
    with pytest.raises(ValueError, match="CR or LF"):
        replies.Reply(550, "5.0.0", "a\r\n250 injected")
    with pytest.raises(ValueError, match="CR or LF"):
        replies.Reply(550, "5.0.0", "a", ("b\n250 x",))
    with pytest.raises(ValueError, match="class"):
        replies.Reply(550, "2.0.0", "mismatch")
    with pytest.raises(ValueError, match="200-599"):
        replies.Reply(199)


# ---- the fast path for common addresses agrees with the full grammar ---------------------------

_ATOM = st.text(alphabet="abcXYZ019!#$%&'*+-/=?^_`{|}~", min_size=1, max_size=20)
_LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
_PARAM = st.sampled_from(
    ["SIZE=10", "BODY=8BITMIME", "SMTPUTF8", "X=\u00e9", "A=1 B=2", "BAD=", ""]
)


def outcome(parse: Callable[[], object]) -> object:
    try:
        return parse()
    except commands.CommandSyntaxError as exc:
        return exc.reply


@settings(max_examples=300, deadline=None)
@given(
    local=st.one_of(
        st.lists(_ATOM, min_size=1, max_size=4),
        st.integers(60, 68).map(lambda n: ["l" * n]),  # around the 64-octet local part limit
    ),
    labels=st.one_of(
        st.lists(_LABEL, min_size=1, max_size=5),
        st.integers(3, 5).map(lambda n: ["d" * 63] * n),  # around the 255-octet domain limit
    ),
    params=_PARAM,
    noise=st.text(max_size=5),
)
def test_fast_path_agrees_with_the_full_grammar(
    local: list[str], labels: list[str], params: str, noise: str
) -> None:
    bad = replies.BAD_SENDER_ADDRESS
    for rest in (
        f"<{'.'.join(local)}@{'.'.join(labels)}>" + (f" {params}" if params else ""),
        f"<{'.'.join(local)}@{'.'.join(labels)}>{noise}",
        f"<{noise}{'.'.join(local)}@{'.'.join(labels)}>",
    ):
        if commands._COMMON_PATH.match(rest) is None:
            continue
        fast = outcome(
            partial(
                commands.parse_path_and_params,
                "FROM:" + rest,
                prefix="FROM:",
                null_ok=True,
                postmaster_ok=False,
                bad_address=bad,
            )
        )
        full = outcome(
            partial(
                commands._parse_path_and_params,
                rest,
                null_ok=True,
                postmaster_ok=False,
                bad_address=bad,
            )
        )
        assert fast == full, rest
