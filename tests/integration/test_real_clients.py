"""Real SMTP clients from Debian against a real server on a loopback port.

swaks (the "Swiss Army Knife for SMTP") checks ordinary delivery, PIPELINING and how refusals
reach a client; Postfix's smtp-source checks many concurrent sessions and persistent sessions
deliver exactly the messages sent, no more and no fewer. Each test skips, saying why, when the
program is not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import pathlib
import re
import smtplib

import pytest
import trio

from smtpd_trio import Config

from .conftest import CLIENT_DEADLINE, Recorder, run_client, start_server

pytestmark = pytest.mark.integration

SENDER = "a@example.com"
RECIPIENT = "b@example.org"


def swaks_argv(swaks: str, port: int, *extra: str, to: str = RECIPIENT) -> list[str]:
    return [
        swaks,
        "--server",
        f"127.0.0.1:{port}",
        "--helo",
        "client.test",
        "--from",
        SENDER,
        "--to",
        to,
        "--timeout",
        "10",
        *extra,
    ]


# ---- swaks -------------------------------------------------------------------------------


async def test_swaks_plain_delivery(nursery: trio.Nursery, swaks: str) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)
    body = "Hello from swaks.\nA second line.\n.A line that starts with a dot."

    run = await run_client(swaks_argv(swaks, port, "--body", body))

    assert run.returncode == 0, run.output
    assert "250 2.0.0 Message accepted" in run.output
    [delivery] = handler.deliveries
    assert delivery.mail_from == SENDER
    assert delivery.rcpt_tos == (RECIPIENT,)
    assert delivery.helo_name == "client.test"
    assert delivery.client_host == "127.0.0.1"
    headers, _, text = delivery.content.partition(b"\r\n\r\n")
    assert b"\r\nTo: b@example.org\r\n" in b"\r\n" + headers + b"\r\n"
    # swaks ends the body with its own CRLFs; everything before them arrives byte for byte,
    # CRLF line endings and the un-stuffed leading dot included.
    assert text.rstrip(b"\r\n") == body.replace("\n", "\r\n").encode()
    assert delivery.received_header.startswith("Received: from client.test ([127.0.0.1])\r\n")
    assert "\tby mx.test (smtpd-trio) with ESMTP id " in delivery.received_header
    assert "\tfor <b@example.org>;\r\n" in delivery.received_header


async def test_swaks_exact_message_from_file(
    nursery: trio.Nursery, swaks: str, tmp_path: pathlib.Path
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)
    message = b"Subject: exact\n\n.dot first\n..two dots\nlast line"
    path = trio.Path(tmp_path / "message.txt")
    await path.write_bytes(message)

    run = await run_client(swaks_argv(swaks, port, "--data", f"@{path}"))

    assert run.returncode == 0, run.output
    [delivery] = handler.deliveries
    assert delivery.content == message.replace(b"\n", b"\r\n") + b"\r\n"


async def test_swaks_pipelining(nursery: trio.Nursery, swaks: str) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)

    run = await run_client(swaks_argv(swaks, port, "--pipeline", "--body", "pipelined"))

    assert run.returncode == 0, run.output
    assert "250-PIPELINING" in run.output
    # With PIPELINING swaks sends MAIL, RCPT and DATA before reading any of their replies;
    # the three replies come back in order.
    mail, rcpt, data = (run.output.index(s) for s in ("250 2.1.0", "250 2.1.5", "354 "))
    assert mail < rcpt < data
    [delivery] = handler.deliveries
    assert delivery.content.rstrip(b"\r\n").endswith(b"\r\n\r\npipelined")


async def test_swaks_rejected_recipient(nursery: trio.Nursery, swaks: str) -> None:
    handler = Recorder(reject_local_parts=["nobody"])
    port = await start_server(nursery, handler)

    run = await run_client(swaks_argv(swaks, port, "--body", "x", to="nobody@example.org"))

    assert run.returncode != 0
    assert "550 5.1.1 No such user here" in run.output
    assert handler.deliveries == []


async def test_swaks_pipelining_with_one_rejected_recipient(
    nursery: trio.Nursery, swaks: str
) -> None:
    handler = Recorder(reject_local_parts=["nobody"])
    port = await start_server(nursery, handler)
    to = "nobody@example.org,b@example.org"

    run = await run_client(swaks_argv(swaks, port, "--pipeline", "--body", "x", to=to))

    assert "550 5.1.1 No such user here" in run.output
    assert "250 2.1.5 Recipient OK" in run.output
    [delivery] = handler.deliveries
    assert delivery.rcpt_tos == (RECIPIENT,)


async def test_swaks_message_too_big(nursery: trio.Nursery, swaks: str) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, Config(hostname="mx.test", max_message_size=2000))
    body = "\n".join("x" * 70 for _ in range(60))  # about 4300 octets

    run = await run_client(swaks_argv(swaks, port, "--body", body))

    assert "250-SIZE 2000" in run.output
    assert "552 5.3.4" in run.output
    assert run.returncode != 0
    assert handler.deliveries == []


async def test_smtplib_smtputf8(nursery: trio.Nursery) -> None:
    """Python's smtplib, which speaks SMTPUTF8 whatever swaks version is installed."""
    handler = Recorder()
    port = await start_server(nursery, handler)
    message = "Subject: grüße\r\n\r\nÜnïcödé body\r\n".encode()

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as smtp:
            return smtp.sendmail(
                "absender@example.com",
                ["jösé@example.org"],
                message,
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )

    with trio.fail_after(CLIENT_DEADLINE):
        refused = await trio.to_thread.run_sync(send)

    assert refused == {}
    [delivery] = handler.deliveries
    assert "SMTPUTF8" in delivery.mail_params
    assert delivery.mail_params["BODY"] == "8BITMIME"
    assert delivery.rcpt_tos == ("jösé@example.org",)
    assert delivery.content == message
    assert "with UTF8SMTP id" in delivery.received_header
    assert "for <jösé@example.org>;" in delivery.received_header


# ---- Postfix smtp-source -----------------------------------------------------------------


def smtp_source_argv(smtp_source: str, port: int, *extra: str) -> list[str]:
    return [
        smtp_source,
        "-s",
        "5",
        "-m",
        "50",
        "-l",
        "1024",
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        *extra,
        f"127.0.0.1:{port}",
    ]


def check_smtp_source_deliveries(handler: Recorder, *, length: int) -> None:
    assert len(handler.deliveries) == 50
    for delivery in handler.deliveries:
        assert delivery.mail_from == SENDER
        assert delivery.rcpt_tos == (RECIPIENT,)
        # smtp-source writes a few headers, then `length` octets of text in 80-octet lines.
        assert len(delivery.content) >= length
        assert delivery.content.startswith(b"From: <a@example.com>\r\n")
        assert delivery.received_header.startswith("Received: from ")


async def test_smtp_source_one_message_per_connection(
    nursery: trio.Nursery, smtp_source: str
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)

    run = await run_client(smtp_source_argv(smtp_source, port))

    assert run.returncode == 0, run.output
    check_smtp_source_deliveries(handler, length=1024)
    # Without -d every message has a connection of its own.
    assert len(handler.sessions) == 50


async def test_smtp_source_persistent_sessions(nursery: trio.Nursery, smtp_source: str) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)

    run = await run_client(smtp_source_argv(smtp_source, port, "-d"))

    assert run.returncode == 0, run.output
    check_smtp_source_deliveries(handler, length=1024)
    # -d keeps each of the 5 sessions open for message after message.
    assert len(handler.sessions) <= 5


async def test_smtp_source_lmtp_is_not_spoken(nursery: trio.Nursery, smtp_source: str) -> None:
    """An LMTP client (LHLO) against the SMTP server: refused cleanly, nothing delivered."""
    handler = Recorder()
    port = await start_server(nursery, handler)

    run = await run_client([smtp_source, "-L", "-s", "1", "-m", "1", f"127.0.0.1:{port}"])

    assert run.returncode != 0
    assert "LHLO rejected: 500 5.5.2" in run.output
    assert handler.deliveries == []


# ---- bad input, then service as usual ------------------------------------------------------


class RawClient:
    """A byte-level client on a real socket, for input no well-behaved client sends."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def reply(self) -> bytes:
        """One whole reply (all its lines), CRLFs included."""
        while True:
            m = re.search(rb"^\d{3} [^\r\n]*\r\n", self.buffer, re.MULTILINE)
            if m:
                reply, self.buffer = self.buffer[: m.end()], self.buffer[m.end() :]
                return reply
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(f"connection closed; unread: {self.buffer!r}")
            self.buffer += data

    async def send(self, data: bytes) -> bytes:
        await self.stream.send_all(data)
        return await self.reply()


async def test_keeps_serving_after_bad_input(nursery: trio.Nursery, swaks: str) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)

    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            client = RawClient(stream)
            assert (await client.reply()).startswith(b"220 mx.test ")
            # Binary garbage and a command that does not exist.
            assert (await client.send(b"\x00\xff\xfe garbage\r\n")).startswith(b"500 5.5.2 ")
            assert (await client.send(b"FROB\r\n")).startswith(b"500 5.5.2 ")
            # A bare LF is not a line end, even for a command.
            reply = await client.send(b"EHLO probe.test\nNOOP\r\n")
            assert reply.startswith(b"500 5.5.2 ")
            assert (await client.send(b"EHLO probe.test\r\n")).startswith(b"250-mx.test\r\n")
            # A command line far over the limit: one 500, then the session goes on.
            assert (await client.send(b"NOOP " + b"x" * 100_000 + b"\r\n")).startswith(
                b"500 5.5.2 Line too long"
            )
            assert (await client.send(b"NOOP\r\n")).startswith(b"250 ")
            # SMTP smuggling: a message with `\n.\n` and a spoofed second transaction inside.
            assert (await client.send(b"MAIL FROM:<a@example.com>\r\n")).startswith(b"250 ")
            assert (await client.send(b"RCPT TO:<b@example.org>\r\n")).startswith(b"250 ")
            assert (await client.send(b"DATA\r\n")).startswith(b"354 ")
            smuggled = (
                b"Subject: first\r\n\r\nfirst\n.\nMAIL FROM:<admin@example.org>\n"
                b"RCPT TO:<b@example.org>\nDATA\nSubject: spoofed\n\nspoofed\n.\n"
            )
            reply = await client.send(smuggled + b"\r\n.\r\n")
            # Read to its real end and refused whole: bare LFs are refused by default.
            assert reply.startswith(b"550 5.6.0 ")
            assert (await client.send(b"QUIT\r\n")).startswith(b"221 ")
            assert await stream.receive_some(1) == b""
    assert handler.deliveries == []

    run = await run_client(swaks_argv(swaks, port, "--body", "still here"))

    assert run.returncode == 0, run.output
    [delivery] = handler.deliveries
    assert delivery.content.rstrip(b"\r\n").endswith(b"\r\n\r\nstill here")


async def test_smuggling_probe_kept_as_data(nursery: trio.Nursery) -> None:
    """With bare_line_endings="keep" the probe is data of one message: never two messages."""
    handler = Recorder()
    port = await start_server(
        nursery, handler, Config(hostname="mx.test", bare_line_endings="keep")
    )
    smuggled = b"first\n.\nMAIL FROM:<admin@example.org>\nRCPT TO:<b@example.org>\nDATA\nx\n.\n"

    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            client = RawClient(stream)
            await client.reply()
            await client.stream.send_all(
                b"EHLO probe.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                b"DATA\r\n" + smuggled + b"\r\n.\r\nQUIT\r\n"
            )
            replies = [await client.reply() for _ in range(6)]
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354", b"250", b"221"]
    [delivery] = handler.deliveries
    assert delivery.content == smuggled + b"\r\n"
    assert delivery.mail_from == SENDER
