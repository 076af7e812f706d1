"""SMTPServer and serve_smtp over loopback sockets (and one in-memory listener)."""

from __future__ import annotations

import errno
import functools
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from smtpd_trio import (
    Config,
    Handler,
    Message,
    Reply,
    Session,
    SMTPServer,
    listener_port,
    open_smtp_listeners,
    serve_smtp,
)
from smtpd_trio.testing import TestClient

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class Recorder(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sessions: list[Session] = []
        self.closed = 0

    async def on_connect(self, session: Session) -> Reply | None:
        self.sessions.append(session)
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message.content)
        return None

    async def on_close(self, session: Session) -> None:
        self.closed += 1


class Hanging(Recorder):
    """on_data never returns (until cancelled)."""

    def __init__(self) -> None:
        super().__init__()
        self.data_started = trio.Event()
        self.cancelled = False

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.data_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise


async def connect(port: int, host: str = "127.0.0.1") -> TestClient:
    client = TestClient(await trio.open_tcp_stream(host, port))
    greeting = await client.read_reply()
    assert greeting.code == 220
    return client


async def start_data(client: TestClient) -> None:
    """EHLO, MAIL, RCPT and DATA, up to the 354."""
    assert (await client.command("EHLO c.example")).code == 250
    assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
    assert (await client.command("RCPT TO:<b@example.org>")).code == 250
    assert (await client.command("DATA")).code == 354


@asynccontextmanager
async def serving(server: SMTPServer) -> AsyncIterator[tuple[int, trio.Nursery]]:
    """Serve on a loopback port; yield (port, nursery). Whatever is left is cancelled on exit."""
    listeners = await open_smtp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, listeners)
        yield listener_port(listeners[0]), nursery
        nursery.cancel_scope.cancel()


async def test_serve_smtp_on_port_zero_returns_its_listeners() -> None:
    handler = Recorder()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners: Listeners = await nursery.start(
                functools.partial(serve_smtp, handler, port=0)
            )
            assert len(listeners) == 1
            port = listener_port(listeners[0])
            assert port != 0
            client = await connect(port)
            assert (await client.command("EHLO c.example")).code == 250
            reply = await client.sendmail("a@example.com", ["b@example.org"], b"hi\r\n")
            assert (reply.code, reply.enhanced) == (250, "2.0.0")
            assert (await client.command("QUIT")).code == 221
            assert await client.at_eof()
            await client.aclose()
            # Cancelling serve_smtp stops it.
            nursery.cancel_scope.cancel()
    assert handler.messages == [b"hi\r\n"]
    assert handler.sessions[0].client.host == "127.0.0.1"
    with pytest.raises(OSError):  # noqa: PT011 (the errno differs between systems)
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_serve_smtp_on_ipv4_and_ipv6_loopback() -> None:
    if not _ipv6_loopback_works():
        pytest.skip("IPv6 loopback (::1) is not available here")
    handler = Recorder()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners: Listeners = await nursery.start(
                functools.partial(serve_smtp, handler, host=["127.0.0.1", "::1"], port=0)
            )
            families = sorted(getattr(lis, "socket").family for lis in listeners)  # noqa: B009
            assert families == sorted([socket.AF_INET, socket.AF_INET6])
            ports = {listener_port(lis) for lis in listeners}
            assert len(ports) == 1  # one port picked for both hosts
            (port,) = ports
            for host in ("127.0.0.1", "::1"):
                client = await connect(port, host)
                assert (await client.command("QUIT")).code == 221
                await client.aclose()
            nursery.cancel_scope.cancel()
    assert [s.client.host for s in handler.sessions] == ["127.0.0.1", "::1"]


async def test_max_connections_answers_421_and_the_others_work() -> None:
    handler = Recorder()
    server = SMTPServer(handler, config=Config(hostname="mx.test", max_connections=2))
    with trio.fail_after(10):
        async with serving(server) as (port, _):
            first = await connect(port)
            second = await connect(port)
            assert server.active_connections == 2
            third = TestClient(await trio.open_tcp_stream("127.0.0.1", port))
            reply = await third.read_reply()
            assert (reply.code, reply.enhanced) == (421, "4.3.2")
            assert await third.at_eof()
            await third.aclose()
            for client in (first, second):
                assert (await client.command("HELO c.example")).code == 250
                reply = await client.sendmail("a@example.com", ["b@example.org"], b"x\r\n")
                assert reply.code == 250
            assert (await first.command("QUIT")).code == 221
            assert await first.at_eof()
            await first.aclose()
            # A slot is free again once the first connection ended.
            while server.active_connections > 1:  # noqa: ASYNC110 (a counter, not an event)
                await trio.sleep(0.01)
            fourth = await connect(port)
            assert (await fourth.command("NOOP")).code == 250
            await fourth.aclose()
            await second.aclose()
    assert len(handler.messages) == 2
    assert len(handler.sessions) == 3  # the refused one never reached the handler


@attrs.define(eq=False)
class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """accept() fails with EMFILE ``failures`` times, then hands out ``streams``."""

    streams: list[trio.abc.Stream]
    failures: int = 3
    attempts: int = 0
    closed: bool = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        if self.streams:
            return self.streams.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def test_accept_emfile_pauses_and_recovers(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    listener = FlakyListener([server_stream])
    handler = Recorder()
    server = SMTPServer(handler, config=Config(hostname="mx.test"))
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(server.serve, [listener])
        client = TestClient(client_stream)
        assert (await client.read_reply()).code == 220
        assert trio.current_time() - start >= 0.3  # it paused between attempts
        assert (await client.command("EHLO c.example")).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"ok\r\n")
        assert reply.code == 250
        assert (await client.command("QUIT")).code == 221
        server.shutdown()
    assert listener.attempts >= 4
    assert listener.closed
    assert handler.messages == [b"ok\r\n"]
    emfile = [r for r in caplog.records if "EMFILE" in r.getMessage()]
    assert len(emfile) == 3
    assert all(r.levelno == logging.ERROR for r in emfile)


async def test_graceful_shutdown_lets_a_transaction_finish() -> None:
    handler = Recorder()
    server = SMTPServer(handler, config=Config(hostname="mx.test", shutdown_timeout=10))
    with trio.fail_after(10):
        listeners = await open_smtp_listeners(0, host="127.0.0.1")
        port = listener_port(listeners[0])
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            idle = await connect(port)
            assert (await idle.command("EHLO idle.example")).code == 250
            busy = await connect(port)
            await start_data(busy)
            await busy.send(b"Subject: half\r\n\r\nfirst part\r\n")
            await trio.testing.wait_all_tasks_blocked()

            server.shutdown()
            assert server.shutting_down
            # The idle client is told at once.
            reply = await idle.read_reply()
            assert (reply.code, reply.enhanced) == (421, "4.3.2")
            assert await idle.at_eof()
            # New connections are refused at the socket: the listener is closed.
            with pytest.raises(OSError):  # noqa: PT011
                await trio.open_tcp_stream("127.0.0.1", port)
            # The one in a transaction finishes it, then is told 421.
            await busy.send(b"second part\r\n.\r\n")
            reply = await busy.read_reply()
            assert (reply.code, reply.enhanced) == (250, "2.0.0")
            reply = await busy.read_reply()
            assert (reply.code, reply.enhanced) == (421, "4.3.2")
            assert await busy.at_eof()
            # serve() returns by itself once every session ended.
        await idle.aclose()
        await busy.aclose()
    assert handler.messages == [b"Subject: half\r\n\r\nfirst part\r\nsecond part\r\n"]
    assert handler.closed == 2
    assert server.active_connections == 0


async def test_shutdown_while_a_reply_is_being_sent_ends_the_session_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The 250 to EHLO is still being written (the client is not reading yet) when the
    # shutdown comes: the session must not then start an idle wait that nothing interrupts.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    listener = FlakyListener([server_stream], failures=0)
    handler = Recorder()
    server = SMTPServer(handler, config=Config(hostname="mx.test", shutdown_timeout=600))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        client = TestClient(client_stream)
        assert (await client.read_reply()).code == 220
        await client.send(b"EHLO c.example\r\n")
        await trio.testing.wait_all_tasks_blocked()  # the server is blocked sending the 250
        start = trio.current_time()
        server.shutdown()
        assert (await client.read_reply()).code == 250
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
        assert await client.at_eof()
    assert trio.current_time() - start < 1  # not the 600 s shutdown deadline
    assert handler.closed == 1


async def test_shutdown_deadline_cancels_a_hanging_handler() -> None:
    handler = Hanging()
    server = SMTPServer(handler, config=Config(hostname="mx.test", shutdown_timeout=0.3))
    with trio.fail_after(10):
        listeners = await open_smtp_listeners(0, host="127.0.0.1")
        port = listener_port(listeners[0])
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            client = await connect(port)
            await start_data(client)
            await client.send(b"never acknowledged\r\n.\r\n")
            await handler.data_started.wait()
            start = trio.current_time()
            server.shutdown()
        # serve() returned: after the deadline, not before.
        assert trio.current_time() - start >= 0.29
        # No 250: the message was never acknowledged. Only the goodbye.
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
        assert await client.at_eof()
        assert b"\r\n250 2.0.0" not in client.transcript
        await client.aclose()
    assert handler.cancelled
    assert handler.closed == 1
    with pytest.raises(OSError):  # noqa: PT011
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_shutdown_before_serve_accepts_nothing() -> None:
    server = SMTPServer(Handler())
    server.shutdown()
    listeners = await open_smtp_listeners(0, host="127.0.0.1")
    port = listener_port(listeners[0])
    with trio.fail_after(5):
        await server.serve(listeners)
    with pytest.raises(OSError):  # noqa: PT011
        await trio.open_tcp_stream("127.0.0.1", port)
