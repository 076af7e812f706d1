"""SMTP smuggling (CVE-2023-51764/51765/51766, CVE-2024-27305): only <CRLF>.<CRLF> ends DATA.

Each probe is put where a lax receiver would see the end of the message, followed by a second,
spoofed transaction and then the real end. A correct receiver sees one message, never a second
MAIL or RCPT, and either refuses the message (bare CR/LF under REJECT) or keeps the smuggled
commands as message text.
"""

from __future__ import annotations

import pytest
from machine_driver import Run, bytewise, drive, ended

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.body import BareLineEndings, NulOctets
from smtpd_trio._smtp.events import (
    CommandRejected,
    MailFrom,
    MessageReceived,
    RcptTo,
    TransactionOutcome,
)
from smtpd_trio._smtp.machine import State

PROBES = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
]
START = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nspoofed\r\n"


def session(probe: bytes) -> bytes:
    return START + b"Subject: x\r\n\r\nbody" + probe + SMUGGLED + b"\r\n.\r\n"


def has_bare(probe: bytes) -> bool:
    return probe.replace(b"\r\n", b"").count(b"\r") + probe.replace(b"\r\n", b"").count(b"\n") > 0


def check_one_message(run: Run) -> None:
    # EHLO, MAIL, RCPT, 354, then exactly one reply for the one message, and nothing else.
    assert run.codes[:4] == [250, 250, 250, 354]
    assert len(run.codes) == 5, run.output
    assert len(run.of_type(MailFrom)) == 1
    assert len(run.of_type(RcptTo)) == 1
    assert not run.of_type(CommandRejected)
    assert len(ended(run)) == 1  # one transaction, one end
    assert run.machine.state is State.READY


def test_probe_classification() -> None:
    assert [has_bare(p) for p in PROBES].count(False) == 2  # the two NUL probes


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("probe", PROBES)
def test_probe_under_reject(probe: bytes, chunked: bool) -> None:
    data = session(probe)
    run = drive(bytewise(data) if chunked else data)
    check_one_message(run)
    # Refused whole: for its bare CR or LF, or (the two NUL probes) for its NUL.
    reply = replies.BARE_LINE_ENDING_IN_DATA if has_bare(probe) else replies.NUL_IN_DATA
    assert (run.codes[4], run.enhanced[4]) == (550, "5.6.0")
    assert [(e.outcome, e.reply) for e in ended(run)] == [(TransactionOutcome.REFUSED, reply)]
    assert not run.of_type(MessageReceived)


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("probe", PROBES)
def test_probe_under_keep_is_data(probe: bytes, chunked: bool) -> None:
    data = session(probe)
    run = drive(
        bytewise(data) if chunked else data,
        bare_line_endings=BareLineEndings.KEEP,
        nul_octets=NulOctets.KEEP,
    )
    check_one_message(run)
    assert (run.codes[4], run.enhanced[4]) == (250, "2.0.0")
    (message,) = run.of_type(MessageReceived)
    # The probe's dot, when it starts a CRLF line, is stuffing and goes; the rest is text.
    expected_probe = probe.replace(b"\r\n.", b"\r\n")
    assert message.content == b"Subject: x\r\n\r\nbody" + expected_probe + SMUGGLED + b"\r\n"
    assert b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n" in message.content


@pytest.mark.parametrize("probe", PROBES)
def test_probe_followed_by_pipelined_commands_only_runs_them_after_the_real_end(
    probe: bytes,
) -> None:
    data = session(probe) + b"MAIL FROM:<late@z.example>\r\n"
    run = drive(data, bare_line_endings=BareLineEndings.KEEP, nul_octets=NulOctets.KEEP)
    assert [e.address for e in run.of_type(MailFrom)] == ["a@b.example", "late@z.example"]
    assert run.codes[4:] == [250, 250]


def test_bare_lf_in_a_command_is_one_line_not_two() -> None:
    run = drive(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n")
    assert run.codes == [250, 500]
    assert run.enhanced[1] == "5.5.2"
    assert not run.of_type(MailFrom)
    assert not run.of_type(RcptTo)
    assert run.machine.state is State.READY


@pytest.mark.parametrize(
    "sep", [b"\n", b"\r", b"\r\r\n"[:2], b"\n\r"], ids=["LF", "CR", "CRCR", "LFCR"]
)
def test_bare_line_endings_never_split_commands(sep: bytes) -> None:
    data = b"EHLO c.example\r\nNOOP" + sep + b"MAIL FROM:<a@b.example>\r\n"
    for chunks in ([data], bytewise(data)):
        run = drive(chunks)
        assert run.codes == [250, 500]
        assert not run.of_type(MailFrom)


def test_bare_lf_before_data_command() -> None:
    data = START.replace(b"\r\nDATA", b"\nDATA") + b"x\r\n.\r\n"
    run = drive(data)
    # "RCPT ...\nDATA" is one bad line: no DATA, and the would-be body lines are commands.
    assert run.codes == [250, 250, 500, 500, 500]
    assert not run.of_type(RcptTo)
    assert run.machine.state is State.MAIL
