"""``python -m smtpd_trio`` as a real process: bad values, a real delivery, SIGTERM, JSON logs."""

from __future__ import annotations

import contextlib
import email
import json
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
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGTERM")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpd_trio", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "70000"], "70000"),
        (["--port", "abc"], "abc"),
        (["--max-recipients", "0"], "--max-recipients"),
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "nan"], "--timeout"),
        (["--handler", "nope"], "nope"),
        (["--handler", "maildir"], "maildir"),
        (["--hostname", "a b"], "hostname"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_bad_values_exit_2_with_one_line(args: list[str], words: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smtpd-trio: error: ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr


class Server:
    """A running ``python -m smtpd_trio`` whose stderr lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtpd_trio", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            start_new_session=True,  # its own process group: workers included, see kill()
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        line = self.wait_for("listening on")
        match = LISTENING.search(line)
        assert match, line
        self.port = int(match.group(1))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """The first stderr line containing ``text`` (lines seen are kept in ``lines``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} in {self.lines}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited without {text!r}: {self.lines}")
            self.lines.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        """SIGTERM, then the exit status; every stderr line is in ``lines`` afterwards."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=15)
        self._thread.join(timeout=5)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return status


@contextmanager
def cli_server(*args: str) -> Iterator[Server]:
    server = Server(*args)
    try:
        yield server
    finally:
        # The whole process group, so no worker outlives a failed test holding the pipes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        for pipe in (server.proc.stdout, server.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def deliver(port: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as smtp:
        assert smtp.sendmail("a@example.com", ["b@example.org"], message) == {}


def test_real_run_delivers_to_maildir_and_stops_gracefully(tmp_path: Path) -> None:
    maildir = tmp_path / "box"
    message = b"From: a@example.com\r\nSubject: via the CLI\r\n\r\nHello.\r\n"
    with cli_server("--handler", f"maildir:{maildir}", "--hostname", "mx.test") as server:
        deliver(server.port, message)
        server.wait_for("accepted")
        status = server.stop()
    assert status == 0
    assert any("SIGTERM received: graceful shutdown" in line for line in server.lines)
    assert "Traceback" not in "\n".join(server.lines)
    (stored,) = list((maildir / "new").iterdir())
    assert list((maildir / "tmp").iterdir()) == []
    data = stored.read_bytes()
    assert data.endswith(message)
    parsed = email.message_from_bytes(data)
    received = parsed["Received"]
    assert "from client.example ([127.0.0.1])" in received
    assert "by mx.test (smtpd-trio)" in received
    assert parsed["Subject"] == "via the CLI"


def test_json_logs_carry_the_connection_id(tmp_path: Path) -> None:
    with cli_server("--handler", "sink", "--log-format", "json") as server:
        deliver(server.port, b"Subject: json\r\n\r\nx\r\n")
        server.wait_for("closed")
        status = server.stop()
    assert status == 0
    entries = [json.loads(line) for line in server.lines]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    connection = [e for e in entries if e["message"].startswith("connection from 127.0.0.1")]
    assert len(connection) == 1
    cid = connection[0]["connection_id"]
    assert re.fullmatch(r"[0-9a-f]+", cid)
    about_it = [e for e in entries if e.get("connection_id") == cid]
    assert any("accepted" in e["message"] for e in about_it)
    assert any(e["message"].startswith("closed") for e in about_it)
    assert any("graceful shutdown" in e["message"] for e in entries)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_workers_share_one_port_and_stop_together() -> None:
    port = _free_port()
    with cli_server("--port", str(port), "--workers", "2", "--handler", "sink") as server:
        server.wait_for("listening on")  # the second worker
        for _ in range(20):
            deliver(port, b"Subject: spread\r\n\r\nx\r\n")
        for _ in range(20):
            server.wait_for("accepted")
        status = server.stop()
    assert status == 0
    # Each worker process has its own connection-id prefix (six hex digits).
    served_by = {
        m.group(1)
        for line in server.lines
        if (m := re.search(r"\[([0-9a-f]{6})[0-9a-f]+\] message", line))
    }
    assert len(served_by) == 2, served_by  # the kernel spread 20 connections over both
    assert sum("graceful shutdown" in line for line in server.lines) == 2
    assert sum(line.endswith("stopped") for line in server.lines) == 2


def test_workers_need_a_fixed_port() -> None:
    result = run_cli("--port", "0", "--workers", "2")
    assert result.returncode == 2
    assert result.stderr.strip() == "smtpd-trio: error: --workers needs a fixed --port, not 0"
