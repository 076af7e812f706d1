"""The relay handler against Postfix's smtp-sink as the upstream, on 127.0.0.1.

smtp-sink is a test server from Postfix: it accepts everything, or refuses chosen commands
(``-f`` hard, ``-r`` soft, ``-Q`` with 421, ``-q`` by hanging up), and can dump each message it
receives to a file (``-d``), with LF line ends. It cannot refuse
some recipients and accept others; the smtpd-trio upstream in ``tests/test_relay.py`` covers
that. The client talks to the relay over an in-memory stream. Skipped, saying why, where
smtp-sink is not installed (Debian package ``postfix``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from smtpd_trio import Config
from smtpd_trio.handlers.relay import Relay
from smtpd_trio.testing import TestClient, open_test_session

from .conftest import require_program
from .proxy_fixtures import free_port, running_proxy

pytestmark = pytest.mark.integration

UNAVAILABLE = "451 4.4.1 Upstream server unavailable, try again later"


@pytest.fixture
def smtp_sink() -> str:
    return require_program("smtp-sink", "postfix")


@contextmanager
def dump_directory() -> Iterator[Path]:
    """A directory smtp-sink can write its dumps into. Run as root it must be given a user
    (``-u nobody``) and then writes as that user, so the directory belongs to it."""
    path = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
    try:
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Sink:
    def __init__(self, port: int, dumps: Path) -> None:
        self.port = port
        self.dumps = dumps

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dumps.iterdir())]


@asynccontextmanager
async def running_sink(smtp_sink: str, tmp_path: Path, *options: str) -> AsyncIterator[Sink]:
    port = free_port()
    with dump_directory() as dumps:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        argv = [smtp_sink, *user, "-d", f"{dumps}/%H%M%S.", *options, f"127.0.0.1:{port}", "10"]
        async with running_proxy(argv, port=port, log_path=tmp_path / "smtp-sink.log"):
            yield Sink(port, dumps)


def as_dumped(content: bytes) -> bytes:
    """What smtp-sink's dump holds for ``content`` (CRLF lines): the lines un-stuffed again,
    with LF line ends."""
    return content.replace(b"\r\n", b"\n")


def our_part(dump: bytes) -> tuple[list[bytes], bytes]:
    """smtp-sink's X- header lines, and what follows its own Received header: ours and the
    message."""
    head, sep, rest = dump.partition(b"\nReceived: from client.example")
    assert sep, dump[:300]
    return head.split(b"\n"), b"Received: from client.example" + rest


def relay_to(sink: Sink) -> Relay:
    return Relay("127.0.0.1", sink.port, timeout=10.0)


FRONT = Config(hostname="front.test")
MESSAGE = b"Subject: to smtp-sink\r\n\r\n.starts with a dot\r\n..and two\r\nFrom here\r\nend\r\n"


async def ehlo(client: TestClient) -> None:
    assert (await client.command("EHLO client.example")).code == 250


async def test_a_message_reaches_smtp_sink_exactly(smtp_sink: str, tmp_path: Path) -> None:
    async with running_sink(smtp_sink, tmp_path) as sink:
        async with open_test_session(relay_to(sink), config=FRONT) as client:
            await ehlo(client)
            assert (
                await client.command("MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=99")
            ).code == 250
            assert str(await client.command("RCPT TO:<b@example.org>")) == "250 2.1.5 Ok"
            assert (await client.command("RCPT TO:<c@example.org>")).code == 250
            assert (await client.command("DATA")).code == 354
            await client.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            assert str(await client.read_reply()) == "250 2.0.0 Ok"
            assert (await client.command("QUIT")).code == 221
        (dump,) = sink.messages()
    x_lines, ours = our_part(dump)
    assert b"X-Helo-Args: front.test" in x_lines
    # SIZE is not passed on: smtp-sink does not announce it. BODY is: it announces 8BITMIME.
    assert b"X-Mail-Args: <a@example.com> BODY=8BITMIME" in x_lines
    assert [line for line in x_lines if line.startswith(b"X-Rcpt-Args")] == [
        b"X-Rcpt-Args: <b@example.org>",
        b"X-Rcpt-Args: <c@example.org>",
    ]
    assert ours.startswith(b"Received: from client.example ([192.0.2.1])\n\tby front.test ")
    assert ours.endswith(b"\n" + as_dumped(MESSAGE) + b"\n")


async def test_hard_refusals_are_relayed_word_for_word(smtp_sink: str, tmp_path: Path) -> None:
    refusal = "550 5.1.1 <b@example.org>: Recipient address rejected: User unknown"
    async with running_sink(smtp_sink, tmp_path, "-f", "rcpt", "-B", refusal) as sink:
        async with open_test_session(relay_to(sink), config=FRONT) as client:
            await ehlo(client)
            assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
            for rcpt in ("b@example.org", "c@example.org"):
                assert str(await client.command(f"RCPT TO:<{rcpt}>")) == refusal
            # No recipient was accepted upstream, so none was here: nothing to send.
            assert str(await client.command("DATA")) == "554 5.5.1 No valid recipients"
        assert sink.messages() == []


async def test_soft_refusals_stay_soft(smtp_sink: str, tmp_path: Path) -> None:
    async with (
        running_sink(smtp_sink, tmp_path, "-r", "rcpt") as sink,
        open_test_session(relay_to(sink), config=FRONT) as client,
    ):
        await ehlo(client)
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        assert str(await client.command("RCPT TO:<b@example.org>")) == (
            "450 4.3.0 Error: command failed"
        )


async def test_a_refused_message_is_refused(smtp_sink: str, tmp_path: Path) -> None:
    refusal = "554 5.7.1 Message content rejected"
    async with (
        running_sink(smtp_sink, tmp_path, "-f", ".", "-B", refusal) as sink,
        open_test_session(relay_to(sink), config=FRONT) as client,
    ):
        await ehlo(client)
        reply = await client.command("MAIL FROM:<a@example.com>")
        assert reply.code == 250
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        assert str(await client.read_reply()) == refusal


async def test_a_421_is_a_451_and_the_connection_is_given_up(
    smtp_sink: str, tmp_path: Path
) -> None:
    async with (
        running_sink(smtp_sink, tmp_path, "-Q", "rcpt") as sink,
        open_test_session(relay_to(sink), config=FRONT) as client,
    ):
        await ehlo(client)
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        reply = await client.command("RCPT TO:<b@example.org>")
        # smtp-sink said "421 4.0.0 Server closing connection": its channel, not ours.
        assert str(reply) == "451 4.0.0 Server closing connection"
        assert str(await client.command("RCPT TO:<c@example.org>")) == UNAVAILABLE
        assert (await client.command("QUIT")).code == 221


async def test_a_hang_up_without_a_reply_is_451(smtp_sink: str, tmp_path: Path) -> None:
    async with (
        running_sink(smtp_sink, tmp_path, "-q", "mail") as sink,
        open_test_session(relay_to(sink), config=FRONT) as client,
    ):
        await ehlo(client)
        assert str(await client.command("MAIL FROM:<a@example.com>")) == UNAVAILABLE
        assert (await client.command("NOOP")).code == 250


async def test_without_8bitmime_upstream_8bit_text_is_refused_7bit_passes(
    smtp_sink: str, tmp_path: Path
) -> None:
    async with running_sink(smtp_sink, tmp_path, "-8") as sink:
        async with open_test_session(relay_to(sink), config=FRONT) as client:
            await ehlo(client)
            assert (await client.command("MAIL FROM:<a@example.com> BODY=8BITMIME")).code == 250
            assert (await client.command("RCPT TO:<b@example.org>")).code == 250
            assert (await client.command("DATA")).code == 354
            await client.send("Subject: café\r\n\r\nnaïve\r\n.\r\n".encode())
            assert str(await client.read_reply()) == (
                "554 5.6.3 Upstream server does not accept 8-bit message text"
            )
            reply = await client.sendmail(
                "a@example.com", ["b@example.org"], MESSAGE, mail_params=" BODY=8BITMIME"
            )
            assert reply.code == 250
        (dump,) = sink.messages()
    x_lines, ours = our_part(dump)
    assert b"X-Mail-Args: <a@example.com>" in x_lines  # BODY left out
    assert ours.endswith(b"\n" + as_dumped(MESSAGE) + b"\n")


async def test_a_large_message(smtp_sink: str, tmp_path: Path) -> None:
    limit = 32 * 1024 * 1024
    line = b"0123456789" * 9 + b"\r\n"
    content = b"Subject: large\r\n\r\n" + (line * 999 + b".dot\r\n") * 80
    assert len(content) > 7 * 1024 * 1024
    async with running_sink(smtp_sink, tmp_path) as sink:
        front = Config(hostname="front.test", max_message_size=limit)
        async with open_test_session(relay_to(sink), config=front) as client:
            await ehlo(client)
            assert (await client.sendmail("a@example.com", ["b@example.org"], content)).code == 250
        (dump,) = sink.messages()
    _, ours = our_part(dump)
    assert ours.endswith(b"\n" + as_dumped(content) + b"\n")


async def test_an_upstream_that_goes_away_is_451(smtp_sink: str, tmp_path: Path) -> None:
    sink_running = running_sink(smtp_sink, tmp_path)
    sink = await sink_running.__aenter__()
    stopped = False
    try:
        async with open_test_session(relay_to(sink), config=FRONT) as client:
            await ehlo(client)
            assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
            assert len(sink.messages()) == 1
            await sink_running.__aexit__(None, None, None)
            stopped = True
            # The kept connection is dead and a new one is refused.
            assert str(await client.command("MAIL FROM:<a@example.com>")) == UNAVAILABLE
            assert (await client.command("QUIT")).code == 221
    finally:
        if not stopped:
            await sink_running.__aexit__(None, None, None)


async def test_helo_when_the_upstream_does_not_speak_esmtp(smtp_sink: str, tmp_path: Path) -> None:
    async with running_sink(smtp_sink, tmp_path, "-e") as sink:
        async with open_test_session(relay_to(sink), config=FRONT) as client:
            await ehlo(client)
            # BODY and SIZE cannot be passed on to a server without extensions, and need not be.
            reply = await client.sendmail(
                "a@example.com", ["b@example.org"], MESSAGE, mail_params=" BODY=7BIT SIZE=99"
            )
            assert reply.code == 250
        (dump,) = sink.messages()
    x_lines, ours = our_part(dump)
    assert b"X-Client-Proto: SMTP" in x_lines
    assert b"X-Mail-Args: <a@example.com>" in x_lines
    assert ours.endswith(b"\n" + as_dumped(MESSAGE) + b"\n")
