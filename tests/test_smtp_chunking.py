"""CHUNKING and BINARYMIME (RFC 3030) in the state machine: BDAT chunks, pipelined with each
other and with other commands; the size limit across chunks; a BDAT out of sequence still has
its chunk read, so the conversation stays in step; DATA after BDAT and DATA for BINARYMIME are
503; a chunk is octets, not lines; the NUL policy and the memory budget; streaming."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import Run, bytewise, drive, ended, new_run, outcomes, smtp_settings

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.body import BareLineEndings, MemoryBudget, NulOctets
from smtpd_trio._smtp.commands import MAX_CHUNK_DIGITS, ChunkSyntaxError, parse_bdat
from smtpd_trio._smtp.events import (
    Closed,
    CloseReason,
    CommandRejected,
    Connect,
    DecisionEvent,
    Hello,
    MailFrom,
    MessageChunk,
    MessageEnd,
    MessageReceived,
    MessageStart,
    RcptTo,
    TransactionEnded,
    TransactionOutcome,
)
from smtpd_trio._smtp.machine import SMTPMachine, State
from smtpd_trio._smtp.replies import Reply

EHLO = b"EHLO c.example\r\n"
MAIL = b"MAIL FROM:<a@b.example>\r\n"
RCPT = b"RCPT TO:<c@d.example>\r\n"
OPEN = EHLO + MAIL + RCPT


def bdat(data: bytes, *, last: bool = False) -> bytes:
    """One BDAT command with its chunk."""
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


def messages(run: Run) -> list[bytes]:
    return [e.content for e in run.of_type(MessageReceived)]


def after_open(run: Run) -> list[tuple[int, str | None]]:
    """The replies after EHLO, MAIL and RCPT, as (code, enhanced)."""
    return [(r.code, r.enhanced) for r in run.replies[3:]]


# ---- RFC 3030 §4's examples --------------------------------------------------------------------


def test_rfc3030_simple_chunking() -> None:
    message = (
        b"To: Susan@random.com\r\nFrom: Sam@random.com\r\n"
        b"Subject: This is a bodyless test message\r\n"
    )
    assert len(message) == 86  # as in the RFC: "BDAT 86 LAST"
    wire = (
        b"EHLO ymir.claremont.edu\r\nMAIL FROM:<Sam@Random.com>\r\n"
        b"RCPT TO:<Susan@Random.com>\r\nBDAT 86 LAST\r\n" + message + b"QUIT\r\n"
    )
    for chunks in ([wire], bytewise(wire)):
        run = drive(chunks)
        assert "CHUNKING" in run.replies[0].lines
        assert run.codes == [250, 250, 250, 250, 221]
        assert messages(run) == [message]
        assert outcomes(run) == [TransactionOutcome.ACCEPTED]
        assert ended(run)[0].size == 86


def test_rfc3030_pipelined_binarymime() -> None:
    first = (b"\x00\r\n.\r\n" + bytes(range(256)) * 400)[:100000]  # 100000 octets of binary
    assert len(first) == 100000
    rest = b"\x00\xff" * 162  # 324 octets
    wire = (
        b"EHLO ymir.claremont.edu\r\n"
        + b"MAIL FROM:<ned@thor.innosoft.com> BODY=BINARYMIME\r\n"
        + b"RCPT TO:<gvaudre@cnri.reston.va.us>\r\n"
        + b"BDAT 100000\r\n"
        + first
        + b"BDAT 324 LAST\r\n"
        + rest
    )
    run = drive(wire)
    assert "BINARYMIME" in run.replies[0].lines
    assert [(r.code, r.text) for r in run.replies[1:]] == [
        (250, "Sender OK"),
        (250, "Recipient OK"),
        (250, "100000 octets received"),
        (250, "Message accepted"),
    ]
    assert messages(run) == [first + rest]
    (message,) = run.of_type(MessageReceived)
    assert message.envelope.body_type == "BINARYMIME"


# ---- chunks are octets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"line\r\n.\r\nnot the end\r\n",  # the DATA terminator is just data
        b"..two dots\r\n.one\r\n",  # no dot-stuffing to undo
        b"bare\nLF and bare\rCR",  # no line rules
        b"x" * 5000,  # no line length
        b"",
    ],
)
def test_a_chunk_is_kept_exactly_as_sent(data: bytes) -> None:
    wire = OPEN + bdat(data[:3]) + bdat(data[3:], last=True) + b"NOOP\r\n"
    for chunks in ([wire], bytewise(wire)):
        run = drive(chunks, max_line_length=100, bare_line_endings=BareLineEndings.REJECT)
        assert messages(run) == [data]
        assert run.codes[-2:] == [250, 250]  # the message, then NOOP


def test_bdat_zero_last_ends_the_message() -> None:
    run = drive(OPEN + bdat(b"abc") + bdat(b"def") + b"BDAT 0 LAST\r\nNOOP\r\n")
    assert messages(run) == [b"abcdef"]
    assert [r.text for r in run.replies[3:]] == [
        "3 octets received",
        "3 octets received",
        "Message accepted",
        "OK",
    ]


def test_bdat_zero_last_alone_is_an_empty_message() -> None:
    run = drive(OPEN + b"BDAT 0 LAST\r\n")
    assert messages(run) == [b""]
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]


def test_a_zero_chunk_that_is_not_last_gets_its_250() -> None:
    run = drive(OPEN + b"BDAT 0\r\n" + bdat(b"x", last=True))
    assert [r.text for r in run.replies[3:]] == ["0 octets received", "Message accepted"]
    assert messages(run) == [b"x"]


def test_keywords_are_case_insensitive_and_spaces_tolerated() -> None:
    run = drive(OPEN + b"bdat   2   last  \r\nok")
    assert messages(run) == [b"ok"]


def test_data_and_bdat_may_alternate_between_transactions() -> None:
    wire = OPEN + bdat(b"one", last=True) + MAIL + RCPT + b"DATA\r\ntwo\r\n.\r\n" + MAIL + RCPT
    run = drive(wire + bdat(b"three", last=True))
    assert messages(run) == [b"one", b"two\r\n", b"three"]
    assert outcomes(run) == [TransactionOutcome.ACCEPTED] * 3


# ---- out of sequence: the chunk is still read (go-smtp #315) -----------------------------------

#: A chunk that would do harm if it were read as commands.
EVIL = b"RSET\r\nMAIL FROM:<evil@x.example>\r\nQUIT\r\n"


def refuse_marked(event: DecisionEvent) -> Reply | None:
    """Refuse the senders and recipients whose local part is "refused" or "no"."""
    if isinstance(event, MailFrom | RcptTo) and event.address.startswith(("no@", "refused@")):
        return Reply(550, "5.7.1", "Refused by policy")
    return None


@pytest.mark.parametrize(
    ("prefix", "reply"),
    [
        (b"", replies.NEED_MAIL),  # before EHLO
        (EHLO, replies.NEED_MAIL),  # no transaction
        (EHLO + b"MAIL FROM:<refused@b.example>\r\n", replies.NEED_MAIL),  # MAIL refused
        (EHLO + MAIL, replies.NO_VALID_RECIPIENTS),  # no recipient
        (EHLO + MAIL + b"RCPT TO:<no@d.example>\r\n", replies.NO_VALID_RECIPIENTS),  # refused
    ],
)
def test_bdat_out_of_sequence_reads_its_chunk_then_answers(prefix: bytes, reply: Reply) -> None:
    wire = prefix + bdat(EVIL) + bdat(EVIL, last=True) + b"NOOP\r\n"
    for chunks in ([wire], bytewise(wire)):
        run = drive(chunks, refuse_marked)
        tail = run.replies[-3:]
        assert [(r.code, r.enhanced, r.text) for r in tail[:2]] == [
            (reply.code, reply.enhanced, reply.text)
        ] * 2
        assert tail[2].text == "OK"  # NOOP: the conversation is in step
        assert not messages(run)
        rejected = run.of_type(CommandRejected)
        assert [e.excerpt for e in rejected[-2:]] == ["'BDAT 40'", "'BDAT 40 LAST'"]
        assert run.machine.state is not State.CLOSED


def test_bdat_after_bdat_last_is_503_and_its_chunk_is_read() -> None:
    run = drive(OPEN + bdat(b"done", last=True) + bdat(EVIL, last=True) + b"NOOP\r\n")
    assert [(r.code, r.text) for r in run.replies[3:]] == [
        (250, "Message accepted"),
        (503, "Need MAIL command first"),
        (250, "OK"),
    ]
    assert messages(run) == [b"done"]


def test_bdat_after_a_554_greeting_reads_its_chunk() -> None:
    m = SMTPMachine(smtp_settings())
    assert isinstance(m.next_event(), Connect)
    m.respond(Reply(554, "5.7.1", "Go away"))
    m.data_to_send()
    m.receive_data(bdat(EVIL) + b"QUIT\r\n")
    assert isinstance(m.next_event(), CommandRejected)
    assert m.next_event() == Closed(CloseReason.QUIT)
    assert m.data_to_send() == b"503 5.5.1 Bad sequence of commands\r\n221 2.0.0 Bye\r\n"


def test_out_of_sequence_bdat_counts_as_a_protocol_error() -> None:
    run = drive(EHLO + bdat(b"abc") + bdat(b"def") + b"NOOP\r\n", max_errors=2)
    assert run.codes[1:] == [503, 421]
    assert run.machine.state is State.CLOSED
    assert run.machine.close_reason is CloseReason.TOO_MANY_ERRORS


def test_bdat_without_a_readable_size_is_501_and_reads_nothing() -> None:
    run = drive(OPEN + b"BDAT 3x\r\nNOOP\r\n" + bdat(b"abc", last=True))
    assert after_open(run) == [(501, "5.5.4"), (250, "2.0.0"), (250, "2.0.0")]
    assert messages(run) == [b"abc"]
    assert run.machine.errors == 1


@pytest.mark.parametrize("line", [b"BDAT 6 FIRST\r\n", b"BDAT 6 LAST now\r\n"])
def test_malformed_bdat_with_a_size_reads_that_many_octets_first(line: bytes) -> None:
    """The client sends the octets it announced whatever we think of the rest of the line:
    they are read, so they are never taken for commands, and then answered 501."""
    run = drive(OPEN + bdat(b"one") + line + b"QUIT\r\n" + b"NOOP\r\n")
    assert [(r.code, r.enhanced) for r in run.replies[3:]] == [
        (250, "2.0.0"),
        (501, "5.5.4"),
        (250, "2.0.0"),  # NOOP: "QUIT\r\n" was the chunk
    ]
    assert run.machine.state is State.BDAT  # the message goes on
    assert run.machine.errors == 1


# ---- sequence rules around BDAT ----------------------------------------------------------------


def test_data_after_bdat_is_503_and_the_transaction_stays_open() -> None:
    run = drive(OPEN + bdat(b"abc") + b"DATA\r\n" + b"RSET\r\n")
    assert after_open(run) == [(250, "2.0.0"), (503, "5.5.1"), (250, "2.0.0")]
    assert run.replies[4].text == "Bad sequence of commands: DATA after BDAT"
    assert outcomes(run) == [TransactionOutcome.RESET]


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (MAIL, "Sender already specified"),
        (RCPT, "Bad sequence of commands: RCPT after BDAT"),
        (b"AUTH PLAIN\r\n", "AUTH not permitted during a mail transaction"),
    ],
)
def test_between_chunks_mail_rcpt_and_auth_are_503(line: bytes, text: str) -> None:
    run = drive(OPEN + bdat(b"abc") + line + bdat(b"def", last=True))
    assert [r.code for r in run.replies[3:]] == [250, 503, 250]
    assert run.replies[4].text == text
    assert messages(run) == [b"abcdef"]


def test_between_chunks_noop_help_and_vrfy_are_served() -> None:
    run = drive(OPEN + bdat(b"abc") + b"NOOP\r\nHELP\r\nVRFY x\r\n" + bdat(b"d", last=True))
    assert [r.code for r in run.replies[3:]] == [250, 250, 214, 252, 250]
    assert messages(run) == [b"abcd"]


def test_ehlo_between_chunks_resets_the_transaction() -> None:
    budget = MemoryBudget(None)
    run = drive(OPEN + bdat(b"abc") + EHLO + bdat(b"d", last=True), budget=budget)
    assert outcomes(run) == [TransactionOutcome.RESET]
    assert run.codes[-1] == 503  # the transaction is gone
    assert budget.in_use == 0


def test_data_with_body_binarymime_is_503() -> None:
    wire = EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n" + RCPT + b"DATA\r\n"
    run = drive(wire + bdat(b"\x00binary\x00", last=True))
    assert after_open(run) == [(503, "5.5.1"), (250, "2.0.0")]
    assert run.replies[3].text == (
        "Bad sequence of commands: a BODY=BINARYMIME message is sent with BDAT"
    )
    assert messages(run) == [b"\x00binary\x00"]


def test_binarymime_needs_chunking() -> None:
    run = drive(EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", chunking=False)
    assert run.codes[-1] == 501
    assert run.replies[-1].text == "Syntax error: BODY must be 7BIT or 8BITMIME"
    run = drive(EHLO + b"MAIL FROM:<a@b.example> BODY=binarymime\r\n")
    assert run.codes[-1] == 250


# ---- limits and policies -----------------------------------------------------------------------


def test_the_size_limit_applies_across_chunks() -> None:
    wire = OPEN + bdat(b"x" * 60) + bdat(b"y" * 60) + bdat(b"z" * 30, last=True) + b"NOOP\r\n"
    run = drive(wire, max_message_size=100)
    assert after_open(run) == [(250, "2.0.0"), (552, "5.3.4"), (503, "5.5.1"), (250, "2.0.0")]
    (end,) = ended(run)
    assert (end.outcome, end.size) == (TransactionOutcome.REFUSED, 120)
    assert end.reply == replies.MESSAGE_TOO_BIG


def test_a_message_at_the_size_limit_is_accepted() -> None:
    run = drive(OPEN + bdat(b"x" * 60) + bdat(b"y" * 40, last=True), max_message_size=100)
    assert messages(run) == [b"x" * 60 + b"y" * 40]


def test_a_first_chunk_over_the_limit_is_refused_after_it_is_read() -> None:
    run = drive(OPEN + bdat(b"x" * 101, last=True) + b"NOOP\r\n", max_message_size=100)
    assert after_open(run) == [(552, "5.3.4"), (250, "2.0.0")]
    assert outcomes(run) == [TransactionOutcome.REFUSED]


def test_nul_in_a_text_message_is_refused_at_its_chunk() -> None:
    wire = OPEN + bdat(b"text") + bdat(b"a\x00b") + bdat(b"more", last=True) + b"NOOP\r\n"
    run = drive(wire, nul_octets=NulOctets.REJECT)
    assert after_open(run) == [(250, "2.0.0"), (550, "5.6.0"), (503, "5.5.1"), (250, "2.0.0")]
    (end,) = ended(run)
    assert (end.outcome, end.reply, end.size) == (
        TransactionOutcome.REFUSED,
        replies.NUL_IN_DATA,
        7,
    )


def test_nul_is_data_in_binarymime_and_with_keep() -> None:
    body = b"\x00\x01\x00"
    binary = EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n" + RCPT + bdat(body, last=True)
    assert messages(drive(binary, nul_octets=NulOctets.REJECT)) == [body]
    assert messages(drive(OPEN + bdat(body, last=True), nul_octets=NulOctets.KEEP)) == [body]


def test_the_memory_budget_applies_to_bdat() -> None:
    budget = MemoryBudget(100)
    run = drive(OPEN + bdat(b"x" * 80) + bdat(b"y" * 80, last=True) + b"NOOP\r\n", budget=budget)
    assert after_open(run) == [(250, "2.0.0"), (452, "4.3.1"), (250, "2.0.0")]
    assert outcomes(run) == [TransactionOutcome.REFUSED]
    assert budget.in_use == 0
    assert budget.peak == 80


def test_an_accepted_bdat_message_holds_its_budget_until_answered() -> None:
    budget = MemoryBudget(1000)
    run = new_run(budget=budget)
    m = run.machine
    m.receive_data(OPEN + bdat(b"x" * 70) + bdat(b"y" * 30, last=True))
    while not isinstance(event := m.next_event(), MessageReceived):
        assert isinstance(event, DecisionEvent)
        m.respond(None)
    assert budget.in_use == 100
    m.respond(None)
    assert budget.in_use == 0


@pytest.mark.parametrize("reason", [CloseReason.TIMEOUT, CloseReason.PEER_CLOSED])
def test_a_session_ending_mid_chunk_aborts_and_gives_the_budget_back(reason: CloseReason) -> None:
    budget = MemoryBudget(None)
    run = drive(OPEN + bdat(b"x" * 50) + b"BDAT 100 LAST\r\n" + b"y" * 40, budget=budget)
    assert run.machine.reading_data
    assert run.machine.state is State.CHUNK
    assert budget.in_use == 90
    run.machine.close(reason)
    run.feed(b"")
    assert outcomes(run) == [TransactionOutcome.ABORTED]
    assert budget.in_use == 0


# ---- pipelining --------------------------------------------------------------------------------


def test_chunks_and_commands_pipelined_in_one_read_are_answered_in_order() -> None:
    wire = (
        EHLO
        + MAIL
        + RCPT
        + b"RCPT TO:<e@d.example>\r\n"
        + bdat(b"1" * 10)
        + b"NOOP\r\n"
        + bdat(b"2" * 20)
        + bdat(b"3" * 30, last=True)
        + MAIL
        + RCPT
        + bdat(b"second", last=True)
        + b"QUIT\r\n"
    )
    whole, one = drive(wire), drive(bytewise(wire))
    assert whole.output == one.output
    assert [r.text for r in whole.replies[4:]] == [
        "10 octets received",
        "OK",
        "20 octets received",
        "Message accepted",
        "Sender OK",
        "Recipient OK",
        "Message accepted",
        "Bye",
    ]
    assert messages(whole) == [b"1" * 10 + b"2" * 20 + b"3" * 30, b"second"]
    assert outcomes(whole) == [TransactionOutcome.ACCEPTED] * 2


# ---- streaming ---------------------------------------------------------------------------------


def test_streaming_hands_out_each_chunk_as_it_arrives() -> None:
    run = new_run(stream_body=True)
    m = run.machine
    run.feed(OPEN + b"BDAT 10\r\n01234")
    assert isinstance(run.events[-2], MessageStart)
    assert run.events[-1] == MessageChunk(b"01234")
    run.feed(b"56789NOOP\r\nFROB\r\nBDAT 3 LAST\r\n")
    assert run.events[-2:] == [
        MessageChunk(b"56789"),
        CommandRejected("'FROB'", replies.UNKNOWN_COMMAND),
    ]
    assert m.state is State.CHUNK
    run.feed(b"abc")
    assert run.events[-3:-1] == [MessageChunk(b"abc"), MessageEnd(run.events[-2].envelope, 13)]
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]
    assert [r.text for r in run.replies[3:]] == [
        "10 octets received",
        "OK",
        "Syntax error, command unrecognized",
        "Message accepted",
    ]


def test_streaming_rset_between_chunks_ends_the_message() -> None:
    run = drive(OPEN + bdat(b"abc") + b"RSET\r\n", stream_body=True)
    kinds = [type(e) for e in run.events[3:]]
    assert kinds == [MessageStart, MessageChunk, TransactionEnded]
    assert outcomes(run) == [TransactionOutcome.RESET]


def test_streaming_hands_out_nothing_of_a_chunk_over_the_limit() -> None:
    run = drive(
        OPEN + bdat(b"abc") + bdat(b"x" * 200, last=True), stream_body=True, max_message_size=100
    )
    chunks = [e.data for e in run.of_type(MessageChunk)]
    assert chunks == [b"abc"]
    assert outcomes(run) == [TransactionOutcome.REFUSED]


def test_streaming_a_hello_between_chunks_is_a_decision() -> None:
    run = drive(OPEN + bdat(b"abc") + EHLO, stream_body=True)
    assert isinstance(run.events[-2], Hello)
    assert outcomes(run) == [TransactionOutcome.RESET]


# ---- the BDAT arguments (hypothesis) -----------------------------------------------------------

_GRAMMAR = re.compile(r" *([0-9]+)(?: +([Ll][Aa][Ss][Tt]))? *")


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=" 0123456789LASTlast\u017f\u0661x\t", max_size=30),
        st.text(max_size=30),
        st.builds(
            lambda n, last, a, b, c: f"{a}{n}{b}{last}{c}",
            st.integers(min_value=0, max_value=10**25),
            st.sampled_from(["", "LAST", "last", "LaSt", "LASTX"]),
            st.sampled_from(["", " "]),
            st.sampled_from(["", " ", "   "]),
            st.sampled_from(["", " "]),
        ),
    )
)
def test_bdat_arguments_follow_the_grammar(arg: str) -> None:
    """RFC 3030: chunk-size is 1*DIGIT (here at most 20), then optionally SP "LAST"."""
    expected = _GRAMMAR.fullmatch(arg)
    if expected is None or len(expected.group(1)) > MAX_CHUNK_DIGITS:
        with pytest.raises(ChunkSyntaxError) as caught:
            parse_bdat(arg)
        assert caught.value.reply.code == 501
        # The size is known when the first word is one: the client sends that many octets.
        first = arg.strip(" ").split(" ")[0]
        readable = first.isascii() and first.isdigit() and len(first) <= MAX_CHUNK_DIGITS
        assert caught.value.size == (int(first) if readable else None)
        return
    assert parse_bdat(arg) == (int(expected.group(1)), expected.group(2) is not None)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=300),
    cut=st.integers(min_value=0, max_value=400),
    in_sequence=st.booleans(),
    last=st.booleans(),
)
def test_exactly_the_announced_octets_are_read(
    data: bytes, cut: int, in_sequence: bool, last: bool
) -> None:
    """Whatever a chunk holds (commands, CRLF.CRLF, NUL) and wherever reads split it, BDAT
    takes exactly its octets and the next command is read after them."""
    prefix = OPEN if in_sequence else EHLO
    wire = prefix + bdat(data, last=last) + b"NOOP\r\n"
    cut %= len(wire) + 1
    run = drive([wire[:cut], wire[cut:]], nul_octets=NulOctets.KEEP)
    assert run.replies[-1].text == "OK"
    assert run.output == drive(wire, nul_octets=NulOctets.KEEP).output
    if in_sequence and last:
        assert messages(run) == [data]
    else:
        assert not messages(run)
