"""Safe on an open port: per-client limits, slow clients, stress, session and handler deadlines,
early talkers, the memory budget and quiet logs, each with the reply the client sees.

Everything runs over memory streams against one SMTPServer, with Trio's MockClock where time
matters (the autojump_clock fixture), so minutes of attack take milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from smtpd_trio import (
    Config,
    Endpoint,
    Envelope,
    Handler,
    Message,
    MessageAborted,
    MessageStream,
    Reply,
    Session,
    SMTPServer,
    TransactionOutcome,
)
from smtpd_trio.testing import ClientReply, TestClient

A = Endpoint("198.51.100.7", 40000)
B = Endpoint("203.0.113.9", 40000)
MESSAGE = b"Subject: t\r\n\r\nhello\r\n"


def stressed(server: SMTPServer) -> bool:
    return server.under_stress


def code(reply: ClientReply) -> tuple[int, str | None]:
    return reply.code, reply.enhanced


@attrs.define
class Served:
    server: SMTPServer
    connect: Callable[..., Awaitable[TestClient]]


@asynccontextmanager
async def serving(handler: Handler, **fields: object) -> AsyncIterator[Served]:
    """One server; ``await served.connect(peer)`` opens a memory-stream connection to it and
    reads the greeting (or not: ``greeting=False``)."""
    config = Config(hostname="mx.test", **fields)  # type: ignore[arg-type]
    server = SMTPServer(handler, config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [])  # no listeners: just its housekeeping

        async def connect(peer: Endpoint = A, *, greeting: bool = True) -> TestClient:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(partial(server.handle_connection, server_end, peer=peer))
            client = TestClient(client_end)
            if greeting:
                reply = await client.read_reply()
                assert reply.code == 220, reply
            return client

        yield Served(server, connect)
        nursery.cancel_scope.cancel()


class Recorder(Handler):
    def __init__(self) -> None:
        self.connects = 0
        self.messages: list[Message] = []
        self.ends: list[TransactionOutcome] = []

    async def on_connect(self, session: Session) -> Reply | None:
        self.connects += 1
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ends.append(outcome)


# ---- per-client limits --------------------------------------------------------------------


async def test_connections_per_client() -> None:
    async with serving(Recorder(), max_connections_per_client=2) as served:
        first = await served.connect(A)
        second = await served.connect(A)
        third = await served.connect(A, greeting=False)
        reply = await third.read_reply()
        assert code(reply) == (421, "4.7.0")
        assert "Too many connections from your address" in reply.text
        assert await third.at_eof()
        # Other clients are not affected.
        other = await served.connect(B)
        assert (await other.ehlo()).code == 250
        # A slot comes back when a connection ends.
        assert (await first.command("QUIT")).code == 221
        assert await first.at_eof()
        await trio.testing.wait_all_tasks_blocked()
        assert served.server._limiter.open_connections(A.host) == 1
        fourth = await served.connect(A)
        assert (await fourth.ehlo()).code == 250
        assert (await second.ehlo()).code == 250


async def test_ipv6_clients_are_counted_by_their_slash_64() -> None:
    one = Endpoint("2001:db8:1:2::7", 40000)
    two = Endpoint("2001:db8:1:2:ffff::8", 40000)
    elsewhere = Endpoint("2001:db8:1:3::7", 40000)
    async with serving(Recorder(), max_connections_per_client=1) as served:
        await served.connect(one)
        refused = await served.connect(two, greeting=False)
        assert code(await refused.read_reply()) == (421, "4.7.0")
        await served.connect(elsewhere)


async def test_clients_behind_a_trusted_proxy_are_counted_by_their_real_address() -> None:
    balancer = Endpoint("10.0.0.2", 50000)

    def header(source: str, port: int) -> bytes:
        return f"PROXY TCP4 {source} 192.0.2.25 {port} 25\r\n".encode()

    async with serving(
        Recorder(),
        max_connections_per_client=1,
        proxy_protocol=True,
        trusted_proxies=["10.0.0.0/8"],
    ) as served:
        first = await served.connect(balancer, greeting=False)
        await first.send(header("198.51.100.7", 1000))
        assert (await first.read_reply()).code == 220
        # Another client through the same balancer is another client.
        other = await served.connect(balancer, greeting=False)
        await other.send(header("203.0.113.9", 1001))
        assert (await other.read_reply()).code == 220
        # The same real client again is one too many.
        again = await served.connect(balancer, greeting=False)
        await again.send(header("198.51.100.7", 1002))
        assert code(await again.read_reply()) == (421, "4.7.0")


async def test_connection_rate_per_client(autojump_clock: trio.testing.MockClock) -> None:
    async with serving(Recorder(), max_connection_rate=3) as served:
        for _ in range(3):
            client = await served.connect(A)
            await client.command("QUIT")
        refused = await served.connect(A, greeting=False)
        reply = await refused.read_reply()
        assert code(reply) == (421, "4.7.0")
        assert "Too many new connections" in reply.text
        await served.connect(B)  # another client is fine
        await trio.sleep(21)  # three per minute: one more after 20 s
        await served.connect(A)


async def test_messages_per_session_are_capped() -> None:
    handler = Recorder()
    async with serving(handler, max_messages_per_session=2) as served:
        client = await served.connect()
        await client.ehlo()
        for _ in range(2):
            assert (await client.sendmail("a@x.test", ["b@y.test"], MESSAGE)).code == 250
        reply = await client.command("MAIL FROM:<a@x.test>")
        assert code(reply) == (421, "4.7.0")
        assert await client.at_eof()
    assert len(handler.messages) == 2


async def test_commands_per_session_are_capped() -> None:
    async with serving(Recorder(), max_commands_per_session=5) as served:
        client = await served.connect()
        for _ in range(5):
            assert (await client.command("NOOP")).code == 250
        assert code(await client.command("NOOP")) == (421, "4.7.0")
        assert await client.at_eof()


# ---- slow clients -------------------------------------------------------------------------

TIMEOUT = 30.0


async def start_data(client: TestClient) -> None:
    await client.ehlo()
    await client.command("MAIL FROM:<a@x.test>")
    await client.command("RCPT TO:<b@y.test>")
    assert (await client.command("DATA")).code == 354


async def test_a_client_trickling_message_text_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One byte every 8 s used to hold a slot forever (every chunk restarted the timer). With
    # a minimum data rate, each byte earns 1/500 s: the session ends after about the timeout.
    handler = Recorder()
    async with serving(handler, command_timeout=TIMEOUT) as served:
        client = await served.connect()
        await start_data(client)
        start = trio.current_time()

        async def trickle() -> None:
            with trio.move_on_after(TIMEOUT * 10):
                while True:
                    await client.send(b"x")
                    await trio.sleep(8)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            reply = await client.read_reply()
            nursery.cancel_scope.cancel()
        assert code(reply) == (421, "4.4.2")
        assert trio.current_time() - start <= TIMEOUT + 2
    assert handler.ends == [TransactionOutcome.ABORTED]


async def test_a_slow_but_steady_upload_is_not_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 1,000 octets a second for two minutes, four times the timeout: above the 500 B/s floor.
    handler = Recorder()
    async with serving(handler, command_timeout=TIMEOUT) as served:
        client = await served.connect()
        await start_data(client)
        line = b"y" * 98 + b"\r\n"
        for _ in range(120):
            await client.send(line * 10)
            await trio.sleep(1)
        await client.send(b".\r\n")
        assert code(await client.read_reply()) == (250, "2.0.0")
    assert len(handler.messages[0].content) == 120_000


async def test_the_session_has_a_time_limit(autojump_clock: trio.testing.MockClock) -> None:
    async with serving(Recorder(), command_timeout=TIMEOUT, max_session_duration=100) as served:
        client = await served.connect()
        start = trio.current_time()
        while True:
            with contextlib.suppress(trio.BrokenResourceError):
                await client.send(b"NOOP\r\n")
            reply = await client.read_reply()
            if reply.code != 250:
                break
            await trio.sleep(TIMEOUT / 2)
        assert code(reply) == (421, "4.4.2")
        assert "time limit" in reply.text
        assert 100 <= trio.current_time() - start <= 100 + TIMEOUT
        assert await client.at_eof()


async def test_under_stress_waits_for_clients_are_short(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    async with serving(
        Recorder(), max_connections=10, max_connections_per_client=None, stress_timeout=5
    ) as served:
        # Seven idle clients: not yet under stress, they may wait the full 300 s.
        idle = [await served.connect() for _ in range(7)]
        assert not stressed(served.server)
        await trio.sleep(60)
        assert served.server.active_connections == 7
        # The eighth is 80% of max_connections: every wait now ends after 5 s.
        idle.append(await served.connect())
        assert stressed(served.server)
        start = trio.current_time()
        for client in idle:
            assert code(await client.read_reply()) == (421, "4.4.2")
        assert trio.current_time() - start <= 5 + 1
        await trio.testing.wait_all_tasks_blocked()
        assert served.server.active_connections == 0
        assert not stressed(served.server)
        # Back to normal: a new idle client is not hurried.
        calm = await served.connect()
        with trio.move_on_after(60):
            await calm.read_reply()
            pytest.fail("a client was timed out while the server was not under stress")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("under stress: 8 connection(s) of 10") for m in messages)
    assert any(m.startswith("no longer under stress") for m in messages)


# ---- early talkers ------------------------------------------------------------------------


async def test_a_client_that_speaks_before_the_greeting_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Recorder()
    async with serving(handler, greet_pause=3) as served:
        bot = await served.connect(greeting=False)
        await bot.send(b"EHLO spam.test\r\n")
        reply = await bot.read_reply()
        assert code(reply) == (554, "5.5.1")
        assert await bot.at_eof()
        assert handler.connects == 0  # nothing reached the handler
        patient = await served.connect(greeting=False)
        start = trio.current_time()
        assert (await patient.read_reply()).code == 220
        assert trio.current_time() - start >= 3
        assert (await patient.ehlo()).code == 250
    assert handler.connects == 1


# ---- handler deadlines --------------------------------------------------------------------


class Slow(Handler):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cancelled = 0

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        try:
            await trio.sleep(self.seconds)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return None


async def test_handler_timeout_answers_451_and_the_session_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Slow(100)
    async with serving(handler, handler_timeout=5) as served:
        client = await served.connect()
        await client.ehlo()
        reply = await client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
        assert code(reply) == (451, "4.4.5")
        assert (await client.command("NOOP")).code == 250
    assert handler.cancelled == 1
    assert [r for r in caplog.records if "took longer than handler_timeout" in r.getMessage()]


async def test_handler_timeout_is_off_by_default(autojump_clock: trio.testing.MockClock) -> None:
    handler = Slow(3600)
    async with serving(handler) as served:
        client = await served.connect()
        await client.ehlo()
        reply = await client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
        assert code(reply) == (250, "2.0.0")
    assert handler.cancelled == 0


async def test_handler_timeout_in_on_connect_is_a_421_greeting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowConnect(Handler):
        async def on_connect(self, session: Session) -> Reply | None:
            await trio.sleep(100)
            return None

    async with serving(SlowConnect(), handler_timeout=5) as served:
        client = await served.connect(greeting=False)
        assert code(await client.read_reply()) == (421, "4.4.5")
        assert await client.at_eof()


async def test_streaming_handler_timeout_counts_the_handlers_time_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowStore(Handler):
        def __init__(self, pause: float) -> None:
            self.pause = pause

        async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
            async for _chunk in message.chunks:
                await trio.sleep(self.pause)  # the handler's own time, per chunk
            return None

    for pause, expected in ((1, (250, "2.0.0")), (4, (451, "4.4.5"))):
        async with serving(SlowStore(pause), handler_timeout=10) as served:
            client = await served.connect()
            await start_data(client)
            # Six chunks, each after 20 s of the client's own time: 120 s of reading, which
            # is not the handler's. The handler spends 6 x pause seconds.
            for _ in range(6):
                await trio.sleep(20)
                await client.send(b"z" * 98 + b"\r\n")
            await client.send(b".\r\n")
            assert code(await client.read_reply()) == expected


# ---- the memory budget ----------------------------------------------------------------------


class Holding(Handler):
    """Holds each message in on_data until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.got: list[bytes] = []
        self.ends: list[TransactionOutcome] = []

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.got.append(message.content)
        await self.release.wait()
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ends.append(outcome)


async def test_memory_budget_refuses_what_does_not_fit_with_452() -> None:
    handler = Holding()
    big = (b"w" * 98 + b"\r\n") * 8  # 800 octets
    async with serving(handler, max_buffered_bytes=1000) as served:
        first = await served.connect(A)
        second = await served.connect(B)
        await first.ehlo()
        await second.ehlo()
        await start_data_for(first)
        await first.send(big + b".\r\n")
        await trio.testing.wait_all_tasks_blocked()
        assert handler.got
        assert served.server.buffered_bytes == 800  # held while on_data runs
        # The second message does not fit next to the first: read to its end, refused 452.
        reply = await second.sendmail("a@x.test", ["b@y.test"], big)
        assert code(reply) == (452, "4.3.1")
        handler.release.set()
        assert code(await first.read_reply()) == (250, "2.0.0")
        assert served.server.buffered_bytes == 0
        # Now there is room again; the conversation stayed in step.
        assert (await second.sendmail("a@x.test", ["b@y.test"], big)).code == 250
    assert handler.ends == [
        TransactionOutcome.REFUSED,
        TransactionOutcome.ACCEPTED,
        TransactionOutcome.ACCEPTED,
    ]


async def start_data_for(client: TestClient) -> None:
    await client.command("MAIL FROM:<a@x.test>")
    await client.command("RCPT TO:<b@y.test>")
    assert (await client.command("DATA")).code == 354


async def test_memory_budget_is_given_back_when_a_connection_drops_mid_message() -> None:
    async with serving(Recorder(), max_buffered_bytes=10_000) as served:
        client = await served.connect()
        await client.ehlo()
        await start_data_for(client)
        await client.send((b"q" * 98 + b"\r\n") * 50)
        await trio.testing.wait_all_tasks_blocked()
        assert served.server.buffered_bytes == 5000
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert served.server.buffered_bytes == 0


# ---- quiet, honest logs -----------------------------------------------------------------------


async def test_refusals_are_info_lines_summarised_per_client(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpd_trio")
    async with serving(Recorder(), max_connections_per_client=1) as served:
        await served.connect(A)
        for _ in range(50):
            refused = await served.connect(A, greeting=False)
            assert (await refused.read_reply()).code == 421
        await trio.sleep(61)  # the summary comes at the end of the interval
    about = [r for r in caplog.records if "too many connections from this client" in r.getMessage()]
    assert len(about) == 2, [r.getMessage() for r in about]
    assert about[0].getMessage().endswith(": too many connections from this client")
    assert about[1].getMessage().startswith("49 more too many connections from this client")
    assert all(r.levelno == logging.INFO for r in about)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_message_aborted_from_a_streaming_handler_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Streaming(Handler):
        async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
            try:
                async for _chunk in message.chunks:
                    pass
            except MessageAborted:
                raise  # exactly as the docs recommend
            return None

    caplog.set_level(logging.DEBUG, logger="smtpd_trio")
    async with serving(Streaming(), max_message_size=100) as served:
        for _ in range(3):
            client = await served.connect()
            await client.ehlo()
            reply = await client.sendmail("a@x.test", ["b@y.test"], b"x" * 500 + b"\r\n")
            assert code(reply) == (552, "5.3.4")
            await client.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_junk_commands_are_capped() -> None:
    async with serving(Recorder(), max_junk_commands=3) as served:
        client = await served.connect()
        await client.ehlo()
        for command in ("NOOP", "RSET", "VRFY x"):
            assert (await client.command(command)).code in (250, 252)
        reply = await client.command("HELP")
        assert code(reply) == (421, "4.7.0")
        assert "NOOP, RSET, VRFY or HELP" in reply.text
        assert await client.at_eof()


async def test_under_stress_one_junk_command_or_error_is_enough(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Postfix's stress-dependent limits: smtpd_junk_command_limit and smtpd_hard_error_limit
    # drop to 1 when the server is full.
    async with serving(Recorder(), max_connections=10, max_connections_per_client=None) as served:
        # Nine of ten in use: under stress (from 8) until fewer than 7 remain.
        clients = [await served.connect() for _ in range(9)]
        assert stressed(served.server)
        assert (await clients[0].command("NOOP")).code == 250
        assert code(await clients[0].command("NOOP")) == (421, "4.7.0")
        assert code(await clients[1].command("FROB")) == (421, "4.7.0")
        # Mail still flows.
        await clients[2].ehlo()
        assert (await clients[2].sendmail("a@x.test", ["b@y.test"], MESSAGE)).code == 250
