"""``smtpd_trio.run()`` in a real process: SIGINT and SIGTERM stop it gracefully, it returns
normally (exit status 0, no traceback), and what was acknowledged reached the handler."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
MESSAGE = b"From: a@example.com\r\nSubject: before the signal\r\n\r\nHello.\r\n"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT and SIGTERM")

PROGRAM = """
import logging
import sys

import smtpd_trio
from smtpd_trio import Config, Handler


class Printing(Handler):
    async def on_data(self, session, message):
        subject = message.content.split(b"Subject: ")[1].split(b"\\r\\n")[0].decode()
        print(f"delivered {subject!r} to {message.envelope.rcpt_tos[0]}", flush=True)


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
smtpd_trio.run(Printing(), port=0, config=Config(hostname="mx.test"))
print("run() returned", flush=True)
"""


class Lines:
    """The lines of a pipe, read by a thread; :meth:`wait_for` the one you expect."""

    def __init__(self, pipe: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the pipe closed without {text!r}: {self.seen}")
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout} s: {self.seen}")

    def rest(self) -> list[str]:
        """Every line, once the pipe has closed."""
        self._thread.join(timeout=15)
        while (line := self._queue.get_nowait()) is not None:
            self.seen.append(line)
        return self.seen


class Program:
    def __init__(self, path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout = Lines(self.proc.stdout)
        self.stderr = Lines(self.proc.stderr)
        match = LISTENING.search(self.stderr.wait_for("listening on"))
        assert match
        self.port = int(match.group(1))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        status = self.proc.wait(timeout=15)
        self.stdout.rest()
        self.stderr.rest()
        return status

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=10)


@pytest.fixture
def program(tmp_path: Path) -> Iterator[Program]:
    path = tmp_path / "inbox.py"
    path.write_text(PROGRAM)
    program = Program(path)
    try:
        yield program
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(program.proc.pid, signal.SIGKILL)
        program.proc.wait(timeout=10)
        for pipe in (program.proc.stdout, program.proc.stderr):
            if pipe is not None:
                pipe.close()


def assert_clean_exit(program: Program, signame: str) -> None:
    assert program.wait() == 0, program.stderr.seen
    errors = "\n".join(program.stderr.seen)
    assert "Traceback" not in errors
    assert "Error" not in errors
    assert f"INFO smtpd_trio.server: {signame} received: graceful shutdown" in errors
    assert program.stderr.seen[-1] == "INFO smtpd_trio.server: stopped"
    assert program.stdout.seen[-1] == "run() returned"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_it_cleanly(program: Program, signum: signal.Signals) -> None:
    with program.smtp() as smtp:
        assert smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE) == {}
    program.signal(signum)
    assert_clean_exit(program, signum.name)
    assert "delivered 'before the signal' to b@example.org" in program.stdout.seen


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_transaction_open_at_the_signal_may_finish(
    program: Program, signum: signal.Signals
) -> None:
    with program.smtp() as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("a@example.com")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 250
        program.signal(signum)
        program.stderr.wait_for("graceful shutdown")
        code, _ = smtp.data(b"Subject: during the shutdown\r\n\r\nStill here.\r\n")
        assert code == 250
        program.stdout.wait_for("delivered 'during the shutdown' to b@example.org")
        assert smtp.getreply() == (421, b"4.3.2 Service shutting down, closing connection")
    assert_clean_exit(program, signum.name)


def test_a_second_signal_stops_at_once(program: Program) -> None:
    with program.smtp() as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("a@example.com")[0] == 250  # a graceful shutdown would wait for it
        program.signal(signal.SIGINT)
        program.stderr.wait_for("graceful shutdown")
        program.signal(signal.SIGTERM)
        assert program.wait() == 0
        # Cancelled: the session still says goodbye.
        assert smtp.getreply() == (421, b"4.3.2 Service shutting down, closing connection")
    errors = "\n".join(program.stderr.seen)
    assert "WARNING smtpd_trio.server: second SIGTERM: stopping now" in errors
    assert "Traceback" not in errors
    assert program.stdout.seen == ["run() returned"]
