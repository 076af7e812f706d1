"""The relay's SMTP client pieces without sockets: reply parsing, dot-stuffing, reply mapping."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpd_trio import Reply
from smtpd_trio.handlers._upstream import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    ReplyParser,
    UpstreamError,
    UpstreamReply,
    stuffed_pieces,
)
from smtpd_trio.handlers.relay import relayed


def parse_all(data: bytes) -> list[UpstreamReply]:
    parser = ReplyParser()
    parser.feed(data)
    replies = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


def test_single_and_multi_line_replies() -> None:
    ehlo = b"250-mx.test\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
    assert parse_all(b"220 mx.test ESMTP\r\n" + ehlo + b"250\r\n") == [
        UpstreamReply(220, ("mx.test ESMTP",)),
        UpstreamReply(250, ("mx.test", "SIZE 1000", "8BITMIME", "STARTTLS")),
        UpstreamReply(250, ("",)),
    ]


def test_replies_fed_one_octet_at_a_time() -> None:
    data = b"250-first\r\n250 second\n550 5.1.1 no\r\n"
    parser = ReplyParser()
    replies = []
    for octet in data:
        parser.feed(bytes([octet]))
        while (reply := parser.next_reply()) is not None:
            replies.append(reply)
    assert replies == [
        UpstreamReply(250, ("first", "second")),
        UpstreamReply(550, ("5.1.1 no",)),
    ]
    assert not parser.pending


def test_pending_tells_of_bytes_nobody_asked_for() -> None:
    parser = ReplyParser()
    parser.feed(b"250 ok\r\n421 4.4.2 bye")
    assert parser.next_reply() == UpstreamReply(250, ("ok",))
    assert parser.pending
    assert parser.next_reply() is None


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"hello\r\n", "not an SMTP reply line"),
        (b"25 short\r\n", "not an SMTP reply line"),
        (b"600 bad class\r\n", "not an SMTP reply line"),
        (b"170 bad class\r\n", "not an SMTP reply line"),
        (b"250x no separator\r\n", "not an SMTP reply line"),
        (b"250-one\r\n251 two\r\n", "changed its code"),
        (b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n", "longer than"),
        (b"250 " + b"x" * MAX_REPLY_LINE, "longer than"),
        (b"250-x\r\n" * (MAX_REPLY_LINES + 1), "more than"),
    ],
)
def test_malformed_replies_are_errors(data: bytes, words: str) -> None:
    with pytest.raises(UpstreamError, match=words):
        parse_all(data)


def test_text_that_is_not_utf8_is_replaced() -> None:
    (reply,) = parse_all(b"550 5.7.1 caf\xe9\r\n")
    assert reply.texts == ("caf\ufffd",)


@pytest.mark.parametrize(
    ("reply", "enhanced", "texts"),
    [
        (UpstreamReply(550, ("5.1.1 No such user",)), "5.1.1", ("No such user",)),
        (UpstreamReply(250, ("2.0.0 Ok: queued as X",)), "2.0.0", ("Ok: queued as X",)),
        (UpstreamReply(550, ("4.1.1 wrong class",)), None, ("4.1.1 wrong class",)),
        (UpstreamReply(250, ("Ok",)), None, ("Ok",)),
        (UpstreamReply(550, ("5.7.1",)), "5.7.1", ("",)),
        (UpstreamReply(550, ("5.7.1 a", "5.7.1 b", "c")), "5.7.1", ("a", "b", "c")),
        (UpstreamReply(550, ("5.1.10x",)), None, ("5.1.10x",)),
    ],
)
def test_enhanced_status_codes(
    reply: UpstreamReply, enhanced: str | None, texts: tuple[str, ...]
) -> None:
    assert reply.enhanced == enhanced
    assert reply.texts == texts


# ---- dot-stuffing ---------------------------------------------------------------------------

LONE_DOT_LINE = re.compile(rb"(?:\A|[\r\n])\.(?:[\r\n]|\Z)")


def unstuff_crlf(data: bytes) -> bytes:
    """What an RFC 5321 server does with the text between DATA and the final dot."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@given(
    st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"From "]), max_size=60).map(
        b"".join
    ),
    st.integers(min_value=1, max_value=9),
)
def test_stuffing_leaves_no_lone_dot_line_whatever_the_line_ends(data: bytes, piece: int) -> None:
    whole = b"".join(stuffed_pieces(data, piece=10**9))
    assert b"".join(stuffed_pieces(data, piece=piece)) == whole
    assert LONE_DOT_LINE.search(whole) is None
    if b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b""):
        assert unstuff_crlf(whole) == data


@pytest.mark.parametrize(
    ("data", "at_line_start", "stuffed"),
    [
        (b".\r\n", True, b"..\r\n"),
        (b".\r\n", False, b".\r\n"),
        (b"a\r\n.b\r\n..c\r\n", True, b"a\r\n..b\r\n...c\r\n"),
        (b"a\n.\nb\r.\r", True, b"a\n..\nb\r..\r"),
        (b"", True, b""),
    ],
)
def test_stuffing_examples(data: bytes, at_line_start: bool, stuffed: bytes) -> None:
    assert b"".join(stuffed_pieces(data, at_line_start=at_line_start)) == stuffed


# ---- mapping the upstream's replies to ours ------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "positive", "ours"),
    [
        (UpstreamReply(250, ("2.1.0 Ok",)), (250,), Reply(250, "2.1.0", "Ok")),
        (UpstreamReply(251, ("2.1.5 forwarded",)), (250, 251), Reply(251, "2.1.5", "forwarded")),
        (UpstreamReply(251, ("2.1.5 forwarded",)), (250,), Reply(250, "2.1.5", "forwarded")),
        (UpstreamReply(252, ("maybe",)), (250, 251), Reply(250, None, "maybe")),
        (UpstreamReply(250, ("",)), (250,), Reply(250, None, "OK")),
        (UpstreamReply(421, ("4.4.2 bye",)), (250,), Reply(451, "4.4.2", "bye")),
        (UpstreamReply(450, ("greylisted",)), (250,), Reply(450, None, "greylisted")),
        (UpstreamReply(452, ("4.5.3 too many",)), (250,), Reply(452, "4.5.3", "too many")),
        (UpstreamReply(550, ("5.1.1 <x@y>: no",)), (250,), Reply(550, "5.1.1", "<x@y>: no")),
        (UpstreamReply(550, ("4.1.1 odd",)), (250,), Reply(550, None, "4.1.1 odd")),
        (
            UpstreamReply(554, ("5.7.1",)),
            (250,),
            Reply(554, "5.7.1", "Refused by the upstream server"),
        ),
        (
            UpstreamReply(550, ("5.7.1 a\x1b[31mred\x00", "5.7.1 ", "5.7.1 more")),
            (250,),
            Reply(550, "5.7.1", "a [31mred", ("-", "more")),
        ),
    ],
)
def test_relayed_replies(upstream: UpstreamReply, positive: tuple[int, ...], ours: Reply) -> None:
    assert relayed(upstream, positive) == ours


def test_relayed_text_is_bounded() -> None:
    reply = relayed(UpstreamReply(550, ("x" * 5000,) * 50), (250,))
    assert len(reply.lines) == 8
    assert all(len(line) == 300 for line in reply.lines)
    assert len(reply.to_bytes().split(b"\r\n")[0]) <= 512


def test_a_3xx_is_not_relayed() -> None:
    with pytest.raises(ValueError, match="not a reply to relay"):
        relayed(UpstreamReply(354, ("go ahead",)), (250,))
