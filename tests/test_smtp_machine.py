"""The session state machine: limits, pipelining, the decision protocol, closing, and a
hypothesis model test over random command sequences (h2 style)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import (
    Run,
    bytewise,
    drive,
    ended,
    new_run,
    outcomes,
    parse_replies,
    refuse,
    smtp_settings,
)

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.body import BareLineEndings
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Closed,
    CloseReason,
    CommandRejected,
    Connect,
    DecisionEvent,
    Hello,
    MailFrom,
    MessageReceived,
    RcptTo,
    TransactionEnded,
    TransactionOutcome,
    Verify,
)
from smtpd_trio._smtp.machine import DEFAULT_MAX_COMMAND_LINE, SMTPMachine, State
from smtpd_trio._smtp.replies import Reply

EHLO = b"EHLO c.example\r\n"
MAIL = b"MAIL FROM:<a@b.example>\r\n"
TRANSACTION = (
    EHLO
    + MAIL
    + b"RCPT TO:<one@d.example>\r\nRCPT TO:<two@d.example>\r\nDATA\r\n"
    + b"Subject: t\r\n\r\n..hi\r\n.\r\n"
    + b"RSET\r\nNOOP\r\nVRFY bob\r\nQUIT\r\n"
)


def noop_of_length(total: int) -> bytes:
    """A NOOP line of exactly ``total`` octets, CRLF included."""
    return b"NOOP " + b"x" * (total - 7) + b"\r\n"


# ---- command line limit ----------------------------------------------------------------------


def test_command_line_at_the_limit_is_served() -> None:
    line = noop_of_length(DEFAULT_MAX_COMMAND_LINE)
    assert len(line) == DEFAULT_MAX_COMMAND_LINE
    for chunks in ([line], bytewise(line)):
        assert drive(chunks).codes == [250]


@pytest.mark.parametrize("pieces", [1, 7, 100, 10_000])
def test_command_line_over_the_limit_is_500_and_the_session_goes_on(pieces: int) -> None:
    line = noop_of_length(DEFAULT_MAX_COMMAND_LINE + 1)
    if pieces == 10_000:
        line = b"NOOP " + b"y" * 100_000 + b"\r\n"
    size = max(1, len(line) // pieces)
    chunks = [line[i : i + size] for i in range(0, len(line), size)]
    run = drive([*chunks, EHLO])
    assert run.codes == [500, 250]
    assert run.replies[0].enhanced == "5.5.2"
    assert run.replies[0].text == "Line too long"
    assert run.machine.state is State.READY
    assert len(run.machine._buf) <= DEFAULT_MAX_COMMAND_LINE  # memory stays bounded


def test_long_line_split_at_its_crlf() -> None:
    line = noop_of_length(5000)
    run = drive([line[:-1], line[-1:], b"NOOP\r\n"])
    assert run.codes == [500, 250]


def test_long_line_events_do_not_depend_on_chunking() -> None:
    data = b"NOOP " + b"q" * 3000 + b"\r\nNOOP\r\n"
    whole = drive(data)
    one = drive(bytewise(data))
    assert whole.events == one.events
    (rejected,) = whole.of_type(CommandRejected)
    assert rejected.excerpt.startswith("'NOOP qqq")
    assert rejected.reply == replies.LINE_TOO_LONG


def test_smaller_configured_command_line_limit() -> None:
    run = drive(noop_of_length(64) + noop_of_length(65), max_command_line=64)
    assert run.codes == [250, 500]


# ---- recipients ------------------------------------------------------------------------------


def rcpts(n: int) -> bytes:
    return b"".join(b"RCPT TO:<r%d@d.example>\r\n" % i for i in range(n))


def test_recipient_limit_small() -> None:
    run = drive(EHLO + MAIL + rcpts(5), max_recipients=3)
    assert run.codes == [250, 250, 250, 250, 250, 452, 452]
    assert run.enhanced[-1] == "4.5.3"
    assert len(run.of_type(RcptTo)) == 3


def test_refused_recipients_do_not_use_up_the_limit() -> None:
    answers = iter([None, Reply(550, "5.1.1", "no"), None, None])

    def policy(event: DecisionEvent) -> Reply | None:
        return next(answers) if isinstance(event, RcptTo) else None

    run = drive(EHLO + MAIL + rcpts(4), policy, max_recipients=3)
    assert run.codes == [250, 250, 250, 550, 250, 250]


def test_recipient_limit_resets_with_the_transaction() -> None:
    run = drive(EHLO + MAIL + rcpts(3) + b"RSET\r\n" + MAIL + rcpts(2), max_recipients=2)
    assert run.codes == [250, 250, 250, 250, 452, 250, 250, 250, 250]


def test_recipient_limit_default_is_1000() -> None:
    run = drive(EHLO + MAIL + rcpts(1001))
    assert run.codes.count(250) == 2 + 1000
    assert (run.codes[-1], run.enhanced[-1]) == (452, "4.5.3")
    assert run.machine.envelope is not None
    assert len(run.machine.envelope.rcpt_tos) == 1000


# ---- too many errors -------------------------------------------------------------------------


def test_too_many_errors_closes_with_421_on_the_nth() -> None:
    data = b"FOO\r\nMAIL FROM:<a@b>\r\nHELO\r\nNOOP\r\nBAR\r\nNOOP\r\n"
    run = drive(data, max_errors=4)
    assert run.codes == [500, 503, 501, 250, 421]
    assert run.enhanced == ["5.5.2", "5.5.1", "5.5.4", "2.0.0", "4.7.0"]
    assert run.events[-1] == Closed(CloseReason.TOO_MANY_ERRORS)
    assert run.machine.state is State.CLOSED
    rejected = run.of_type(CommandRejected)
    assert [r.reply.code for r in rejected] == [500, 503, 501, 421]


def test_max_errors_one() -> None:
    run = drive(EHLO + MAIL + b"XYZ\r\n", max_errors=1)
    assert run.codes == [250, 250, 421]
    assert outcomes(run) == [TransactionOutcome.ABORTED]
    assert run.events[-1] == Closed(CloseReason.TOO_MANY_ERRORS)


def test_nothing_is_read_after_the_close() -> None:
    run = drive([b"X\r\nY\r\n", b"NOOP\r\n"], max_errors=2)
    assert run.codes == [500, 421]
    assert run.machine.next_event() == Closed(CloseReason.TOO_MANY_ERRORS)
    assert run.machine.data_to_send() == b""


# ---- PIPELINING ------------------------------------------------------------------------------


def test_whole_transaction_in_one_read() -> None:
    run = drive(TRANSACTION)
    assert run.codes == [250, 250, 250, 250, 354, 250, 250, 250, 252, 221]
    assert [type(e) for e in run.events] == [
        Hello,
        MailFrom,
        RcptTo,
        RcptTo,
        MessageReceived,
        TransactionEnded,
        Verify,
        Closed,
    ]
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]
    assert run.of_type(MessageReceived)[0].content == b"Subject: t\r\n\r\n.hi\r\n"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 13])
def test_same_result_however_the_input_is_split(size: int) -> None:
    whole = drive(TRANSACTION)
    chunks = [TRANSACTION[i : i + size] for i in range(0, len(TRANSACTION), size)]
    split = drive(chunks)
    assert split.output == whole.output
    assert split.events == whole.events


def greeted(**options: Any) -> SMTPMachine:
    """A machine past its greeting, nothing queued."""
    run = new_run(**options)
    return run.machine


def test_replies_are_batched_until_data_is_needed() -> None:
    m = greeted()
    m.receive_data(b"NOOP\r\nNOOP\r\nHELP\r\n")
    assert m.next_event() is NEED_DATA
    assert parse_replies(m.data_to_send())[-1].code == 214
    assert m.data_to_send() == b""


def test_decision_must_be_answered_before_next_event() -> None:
    m = greeted()
    m.receive_data(EHLO + b"NOOP\r\n")
    assert isinstance(m.next_event(), Hello)
    assert isinstance(m.pending, Hello)
    with pytest.raises(RuntimeError, match="answer Hello first"):
        m.next_event()
    m.respond()
    with pytest.raises(RuntimeError, match="no decision"):
        m.respond()
    assert m.next_event() is NEED_DATA
    assert parse_replies(m.data_to_send())[-2:][1].code == 250


def test_the_first_event_is_the_greeting_decision() -> None:
    m = SMTPMachine(smtp_settings(), session_id="t")
    m.receive_data(EHLO)
    assert m.next_event() == Connect()
    assert m.data_to_send() == b""  # nothing before the greeting is decided
    m.respond()
    assert m.data_to_send() == b"220 mx.example.org ESMTP smtpd-trio ready\r\n"
    assert isinstance(m.next_event(), Hello)


def test_no_reply_is_sent_before_its_decision() -> None:
    m = greeted()
    m.receive_data(b"NOOP\r\nVRFY x\r\nNOOP\r\n")
    assert isinstance(m.next_event(), Verify)
    # The first NOOP was answered; the second waits behind the VRFY decision.
    assert m.data_to_send() == b"250 2.0.0 OK\r\n"
    m.respond(Reply(550, "5.1.1", "no such user"))
    assert m.next_event() is NEED_DATA
    assert m.data_to_send() == b"550 5.1.1 no such user\r\n250 2.0.0 OK\r\n"


def test_refused_message_leaves_session_ready() -> None:
    run = drive(TRANSACTION, refuse(MessageReceived, reply=Reply(451, "4.3.0", "later")))
    assert run.codes == [250, 250, 250, 250, 354, 451, 250, 250, 252, 221]
    (end,) = ended(run)
    assert (end.outcome, end.reply) == (TransactionOutcome.REFUSED, Reply(451, "4.3.0", "later"))


# ---- greeting, close, peer close -------------------------------------------------------------


def greet(reply: Reply | None) -> Run:
    m = SMTPMachine(smtp_settings(), session_id="t")
    assert m.next_event() == Connect()
    m.respond(reply)
    return Run(machine=m, banner=m.data_to_send())


def test_refusing_greeting_serves_only_quit() -> None:
    run = greet(Reply(554, "5.3.2", "No service"))
    run.feed(EHLO + b"NOOP\r\nQUIT\r\n")
    assert run.banner == b"554 5.3.2 No service\r\n"
    assert run.codes == [503, 503, 221]
    assert run.events[-1] == Closed(CloseReason.QUIT)


def test_421_greeting_closes_at_once() -> None:
    run = greet(replies.TOO_MANY_CONNECTIONS)
    assert run.banner == b"421 4.3.2 Too many connections, try again later\r\n"
    run.machine.receive_data(EHLO)
    assert run.machine.next_event() == Closed(CloseReason.REFUSED)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (Reply(450, "4.7.1", "Later"), b"421 4.7.1 Later\r\n"),
        (Reply(451), b"421 \r\n"),
        (Reply(550, "5.7.1", "Go away"), b"554 5.7.1 Go away\r\n"),
        (Reply(220, None, "mx.example.org custom banner"), b"220 mx.example.org custom banner\r\n"),
    ],
)
def test_greeting_is_mapped_to_a_legal_one(given: Reply, sent: bytes) -> None:
    # RFC 5321 §3.1: a greeting is 220, 554 or 421; other 4xx close as 421, other 5xx are 554.
    run = greet(given)
    assert run.banner == sent
    closes = given.code < 500 and given.code >= 400
    assert (run.machine.state is State.CLOSED) == closes


@pytest.mark.parametrize("bad", [Reply(250), Reply(354), Reply(221)])
def test_greeting_must_be_220_to_accept(bad: Reply) -> None:
    m = SMTPMachine(smtp_settings(), session_id="t")
    m.next_event()
    with pytest.raises(ValueError, match="not an answer to the greeting"):
        m.respond(bad)
    assert m.pending == Connect()  # still waiting for a proper answer
    m.fail()
    assert m.data_to_send() == b"421 4.3.0 Local error in processing, closing connection\r\n"
    assert m.next_event() == Closed(CloseReason.REFUSED)


def test_server_close_queues_421_and_ends_the_transaction() -> None:
    run = drive(EHLO + MAIL)
    run.machine.close(CloseReason.SHUTDOWN)
    assert run.machine.data_to_send() == b"421 4.3.2 Service shutting down, closing connection\r\n"
    end = run.machine.next_event()
    assert isinstance(end, TransactionEnded)
    assert end.outcome is TransactionOutcome.ABORTED
    assert run.machine.next_event() == Closed(CloseReason.SHUTDOWN)
    run.machine.close(CloseReason.TIMEOUT)  # idempotent
    assert run.machine.data_to_send() == b""


@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        (CloseReason.TIMEOUT, b"421 4.4.2 Timeout, closing connection\r\n"),
        (CloseReason.SHUTDOWN, b"421 4.3.2 Service shutting down, closing connection\r\n"),
        (CloseReason.STALLED, b""),
        (CloseReason.TLS_FAILED, b""),
        (CloseReason.PEER_CLOSED, b""),
    ],
)
def test_each_close_reason_has_one_goodbye(reason: CloseReason, sent: bytes) -> None:
    m = greeted()
    m.close(reason)
    assert m.data_to_send() == sent
    assert m.next_event() == Closed(reason)


def test_server_close_while_a_decision_is_pending() -> None:
    m = greeted()
    m.receive_data(EHLO)
    assert isinstance(m.next_event(), Hello)
    m.close(CloseReason.TIMEOUT)
    assert m.next_event() == Closed(CloseReason.TIMEOUT)
    with pytest.raises(RuntimeError):
        m.respond()


def test_shutdown_waits_for_the_open_transaction() -> None:
    run = drive(EHLO + MAIL)
    run.machine.request_shutdown()
    run.feed(b"RCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\n")
    # The transaction finished (250) and only then did the session end with 421.
    assert run.codes[-2:] == [250, 421]
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]
    assert run.events[-1] == Closed(CloseReason.SHUTDOWN)


def test_shutdown_of_an_idle_session_is_at_the_next_wait() -> None:
    run = drive(EHLO)
    run.machine.request_shutdown()
    run.feed(b"NOOP\r\nNOOP\r\n")
    # Commands already received are answered, then 421.
    assert run.codes == [250, 250, 250, 421]
    assert run.events[-1] == Closed(CloseReason.SHUTDOWN)


def test_peer_close_processes_buffered_commands_first() -> None:
    run = drive(EHLO + b"NOOP\r\nNOOP", close=True)
    assert run.codes == [250, 250]
    assert run.events[-1] == Closed(CloseReason.PEER_CLOSED)


# ---- the model test --------------------------------------------------------------------------

POOL = [
    b"EHLO c.example",
    b"HELO c.example",
    b"HELO",
    b"MAIL FROM:<a@b.example>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@b.example> SIZE=10",
    b"MAIL FROM:<a@b.example> SIZE=99999999",
    b"MAIL FROM:<bad",
    b"MAIL FROM:<a@b.example> FOO=1",
    "MAIL FROM:<\u00fc@b.example>".encode(),
    b"RCPT TO:<c@d.example>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<>",
    "RCPT TO:<\u00fc@d.example>".encode(),
    b"DATA",
    b"DATA x",
    b"RSET",
    b"NOOP",
    b"HELP",
    b"VRFY bob",
    b"VRFY",
    b"EXPN list",
    b"STARTTLS",
    b"QUIT",
    b"FOO",
    b"",
    b"NOOP " + b"z" * 700,
    b"\xff\xfe",
    b"MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>",
]
BODIES = [b"Subject: s\r\n\r\nhello", b"..dotted\r\nx", b"bare\nlf", b"z" * 120, b""]


@st.composite
def items(draw: st.DrawFn) -> list[bytes]:
    """Client input, as items: command lines, or a body ending in its terminator."""
    kind = draw(st.sampled_from(["pool", "pool", "pool", "body", "random", "transaction"]))
    if kind == "pool":
        return [draw(st.sampled_from(POOL)) + b"\r\n"]
    if kind == "random":
        raw = draw(st.binary(max_size=40).filter(lambda b: b"\r\n" not in b and b[:1] != b"."))
        return [raw + b"\r\n"]
    body = draw(st.sampled_from(BODIES))
    message = body + (b"\r\n" if body else b"") + b".\r\n"
    if kind == "body":
        return [message]
    return [b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n", b"DATA\r\n", message]


def expected_reply_count(items_: list[bytes], codes: list[int]) -> int:
    """Walk the input as the server should read it, consuming one final reply per command line
    and one per message; 354 switches to message text, 221 and 421 end the session."""
    pos, in_data = 0, False
    for item in items_:
        if in_data:
            # Only a body item holds <CRLF>.<CRLF> (or starts with ".\r\n" for the empty one).
            if item.endswith(b".\r\n") and (item == b".\r\n" or b"\r\n.\r\n" in item):
                pos, in_data = pos + 1, False
            continue
        for _line in item.split(b"\r\n")[:-1]:
            if pos >= len(codes):
                return pos + 1  # a command went unanswered: the count will not match
            code = codes[pos]
            pos += 1
            if code in (221, 421):
                return pos
            if code == 354:
                in_data = True
                # The rest of this item (nothing: DATA items are one line) is message text.
                break
    return pos


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(items(), min_size=1, max_size=30),
    answers=st.lists(st.sampled_from([True, True, True, False]), min_size=1, max_size=16),
    greet_first=st.booleans(),
    cut=st.sampled_from([1, 2, 3, 5, 8, 13, 64, 10_000]),
    bare=st.sampled_from(list(BareLineEndings)),
)
def test_model(
    steps: list[list[bytes]],
    answers: list[bool],
    greet_first: bool,
    cut: int,
    bare: BareLineEndings,
) -> None:
    if greet_first:
        steps = [[EHLO], *steps]
    decisions = itertools.cycle(answers)
    refusal = Reply(550, "5.7.1", "no")

    def policy(event: DecisionEvent) -> Reply | None:
        return None if next(decisions) else refusal

    run = new_run(max_errors=1000, max_message_size=100, bare_line_endings=bare)
    m = run.machine
    hello = False  # a Hello was accepted in this session
    mail = False  # a MailFrom was accepted in the open transaction
    rcpt = False  # a RcptTo was accepted in the open transaction
    closed = False
    end_due = False  # a transaction ended; its TransactionEnded is the next event
    transactions_started = transactions_ended = 0
    line_re = re.compile(rb"\d{3}[ -][^\r\n]*\r\n")
    data = b"".join(item for batch in steps for item in batch)
    # Pipelined: many commands per feed, cut anywhere (also inside CRLF and inside the body).
    for i in range(0, len(data), cut):
        m.receive_data(data[i : i + cut])
        while not closed and (event := m.next_event()) is not NEED_DATA:
            run.events.append(event)
            if isinstance(event, Closed):
                closed = True
            elif isinstance(event, MailFrom):
                assert hello
                assert not mail
            elif isinstance(event, RcptTo):
                assert mail
            elif isinstance(event, MessageReceived):
                assert rcpt
            elif isinstance(event, TransactionEnded):
                assert mail or end_due
                mail = rcpt = end_due = False
                transactions_ended += 1
            if isinstance(event, Hello | MailFrom | RcptTo | MessageReceived | Verify):
                reply = policy(event)
                m.respond(reply)
                if isinstance(event, MessageReceived) or (
                    reply is None and isinstance(event, Hello) and mail
                ):
                    # The transaction is over; its TransactionEnded comes next.
                    end_due, mail, rcpt = True, False, False
                if reply is None and isinstance(event, Hello):
                    hello = True
                elif reply is None and isinstance(event, MailFrom):
                    mail = True
                    transactions_started += 1
                elif reply is None and isinstance(event, RcptTo):
                    rcpt = True
            assert isinstance(m.state, State)
            assert closed or m.in_transaction == mail
        out = m.data_to_send()
        lines = re.findall(rb"[^\n]*\n", out)
        assert b"".join(lines) == out
        assert all(line_re.fullmatch(line) for line in lines), out
        run.output += out
        if closed:
            break
    if not closed:
        m.receive_data(b"")
        while (event := m.next_event()) is not NEED_DATA:
            if isinstance(event, TransactionEnded):
                transactions_ended += 1
            if isinstance(event, Closed):
                break
    # Every accepted MAIL is matched by exactly one TransactionEnded.
    assert transactions_started == transactions_ended
    codes = run.codes  # parse_replies also checks every line and multi-line grouping
    all_items = [item for batch in steps for item in batch]
    assert len(codes) == expected_reply_count(all_items, codes)
