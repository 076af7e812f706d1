"""Real clients with the HELO/EHLO name they send by default are accepted, and the Received
header written for them is well formed (tests/received_grammar.py).

swaks and curl send the machine's host name (often without a dot), msmtp sends "localhost",
smtplib its FQDN or, without a dot in it, an address literal such as ``[127.0.0.1]``; Postfix's
smtp-source ($myhostname) is covered by test_real_clients.py. A client missing here skips.
"""

from __future__ import annotations

import smtplib
import socket
import subprocess

import pytest
import trio
from received_grammar import check_received

from smtpd_trio._smtp.commands import CommandSyntaxError, parse_helo_name

from .conftest import (
    CLIENT_DEADLINE,
    Delivery,
    Recorder,
    require_program,
    run_client,
    start_server,
)

pytestmark = pytest.mark.integration

SENDER = "a@example.com"
RECIPIENT = "b@example.org"
MESSAGE = b"Subject: default HELO\r\n\r\nHello.\r\n"


def host_name_or_skip() -> str:
    """The name swaks and curl will send; skip on a host whose name no server would accept."""
    name = socket.gethostname()
    try:
        parse_helo_name(name)
    except CommandSyntaxError:
        pytest.skip(f"this host's name {name!r} is not a valid HELO name (Postfix refuses it too)")
    return name


async def run_with_stdin(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(CLIENT_DEADLINE):
        return await trio.run_process(
            argv, stdin=MESSAGE, capture_stdout=True, capture_stderr=True, check=False
        )


def check(delivery: Delivery) -> None:
    stamp = check_received(delivery.received_header.encode(), utf8=False)
    assert stamp.from_.tcp_info == "[127.0.0.1]"
    assert stamp.for_ == f"<{RECIPIENT}>"


async def test_swaks_default_helo(nursery: trio.Nursery) -> None:
    swaks = require_program("swaks", "swaks")
    name = host_name_or_skip()
    handler = Recorder()
    port = await start_server(nursery, handler)

    run = await run_client(
        [swaks, "--server", f"127.0.0.1:{port}", "--from", SENDER, "--to", RECIPIENT]
    )

    assert run.returncode == 0, run.output
    [delivery] = handler.deliveries
    assert delivery.helo_name in (name, socket.getfqdn())
    check(delivery)


async def test_curl_default_helo(nursery: trio.Nursery) -> None:
    curl = require_program("curl", "curl")
    name = host_name_or_skip()
    handler = Recorder()
    port = await start_server(nursery, handler)

    # The message on stdin: with --upload-file FILE and no URL path, curl sends EHLO FILE.
    done = await run_with_stdin(
        [
            curl,
            "--silent",
            "--show-error",
            f"smtp://127.0.0.1:{port}",
            "--mail-from",
            SENDER,
            "--mail-rcpt",
            RECIPIENT,
            "--upload-file",
            "-",
        ]
    )

    assert done.returncode == 0, done.stderr
    [delivery] = handler.deliveries
    assert delivery.helo_name in (name, "localhost")
    check(delivery)


async def test_msmtp_default_helo(nursery: trio.Nursery) -> None:
    msmtp = require_program("msmtp", "msmtp")
    handler = Recorder()
    port = await start_server(nursery, handler)

    done = await run_with_stdin(
        [msmtp, "--host=127.0.0.1", f"--port={port}", f"--from={SENDER}", RECIPIENT]
    )

    assert done.returncode == 0, done.stderr
    [delivery] = handler.deliveries
    assert delivery.helo_name in ("localhost", socket.gethostname(), socket.getfqdn())
    check(delivery)


async def test_smtplib_default_helo(nursery: trio.Nursery) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler)

    def send() -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail(SENDER, [RECIPIENT], MESSAGE)
            return smtp.local_hostname

    sent_name = await trio.to_thread.run_sync(send)

    [delivery] = handler.deliveries
    assert delivery.helo_name == sent_name
    check(delivery)
