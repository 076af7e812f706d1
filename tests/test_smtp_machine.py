"""The session state machine: limits, pipelining, the decision protocol, closing, and a
hypothesis model test over random command sequences (h2 style)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import Run, bytewise, drive, new_run, parse_replies, refuse

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.body import BareLineEndings
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Closed,
    CloseReason,
    CommandRejected,
    DecisionEvent,
    Hello,
    MailFrom,
    MessageReceived,
    MessageRefused,
    RcptTo,
    TransactionReset,
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
    assert run.machine.recipients == 1000


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
    assert run.events[-1] == Closed(CloseReason.TOO_MANY_ERRORS, transaction_dropped=True)


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
        TransactionReset,
        Verify,
        Closed,
    ]
    assert run.of_type(MessageReceived)[0].content == b"Subject: t\r\n\r\n.hi\r\n"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 13])
def test_same_result_however_the_input_is_split(size: int) -> None:
    whole = drive(TRANSACTION)
    chunks = [TRANSACTION[i : i + size] for i in range(0, len(TRANSACTION), size)]
    split = drive(chunks)
    assert split.output == whole.output
    assert split.events == whole.events


def test_replies_are_batched_until_data_is_needed() -> None:
    m = SMTPMachine(hostname="h")
    m.greet()
    m.data_to_send()
    m.receive_data(b"NOOP\r\nNOOP\r\nHELP\r\n")
    assert m.next_event() is NEED_DATA
    assert parse_replies(m.data_to_send())[-1].code == 214
    assert m.data_to_send() == b""


def test_decision_must_be_answered_before_next_event() -> None:
    m = SMTPMachine(hostname="h")
    m.greet()
    m.receive_data(EHLO + b"NOOP\r\n")
    assert isinstance(m.next_event(), Hello)
    with pytest.raises(RuntimeError, match="respond"):
        m.next_event()
    m.respond()
    with pytest.raises(RuntimeError, match="no decision"):
        m.respond()
    assert m.next_event() is NEED_DATA
    assert parse_replies(m.data_to_send())[-2:][1].code == 250


def test_api_misuse_raises_runtime_error() -> None:
    m = SMTPMachine(hostname="h")
    with pytest.raises(RuntimeError, match="greet"):
        m.next_event()
    m.greet()
    with pytest.raises(RuntimeError, match="already"):
        m.greet()


def test_no_reply_is_sent_before_its_decision() -> None:
    m = SMTPMachine(hostname="h")
    m.greet()
    m.data_to_send()
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


# ---- greeting, close, peer close -------------------------------------------------------------


def test_refusing_greeting_serves_only_quit() -> None:
    m = SMTPMachine(hostname="h")
    m.greet(Reply(554, "5.3.2", "No service"))
    run = Run(machine=m, banner=m.data_to_send())
    run.feed(EHLO + b"NOOP\r\nQUIT\r\n")
    assert run.banner == b"554 5.3.2 No service\r\n"
    assert run.codes == [503, 503, 221]
    assert run.events[-1] == Closed(CloseReason.QUIT)


def test_421_greeting_closes_at_once() -> None:
    m = SMTPMachine(hostname="h")
    m.greet(replies.TOO_MANY_CONNECTIONS)
    assert m.data_to_send() == b"421 4.3.2 Too many connections, try again later\r\n"
    m.receive_data(EHLO)
    assert m.next_event() == Closed(CloseReason.SERVER)


def test_server_close_queues_421_and_reports_dropped_transaction() -> None:
    run = drive(EHLO + MAIL)
    run.machine.close()
    assert run.machine.data_to_send() == b"421 4.3.2 Service shutting down, closing connection\r\n"
    assert run.machine.next_event() == Closed(CloseReason.SERVER, transaction_dropped=True)
    run.machine.close()  # idempotent
    assert run.machine.data_to_send() == b""


def test_server_close_while_a_decision_is_pending() -> None:
    m = SMTPMachine(hostname="h")
    m.greet()
    m.receive_data(EHLO)
    assert isinstance(m.next_event(), Hello)
    m.close(replies.SERVICE_CLOSING_TIMEOUT)
    assert m.next_event() == Closed(CloseReason.SERVER)
    with pytest.raises(RuntimeError):
        m.respond()


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
            elif isinstance(event, MessageReceived | MessageRefused):
                assert rcpt
                mail = rcpt = False
            elif isinstance(event, TransactionReset):
                mail = rcpt = False
            if isinstance(event, Hello | MailFrom | RcptTo | MessageReceived | Verify):
                reply = policy(event)
                m.respond(reply)
                if reply is None and isinstance(event, Hello):
                    hello, mail, rcpt = True, False, False
                elif reply is None and isinstance(event, MailFrom):
                    mail = True
                elif reply is None and isinstance(event, RcptTo):
                    rcpt = True
            assert isinstance(m.state, State)
            assert closed or (m.state in (State.MAIL, State.RCPT, State.DATA)) == mail
        out = m.data_to_send()
        lines = re.findall(rb"[^\n]*\n", out)
        assert b"".join(lines) == out
        assert all(line_re.fullmatch(line) for line in lines), out
        run.output += out
        if closed:
            break
    codes = run.codes  # parse_replies also checks every line and multi-line grouping
    all_items = [item for batch in steps for item in batch]
    assert len(codes) == expected_reply_count(all_items, codes)
