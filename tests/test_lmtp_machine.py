"""LMTP (RFC 2033) in the state machine: LHLO instead of HELO/EHLO, 503 for DATA without a
recipient, and after the message one reply per accepted recipient, in order, decided one by
one (``respond_recipients``) or all alike (``respond``, ``fail``, the machine's own limits)."""

from __future__ import annotations

from typing import Any

import pytest
from machine_driver import Run, drive, ended, new_run, outcomes

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Closed,
    CloseReason,
    DecisionEvent,
    Hello,
    MessageReceived,
    TransactionEnded,
    TransactionOutcome,
)
from smtpd_trio._smtp.machine import State
from smtpd_trio._smtp.replies import Reply

LHLO = b"LHLO c.example\r\n"
MAIL = b"MAIL FROM:<a@b.example>\r\n"
RCPTS = b"RCPT TO:<one@d.example>\r\nRCPT TO:<no@d.example>\r\nRCPT TO:<two@d.example>\r\n"
DATA = b"DATA\r\nSubject: t\r\n\r\nhi\r\n.\r\n"
FULL = Reply(452, "4.2.2", "Mailbox full")


def refuse_no(event: DecisionEvent) -> Reply | None:
    address = getattr(event, "address", "")
    return Reply(550, "5.1.1", "No such user") if address.startswith("no@") else None


def lmtp(data: bytes, **options: Any) -> Run:
    return drive(data, refuse_no, lmtp=True, **options)


def until_message(data: bytes, **options: Any) -> tuple[Run, MessageReceived]:
    """A run fed ``data``, stopped at the pending message decision, and that decision."""
    run = new_run(lmtp=True, **options)
    m = run.machine
    m.receive_data(data)
    while True:
        event = m.next_event()
        assert event is not NEED_DATA
        run.events.append(event)
        if isinstance(event, MessageReceived):
            return run, event
        if isinstance(event, DecisionEvent):
            m.respond(refuse_no(event))


def finish(run: Run) -> None:
    """Drain the machine after the message decision was answered."""
    m = run.machine
    while (event := m.next_event()) is not NEED_DATA:
        run.events.append(event)
        if isinstance(event, Closed):
            break
    run.output += m.data_to_send()


# ---- LHLO --------------------------------------------------------------------------------------


def test_lhlo_is_answered_like_ehlo() -> None:
    run = lmtp(LHLO)
    assert run.replies[0].lines[:2] == ("mx.example.org", "SIZE 10240000")
    assert "PIPELINING" in run.replies[0].lines  # RFC 2033 §5: LMTP servers implement both
    assert "ENHANCEDSTATUSCODES" in run.replies[0].lines
    assert run.events == [Hello("c.example", extended=True)]
    assert run.machine.facts.extended
    assert run.machine.facts.lmtp


@pytest.mark.parametrize("hello", [b"HELO c.example\r\n", b"EHLO c.example\r\n"])
def test_helo_and_ehlo_are_500_in_lmtp(hello: bytes) -> None:
    run = lmtp(hello + MAIL)
    assert [(r.code, r.enhanced, r.text) for r in run.replies] == [
        (500, "5.5.1", "This is an LMTP server: send LHLO"),
        (503, "5.5.1", "Send LHLO first"),
    ]
    assert run.machine.state is State.CONNECTED


def test_lhlo_is_unknown_in_smtp() -> None:
    run = drive(LHLO)
    assert (run.codes, run.enhanced) == ([500], ["5.5.2"])
    assert not run.machine.facts.lmtp


def test_help_names_lhlo() -> None:
    run = lmtp(LHLO + b"HELP\r\n")
    assert run.replies[-1].text == "Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"


def test_data_without_a_successful_rcpt_is_503() -> None:
    run = lmtp(LHLO + MAIL + b"RCPT TO:<no@d.example>\r\nDATA\r\n")
    assert (run.replies[-1].code, run.replies[-1].enhanced) == (503, "5.5.1")
    assert run.replies[-1].text == "No valid recipients"


# ---- one reply per recipient -------------------------------------------------------------------


def test_after_data_one_reply_per_accepted_recipient_in_order() -> None:
    run = lmtp(LHLO + MAIL + RCPTS + b"RCPT TO:<one@d.example>\r\n" + DATA)
    assert [(r.code, r.text) for r in run.replies[-3:]] == [
        (250, "<one@d.example> Message accepted"),
        (250, "<two@d.example> Message accepted"),
        (250, "<one@d.example> Message accepted"),  # a repeated recipient gets its own reply
    ]
    assert run.codes.count(250) == 1 + 1 + 3 + 3  # LHLO, MAIL, 3 RCPT, 3 for the message
    (end,) = ended(run)
    assert end.outcome is TransactionOutcome.ACCEPTED
    assert end.accepted_rcpt_tos == ("one@d.example", "two@d.example", "one@d.example")
    assert [r.code for r in end.envelope.rcpt_replies] == [250, 250, 250]
    assert run.machine.facts.messages_accepted == 1


def test_respond_recipients_decides_each_recipient() -> None:
    run, message = until_message(LHLO + MAIL + RCPTS + DATA)
    assert message.envelope.rcpt_tos == ("one@d.example", "two@d.example")
    assert message.envelope.rcpt_replies == ()
    run.machine.respond_recipients([FULL, Reply(250, None, "Saved")])
    finish(run)
    assert run.output.endswith(b"452 4.2.2 Mailbox full\r\n250 2.0.0 Saved\r\n")
    (end,) = ended(run)
    assert end.outcome is TransactionOutcome.ACCEPTED
    assert end.accepted_rcpt_tos == ("two@d.example",)
    assert end.envelope.rcpt_replies == (FULL, Reply(250, "2.0.0", "Saved"))
    assert end.reply == Reply(250, "2.0.0", "Saved")


def test_refused_for_every_recipient_is_refused() -> None:
    run, _ = until_message(LHLO + MAIL + RCPTS + DATA)
    run.machine.respond_recipients((Reply(550, None, "Gone"), FULL))
    finish(run)
    assert run.output.endswith(b"550 5.0.0 Gone\r\n452 4.2.2 Mailbox full\r\n")
    (end,) = ended(run)
    assert (end.outcome, end.reply, end.accepted_rcpt_tos) == (
        TransactionOutcome.REFUSED,
        Reply(550, "5.0.0", "Gone"),
        (),
    )
    assert run.machine.facts.messages_accepted == 0


def test_one_reply_answers_for_every_recipient() -> None:
    run, _ = until_message(LHLO + MAIL + RCPTS + DATA)
    run.machine.respond(FULL)
    finish(run)
    assert run.output.endswith(b"452 4.2.2 Mailbox full\r\n" * 2)
    assert outcomes(run) == [TransactionOutcome.REFUSED]


@pytest.mark.parametrize("timed_out", [False, True])
def test_a_failed_handler_is_451_for_every_recipient(timed_out: bool) -> None:
    run, _ = until_message(LHLO + MAIL + RCPTS + DATA)
    run.machine.fail(timed_out=timed_out)
    finish(run)
    expected = replies.HANDLER_TIMED_OUT if timed_out else replies.HANDLER_FAILED
    assert run.output.endswith(expected.to_bytes() * 2)


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ([None], ValueError),  # too few
        ([None, None, None], ValueError),  # too many
        ([None, Reply(354, None, "go on")], ValueError),  # not an answer to a message
        ([None, "250 OK"], TypeError),
        ({"one@d.example": None}, TypeError),
        ("no", TypeError),
    ],
)
def test_wrong_per_recipient_answers_leave_the_decision_pending(
    answers: Any, error: type[Exception]
) -> None:
    run, _ = until_message(LHLO + MAIL + RCPTS + DATA)
    with pytest.raises(error):
        run.machine.respond_recipients(answers)
    assert isinstance(run.machine.pending, MessageReceived)
    run.machine.respond(None)  # still answerable
    finish(run)
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]


def test_per_recipient_answers_are_for_lmtp_only() -> None:
    run = new_run()
    m = run.machine
    m.receive_data(b"EHLO c\r\n" + MAIL + b"RCPT TO:<one@d.example>\r\n" + DATA)
    while not isinstance(event := m.next_event(), MessageReceived):
        assert isinstance(event, DecisionEvent)
        m.respond(None)
    with pytest.raises(TypeError, match="LMTP only"):
        m.respond_recipients([None])


def test_no_per_recipient_answer_without_a_message_decision() -> None:
    run = new_run(lmtp=True)
    with pytest.raises(RuntimeError):
        run.machine.respond_recipients([])


def test_a_421_among_the_answers_closes_after_every_reply() -> None:
    run, _ = until_message(LHLO + MAIL + RCPTS + DATA + b"NOOP\r\n")
    run.machine.respond_recipients([None, Reply(421, "4.3.0", "Going down")])
    finish(run)
    assert run.output.endswith(
        b"250 2.0.0 <one@d.example> Message accepted\r\n421 4.3.0 Going down\r\n"
    )
    assert run.events[-1] == Closed(CloseReason.REFUSED)
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]


def test_a_message_over_the_limit_is_refused_once_per_recipient() -> None:
    body = b"DATA\r\n" + b"x" * 60 + b"\r\n.\r\n"
    run = lmtp(LHLO + MAIL + RCPTS + body + b"NOOP\r\n", max_message_size=50)
    assert run.codes[-3:] == [552, 552, 250]
    (end,) = ended(run)
    assert end.envelope.rcpt_replies == (replies.MESSAGE_TOO_BIG,) * 2
    assert end.accepted_rcpt_tos == ()


# ---- BDAT in LMTP (RFC 2033 §4.3) --------------------------------------------------------------


def test_bdat_last_is_answered_per_recipient_other_chunks_once() -> None:
    wire = LHLO + MAIL + RCPTS + b"BDAT 3\r\nabcBDAT 2 LAST\r\nde"
    run, message = until_message(wire)
    assert message.content == b"abcde"
    run.machine.respond_recipients([None, FULL])
    finish(run)
    assert [r.text for r in run.replies[-3:]] == [
        "3 octets received",
        "<one@d.example> Message accepted",
        "Mailbox full",
    ]


def test_bdat_without_a_successful_rcpt_is_503_after_its_chunk() -> None:
    run = lmtp(LHLO + MAIL + b"RCPT TO:<no@d.example>\r\nBDAT 4 LAST\r\nQUITNOOP\r\n")
    assert [(r.code, r.text) for r in run.replies[-2:]] == [
        (503, "No valid recipients"),
        (250, "OK"),
    ]


def test_a_last_chunk_over_the_limit_is_refused_once_per_recipient() -> None:
    wire = LHLO + MAIL + RCPTS + b"BDAT 30\r\n" + b"x" * 30 + b"BDAT 30 LAST\r\n" + b"y" * 30
    run = lmtp(wire, max_message_size=50)
    assert [r.code for r in run.replies[-3:]] == [250, 552, 552]


def test_a_chunk_over_the_limit_before_last_is_refused_once() -> None:
    wire = LHLO + MAIL + RCPTS + b"BDAT 60\r\n" + b"x" * 60 + b"BDAT 0 LAST\r\n"
    run = lmtp(wire, max_message_size=50)
    assert [r.code for r in run.replies[-2:]] == [552, 503]  # then BDAT LAST is out of sequence
    assert [type(e) for e in run.events[-2:]] == [TransactionEnded, type(run.events[-1])]
