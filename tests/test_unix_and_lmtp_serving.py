"""UNIX-socket listeners (permissions whatever the umask, stale sockets replaced, other files
left alone, the file removed on close) and serve_lmtp over TCP and a UNIX socket, with Python's
own LMTP client (smtplib.LMTP)."""

from __future__ import annotations

import functools
import os
import smtplib
import socket
import stat
import tempfile
from collections.abc import Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest
import trio

from smtpd_trio import (
    LMTP_PORT,
    Config,
    Envelope,
    Handler,
    Message,
    Reply,
    Session,
    TransactionOutcome,
    listener_port,
    open_unix_listener,
    serve_lmtp,
    serve_smtp,
)

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for sockets (pytest's tmp_path can exceed sun_path's 108 octets)."""
    with tempfile.TemporaryDirectory(prefix="st-") as name:
        yield Path(name)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def is_socket(path: Path) -> bool:
    return stat.S_ISSOCK(os.lstat(path).st_mode)


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a server killed with SIGKILL leaves behind."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


# ---- open_unix_listener -----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o002])
async def test_the_socket_has_its_mode_whatever_the_umask(sockdir: Path, umask: int) -> None:
    path = sockdir / "s"
    old = os.umask(umask)
    try:
        listener = await open_unix_listener(path)
    finally:
        os.umask(old)
    try:
        assert is_socket(path)
        assert mode_of(path) == 0o660
    finally:
        await listener.aclose()
    assert not path.exists()


async def test_another_mode(sockdir: Path) -> None:
    listener = await open_unix_listener(sockdir / "s", mode=0o600)
    async with listener:
        assert mode_of(sockdir / "s") == 0o600
    with pytest.raises(ValueError, match="permission bits"):
        await open_unix_listener(sockdir / "t", mode=0o4755)


async def test_a_stale_socket_is_replaced(sockdir: Path) -> None:
    path = sockdir / "s"
    stale_socket(path)
    async with await open_unix_listener(path) as listener:
        assert listener.socket.getsockname() == str(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))  # a stale socket refuses connections; this one listens


async def test_a_file_that_is_not_a_socket_is_left_alone(sockdir: Path) -> None:
    path = sockdir / "s"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="not a socket"):
        await open_unix_listener(path)
    assert path.read_text() == "precious"
    (sockdir / "d").mkdir()
    with pytest.raises(FileExistsError):
        await open_unix_listener(sockdir / "d")
    assert (sockdir / "d").is_dir()


async def test_a_socket_in_use_is_left_alone(sockdir: Path) -> None:
    path = sockdir / "s"
    async with await open_unix_listener(path):
        with pytest.raises(OSError, match="a server is listening"):
            await open_unix_listener(path)
        assert is_socket(path)


async def test_closing_removes_only_its_own_socket_file(sockdir: Path) -> None:
    path = sockdir / "s"
    listener = await open_unix_listener(path)
    os.unlink(path)
    stale_socket(path)  # another one took the path meanwhile
    await listener.aclose()
    assert is_socket(path)


async def test_a_forceful_close_removes_the_socket_file_too(sockdir: Path) -> None:
    listener = await open_unix_listener(sockdir / "s")
    await trio.aclose_forcefully(listener)  # what SMTPServer.serve does at the end
    assert not (sockdir / "s").exists()


async def test_a_missing_directory_is_an_error(sockdir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await open_unix_listener(sockdir / "no" / "s")


# ---- serve_lmtp with smtplib.LMTP --------------------------------------------------------------


class Boxes(Handler):
    """Accepts the message for every recipient but full@ (452)."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []
        self.peers: list[str] = []
        self.ended: list[tuple[TransactionOutcome, tuple[int, ...]]] = []

    async def on_data(self, session: Session, message: Message) -> list[Reply | None]:
        self.peers.append(session.client.host)
        answers: list[Reply | None] = []
        for address in message.envelope.rcpt_tos:
            if address.startswith("full@"):
                answers.append(Reply(452, "4.2.2", "Mailbox full"))
            else:
                self.delivered.append((address, message.content))
                answers.append(None)
        return answers

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ended.append((outcome, tuple(r.code for r in envelope.rcpt_replies)))


def send_with_smtplib(host: str, port: int = 0) -> list[tuple[int, bytes]]:
    """Deliver one message to three recipients with smtplib.LMTP (a path for ``host``: a UNIX
    socket); the reply for each recipient.

    smtplib's sendmail() reads only one reply after DATA, also for LMTP (CPython gh-76984), so
    the client is driven command by command and the other replies read with getreply()."""
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["Subject"] = "over LMTP"
    message.set_content("Hello.\n")
    rcpts = ["ann@example.org", "full@example.org", "bob@example.org"]
    with smtplib.LMTP(host, port, local_hostname="mta.test") as lmtp:
        assert lmtp.ehlo()[0] == 250  # smtplib's LMTP sends LHLO for it
        assert lmtp.does_esmtp
        assert lmtp.mail("a@example.com")[0] == 250
        for rcpt in rcpts:
            assert lmtp.rcpt(rcpt)[0] == 250
        answers = [lmtp.data(message.as_string())]  # a str: smtplib makes the lines CRLF
        answers += [lmtp.getreply() for _ in rcpts[1:]]
        assert lmtp.noop()[0] == 250  # exactly one reply per recipient: still in step
    return answers


async def test_smtplib_lmtp_over_tcp_and_a_unix_socket(
    nursery: trio.Nursery, sockdir: Path
) -> None:
    handler = Boxes()
    path = sockdir / "lmtp.sock"
    listeners: Listeners = await nursery.start(
        functools.partial(serve_lmtp, handler, port=0, unix=path, config=Config(hostname="d.test"))
    )
    port = listener_port(listeners[0])
    for host, where in ((str(path), 0), ("127.0.0.1", port)):
        answers = await trio.to_thread.run_sync(send_with_smtplib, host, where)
        assert answers == [
            (250, b"2.0.0 <ann@example.org> Message accepted"),
            (452, b"4.2.2 Mailbox full"),
            (250, b"2.0.0 <bob@example.org> Message accepted"),
        ]
    assert [address for address, _ in handler.delivered] == [
        "ann@example.org",
        "bob@example.org",
    ] * 2
    assert all(b"Subject: over LMTP" in content for _, content in handler.delivered)
    assert handler.peers == ["unix:", "127.0.0.1"]
    assert handler.ended == [(TransactionOutcome.ACCEPTED, (250, 452, 250))] * 2
    assert mode_of(path) == 0o660
    nursery.cancel_scope.cancel()


async def test_unix_only(nursery: trio.Nursery, sockdir: Path) -> None:
    path = sockdir / "only.sock"
    listeners: Listeners = await nursery.start(
        functools.partial(serve_smtp, Handler(), port=None, unix=[path])
    )
    assert len(listeners) == 1
    with pytest.raises(TypeError):
        listener_port(listeners[0])
    client = await trio.open_unix_socket(str(path))
    async with client:
        assert (await client.receive_some(1000)).startswith(b"220 ")
        await client.send_all(b"QUIT\r\n")
        assert (await client.receive_some(1000)) == b"221 2.0.0 Bye\r\n"
    nursery.cancel_scope.cancel()


async def test_lmtp_is_never_served_on_port_25() -> None:
    with pytest.raises(ValueError, match="RFC 2033"):
        await serve_lmtp(Handler(), port=25)
    with pytest.raises(ValueError, match="RFC 2033"):
        await serve_smtp(Handler(), port=25, config=Config(lmtp=True))
    assert LMTP_PORT == 8024


async def test_nothing_to_listen_on() -> None:
    with pytest.raises(ValueError, match="nothing to listen on"):
        await serve_smtp(Handler(), port=None)
