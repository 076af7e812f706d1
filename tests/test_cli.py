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
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from smtpd_trio import Config, NulOctets
from smtpd_trio.cli import _LIMITS, _config, _listen_on, _size, build_parser

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
RFC3339_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGTERM")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpd_trio", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
        cwd=cwd,
    )


def assert_one_line_error(args: Sequence[str], *words: str, cwd: Path | None = None) -> str:
    """Exit status 2, nothing on stdout, one ``smtpd-trio: error:`` line with every word."""
    result = run_cli(*args, cwd=cwd)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smtpd-trio: error: ")
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


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
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_bad_values_exit_2_with_one_line(args: list[str], words: str) -> None:
    assert_one_line_error(args, words)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--hostname", "a b"],
            "argument --hostname: must be a non-empty name without spaces, not 'a b'",
        ),
        (["--host", "256.1.1.1"], "argument --host: not an IPv4 address: '256.1.1.1'"),
        (["--host", "[::1]"], "argument --host: write IPv6 addresses without brackets: '[::1]'"),
        (["--host", "::g"], "argument --host: not an IPv6 address: '::g'"),
        (["--host", " "], "argument --host: empty: give an address or a host name"),
        (
            ["--max-message-size", "10X"],
            "argument --max-message-size: not a size (bytes, or a whole number with K, M or "
            "G, as in 10M): '10X'",
        ),
        (
            ["--max-message-size", "-1"],
            "argument --max-message-size: not a size (bytes, or a whole number with K, M or "
            "G, as in 10M): '-1'",
        ),
        (["--untrusted-proxy-peers", "direct"], "--untrusted-proxy-peers needs --proxy-protocol"),
        (["--trusted-proxy", "10.0.0.0/8"], "--trusted-proxy needs --proxy-protocol"),
        (["--proxy-timeout", "3"], "--proxy-timeout needs --proxy-protocol"),
        (
            ["--proxy-protocol"],
            "--proxy-protocol needs --trusted-proxy CIDR (the load balancers' networks) or "
            "--untrusted-proxy-peers direct: otherwise every connection is refused",
        ),
        (
            ["--proxy-protocol", "--trusted-proxy", "10.0.0.1/8"],
            "argument --trusted-proxy: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)",
        ),
        (
            ["--proxy-protocol", "--trusted-proxy", "bogus"],
            "argument --trusted-proxy: 'bogus' is not an address or CIDR network",
        ),
        (
            ["--proxy-protocol", "--trusted-proxy", "unix"],
            "--trusted-proxy unix needs --unix (it trusts the UNIX-socket peers)",
        ),
        (
            ["--ignored-host", "unix"],
            "argument --ignored-host: 'unix' is not an address or network (it is for "
            "--trusted-proxy, with --unix)",
        ),
        (["--unix-mode", "660"], "--unix-mode needs --unix"),
        (
            ["--unix", "/tmp/x.sock", "--unix-mode", "8"],
            "argument --unix-mode: not an octal mode such as 660: '8'",
        ),
        (
            ["--unix", "/tmp/x.sock", "--unix-mode", "1777"],
            "argument --unix-mode: only permission bits (at most 777): '1777'",
        ),
        (["--unix", ""], "argument --unix: empty: give the path of the socket to create"),
        (
            ["--unix", "/tmp/" + "x" * 100],
            f"argument --unix: too long for a UNIX socket path (103 octets): '/tmp/{'x' * 100}'",
        ),
        (
            ["--unix", "/tmp/x.sock", "--workers", "2"],
            "--unix cannot be used with --workers: only one process can listen on a UNIX socket",
        ),
        (
            ["--lmtp", "--port", "25"],
            "--lmtp cannot use port 25: LMTP must not be served there (RFC 2033)",
        ),
        (
            ["--ignored-host", "health-checker"],
            "argument --ignored-host: 'health-checker' is not an address or CIDR network",
        ),
        (
            ["--ignored-host", "192.0.2.1/24"],
            "argument --ignored-host: '192.0.2.1/24' has host bits set (did you mean "
            "192.0.2.0/24?)",
        ),
        (
            ["--xclient", "nginx.internal"],
            "argument --xclient: 'nginx.internal' is not an address or CIDR network",
        ),
        (
            ["--xforward", "10.0.0.1/8"],
            "argument --xforward: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)",
        ),
        (
            ["--xclient", "unix"],
            "argument --xclient: 'unix' is not an address or network (it is for "
            "--trusted-proxy, with --unix)",
        ),
        (
            ["--handler", "nope"],
            "argument --handler: unknown handler 'nope': choose debugging, sink, maildir:DIR, "
            "mbox:PATH, relay:HOST:PORT or module:attr",
        ),
        (["-v", "-q"], "argument -q/--quiet: not allowed with argument -v/--verbose"),
        (
            ["--quiet", "--log-level", "debug"],
            "argument --log-level: not allowed with argument -q/--quiet",
        ),
        (
            ["--log-level", "info", "-v"],
            "argument -v/--verbose: not allowed with argument --log-level",
        ),
        (
            ["--log-level", "trace"],
            "argument --log-level: invalid choice: 'trace' (choose from 'debug', 'info', "
            "'warning', 'error')",
        ),
    ],
)
def test_bad_option_names_itself(args: list[str], line: str) -> None:
    assert assert_one_line_error(args) == f"smtpd-trio: error: {line}"


def test_maildir_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    line = assert_one_line_error(["--handler", f"maildir:{blocker}/box"], "argument --handler")
    assert str(blocker) in line


def _busy_socket() -> socket.socket:
    """A listening socket on a free loopback port, as another server would hold it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_busy_port_is_one_line_naming_the_address(workers: list[str]) -> None:
    with _busy_socket() as busy:
        port = busy.getsockname()[1]
        line = assert_one_line_error(["--port", str(port), *workers])
    assert line.startswith(f"smtpd-trio: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Errno" not in line


@pytest.mark.skipif(sys.platform != "linux", reason="binds 127.0.0.2")
def test_second_host_that_cannot_be_bound_is_the_one_named() -> None:
    with _busy_socket() as busy:
        port = busy.getsockname()[1]
        # 127.0.0.2 is free (all of 127/8 is loopback on Linux); 127.0.0.1 is taken.
        line = assert_one_line_error(
            ["--host", "127.0.0.2", "--host", "127.0.0.1", "--port", str(port)]
        )
    assert line.startswith(f"smtpd-trio: error: cannot listen on 127.0.0.1:{port}: ")


class Server:
    """A running ``python -m smtpd_trio`` whose stderr lines are collected by a thread."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        cwd: Path | None = None,
        launcher: Sequence[str] = ("-m", "smtpd_trio"),
        tcp: bool = True,
        umask: int = -1,
    ) -> None:
        """With ``port``, listen there and do not wait for ``listening on`` (which is not
        logged below INFO); else listen on a free port and read it from that line. The
        server runs in ``cwd``, started as ``python LAUNCHER...``. Without ``tcp`` no
        ``--port`` is given (for ``--unix``): ``port`` is then 0."""
        port_args = ["--port", str(port or 0)] if tcp else []
        self.proc = subprocess.Popen(
            [sys.executable, *launcher, *port_args, *args],
            cwd=cwd,
            umask=umask,
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
        if port is not None or not tcp:
            self.port = port or 0
            return
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

    def connect(self, timeout: float = 15.0) -> smtplib.SMTP:
        """An SMTP client connected to the server (greeted), retrying until it listens."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return smtplib.SMTP(
                    "127.0.0.1", self.port, local_hostname="client.example", timeout=10
                )
            except ConnectionRefusedError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"exited with {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

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
def cli_server(
    *args: str,
    port: int | None = None,
    cwd: Path | None = None,
    launcher: Sequence[str] = ("-m", "smtpd_trio"),
    tcp: bool = True,
    umask: int = -1,
) -> Iterator[Server]:
    server = Server(*args, port=port, cwd=cwd, launcher=launcher, tcp=tcp, umask=umask)
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
    assert all(RFC3339_UTC_MS.fullmatch(entry["time"]) for entry in entries), entries
    closes = [e for e in entries if e.get("event") == "close"]
    assert len(closes) == 1
    close = closes[0]
    cid = close["connection_id"]
    assert re.fullmatch(r"[0-9a-f]+", cid)
    # The connection's one INFO line names the client: its fields and its text agree.
    assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", close["client"]), close
    assert close["peer"] == close["client"]
    assert (close["reason"], close["messages"]) == ("quit", 1)
    assert isinstance(close["duration"], float), close
    assert 0 <= close["duration"] < 60, close
    assert close["message"] == (
        f"closed (quit) after 1 message(s): client {close['client']}, {close['duration']:.3f} s"
    )
    about_it = [e for e in entries if e.get("connection_id") == cid]
    assert [e["message"].split()[0] for e in about_it] == ["message", "closed"], about_it
    assert any("graceful shutdown" in e["message"] for e in entries)


def _free_port() -> int:
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


@pytest.mark.parametrize(
    ("size", "advertised", "limit"),
    [("10M", "10485760", 10 * 1024 * 1024), ("512K", "524288", 512 * 1024), ("0", "", None)],
)
def test_max_message_size_takes_k_m_g_and_0_for_no_limit(
    size: str, advertised: str, limit: int | None
) -> None:
    line = b"x" * 998 + b"\r\n"
    with cli_server("--handler", "sink", "--max-message-size", size) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            assert smtp.esmtp_features["size"] == advertised
            if limit is None:
                # Beyond the default limit (10240000 octets): accepted.
                big = b"Subject: big\r\n\r\n" + line * (10_240_000 // len(line) + 100)
                assert smtp.sendmail("a@example.com", ["b@example.org"], big) == {}
            elif limit < 1024 * 1024:
                big = b"Subject: big\r\n\r\n" + line * (limit // len(line) + 1)
                with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                    smtp.sendmail("a@example.com", ["b@example.org"], big)
                assert refused.value.smtp_code == 552
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("10240000", 10_240_000),
        ("512K", 512 * 1024),
        ("512k", 512 * 1024),
        ("10M", 10 * 1024 * 1024),
        ("1G", 1024**3),
        (" 2m ", 2 * 1024 * 1024),
    ],
)
def test_size_values(text: str, value: int) -> None:
    assert _size(text) == value


@pytest.mark.parametrize(
    "flags", [["-q"], ["--quiet"], ["--log-level", "warning"], ["--log-level", "WARNING"]]
)
def test_quiet_logs_warnings_only(flags: list[str]) -> None:
    with cli_server(
        "--handler", "sink", "--max-connections", "1", *flags, port=_free_port()
    ) as server:
        with server.connect() as first:  # holds the only connection slot: a full server
            server.wait_for("under stress")
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
                assert second.recv(100).startswith(b"421 ")  # refused: an INFO line, not shown
            first.noop()
        status = server.stop()
    assert status == 0
    assert server.lines
    for line in server.lines:
        assert " WARNING " in line, line  # no "listening on", no connection, no shutdown lines


def test_log_level_error_hides_warnings() -> None:
    args = ["--handler", "sink", "--max-connections", "1", "--log-level", "error"]
    with cli_server(*args, port=_free_port()) as server:
        with (
            server.connect(),
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as second,
        ):
            # The warning is logged before the 421 is sent: it would be written by now.
            assert second.recv(100).startswith(b"421 ")
        status = server.stop()  # and anything logged is written before the process ends
    assert status == 0
    assert server.lines == []


@pytest.mark.parametrize("flags", [["-v"], ["-vv"], ["--verbose"], ["--log-level", "debug"]])
def test_debug_logs_refused_commands(flags: list[str]) -> None:
    with cli_server("--handler", "sink", *flags) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            assert smtp.docmd("FROBNICATE")[0] == 500
        line = server.wait_for("FROBNICATE")
        assert " DEBUG smtpd_trio.session: [" in line
        assert "-> 500" in line
        assert server.stop() == 0


def test_info_does_not_log_refused_commands() -> None:
    with cli_server("--handler", "sink", "--log-level", "info") as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            assert smtp.docmd("FROBNICATE")[0] == 500
        server.wait_for("closed (quit)")
        assert server.stop() == 0
    assert not any("FROBNICATE" in line or " DEBUG " in line for line in server.lines)


def test_ignored_host_logs_no_connection_lines() -> None:
    # -v: the "connection from" line is DEBUG.
    with cli_server("--handler", "sink", "--ignored-host", "127.0.0.1", "-v") as server:
        deliver(server.port, b"Subject: health check\r\n\r\nx\r\n")
        server.wait_for("accepted")  # the message itself is still logged
        status = server.stop()  # the session has ended and its lines are written
    assert status == 0
    assert not any("connection from" in line for line in server.lines), server.lines
    assert not any("closed (" in line for line in server.lines), server.lines


@pytest.mark.skipif(sys.platform != "linux", reason="connects from 127.0.0.2")
def test_ignored_host_is_only_the_given_network() -> None:
    with cli_server("--handler", "sink", "--ignored-host", "127.0.0.2/32", "-v") as server:
        for source in ("127.0.0.2", "127.0.0.1"):
            with smtplib.SMTP(
                "127.0.0.1", server.port, timeout=10, source_address=(source, 0)
            ) as smtp:
                assert smtp.sendmail("a@example.com", ["b@example.org"], b"x\r\n") == {}
        server.wait_for("closed (quit)")
        status = server.stop()
    assert status == 0
    assert sum("accepted" in line for line in server.lines) == 2
    assert sum("connection from 127.0.0.1:" in line for line in server.lines) == 1
    assert not any("connection from 127.0.0.2" in line for line in server.lines)
    assert sum("closed (quit)" in line for line in server.lines) == 1
    assert sum("client 127.0.0.1:" in line for line in server.lines) == 1


def test_second_signal_stops_at_once_and_every_line_is_written() -> None:
    with cli_server("--handler", "sink") as server:
        smtp = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
        try:
            smtp.ehlo("client.example")
            smtp.mail("a@example.com")  # an open transaction: a graceful shutdown waits for it
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for("graceful shutdown")
            status = server.stop()  # the second SIGTERM
        finally:
            smtp.close()
    assert status == 0
    assert any("second SIGTERM: stopping now" in line for line in server.lines)
    assert server.lines[-1].endswith("INFO smtpd_trio.cli: stopped")


STRUCTURED_LOGGING = """
import logging
from smtpd_trio.cli import _setup_logging

_setup_logging(logging.INFO, "json")
log = logging.getLogger("smtpd_trio.session")
log.info(
    "[5eed1] message 5eed1.1 accepted: from=<a@example.com> rcpts=1 size=42",
    extra={"smtpd": {
        "connection_id": "5eed1", "event": "message-accepted", "sender": "a@example.com",
        "recipients": ["b@example.org"], "size": 42, "reply_code": 250, "level": "bogus",
    }},
)
log.debug("not at INFO")
log.warning("[5eed1] too many errors; closing")
"""


def test_json_structured_fields_through_the_cli_logging() -> None:
    # The CLI's own logging set-up in a real process; nothing is flushed by hand, so this
    # also shows that what is buffered is written when the process exits.
    result = subprocess.run(
        [sys.executable, "-c", STRUCTURED_LOGGING],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stderr.splitlines())
    assert RFC3339_UTC_MS.fullmatch(first.pop("time"))
    assert first == {
        "level": "info",
        "logger": "smtpd_trio.session",
        "connection_id": "5eed1",
        "event": "message-accepted",
        "sender": "a@example.com",
        "recipients": ["b@example.org"],
        "size": 42,
        "reply_code": 250,
        "message": "message 5eed1.1 accepted: from=<a@example.com> rcpts=1 size=42",
    }
    assert list(first)[:3] == ["level", "logger", "connection_id"]
    del second["time"]
    assert second == {
        "level": "warning",
        "logger": "smtpd_trio.session",
        "connection_id": "5eed1",
        "message": "too many errors; closing",
    }


# ---- the limits that keep the server safe on an open port -----------------------------------


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--max-connections-per-ip", "3"], "max_connections_per_client", 3),
        (["--max-connections-per-ip", "0"], "max_connections_per_client", None),
        (["--max-connection-rate", "30"], "max_connection_rate", 30),
        (["--client-ipv6-prefix", "56"], "client_ipv6_prefix", 56),
        (["--max-messages-per-session", "5"], "max_messages_per_session", 5),
        (["--max-commands-per-session", "0"], "max_commands_per_session", None),
        (["--max-junk-commands", "7"], "max_junk_commands", 7),
        (["--min-data-rate", "2000"], "min_data_rate", 2000),
        (["--min-data-rate", "0"], "min_data_rate", None),
        (["--max-session-duration", "600"], "max_session_duration", 600.0),
        (["--handler-timeout", "30"], "handler_timeout", 30.0),
        (["--handler-timeout", "0"], "handler_timeout", None),
        (["--stress-timeout", "0"], "stress_timeout", None),
        (["--greet-pause", "2.5"], "greet_pause", 2.5),
        (["--max-buffered-bytes", "64M"], "max_buffered_bytes", 64 * 1024 * 1024),
        (["--refusal-log-interval", "10"], "refusal_log_interval", 10.0),
        (["--nul-octets", "keep"], "nul_octets", NulOctets.KEEP),
    ],
)
def test_each_limit_flag_sets_its_config_field(argv: list[str], field: str, value: object) -> None:
    config = _config(build_parser().parse_args(argv))
    assert getattr(config, field) == value
    # Every other limit keeps its default.
    default = Config(hostname=config.hostname)
    for flag, other, *_ in _LIMITS:
        if other != field:
            assert getattr(config, other) == getattr(default, other), flag


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-connections-per-ip", "-1"], "--max-connections-per-ip"),
        (["--min-data-rate", "fast"], "--min-data-rate"),
        (["--greet-pause", "-3"], "--greet-pause"),
        (["--client-ipv6-prefix", "8"], "--client-ipv6-prefix"),
        (["--max-buffered-bytes", "lots"], "--max-buffered-bytes"),
        (["--nul-octets", "strip"], "--nul-octets"),
    ],
)
def test_bad_limit_values_exit_2_naming_the_flag(args: list[str], words: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("smtpd-trio: error: ")
    assert words in line


def test_connections_per_ip_from_the_command_line() -> None:
    with cli_server("--handler", "sink", "--max-connections-per-ip", "1") as server:
        with server.connect() as first:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
                assert second.recv(200).startswith(b"421 4.7.0 Too many connections from your")
            first.noop()
        status = server.stop()
    assert status == 0


# ---- --unix and --lmtp --------------------------------------------------------------------------


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for sockets (pytest's tmp_path can exceed sun_path's 108 octets)."""
    with tempfile.TemporaryDirectory(prefix="st-") as name:
        yield Path(name)


def lmtp_over_unix(path: Path, rcpts: Sequence[str]) -> list[tuple[int, bytes]]:
    """One message over LMTP on the UNIX socket; the reply for each recipient (smtplib reads
    only the first itself: CPython gh-76984)."""
    with smtplib.LMTP(str(path), local_hostname="mta.test", timeout=10) as lmtp:
        assert lmtp.ehlo()[0] == 250  # LHLO
        assert lmtp.mail("a@example.com")[0] == 250
        for rcpt in rcpts:
            assert lmtp.rcpt(rcpt)[0] == 250
        answers = [lmtp.data("Subject: over LMTP\r\n\r\nHello.\r\n")]
        return answers + [lmtp.getreply() for _ in rcpts[1:]]


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_unix_alone_serves_lmtp_there_only(sockdir: Path, tmp_path: Path, umask: int) -> None:
    path = sockdir / "lmtp.sock"
    maildir = tmp_path / "box"
    args = ["--unix", str(path), "--lmtp", "--handler", f"maildir:{maildir}"]
    with cli_server(*args, tcp=False, umask=umask) as server:
        line = server.wait_for("listening on")
        assert line.endswith(f"listening on unix:{path}")
        answers = lmtp_over_unix(path, ["b@example.org", "c@example.org"])
        assert [code for code, _ in answers] == [250, 250]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        server.wait_for("accepted")
        assert server.stop() == 0
    assert not any("listening on 127.0.0.1" in line for line in server.lines)
    assert not path.exists()  # removed at shutdown
    (stored,) = list((maildir / "new").iterdir())
    assert b" with LMTP id " in stored.read_bytes()


def test_unix_with_port_serves_both(sockdir: Path) -> None:
    path = sockdir / "smtp.sock"
    with cli_server("--unix", str(path), "--unix-mode", "600", "--handler", "sink") as server:
        server.wait_for(f"listening on unix:{path}")
        deliver(server.port, b"Subject: over TCP\r\n\r\nx\r\n")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            assert sock.recv(1000).startswith(b"220 ")
            sock.sendall(b"LHLO x.test\r\nQUIT\r\n")
            assert b"500 5.5.2" in sock.recv(1000)  # SMTP here: LHLO is unknown
        assert server.stop() == 0


def test_a_stale_socket_is_replaced_and_a_file_left_alone(sockdir: Path) -> None:
    path = sockdir / "s"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with cli_server("--unix", str(path), "--lmtp", "--handler", "sink", tcp=False) as server:
        server.wait_for("listening on unix:")
        assert lmtp_over_unix(path, ["b@example.org"])[0][0] == 250
        # A second server on the same socket is refused: it is in use.
        line = assert_one_line_error(["--unix", str(path)])
        assert line == (
            f"smtpd-trio: error: argument --unix: cannot listen on {str(path)!r}: a server is "
            "listening on this socket"
        )
        assert server.stop() == 0
    path.write_text("not a socket")
    line = assert_one_line_error(["--unix", str(path)])
    assert line == (
        f"smtpd-trio: error: argument --unix: cannot listen on {str(path)!r}: exists and is "
        "not a socket (not removed)"
    )
    assert path.read_text() == "not a socket"


@pytest.mark.parametrize(
    ("argv", "hosts", "port", "unix", "mode"),
    [
        ([], ["127.0.0.1"], 8025, [], 0o660),
        (["--lmtp"], ["127.0.0.1"], 8024, [], 0o660),
        (["--lmtp", "--port", "2424"], ["127.0.0.1"], 2424, [], 0o660),
        (["--unix", "/run/a.sock"], [], 8025, ["/run/a.sock"], 0o660),
        (["--unix", "/a", "--unix", "/b", "--unix-mode", "0o666"], [], 8025, ["/a", "/b"], 0o666),
        (["--unix", "/a", "--port", "2525"], ["127.0.0.1"], 2525, ["/a"], 0o660),
        (["--unix", "/a", "--host", "::1", "--lmtp"], ["::1"], 8024, ["/a"], 0o660),
    ],
)
def test_where_to_listen(
    argv: list[str], hosts: list[str], port: int, unix: list[str], mode: int
) -> None:
    where = _listen_on(build_parser().parse_args(argv))
    assert (list(where.hosts), where.port, list(where.unix), where.unix_mode) == (
        hosts,
        port,
        unix,
        mode,
    )


def test_lmtp_option_sets_the_config() -> None:
    config = _config(build_parser().parse_args(["--lmtp"]))
    assert config.lmtp
    assert config.smtp.greeting.text.endswith(" LMTP smtpd-trio ready")


# ---- XCLIENT and XFORWARD ---------------------------------------------------------------------


def test_xclient_and_xforward_flags_set_their_networks() -> None:
    argv = ["--xclient", "10.0.1.0/24", "--xclient", "2001:db8::25", "--xforward", "127.0.0.1"]
    config = _config(build_parser().parse_args(argv))
    assert [str(n) for n in config.xclient_hosts] == ["10.0.1.0/24", "2001:db8::25/128"]
    assert [str(n) for n in config.xforward_hosts] == ["127.0.0.1/32"]
    default = _config(build_parser().parse_args([]))
    assert not default.xclient_hosts
    assert not default.xforward_hosts


def test_xclient_from_the_command_line() -> None:
    with cli_server("--handler", "sink", "--xclient", "127.0.0.1") as server:
        with server.connect() as smtp:
            code, text = smtp.ehlo("proxy.test")
            assert code == 250
            assert b"XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT" in text
            assert b"XFORWARD" not in text
            assert smtp.docmd("XCLIENT", "ADDR=192.0.2.7 NAME=client.test")[0] == 220
            assert smtp.docmd("XFORWARD", "ADDR=192.0.2.7")[0] == 550
            line = server.wait_for("XCLIENT from 127.0.0.1:")
        status = server.stop()
    assert status == 0
    assert line.endswith("client 192.0.2.7 (name=client.test helo=None login=None)")


# ---- the extensions: DSN, REQUIRETLS, reverse DNS ----------------------------------------------


def test_extensions_are_off_unless_asked_for() -> None:
    config = _config(build_parser().parse_args([]))
    assert (config.dsn, config.requiretls, config.reverse_dns) == (False, False, False)
    assert config.reverse_dns_timeout == 2.0


def test_extension_flags_set_their_config_fields() -> None:
    config = _config(
        build_parser().parse_args(["--dsn", "--reverse-dns", "--reverse-dns-timeout", "0.5"])
    )
    assert config.dsn
    assert config.reverse_dns
    assert config.reverse_dns_timeout == 0.5


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--requiretls"], "--requiretls needs --tls-cert"),
        (["--reverse-dns-timeout", "1"], "--reverse-dns-timeout needs --reverse-dns"),
        (
            ["--reverse-dns", "--reverse-dns-timeout", "0"],
            "argument --reverse-dns-timeout: must be a positive number of seconds: '0'",
        ),
    ],
)
def test_extension_flags_that_need_another(args: list[str], line: str) -> None:
    assert assert_one_line_error(args) == f"smtpd-trio: error: {line}"


def test_real_run_with_dsn_and_reverse_dns(tmp_path: Path) -> None:
    """DSN parameters pass, the EHLO says DSN and LIMITS, and the Received header names the
    client as the system resolver finds 127.0.0.1 (or "unknown")."""
    maildir = tmp_path / "box"
    args = ("--handler", f"maildir:{maildir}", "--dsn", "--reverse-dns", "--max-recipients", "5")
    with cli_server(*args) as server:
        with server.connect() as smtp:
            smtp.ehlo()
            assert smtp.has_extn("dsn")
            assert smtp.esmtp_features["limits"] == "RCPTMAX=5 MAILMAX=10000"
            refused = smtp.sendmail(
                "a@example.com",
                ["b@example.org"],
                b"Subject: dsn\r\n\r\nx\r\n",
                mail_options=["RET=HDRS", "ENVID=QQ314159"],
                rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.org"],
            )
            assert refused == {}
        server.wait_for("accepted")
        assert server.stop() == 0
    (stored,) = list((maildir / "new").iterdir())
    received = email.message_from_bytes(stored.read_bytes())["Received"]
    assert re.search(r"from client\.example \((localhost|unknown) \[127\.0\.0\.1\]\)", received)
