"""BDAT through the whole server (the Trio driver and the handler API): on_data gets the chunks'
octets; on_data_chunks gets them as they arrive, with backpressure, and the commands a client
sends between chunks are still served; the memory budget applies."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    MessageAborted,
    MessageStream,
    Reply,
    Session,
    TransactionOutcome,
)
from smtpd_trio.testing import open_test_session


class Store(Handler):
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.outcomes: list[TransactionOutcome] = []

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.outcomes.append(outcome)


class Stream(Handler):
    """Streams each message; ``hold`` (when set) stops it after the first chunk until ``go``."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.aborted: list[str] = []
        self.outcomes: list[TransactionOutcome] = []
        self.hold = False
        self.holding = trio.Event()
        self.go = trio.Event()

    async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
        try:
            async for chunk in message.chunks:
                self.chunks.append(chunk)
                if self.hold:
                    self.holding.set()
                    await self.go.wait()
                    self.hold = False
        except MessageAborted as exc:
            self.aborted.append(str(exc))
            raise
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.outcomes.append(outcome)


BINARY = bytes(range(256)) + b"\r\n.\r\n\x00\n.\n" + b"x" * 3000


async def test_on_data_gets_the_chunks_octets_and_a_trace_header() -> None:
    handler = Store()
    async with open_test_session(handler) as client:
        assert "CHUNKING" in (await client.ehlo()).lines
        assert (await client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")).code == 250
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        assert str(await client.bdat(BINARY[:100])) == "250 2.0.0 100 octets received"
        reply = await client.bdat(BINARY[100:], last=True)
        assert str(reply) == "250 2.0.0 Message accepted"
    (message,) = handler.messages
    assert message.content == BINARY
    assert message.envelope.body_type == "BINARYMIME"
    assert message.with_trace() == message.received_header.encode() + BINARY
    assert handler.outcomes == [TransactionOutcome.ACCEPTED]


async def test_pipelined_chunks_get_their_replies_in_one_batch() -> None:
    handler = Store()
    async with open_test_session(handler) as client:
        await client.ehlo()
        await client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
            b"BDAT 3\r\nabcBDAT 3\r\ndefBDAT 0 LAST\r\nNOOP\r\n"
        )
        texts = [str(await client.read_reply()) for _ in range(6)]
    assert texts == [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "250 2.0.0 3 octets received",
        "250 2.0.0 3 octets received",
        "250 2.0.0 Message accepted",
        "250 2.0.0 OK",
    ]
    assert [m.content for m in handler.messages] == [b"abcdef"]


async def test_streaming_hands_out_bdat_chunks_as_they_arrive() -> None:
    handler = Stream()
    async with open_test_session(handler) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.bdat(b"first ")).code == 250
        # Other commands between chunks are served, the message goes on.
        assert (await client.command("NOOP")).code == 250
        assert (await client.command("FROB")).code == 500
        assert (await client.command("VRFY someone")).code == 252
        assert (await client.command("DATA")).code == 503
        reply = await client.bdat(BINARY, last=True)
        assert str(reply) == "250 2.0.0 Message accepted"
    assert b"".join(handler.chunks) == b"first " + BINARY
    assert handler.outcomes == [TransactionOutcome.ACCEPTED]


async def test_a_chunk_is_answered_only_once_the_handler_asks_for_more() -> None:
    """Backpressure: while the streaming handler is busy with a chunk, the client does not
    get the 250 that lets it send the next one."""
    handler = Stream()
    handler.hold = True
    async with open_test_session(handler) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        replies: list[str] = []

        async def first_chunk() -> None:
            replies.append(str(await client.bdat(b"one")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_chunk)
            await handler.holding.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert handler.chunks == [b"one"]
            assert replies == []  # the handler holds the chunk: no 250 yet
            handler.go.set()
        assert replies == ["250 2.0.0 3 octets received"]
        assert str(await client.bdat(b"two", last=True)) == "250 2.0.0 Message accepted"
    assert handler.chunks == [b"one", b"two"]


async def test_streaming_rset_between_chunks_aborts_the_handler() -> None:
    handler = Stream()
    async with open_test_session(handler) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.bdat(b"part")
        assert (await client.command("RSET")).code == 250
        assert (await client.command("NOOP")).code == 250
    assert handler.aborted == ["connection ended before the end of the message"]
    assert handler.outcomes == [TransactionOutcome.RESET]


async def test_streaming_ehlo_between_chunks_ends_the_message() -> None:
    handler = Stream()
    async with open_test_session(handler) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.bdat(b"part")
        assert (await client.ehlo("again.test")).code == 250
        assert client.session.helo_name == "again.test"
        assert (await client.bdat(b"late", last=True)).code == 503
    assert len(handler.aborted) == 1
    assert handler.outcomes == [TransactionOutcome.RESET]


async def test_streaming_size_limit_across_chunks_is_552() -> None:
    handler = Stream()
    async with open_test_session(handler, config=Config(max_message_size=10)) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.bdat(b"123456")).code == 250
        reply = await client.bdat(b"7890123", last=True)
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
        assert (await client.command("NOOP")).code == 250
    assert handler.chunks == [b"123456"]
    assert handler.aborted == ["message refused (552 5.3.4)"]
    assert handler.outcomes == [TransactionOutcome.REFUSED]


async def test_the_memory_budget_applies_to_bdat(caplog: pytest.LogCaptureFixture) -> None:
    handler = Store()
    config = Config(hostname="mx.test", max_buffered_bytes=1000)
    async with open_test_session(handler, config=config) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.bdat(b"x" * 600)).code == 250
        reply = await client.bdat(b"y" * 600, last=True)
        assert (reply.code, reply.enhanced) == (452, "4.3.1")
        # The budget was given back: a message that fits goes through.
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.bdat(b"z" * 900, last=True)).code == 250
    assert [m.content for m in handler.messages] == [b"z" * 900]
    assert handler.outcomes == [TransactionOutcome.REFUSED, TransactionOutcome.ACCEPTED]


async def test_a_refused_chunk_is_logged_as_a_refused_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    async with open_test_session(Store(), config=Config(max_message_size=5)) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.bdat(b"toolong", last=True)).code == 552
    assert any("refused (552 5.3.4)" in r.getMessage() for r in caplog.records)
