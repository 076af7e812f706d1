"""Split invariance of the whole machine: however the client's bytes are cut into reads (whole,
at arbitrary points, or one byte at a time), the machine hands out the same events and sends
the same bytes. Covers commands (with and without DSN and EXPN offered), pipelining, AUTH
exchanges, message text (whole and streamed, DATA and BDAT chunks, in SMTP and LMTP), bare
CR/LF, over-long command and text lines, limits and the error limit, and XCLIENT/XFORWARD from
a client allowed them (and from one that is not).

STARTTLS is left out on purpose: what the client pipelines after it in plaintext is discarded,
and how much of it arrived before the handshake depends on the reads (by design).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import Run, authenticate, bytewise, new_run

from smtpd_trio._smtp.body import BareLineEndings
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Authenticate,
    Closed,
    DecisionEvent,
    Event,
    Hello,
    MailFrom,
    MessageChunk,
    MessageEnd,
    MessageReceived,
    RcptTo,
    TransactionEnded,
    XClient,
)
from smtpd_trio._smtp.oauth import OAuthBearer, oauthbearer_response
from smtpd_trio._smtp.replies import Reply
from smtpd_trio._smtp.sasl import Login, Plain


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def bdat(data: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


FRAGMENTS = [
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<> SMTPUTF8\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"RCPT TO:<no@d.example>\r\n",
    "RCPT TO:<\u00fc@d.example>\r\n".encode(),
    b"DATA\r\n",
    b"Subject: s\r\n\r\n..dotted\r\nbody\r\n.\r\n",
    b"bare\nLF and bare\rCR\r\n.\r\n",
    b"x" * 150 + b"\r\n.\r\n",  # a text line over the 100-octet limit
    b"y" * 90 + b"\r\n" + b"z" * 90 + b"\r\n" + b"w" * 90 + b"\r\n.\r\n",  # over 200 octets
    b"\r\n.\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY someone\r\n",
    b"EXPN list\r\n",
    b"MAIL FROM:<a@b.example> RET=HDRS ENVID=x+2By\r\n",
    b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example\r\n",
    b"RCPT TO:<c@d.example> NOTIFY=NEVER,DELAY\r\n",
    b"HELP\r\n",
    b"AUTH PLAIN " + b64(b"\0user\0right") + b"\r\n",
    b"AUTH PLAIN " + b64(b"\0user\0wrong") + b"\r\n",
    b"AUTH PLAIN\r\n",
    b64(b"\0user\0right") + b"\r\n",
    b"AUTH LOGIN\r\n",
    b64(b"user") + b"\r\n",
    b64(b"right") + b"\r\n",
    b"*\r\n",
    b"!!notbase64\r\n",
    b"AUTH PLAIN =\r\n",
    # The test authenticator refuses every token: the error challenge, then any line ends it.
    b"AUTH OAUTHBEARER " + b64(oauthbearer_response("user", "t0ken")) + b"\r\n",
    b"AQ==\r\n",
    b"NOOP " + b"q" * 700 + b"\r\n",  # a command line over the limit
    b"MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n",  # a bare LF inside a command
    b"\xff\xfe\r\n",
    b"FROB\r\n",
    # XCLIENT restarts the session (220), XFORWARD is for the next transaction (250); both
    # 550 when the client may not, 503 inside a transaction, 501 when malformed.
    b"XCLIENT ADDR=192.0.2.7 NAME=client.example\r\n",
    b"XCLIENT HELO=h.example PROTO=ESMTP LOGIN=al+40ice\r\n",
    b"XCLIENT ADDR=IPV6:2001:db8::1 PORT=[UNAVAILABLE] NAME=[TEMPUNAVAIL]\r\n",
    b"XCLIENT NAME=refused.example\r\n",  # the policy answers 554
    b"XCLIENT NAME=bad..name\r\n",
    b"XFORWARD NAME=up.example ADDR=198.51.100.7 IDENT=4F2A\r\n",
    b"XFORWARD SOURCE=LOCAL\r\n",
    b"XFORWARD BOGUS=1\r\n",
    b"QUIT\r\n",
    # CHUNKING: chunks that hold commands, CRLF.CRLF, NUL, bare line ends; the size limit.
    b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
    bdat(b"hello"),
    bdat(b"\r\n.\r\nQUIT\r\n\x00x", last=True),
    bdat(b"RSET\r\nbare\nLF", last=True),
    b"BDAT 0 LAST\r\n",
    bdat(b"b" * 150),
    b"BDAT 3x\r\n",
    b"BDAT 3 FIRST\r\nabc",
    b"bdat 4 last\r\n\r\n\r\n",
    b"LHLO c.example\r\n",
]


BODIES = [f for f in FRAGMENTS if f.endswith(b"\r\n.\r\n")]
START = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
#: Whole BDAT messages (after START_BDAT): chunk sequences ending in LAST.
CHUNKED = [
    bdat(b"one") + bdat(b"two", last=True),
    bdat(b"x" * 120) + bdat(b"y" * 120) + bdat(b"z", last=True),  # over the size limit
    bdat(b"a\x00b") + b"NOOP\r\n" + bdat(b"\r\n.\r\n", last=True),  # NUL, a command between
    bdat(b"abc") + b"DATA\r\nRSET\r\n",
    b"BDAT 0 LAST\r\n",
]
START_BDAT = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\n"
AUTH_LOGIN = b"AUTH LOGIN\r\n" + b64(b"user") + b"\r\n" + b64(b"right") + b"\r\n"
REFUSED_TOKEN = b"AUTH OAUTHBEARER " + b64(oauthbearer_response(None, "t0ken")) + b"\r\nAQ==\r\n"

#: Items of client input: single fragments, or whole transactions (so messages and complete
#: AUTH exchanges are common, not a lucky draw).
ITEMS = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.sampled_from(BODIES).map(lambda body: START + body),
    st.sampled_from(CHUNKED).map(lambda chunks: START_BDAT + chunks),
    st.just(b"EHLO c.example\r\n" + AUTH_LOGIN),
    st.just(b"LHLO c.example\r\n" + AUTH_LOGIN),
    st.just(b"EHLO c.example\r\n" + REFUSED_TOKEN),
)


def policy(event: DecisionEvent) -> Reply | None:
    """Decisions that depend only on the event, never on the order of reads."""
    if isinstance(event, RcptTo) and event.address.startswith("no@"):
        return Reply(550, "5.1.1", "No such user")
    if isinstance(event, XClient) and event.info.name == "refused.example":
        return Reply(554, "5.7.1", "Not this client")
    return None


def lmtp_answer(address: str) -> Reply | None:
    """LMTP: the message is refused for e@ recipients (over quota), accepted for the others."""
    return Reply(452, "4.2.2", "Mailbox full") if address.startswith("e@") else None


def run(chunks: list[bytes], options: dict[str, Any]) -> Run:
    """Feed ``chunks`` as successive reads, answer every decision, and record it all.
    ``options["accept_these"]``: decision types answered None whatever ``policy`` says."""
    options = dict(options)
    accept_these = options.pop("accept_these", ())
    r = new_run(**options)
    m = r.machine
    for chunk in [*(c for c in chunks if c), b""]:  # b"": the client closes at the end
        m.receive_data(chunk)
        while True:
            event = m.next_event()
            if event is NEED_DATA:
                break
            r.events.append(event)
            if isinstance(event, Authenticate):
                m.auth_result(authenticate(event))
            elif isinstance(event, MessageReceived | MessageEnd) and m.settings.lmtp:
                m.respond_recipients([lmtp_answer(address) for address in event.envelope.rcpt_tos])
            elif isinstance(event, DecisionEvent):
                m.respond(None if isinstance(event, accept_these) else policy(event))
            elif isinstance(event, Closed):
                break
        r.output += m.data_to_send()
        if r.events and isinstance(r.events[-1], Closed):
            break
    return r


def normalised(events: list[Event]) -> list[Event]:
    """Streamed text arrives in pieces whose sizes follow the reads: join adjacent pieces. And
    of a streamed message that is refused (or cut off), how much text was handed out before
    the refusal depends on the reads too (the handler then gets MessageAborted): drop it."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, MessageChunk) and out and isinstance(out[-1], MessageChunk):
            out[-1] = MessageChunk(out[-1].data + event.data)
        elif isinstance(event, TransactionEnded) and out and isinstance(out[-1], MessageChunk):
            out[-1] = event
        else:
            out.append(event)
    return out


@settings(max_examples=200, deadline=None)
@given(
    fragments=st.lists(ITEMS, min_size=1, max_size=25),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    stream_body=st.booleans(),
    bare=st.sampled_from(list(BareLineEndings)),
    max_errors=st.sampled_from([3, 1000]),
    forwarding=st.booleans(),
    dsn=st.booleans(),
    expn=st.booleans(),
    lmtp=st.booleans(),
)
def test_the_same_events_and_bytes_however_the_input_is_cut(
    fragments: list[bytes],
    cuts: list[int],
    stream_body: bool,
    bare: BareLineEndings,
    max_errors: int,
    forwarding: bool,
    dsn: bool,
    expn: bool,
    lmtp: bool,
) -> None:
    options: dict[str, Any] = {
        "lmtp": lmtp,
        "xclient": forwarding,
        "xforward": forwarding,
        "stream_body": stream_body,
        "dsn": dsn,
        "expn": expn,
        "bare_line_endings": bare,
        "max_errors": max_errors,
        "max_message_size": 200,
        "max_line_length": 100,
        "auth_mechanisms": (Plain(), Login(), OAuthBearer()),
        "auth_over_plaintext": True,
    }
    data = b"".join(fragments)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]
    whole = run([data], options)
    for chunks in (pieces, bytewise(data)):
        split = run(chunks, options)
        assert split.output == whole.output
        assert normalised(split.events) == normalised(whole.events)
    # And the session always ends, with well-formed replies (parse_replies checks each line).
    assert isinstance(whole.events[-1], Closed)
    assert whole.codes
    # Every MAIL is accepted here (the policy refuses only recipients), so every MailFrom
    # opened a transaction, and each one ended exactly once (BDAT and LMTP included).
    opened = sum(isinstance(e, MailFrom) for e in whole.events)
    assert opened == sum(isinstance(e, TransactionEnded) for e in whole.events)


@settings(max_examples=200, deadline=None)
@given(
    fragments=st.lists(ITEMS, min_size=1, max_size=25),
    accepted=st.sets(st.sampled_from([Hello, MailFrom, RcptTo]), min_size=1),
    stream_body=st.booleans(),
    lmtp=st.booleans(),
    forwarding=st.booleans(),
)
def test_auto_accept_is_answering_none_without_the_event(
    fragments: list[bytes],
    accepted: set[type[Hello | MailFrom | RcptTo]],
    stream_body: bool,
    lmtp: bool,
    forwarding: bool,
) -> None:
    """A machine that accepts HELO/EHLO, MAIL or RCPT itself (``auto_accept``, for a handler
    with no callback for them) sends the same bytes and hands out the same other events as one
    whose I/O layer answers those decisions with ``respond(None)``; it never hands them out."""
    options: dict[str, Any] = {
        "lmtp": lmtp,
        "xclient": forwarding,
        "xforward": forwarding,
        "stream_body": stream_body,
        "dsn": True,
        "max_message_size": 200,
        "max_line_length": 100,
        "auth_mechanisms": (Plain(), Login(), OAuthBearer()),
        "auth_over_plaintext": True,
    }
    data = [b"".join(fragments)]
    kinds = tuple(accepted)
    asked = run(data, {**options, "accept_these": kinds})
    auto = run(data, {**options, "auto_accept": kinds})
    assert auto.output == asked.output
    assert not [e for e in auto.events if isinstance(e, kinds)]
    assert auto.events == [e for e in asked.events if not isinstance(e, kinds)]
    assert auto.machine.state is asked.machine.state


def test_auto_accept_takes_only_hello_mail_and_rcpt() -> None:
    with pytest.raises(ValueError, match="auto_accept takes Hello, MailFrom and RcptTo, not"):
        new_run(auto_accept=[MailFrom, MessageReceived])  # type: ignore[list-item]
