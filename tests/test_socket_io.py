"""The driver's direct socket I/O (plain TCP is read and written by file descriptor), over real
loopback sockets: nothing lost when the socket takes a reply only in part, a client that stops
reading is dropped, and a reset connection ends cleanly."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from smtpd_trio import Config, Handler, SMTPServer, listener_port, open_smtp_listeners
from smtpd_trio import session as session_module
from smtpd_trio.handler import Session, TransactionOutcome
from smtpd_trio.testing import TestClient

pytestmark = pytest.mark.skipif(
    not session_module._DIRECT_IO, reason="direct socket I/O is not used on this platform"
)


class Ends(Handler):
    def __init__(self) -> None:
        self.outcomes: list[TransactionOutcome] = []
        self.closed = trio.Event()

    async def on_transaction_end(
        self, session: Session, envelope: object, outcome: TransactionOutcome
    ) -> None:
        self.outcomes.append(outcome)

    async def on_close(self, session: Session) -> None:
        self.closed.set()


@asynccontextmanager
async def serving(handler: Handler, config: Config) -> AsyncIterator[int]:
    listeners = await open_smtp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(SMTPServer(handler, config=config).serve, listeners)
        yield listener_port(listeners[0])
        nursery.cancel_scope.cancel()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_replies_the_socket_takes_only_in_part_arrive_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 100,000 pipelined NOOPs in one go (the command limits off): their replies (1.4 MB)
    # are more than the socket takes at once while the client is still sending, so writes are
    # partial and the rest waits for room. Every reply must arrive, in order, and no other.
    partial: list[tuple[int, int]] = []
    send_now = session_module._send_now

    def recording(fd: int, data: bytes) -> bytes:
        rest = send_now(fd, data)
        if rest:
            partial.append((len(data) - len(rest), len(data)))
        return rest

    monkeypatch.setattr(session_module, "_send_now", recording)
    count = 100_000
    with trio.fail_after(60):
        config = Config(hostname="mx.test", max_junk_commands=None, max_commands_per_session=None)
        async with serving(Ends(), config) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = TestClient(stream)
            assert (await client.read_reply()).code == 220
            received = bytearray()
            expected = b"250 2.0.0 OK\r\n" * count + b"221 2.0.0 Bye\r\n"

            async def read_all() -> None:
                while len(received) < len(expected):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    received.extend(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                await stream.send_all(b"NOOP\r\n" * count + b"QUIT\r\n")
            await stream.aclose()
    assert bytes(received) == expected
    assert partial, "no write was partial: the test did not exercise the rest-of-the-reply path"


async def test_a_client_that_stops_reading_on_a_real_socket_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Ends()
    config = Config(hostname="mx.test", command_timeout=1.0, max_junk_commands=None)
    with trio.fail_after(30):
        async with serving(handler, config) as port:
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", port))
            stream = trio.SocketStream(sock)

            async def flood() -> None:
                try:
                    while True:
                        await stream.send_all(b"NOOP\r\n" * 10_000)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await handler.closed.wait()
                nursery.cancel_scope.cancel()
            await trio.aclose_forcefully(stream)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("] client stopped reading; closing") for line in lines), lines
    assert any("] closed (stalled)" in line for line in lines), lines
    assert not errors(caplog)


async def test_a_reset_connection_ends_the_session_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The client opens a transaction and then aborts the connection (RST). The session ends
    # as a lost connection: the transaction ends once as aborted, an INFO close line, nothing
    # at WARNING or above, and the server goes on serving.
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Ends()
    with trio.fail_after(30):
        async with serving(handler, Config(hostname="mx.test")) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = TestClient(stream)
            assert (await client.read_reply()).code == 220
            assert (await client.command("EHLO c.example")).code == 250
            assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.socket.close()
            await handler.closed.wait()

            again = TestClient(await trio.open_tcp_stream("127.0.0.1", port))
            assert (await again.read_reply()).code == 220
            assert (await again.command("QUIT")).code == 221
            await again.aclose()
    assert handler.outcomes == [TransactionOutcome.ABORTED]
    lines = [r.getMessage() for r in caplog.records]
    assert any("] closed (" in line for line in lines), lines
    assert not errors(caplog)
