"""Streaming DATA: Handler.on_data_chunks receives the message text as it arrives."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from machine_driver import smtp_settings

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    MessageAborted,
    MessageStream,
    Reject,
    Reply,
    Session,
    TransactionOutcome,
)
from smtpd_trio._smtp.body import BodyReader
from smtpd_trio._smtp.events import Connect, MessageChunk, MessageEnd, MessageStart
from smtpd_trio._smtp.machine import SMTPMachine
from smtpd_trio.server import SMTPServer
from smtpd_trio.testing import dot_stuff, open_test_session


class Collector(Handler):
    def __init__(self, *, stop_after: int | None = None, fail: bool = False) -> None:
        self.messages: list[bytes] = []
        self.chunk_sizes: list[int] = []
        self.aborted: list[str] = []
        self.received_headers: list[str] = []
        self.outcomes: list[TransactionOutcome] = []
        self.stop_after = stop_after
        self.fail = fail

    async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
        self.received_headers.append(message.received_header)
        parts: list[bytes] = []
        try:
            async for chunk in message.chunks:
                assert chunk, "chunks are never empty"
                parts.append(chunk)
                self.chunk_sizes.append(len(chunk))
                if self.fail:
                    raise RuntimeError("disk full: /secret/path")
                if self.stop_after is not None and len(parts) >= self.stop_after:
                    break
        except MessageAborted as exc:
            self.aborted.append(str(exc))
            raise
        self.messages.append(b"".join(parts))
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.outcomes.append(outcome)


def crlf_body(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz.\r\n"
    return (line * (size // len(line) + 1))[:size].rsplit(b"\r\n", 1)[0] + b"\r\n"


async def test_chunks_add_up_to_the_message_and_the_trace_header_is_ready() -> None:
    handler = Collector()
    body = b"Subject: big\r\n\r\n" + b".leading dot\r\n" + crlf_body(300_000)
    async with open_test_session(handler) as client:
        await client.command("EHLO client.test")
        reply = await client.sendmail("a@example.com", ["b@example.org"], body)
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
    assert handler.messages == [body]
    assert len(handler.chunk_sizes) > 1  # it really streamed
    assert max(handler.chunk_sizes) <= 65536 + 1000
    header = handler.received_headers[0]
    assert header.startswith("Received: from client.test ([192.0.2.1])")


def streaming_machine(**options: object) -> SMTPMachine:
    machine = SMTPMachine(smtp_settings(**options), stream_body=True)
    assert machine.next_event() == Connect()
    machine.respond()
    return machine


async def test_streaming_machine_emits_start_chunks_end() -> None:
    machine = streaming_machine()
    machine.receive_data(
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhello\r\n..x\r\n.\r\nQUIT\r\n"
    )
    kinds = []
    while True:
        event = machine.next_event()
        kinds.append(type(event).__name__)
        if isinstance(event, MessageChunk):
            assert event.data == b"hello\r\n.x\r\n"
        if isinstance(event, MessageEnd):
            assert event.size == len(b"hello\r\n.x\r\n")
        if kinds[-1] in ("Hello", "MailFrom", "RcptTo", "MessageEnd"):
            machine.respond()
        if kinds[-1] in ("Closed", "NeedData"):
            break
    assert kinds == ["Hello", "MailFrom", "RcptTo", "MessageStart", "MessageChunk",
                     "MessageEnd", "TransactionEnded", "Closed"]  # fmt: skip
    assert b"250 2.0.0 Message accepted\r\n221" in machine.data_to_send()


async def test_size_limit_aborts_the_iteration_with_552_not_451() -> None:
    handler = Collector()
    config = Config(hostname="mx.test", max_message_size=100_000)
    async with open_test_session(handler, config=config) as client:
        await client.command("EHLO client.test")
        reply = await client.sendmail("a@example.com", ["b@example.org"], crlf_body(250_000))
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
        # The session goes on and the next message streams normally.
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"small\r\n")
        assert reply.code == 250
    assert handler.aborted == ["message refused (552 5.3.4)"]
    assert handler.messages == [b"small\r\n"]
    assert handler.outcomes == [TransactionOutcome.REFUSED, TransactionOutcome.ACCEPTED]
    # Nothing beyond the limit was handed out.
    assert sum(handler.chunk_sizes) - len(b"small\r\n") <= 100_000


async def test_bare_lf_aborts_with_550() -> None:
    handler = Collector()
    async with open_test_session(handler) as client:
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.command("DATA")
        await client.send(b"ok line\r\nbare\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (550, "5.6.0")
    assert handler.aborted == ["message refused (550 5.6.0)"]
    assert handler.messages == []


async def test_unread_text_is_drained_and_the_handlers_reply_stands() -> None:
    handler = Collector(stop_after=1)
    body = crlf_body(400_000)
    async with open_test_session(handler) as client:
        await client.command("EHLO client.test")
        reply = await client.sendmail("a@example.com", ["b@example.org"], body)
        assert reply.code == 250
        # Pipelined commands after the message are still read as commands.
        assert (await client.command("NOOP")).code == 250
    assert len(handler.messages) == 1
    assert body.startswith(handler.messages[0])
    assert len(handler.messages[0]) < len(body)


async def test_handler_failure_mid_stream_is_451_after_the_real_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Collector(fail=True)
    async with open_test_session(handler) as client:
        await client.command("EHLO client.test")
        reply = await client.sendmail("a@example.com", ["b@example.org"], crlf_body(200_000))
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
        assert (await client.command("NOOP")).code == 250
        assert b"secret" not in bytes(client.transcript)
    assert any("on_data_chunks failed" in r.getMessage() for r in caplog.records)


async def test_reject_from_a_streaming_handler() -> None:
    class Refuser(Handler):
        async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
            async for chunk in message.chunks:
                if b"VIRUS" in chunk:
                    raise Reject(554, "5.7.1", "Message refused")
            return None

    async with open_test_session(Refuser()) as client:
        await client.command("EHLO client.test")
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"a VIRUS here\r\n")
        assert (reply.code, reply.enhanced) == (554, "5.7.1")


async def test_connection_lost_mid_message_aborts_the_handler() -> None:
    closed = trio.Event()

    class Watcher(Collector):
        async def on_close(self, session: Session) -> None:
            closed.set()

    handler = Watcher()
    async with open_test_session(handler) as client:
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.command("DATA")
        await client.send(crlf_body(10_000))
        await client.aclose()
        await closed.wait()
    assert handler.aborted == ["connection ended before the end of the message"]
    assert handler.messages == []
    assert handler.outcomes == [TransactionOutcome.ABORTED]


def test_defining_both_callbacks_is_a_type_error() -> None:
    class Both(Collector):
        async def on_data(self, session: Session, message: Message) -> Reply | None:
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="defines both on_data and on_data_chunks"):
        SMTPServer(Both())


TIMEOUT = 30.0


async def test_client_silent_mid_stream_times_out_and_aborts_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Collector()
    # Without a minimum data rate, each chunk of text restarts the full timeout.
    config = Config(hostname="mx.test", command_timeout=TIMEOUT, min_data_rate=None)
    async with open_test_session(handler, config=config) as client:
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.command("DATA")).code == 354
        # Text within the timeout keeps the session alive, chunk after chunk...
        for _ in range(3):
            await client.send(b"some text\r\n")
            await trio.sleep(TIMEOUT * 0.9)
        start = trio.current_time()
        # ...then silence: 421 within the timeout (plus at most one second).
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        assert trio.current_time() - start <= TIMEOUT + 1
        assert await client.at_eof()
    assert handler.aborted == ["connection ended before the end of the message"]
    assert handler.outcomes == [TransactionOutcome.ABORTED]


async def test_slow_streaming_handler_is_not_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Slow(Collector):
        async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
            await trio.sleep(TIMEOUT * 2)  # a slow store before reading
            result = await super().on_data_chunks(session, message)
            await trio.sleep(TIMEOUT * 2)  # and after
            return result

    handler = Slow()
    config = Config(hostname="mx.test", command_timeout=TIMEOUT)
    async with open_test_session(handler, config=config) as client:
        await client.command("EHLO client.test")
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"hi\r\n")
        assert reply.code == 250
        # The command clock runs again after the handler: an idle client still times out.
        start = trio.current_time()
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + 1
    assert handler.messages == [b"hi\r\n"]


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=20),
)
def test_streamed_chunks_equal_the_buffered_message(body: bytes, cuts: list[int]) -> None:
    wire = dot_stuff(body)
    expected = BodyReader(max_size=None, max_line_length=None).feed(wire)
    assert expected is not None
    machine = streaming_machine(
        max_message_size=None, max_line_length=None, bare_line_endings="keep", nul_octets="keep"
    )
    machine.receive_data(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n")
    pieces = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        pieces.append(wire[pos : pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    got: list[bytes] = []
    ended = False
    for piece in pieces:
        if piece:
            machine.receive_data(piece)
        while True:
            event = machine.next_event()
            if isinstance(event, MessageChunk):
                got.append(event.data)
            elif isinstance(event, MessageEnd):
                machine.respond()
                ended = True
            elif isinstance(event, MessageStart):
                pass
            elif type(event).__name__ in ("Hello", "MailFrom", "RcptTo"):
                machine.respond()
            elif type(event).__name__ == "NeedData":
                break
    assert ended
    assert b"".join(got) == expected.content
