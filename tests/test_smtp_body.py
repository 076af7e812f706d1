"""The DATA body reader on its own, and DATA bodies through the machine.

The reader is fed three ways wherever it matters (whole, one byte at a time, at random split
points) and must give the same verdict every time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import bytewise, contents, drive, ended, new_run, refuse

from smtpd_trio._smtp import replies
from smtpd_trio._smtp.body import (
    BareLineEndings,
    BodyProblem,
    BodyReader,
    BodyResult,
    NulOctets,
)
from smtpd_trio._smtp.events import Closed, MessageReceived, TransactionOutcome
from smtpd_trio._smtp.machine import State

KEEP = BareLineEndings.KEEP
REJECT = BareLineEndings.REJECT
START = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"


def feed_all(
    chunks: Sequence[bytes],
    *,
    max_size: int | None = None,
    max_line_length: int | None = 1000,
    policy: BareLineEndings = REJECT,
) -> tuple[BodyResult, bytes]:
    """Feed chunks until the result; return it and all the bytes after the terminator."""
    reader = BodyReader(
        max_size=max_size, max_line_length=max_line_length, bare_line_endings=policy
    )
    for i, chunk in enumerate(chunks):
        result = reader.feed(chunk)
        if result is not None:
            return result, reader.trailing + b"".join(chunks[i + 1 :])
    raise AssertionError("the reader never found the end of the message")


def three_ways(
    data: bytes,
    *,
    max_size: int | None = None,
    max_line_length: int | None = 1000,
    policy: BareLineEndings = REJECT,
) -> tuple[BodyResult, bytes]:
    """Whole, byte by byte, and in 7-byte pieces: the three must agree exactly."""
    sevens = [data[i : i + 7] for i in range(0, len(data), 7)]
    whole, one, seven = (
        feed_all(chunks, max_size=max_size, max_line_length=max_line_length, policy=policy)
        for chunks in ([data], bytewise(data), sevens)
    )
    assert whole == one == seven
    return whole


def smtplib_encode(body: bytes) -> bytes:
    """What a correct client sends for ``body`` (smtplib.SMTP.data's rules), terminator included."""
    q = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", body)
    q = re.sub(rb"(?m)^\.", b"..", q)
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    return q + b".\r\n"


def meant(body: bytes) -> bytes:
    """The message text the client means by ``body``: CRLF line ends, ending with CRLF."""
    q = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", body)
    return q if q[-2:] == b"\r\n" else q + b"\r\n"


def keep_encode(body: bytes) -> bytes:
    """Dot-stuff ``body`` only at CRLF line starts (bare CR/LF are data) and terminate it."""
    q = b"." + body if body.startswith(b".") else body
    q = q.replace(b"\r\n.", b"\r\n..")
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    return q + b".\r\n"


# ---- basics ------------------------------------------------------------------------------------


def test_simple_message() -> None:
    result, trailing = three_ways(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    assert result == BodyResult(b"Subject: hi\r\n\r\nbody\r\n", None, 21)
    assert trailing == b""


def test_empty_message() -> None:
    result, trailing = three_ways(b".\r\nQUIT\r\n")
    assert result == BodyResult(b"", None, 0)
    assert trailing == b"QUIT\r\n"


def test_dot_unstuffing() -> None:
    result, _ = three_ways(b"..\r\n...x\r\na.b\r\n..\r\n.\r\n")
    assert result.content == b".\r\n..x\r\na.b\r\n.\r\n"
    result, _ = three_ways(b"..leading\r\n.\r\n")
    assert result.content == b".leading\r\n"


def test_only_crlf_dot_crlf_ends_the_message() -> None:
    data = b"a\r\n.x\r\n. \r\n .\r\n.\r\r\n\r\n.\r\n"
    # ".x" and ". " are un-stuffed lines; " ." is text; ".\r\r\n" holds a bare CR (KEEP: data).
    result, trailing = three_ways(data, policy=KEEP)
    assert result.content == b"a\r\nx\r\n \r\n .\r\n\r\r\n\r\n"
    assert trailing == b""


@pytest.mark.parametrize("split", range(10))
def test_end_exactly_at_any_feed_boundary(split: int) -> None:
    data = b"hello\r\n.\r\n"  # 10 octets: every split leaves the end in the second piece
    reader = BodyReader(max_size=None)
    assert reader.feed(data[:split]) is None
    result = reader.feed(data[split:])
    assert result == BodyResult(b"hello\r\n", None, 7)
    assert reader.trailing == b""


def test_result_appears_only_with_the_terminators_last_byte() -> None:
    data = b"x\r\n..\r\n.\r\n"
    reader = BodyReader(max_size=None)
    for i, byte in enumerate(bytewise(data)):
        result = reader.feed(byte)
        assert (result is not None) == (i == len(data) - 1)


def test_trailing_bytes_are_kept_exactly() -> None:
    result, trailing = three_ways(b"m\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<partial")
    assert result.content == b"m\r\n"
    assert trailing == b"MAIL FROM:<a@b>\r\nRCPT TO:<partial"


# ---- limits ------------------------------------------------------------------------------------


def test_size_exactly_at_the_limit_is_accepted() -> None:
    body = b"0123456789\r\n" * 10  # 120 octets, un-stuffed
    result, _ = three_ways(body + b".\r\n", max_size=120)
    assert result == BodyResult(body, None, 120)


def test_size_one_over_the_limit_is_refused_and_read_to_the_end() -> None:
    body = b"0123456789\r\n" * 10 + b"x\r\n"
    result, trailing = three_ways(body + b".\r\nNOOP\r\n", max_size=122)
    assert result == BodyResult(b"", BodyProblem.TOO_BIG, 123)
    assert trailing == b"NOOP\r\n"


def test_size_counts_unstuffed_octets() -> None:
    result, _ = three_ways(b"..\r\n.\r\n", max_size=3)
    assert result == BodyResult(b".\r\n", None, 3)


def test_size_of_long_dot_stuffed_line_does_not_depend_on_chunking() -> None:
    result, _ = three_ways(b"." + b"x" * 1500 + b"\r\n.\r\n")
    assert result == BodyResult(b"", BodyProblem.LINE_TOO_LONG, 1502)


@pytest.mark.parametrize("policy", [KEEP, REJECT])
def test_998_octet_line_ok_999_too_long(policy: BareLineEndings) -> None:
    ok, _ = three_ways(b"a" * 998 + b"\r\n.\r\n", policy=policy)
    assert ok == BodyResult(b"a" * 998 + b"\r\n", None, 1000)
    bad, trailing = three_ways(b"a" * 999 + b"\r\nb\r\n.\r\nNOOP\r\n", policy=policy)
    assert bad == BodyResult(b"", BodyProblem.LINE_TOO_LONG, 1004)
    assert trailing == b"NOOP\r\n"


def test_line_limit_counts_the_stuffing_dot() -> None:
    # The limit is on the line as sent: "." + 998 octets is 999 octets before the CRLF.
    result, _ = three_ways(b"." + b"a" * 998 + b"\r\n.\r\n")
    assert result.problem is BodyProblem.LINE_TOO_LONG


def test_bare_lf_does_not_hide_a_long_line_under_keep() -> None:
    # Under KEEP a bare LF is data, not a line end: this is one 1201-octet line.
    data = b"a" * 600 + b"\n" + b"a" * 600 + b"\r\n.\r\n"
    result, _ = three_ways(data, policy=KEEP)
    assert result.problem is BodyProblem.LINE_TOO_LONG


@pytest.mark.parametrize(("max_size", "max_line"), [(0, None), (0, 1000), (1, None), (10, 1)])
@pytest.mark.parametrize("split", range(1, 8))
def test_tiny_limits_never_hide_the_end(max_size: int, max_line: int | None, split: int) -> None:
    # The final ".<CR>" must not be trimmed away as an over-long partial line.
    data = b"ab\r\n.\r\n"
    result, trailing = feed_all(
        [data[:split], data[split:]], max_size=max_size, max_line_length=max_line
    )
    assert result.problem is not None
    assert result.size == 4
    assert trailing == b""


def test_no_limits_at_all() -> None:
    body = b"y" * 5000 + b"\r\n"
    result, _ = three_ways(body + b".\r\n", max_size=None, max_line_length=None)
    assert result == BodyResult(body, None, 5002)


def test_verdict_does_not_depend_on_chunking_with_several_problems() -> None:
    # A long line, then a bare LF: the bare line ending is reported however the bytes come.
    result, _ = three_ways(b"x" * 1200 + b"\r\nab\ncd\r\n.\r\n")
    assert result.problem is BodyProblem.BARE_LINE_ENDING
    # Past the size limit, then a long line: the long line is reported.
    result, _ = three_ways(b"ab\r\n" * 60 + b"y" * 1200 + b"\r\n.\r\n", max_size=100)
    assert result.problem is BodyProblem.LINE_TOO_LONG


@pytest.mark.parametrize("where", [0, 600, 1198, 1199])
def test_nul_in_an_over_long_line_is_found_however_it_is_split(where: int) -> None:
    """Under NulOctets.REJECT a NUL is found even in the part of an over-long line that is
    dropped as it arrives (byte by byte), and it outranks the line's length."""
    line = bytearray(b"x" * 1200)
    line[where] = 0
    wire = bytes(line) + b"\r\n.\r\n"
    for chunks in ([wire], bytewise(wire), [wire[i : i + 7] for i in range(0, len(wire), 7)]):
        reader = BodyReader(max_size=None, max_line_length=1000, nul_octets=NulOctets.REJECT)
        results = [r for r in (reader.feed(chunk) for chunk in chunks) if r is not None]
        assert [r.problem for r in results] == [BodyProblem.NUL]
        assert results[0].content == b""


def test_memory_is_bounded_on_a_huge_line_without_crlf() -> None:
    # `_buf` is private, but "a line without CRLF is not buffered" is exactly the invariant
    # under test, and the public API cannot observe memory: the end result alone would pass
    # for a reader that buffered the whole 5 MB.
    reader = BodyReader(max_size=1_000_000)
    chunk = b"z" * 65536
    for _ in range(5 * 1024 * 1024 // len(chunk)):
        assert reader.feed(chunk) is None
        assert len(reader._buf) <= 1000
    assert reader.feed(b"\r\n.\r\n") == BodyResult(
        b"", BodyProblem.LINE_TOO_LONG, 5 * 1024 * 1024 + 2
    )
    one_piece = BodyReader(max_size=1_000_000)
    assert one_piece.feed(b"z" * 5 * 1024 * 1024) is None
    assert len(one_piece._buf) <= 1000


def test_memory_is_bounded_past_the_size_limit_with_short_lines() -> None:
    reader = BodyReader(max_size=1000)
    for _ in range(1000):
        assert reader.feed(b"0123456789abcdef\r\n" * 4) is None
        assert len(reader._buf) == 0
        assert reader._stored <= 1000  # never more than the limit is stored
    result = reader.feed(b".\r\n")
    assert result == BodyResult(b"", BodyProblem.TOO_BIG, 72000)


# ---- bare CR / LF policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\n\r\n", b"x\r\n\r", b"tail\n"]
)
def test_bare_line_endings_rejected_or_kept(body: bytes) -> None:
    data = body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\nNOOP\r\n"
    rejected, trailing = three_ways(data, policy=REJECT)
    assert rejected.problem is BodyProblem.BARE_LINE_ENDING
    assert rejected.content == b""
    assert trailing == b"NOOP\r\n"
    kept, trailing = three_ways(data, policy=KEEP)
    assert kept.problem is None
    assert kept.content == data[: -len(b".\r\nNOOP\r\n")]
    assert trailing == b"NOOP\r\n"


# ---- properties --------------------------------------------------------------------------------


def split_points(data_object: st.DataObject, data: bytes) -> list[bytes]:
    cuts = sorted(data_object.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks, prev = [], 0
    for cut in [*cuts, len(data)]:
        chunks.append(data[prev:cut])
        prev = cut
    return chunks


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    # Bias towards the bytes that matter: CR, LF and dots.
    alphabet = st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"a", b"\x00", b"\xff"])
    return b"".join(draw(st.lists(alphabet, max_size=40))) + draw(st.binary(max_size=20))


bodies = st.one_of(st.binary(max_size=200), _bodies())


@settings(max_examples=300, deadline=None)
@given(body=bodies, trailing=st.binary(max_size=30), data=st.data())
def test_correct_client_bodies_round_trip(
    body: bytes, trailing: bytes, data: st.DataObject
) -> None:
    wire = smtplib_encode(body)
    chunks = split_points(data, wire + trailing)
    for policy in (KEEP, REJECT):
        result, rest = feed_all(chunks, policy=policy, max_line_length=None)
        assert result == BodyResult(meant(body), None, len(meant(body)))
        assert rest == trailing


@settings(max_examples=300, deadline=None)
@given(body=bodies, trailing=st.binary(max_size=30), data=st.data())
def test_raw_bodies_round_trip_under_keep(
    body: bytes, trailing: bytes, data: st.DataObject
) -> None:
    wire = keep_encode(body)
    expected = body if body.endswith(b"\r\n") else body + b"\r\n"
    chunks = split_points(data, wire + trailing)
    result, rest = feed_all(chunks, policy=KEEP, max_line_length=None)
    assert result == BodyResult(expected, None, len(expected))
    assert rest == trailing
    bare = expected.count(b"\n") != expected.count(b"\r\n") or expected.count(
        b"\r"
    ) != expected.count(b"\r\n")
    rejected, rest = feed_all(chunks, policy=REJECT, max_line_length=None)
    assert rejected.problem is (BodyProblem.BARE_LINE_ENDING if bare else None)
    assert rest == trailing


@settings(max_examples=300, deadline=None)
@given(body=bodies)
def test_reader_never_ends_early(body: bytes) -> None:
    wire = keep_encode(body)
    for policy in (KEEP, REJECT):
        reader = BodyReader(max_size=None, bare_line_endings=policy)
        for i, byte in enumerate(bytewise(wire)):
            result = reader.feed(byte)
            assert (result is not None) == (i == len(wire) - 1), (i, wire)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.binary(max_size=300),
    max_size=st.one_of(st.none(), st.integers(0, 120)),
    max_line=st.one_of(st.none(), st.integers(3, 60)),
    data=st.data(),
)
def test_any_input_same_verdict_however_split(
    raw: bytes, max_size: int | None, max_line: int | None, data: st.DataObject
) -> None:
    wire = raw + b"\r\n.\r\n"
    chunks = split_points(data, wire)
    for policy in (KEEP, REJECT):
        whole = feed_all([wire], policy=policy, max_size=max_size, max_line_length=max_line)
        split = feed_all(chunks, policy=policy, max_size=max_size, max_line_length=max_line)
        one = feed_all(bytewise(wire), policy=policy, max_size=max_size, max_line_length=max_line)
        assert whole == split == one
        result = whole[0]
        if result.problem is not None:
            assert result.content == b""
        if max_size is not None:
            assert (result.problem is BodyProblem.TOO_BIG) <= (result.size > max_size)
            if result.problem is None:
                assert result.size <= max_size


# ---- through the machine -----------------------------------------------------------------------


def test_machine_delivers_unstuffed_message_and_runs_pipelined_commands() -> None:
    run = drive(START + b"..dot\r\nline\r\n.\r\nMAIL FROM:<x@y.example>\r\nNOOP\r\n")
    assert run.codes == [250, 250, 250, 354, 250, 250, 250]
    assert run.output.endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Message accepted\r\n"
        b"250 2.1.0 Sender OK\r\n250 2.0.0 OK\r\n"
    )
    assert contents(run) == [b".dot\r\nline\r\n"]
    assert run.machine.state is State.MAIL


def test_machine_empty_message() -> None:
    run = drive(START + b".\r\n")
    assert contents(run) == [b""]
    assert run.codes[-1] == 250


def test_machine_reads_body_across_feeds() -> None:
    run = drive([START, b"part one ", b"and two\r", b"\n.", b"\r", b"\nNOOP\r\n"])
    assert contents(run) == [b"part one and two\r\n"]
    assert run.codes[-2:] == [250, 250]


def test_machine_refused_message_reply() -> None:
    run = drive(START + b"x\r\n.\r\n", refuse(MessageReceived))
    assert (run.codes[-1], run.enhanced[-1]) == (550, "5.7.1")
    assert run.machine.state is State.READY


@pytest.mark.parametrize("chunked", [False, True])
def test_machine_size_limit(chunked: bool) -> None:
    exact = b"x" * 98 + b"\r\n"  # 100 octets
    ok = drive(START + exact + b".\r\n", max_message_size=100)
    assert contents(ok) == [exact]
    data = START + b"y" + exact + b".\r\n" + START[16:] + exact + b".\r\n"
    run = drive(bytewise(data) if chunked else data, max_message_size=100)
    assert run.codes == [250, 250, 250, 354, 552, 250, 250, 354, 250]
    assert run.enhanced[4] == "5.3.4"
    first, second = ended(run)
    assert first.outcome is TransactionOutcome.REFUSED
    assert (first.reply, first.size) == (replies.MESSAGE_TOO_BIG, 101)
    assert second.outcome is TransactionOutcome.ACCEPTED
    # Nothing of the refused message is delivered; the next transaction works.
    assert contents(run) == [exact]


def test_machine_line_limit() -> None:
    ok = drive(START + b"a" * 998 + b"\r\n.\r\n")
    assert ok.codes[-1] == 250
    run = drive(START + b"a" * 999 + b"\r\nmore\r\n.\r\nNOOP\r\n")
    assert run.codes[-2:] == [500, 250]
    assert run.enhanced[-2] == "5.5.2"
    assert run.replies[-2].text == "Line too long in message text"
    assert not run.of_type(MessageReceived)


def test_machine_buffer_bounded_in_data() -> None:
    run = new_run(max_message_size=1_000_000)
    run.feed(START)
    for _ in range(80):
        run.feed(b"z" * 65536)
        assert run.machine.reading_data
        # Private, as above: memory is what is under test.
        assert len(run.machine._buf) == 0
        body = run.machine._body
        assert body is not None
        assert len(body._buf) <= 1000
    run.feed(b"\r\n.\r\n")
    assert run.codes[-1] == 500
    assert run.machine.state is State.READY


def test_peer_closing_inside_data_drops_the_transaction() -> None:
    run = drive(START + b"half a message\r\n", close=True)
    assert isinstance(run.events[-1], Closed)
    assert run.machine.state is State.CLOSED
    assert not run.of_type(MessageReceived)
