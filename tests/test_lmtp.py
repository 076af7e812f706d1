"""LMTP through the whole server: the handler decides the message per recipient by returning a
list from on_data (or on_data_chunks, or MessageHandler.on_message); a wrong list is an ERROR
and a 451 for every recipient; on_transaction_end sees each recipient's reply."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

import pytest

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    MessageHandler,
    MessageStream,
    Reject,
    Reply,
    Session,
    TransactionOutcome,
)
from smtpd_trio.testing import ClientReply, TestClient, open_test_session

LMTP = Config(hostname="lmtp.test", lmtp=True)
FULL = Reply(452, "4.2.2", "Mailbox full")
UNKNOWN = Reply(550, "5.1.1", "No such mailbox")


class Mailboxes(Handler):
    """Delivers to ``mailboxes`` (address -> list of messages); one is full, others unknown."""

    def __init__(self, answer: object = None) -> None:
        self.mailboxes: dict[str, list[bytes]] = {"ann@example.org": [], "bob@example.org": []}
        self.full = {"full@example.org"}
        #: What on_data returns instead, when set (to test wrong answers).
        self.answer = answer
        self.ends: list[tuple[TransactionOutcome, tuple[str, ...], tuple[int, ...]]] = []

    async def on_data(self, session: Session, message: Message) -> Any:
        if self.answer is not None:
            return self.answer
        results: list[Reply | None] = []
        for address in message.envelope.rcpt_tos:
            if address in self.full:
                results.append(FULL)
            elif address in self.mailboxes:
                self.mailboxes[address].append(message.content)
                results.append(None)
            else:
                results.append(UNKNOWN)
        return results

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        codes = tuple(reply.code for reply in envelope.rcpt_replies)
        self.ends.append((outcome, envelope.rcpt_tos, codes))


async def transaction(client: TestClient, *rcpts: str) -> None:
    assert (await client.lhlo()).code == 250
    assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
    for rcpt in rcpts:
        assert (await client.command(f"RCPT TO:<{rcpt}>")).code == 250


async def data(
    client: TestClient, count: int, text: bytes = b"Subject: t\r\n\r\nhi\r\n"
) -> list[str]:
    """Send DATA and the message; the ``count`` replies after it, as text."""
    assert (await client.command("DATA")).code == 354
    await client.send(text + b".\r\n")
    return [str(await client.read_reply()) for _ in range(count)]


async def test_the_greeting_says_lmtp_and_ehlo_is_refused() -> None:
    async with open_test_session(Mailboxes(), config=LMTP, read_greeting=False) as client:
        assert str(await client.read_reply()) == "220 lmtp.test LMTP smtpd-trio ready"
        assert str(await client.ehlo()) == "500 5.5.1 This is an LMTP server: send LHLO"
        assert (await client.command("HELO x.test")).code == 500
        lhlo = await client.lhlo()
        assert lhlo.code == 250
        assert {"PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING"} <= set(lhlo.lines)
        assert client.session.lmtp
        assert client.session.extended


async def test_one_reply_per_recipient_decided_by_the_handler() -> None:
    handler = Mailboxes()
    async with open_test_session(handler, config=LMTP) as client:
        await transaction(
            client, "ann@example.org", "full@example.org", "who@example.org", "ann@example.org"
        )
        assert await data(client, 4) == [
            "250 2.0.0 <ann@example.org> Message accepted",
            "452 4.2.2 Mailbox full",
            "550 5.1.1 No such mailbox",
            "250 2.0.0 <ann@example.org> Message accepted",
        ]
        assert (await client.command("NOOP")).code == 250
        assert client.session.messages_accepted == 1
    assert len(handler.mailboxes["ann@example.org"]) == 2
    assert handler.ends == [
        (
            TransactionOutcome.ACCEPTED,
            ("ann@example.org", "full@example.org", "who@example.org", "ann@example.org"),
            (250, 452, 550, 250),
        )
    ]


async def test_refused_for_all_is_a_refused_transaction() -> None:
    handler = Mailboxes()
    async with open_test_session(handler, config=LMTP) as client:
        await transaction(client, "full@example.org", "who@example.org")
        assert [r[:3] for r in await data(client, 2)] == ["452", "550"]
        assert client.session.messages_accepted == 0
    assert handler.ends == [
        (TransactionOutcome.REFUSED, ("full@example.org", "who@example.org"), (452, 550))
    ]


async def test_the_smtp_answers_still_answer_for_every_recipient() -> None:
    class Refuse(Handler):
        async def on_data(self, session: Session, message: Message) -> Reply | None:
            raise Reject(451, "4.3.0", "Try later")

    async with open_test_session(Refuse(), config=LMTP) as client:
        await transaction(client, "ann@example.org", "bob@example.org")
        assert await data(client, 2) == ["451 4.3.0 Try later"] * 2
    async with open_test_session(Handler(), config=LMTP) as client:  # no on_data: accepted
        await transaction(client, "ann@example.org", "bob@example.org")
        assert await data(client, 2) == [
            "250 2.0.0 <ann@example.org> Message accepted",
            "250 2.0.0 <bob@example.org> Message accepted",
        ]


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        ([None], "1 answer(s) for 2 recipient(s)"),
        ([None, None, None], "3 answer(s) for 2 recipient(s)"),
        ([None, Reply(354, None, "go")], "354 is not an answer to a message"),
        ([None, "550 no"], "an answer must be a Reply or None, not str"),
    ],
)
async def test_a_wrong_list_is_an_error_and_451_for_every_recipient(
    answer: object, complaint: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Mailboxes(answer)
    async with open_test_session(handler, config=LMTP) as client:
        await transaction(client, "ann@example.org", "bob@example.org")
        assert (
            await data(client, 2)
            == ["451 4.3.0 Requested action aborted: local error in processing"] * 2
        )
        assert (await client.command("NOOP")).code == 250  # in step: exactly two replies
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "handler on_data returned" in errors[0].getMessage()
    assert complaint in errors[0].getMessage()
    assert handler.ends[0][0] is TransactionOutcome.REFUSED


async def test_a_list_in_smtp_is_an_error_and_451(caplog: pytest.LogCaptureFixture) -> None:
    async with open_test_session(Mailboxes([None])) as client:
        await client.ehlo()
        reply = await client.sendmail("a@example.com", ["ann@example.org"], b"hi\r\n")
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "LMTP only" in error.getMessage()


async def test_streaming_handler_answers_per_recipient() -> None:
    class Spool(Handler):
        async def on_data_chunks(
            self, session: Session, message: MessageStream
        ) -> Sequence[Reply | None]:
            text = b"".join([chunk async for chunk in message.chunks])
            assert text == b"abcdef"
            return (None, FULL)

    async with open_test_session(Spool(), config=LMTP) as client:
        await transaction(client, "ann@example.org", "full@example.org")
        assert str(await client.bdat(b"abc")) == "250 2.0.0 3 octets received"
        first = await client.bdat(b"def", last=True)
        replies: list[ClientReply] = [first, await client.read_reply()]
        assert [str(r) for r in replies] == [
            "250 2.0.0 <ann@example.org> Message accepted",
            "452 4.2.2 Mailbox full",
        ]


async def test_message_handler_answers_per_recipient() -> None:
    class BySubject(MessageHandler):
        async def on_message(
            self, session: Session, message: Message, parsed: EmailMessage
        ) -> list[Reply | None]:
            return [
                None if parsed["Subject"] == address else Reply(550, "5.7.1", "Not for you")
                for address in message.envelope.rcpt_tos
            ]

    async with open_test_session(BySubject(), config=LMTP) as client:
        await transaction(client, "ann@example.org", "bob@example.org")
        text = b"Subject: bob@example.org\r\n\r\nhi\r\n"
        assert [r[:3] for r in await data(client, 2, text)] == ["550", "250"]


async def test_lmtp_over_bdat_with_a_message_over_the_limit() -> None:
    config = Config(hostname="lmtp.test", lmtp=True, max_message_size=4)
    async with open_test_session(Mailboxes(), config=config) as client:
        await transaction(client, "ann@example.org", "bob@example.org")
        first = await client.bdat(b"12345", last=True)
        second = await client.read_reply()
        assert [str(first), str(second)] == [
            "552 5.3.4 Message size exceeds fixed maximum message size"
        ] * 2
