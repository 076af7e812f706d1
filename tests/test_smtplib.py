"""A real client (the standard library's smtplib, in a worker thread) over loopback sockets."""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    Reject,
    Reply,
    Session,
    SMTPServer,
    listener_port,
    open_smtp_listeners,
)
from smtpd_trio.testing import TestClient

T = TypeVar("T")
HOST = "127.0.0.1"


class Recorder(Handler):
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.startswith("nobody@"):
            raise Reject(550, "5.1.1", "No such user here")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        return None


@asynccontextmanager
async def serving(handler: object, **config: object) -> AsyncIterator[int]:
    server = SMTPServer(handler, config=Config(hostname="mx.test", **config))  # type: ignore[arg-type]
    listeners = await open_smtp_listeners(0, host=HOST)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            yield listener_port(listeners[0])
            nursery.cancel_scope.cancel()


async def in_thread(port: int, work: Callable[[smtplib.SMTP], T]) -> T:
    """Run ``work`` with a connected smtplib client in a worker thread."""

    def run() -> T:
        with smtplib.SMTP(HOST, port, local_hostname="client.example", timeout=10) as smtp:
            return work(smtp)

    return await trio.to_thread.run_sync(run)


async def test_plain_sendmail() -> None:
    handler = Recorder()
    message = b"From: a@example.com\r\nSubject: plain\r\n\r\nHello.\r\n.dot\r\n"
    async with serving(handler) as port:
        refused = await in_thread(
            port,
            lambda smtp: smtp.sendmail(
                "a@example.com", ["b@example.org", "nobody@example.org"], message
            ),
        )
    assert refused == {"nobody@example.org": (550, b"5.1.1 No such user here")}
    (got,) = handler.messages
    assert got.envelope.mail_from == "a@example.com"
    assert got.envelope.rcpt_tos == ("b@example.org",)
    assert got.content == message
    assert "from client.example ([127.0.0.1])" in got.received_header
    assert "with ESMTP " in got.received_header


async def test_smtputf8_address_and_message_arrive_intact() -> None:
    handler = Recorder()
    sender = "jöran@exämple.test"
    recipient = "用户@例子.测试"
    message = "From: jöran@exämple.test\r\nSubject: grüße\r\n\r\nこんにちは、世界\r\n".encode()
    async with serving(handler) as port:
        refused = await in_thread(
            port,
            lambda smtp: smtp.sendmail(sender, [recipient], message, mail_options=["SMTPUTF8"]),
        )
    assert refused == {}
    (got,) = handler.messages
    assert got.envelope.mail_from == sender
    assert got.envelope.rcpt_tos == (recipient,)
    assert got.envelope.smtputf8
    assert got.content == message
    assert " with UTF8SMTP " in got.received_header
    assert f"for <{recipient}>;" in got.received_header


async def test_pipelined_commands_are_answered_in_order() -> None:
    handler = Recorder()
    async with serving(handler) as port:
        client = TestClient(await trio.open_tcp_stream(HOST, port))
        assert (await client.read_reply()).code == 220
        ehlo = await client.command("EHLO client.example")
        assert "PIPELINING" in ehlo.lines
        await client.send(
            b"MAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<nobody@example.org>\r\n"
            b"RCPT TO:<b@example.org>\r\n"
            b"DATA\r\n"
        )
        replies = [await client.read_reply() for _ in range(4)]
        assert [(r.code, r.enhanced) for r in replies] == [
            (250, "2.1.0"),
            (550, "5.1.1"),
            (250, "2.1.5"),
            (354, None),
        ]
        await client.send(b"pipelined\r\n.\r\nQUIT\r\n")
        assert (await client.read_reply()).code == 250
        assert (await client.read_reply()).code == 221
        assert await client.at_eof()
        await client.aclose()
    assert handler.messages[0].envelope.rcpt_tos == ("b@example.org",)
    assert handler.messages[0].content == b"pipelined\r\n"


async def test_overlong_command_gets_500_and_the_session_goes_on() -> None:
    def work(smtp: smtplib.SMTP) -> list[tuple[int, bytes]]:
        smtp.ehlo()
        return [
            smtp.docmd("MAIL", "FROM:<" + "a" * 600 + "@example.com>"),
            smtp.noop(),
            smtp.mail("a@example.com"),
        ]

    async with serving(Recorder()) as port:
        replies = await in_thread(port, work)
    assert replies[0] == (500, b"5.5.2 Line too long")
    assert replies[1][0] == 250
    assert replies[2][0] == 250


async def test_malformed_sender_address_gets_501() -> None:
    def work(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        smtp.ehlo()
        return smtp.docmd("MAIL", "FROM:<bad address")

    async with serving(Recorder()) as port:
        code, text = await in_thread(port, work)
    assert code == 501
    assert text.startswith(b"5.")


async def test_size_parameter_over_the_limit_gets_552_at_mail() -> None:
    def work(smtp: smtplib.SMTP) -> tuple[tuple[int, bytes], tuple[int, bytes], str]:
        smtp.ehlo()
        too_big = smtp.mail("a@example.com", ["SIZE=1001"])
        fits = smtp.mail("a@example.com", ["SIZE=1000"])
        return too_big, fits, smtp.esmtp_features["size"]

    async with serving(Recorder(), max_message_size=1000) as port:
        too_big, fits, advertised = await in_thread(port, work)
    assert too_big == (552, b"5.3.4 Message size exceeds fixed maximum message size")
    assert fits[0] == 250
    assert advertised == "1000"


async def test_message_over_the_limit_without_size_gets_552_after_data() -> None:
    handler = Recorder()

    def work(smtp: smtplib.SMTP) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        smtp.ehlo()
        assert smtp.mail("a@example.com")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 250
        big = smtp.data((b"x" * 70 + b"\r\n") * 20)
        # The session is still usable afterwards.
        assert smtp.mail("a@example.com")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 250
        return big, smtp.data(b"small\r\n")

    async with serving(handler, max_message_size=1000) as port:
        big, small = await in_thread(port, work)
    assert big[0] == 552
    assert big[1].startswith(b"5.3.4 ")
    assert small[0] == 250
    assert [m.content for m in handler.messages] == [b"small\r\n"]
