"""examples/lmtp_maildir.py: the delivery agent driven through the test harness, and once as a
real program on a UNIX socket with Python's smtplib.LMTP."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_examples import EXAMPLES, load_example

from smtpd_trio import Config
from smtpd_trio.testing import TestClient, dot_stuff, open_test_session

LMTP = Config(hostname="lmtp.test", lmtp=True)
MESSAGE = b"From: a@example.com\r\nSubject: for the users\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("lmtp_maildir")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for user in ("ann", "bob", "full"):
        (tmp_path / user).mkdir()
    (tmp_path / "plain-file").write_text("not a user")
    return tmp_path


def stored(root: Path, user: str) -> list[bytes]:
    new = root / user / "Maildir" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


async def open_transaction(client: TestClient, *rcpts: str) -> list[int]:
    assert (await client.lhlo()).code == 250
    assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
    return [(await client.command(f"RCPT TO:<{rcpt}>")).code for rcpt in rcpts]


async def test_each_recipient_is_answered_for_itself(example: Any, root: Path) -> None:
    handler = example.MaildirDelivery(root, quota=10)
    (root / "full" / "Maildir" / "new").mkdir(parents=True)
    (root / "full" / "Maildir" / "new" / "old-mail").write_bytes(b"x" * 10)
    async with open_test_session(handler, config=LMTP) as client:
        codes = await open_transaction(
            client,
            "Ann@example.org",
            "nobody@example.org",  # no such user: refused at RCPT
            "full@example.org",  # over quota: 452 after the message
            "bob@example.org",
            "ann@other.example",  # the same user again: one copy, one more 250
        )
        assert codes == [250, 550, 250, 250, 250]
        assert (await client.command("DATA")).code == 354
        await client.send(dot_stuff(MESSAGE))
        replies = [str(await client.read_reply()) for _ in range(4)]
    assert replies == [
        "250 2.0.0 <Ann@example.org> Message accepted",
        "452 4.2.2 <full@example.org> Mailbox full",
        "250 2.0.0 <bob@example.org> Message accepted",
        "250 2.0.0 <ann@other.example> Message accepted",  # ann's second address: no copy
    ]
    (ann,) = stored(root, "ann")
    assert ann.startswith(b"Received: from client.test ([192.0.2.1])\r\n")
    assert b" with LMTP id " in ann
    assert ann.endswith(MESSAGE)
    assert stored(root, "bob") == [ann]
    assert len(stored(root, "full")) == 1  # only the old one


@pytest.mark.parametrize(
    "address", ["../ann@example.org", ".hidden@example.org", "plain-file@example.org", "a/b@x"]
)
async def test_only_user_directories_are_users(example: Any, root: Path, address: str) -> None:
    async with open_test_session(example.MaildirDelivery(root), config=LMTP) as client:
        codes = await open_transaction(client, address)
    assert codes in ([550], [501])  # refused, or not even an address


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lx-") as name:
        yield Path(name)


def test_the_program_serves_on_a_unix_socket(root: Path, sockdir: Path) -> None:
    path = sockdir / "lmtp.sock"
    argv = [sys.executable, str(EXAMPLES / "lmtp_maildir.py"), "--root", str(root)]
    process = subprocess.Popen(
        [*argv, "--unix", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"Delivering into {root}/<user>/Maildir; LMTP on unix:{path}")
        deadline = time.monotonic() + 15
        while not path.exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the socket never appeared"
            time.sleep(0.02)
        with smtplib.LMTP(str(path), local_hostname="mta.test", timeout=10) as lmtp:
            assert lmtp.ehlo()[0] == 250
            assert lmtp.mail("a@example.com")[0] == 250
            assert lmtp.rcpt("bob@example.org")[0] == 250
            assert lmtp.rcpt("nobody@example.org")[0] == 550
            assert lmtp.data(MESSAGE)[0] == 250  # one accepted recipient: one reply
        assert len(stored(root, "bob")) == 1
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o660)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()
    assert not path.exists()  # removed when the server stopped
