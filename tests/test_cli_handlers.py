"""``--handler``: your own handler as MODULE:ATTR, mbox:PATH and relay:HOST:PORT, as real
processes; every mistake one line naming --handler."""

from __future__ import annotations

import mailbox
import re
import smtplib
import sys
from pathlib import Path

import pytest
from test_cli import _free_port, assert_one_line_error, cli_server, deliver
from test_handlers import HANDLERS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGTERM")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with my_handlers.py in it, as a user's project would be."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "my_handlers.py").write_text(HANDLERS)
    return directory


def got(project: Path) -> list[str]:
    path = project / "got.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("target", ["my_handlers:Recording", "my_handlers:recording"])
def test_a_class_a_factory_or_an_instance_from_the_current_directory(
    project: Path, target: str
) -> None:
    with cli_server("--handler", target, cwd=project) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            refused = smtp.sendmail(
                "a@example.com", ["b@example.org", "nobody@example.org"], b"Subject: x\r\n\r\nx\r\n"
            )
        assert refused == {"nobody@example.org": (550, b"5.1.1 No such user here")}
        server.wait_for("accepted")
        assert server.stop() == 0
    assert [line.split()[1] for line in got(project)] == ["a@example.com"]


def test_the_installed_script_also_finds_the_module_in_the_current_directory(
    project: Path, tmp_path: Path
) -> None:
    # Like the smtpd-trio console script: a script elsewhere, so sys.path[0] is not the
    # current directory, unlike with python -m.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "smtpd-trio"
    script.write_text("from smtpd_trio.cli import main\nmain()\n")
    with cli_server(
        "--handler", "my_handlers:Subjects", cwd=project, launcher=(str(script),)
    ) as server:
        deliver(server.port, b"Subject: from the script\r\n\r\nx\r\n")
        server.wait_for("accepted")
        assert server.stop() == 0
    assert (project / "subjects.txt").read_text() == "from the script\n"


def test_every_worker_imports_the_handler(project: Path) -> None:
    port = _free_port()
    with cli_server(
        "--workers", "2", "--handler", "my_handlers:Recording", cwd=project, port=port
    ) as server:
        server.wait_for("listening on")
        server.wait_for("listening on")
        for _ in range(20):
            deliver(port, b"Subject: spread\r\n\r\nx\r\n")
        for _ in range(20):
            server.wait_for("accepted")
        assert server.stop() == 0
    pids = {line.split()[0] for line in got(project)}
    assert len(got(project)) == 20
    assert len(pids) == 2  # the kernel spread 20 connections over both workers


@pytest.mark.parametrize(
    ("target", "line"),
    [
        (
            "no_such_module:Handler",
            "argument --handler: cannot import 'no_such_module' for 'no_such_module:Handler': "
            "no module named 'no_such_module'",
        ),
        (
            "my_handlers:Recordin",
            "argument --handler: 'my_handlers' has no attribute 'Recordin' (did you mean "
            "'Recording'?)",
        ),
        (
            "my_handlers:not_a_handler",
            "argument --handler: 'my_handlers:not_a_handler': the factory gave str, not a "
            "handler (no callback such as on_data; subclass smtpd_trio.Handler)",
        ),
        (
            # The server's own handler check (a TypeError when it is built), as one line.
            "my_handlers:SyncData",
            "argument --handler: 'my_handlers:SyncData' is not a usable handler: "
            "SyncData.on_data must be an async function: async def on_data(self, ...)",
        ),
    ],
)
@pytest.mark.parametrize("workers", [[], ["--workers", "2", "--port", "2525"]])
def test_a_handler_that_cannot_be_used_is_one_line(
    project: Path, target: str, line: str, workers: list[str]
) -> None:
    # (Every other way a MODULE:ATTR can fail is in tests/test_handlers.py, without processes.)
    got_line = assert_one_line_error(["--handler", target, *workers], cwd=project)
    assert got_line == f"smtpd-trio: error: {line}"


# ---- mbox:PATH ------------------------------------------------------------------------------


def test_mbox_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    with cli_server("--handler", f"mbox:{path}", "--hostname", "mx.test") as server:
        deliver(server.port, b"Subject: one\r\n\r\nFrom the CLI\r\n")
        deliver(server.port, b"Subject: two\r\n\r\nsecond\r\n")
        server.wait_for("accepted")
        server.wait_for("accepted")
        assert server.stop() == 0
    data = path.read_bytes()
    assert re.match(rb"From a@example.com \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", data)
    assert b"\n>From the CLI\n\n" in data
    assert not (tmp_path / "inbox.lock").exists()
    box = mailbox.mbox(path, create=False)
    try:
        assert [m["Subject"] for m in box] == ["one", "two"]
    finally:
        box.close()


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ("mbox", "argument --handler: mbox needs a file: --handler mbox:PATH"),
        ("mbox:", "argument --handler: mbox needs a file: --handler mbox:PATH"),
        ("sink:extra", "argument --handler: sink takes no argument: --handler sink"),
    ],
)
def test_mbox_and_builtin_spec_errors(spec: str, line: str) -> None:
    assert assert_one_line_error(["--handler", spec]) == f"smtpd-trio: error: {line}"


def test_an_mbox_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    line = assert_one_line_error(["--handler", f"mbox:{tmp_path}/missing/box"])
    assert line == (
        f"smtpd-trio: error: argument --handler: cannot use 'mbox:{tmp_path}/missing/box': "
        f"No such file or directory: '{tmp_path}/missing/box'"
    )


# ---- relay:HOST:PORT ------------------------------------------------------------------------


def test_relay_from_the_command_line_to_another_server(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    with cli_server("--handler", f"mbox:{path}", "--hostname", "upstream.test") as upstream:
        relay_spec = f"relay:127.0.0.1:{upstream.port}"
        with cli_server("--handler", relay_spec, "--hostname", "relay.test") as relay:
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as smtp:
                smtp.ehlo("client.example")
                smtp.sendmail("a@example.com", ["b@example.org"], b"Subject: relayed\r\n\r\nhi\r\n")
            relay.wait_for("accepted")
            assert relay.stop() == 0
        upstream.wait_for("accepted")
        assert upstream.stop() == 0
    data = path.read_bytes()
    # Two Received headers: the upstream's (the relay as its client), then the relay's own.
    received = re.findall(rb"\nReceived: from (\S+) \(\[([^\]]+)\]\)\n\tby (\S+) ", data)
    assert received == [
        (b"relay.test", b"127.0.0.1", b"upstream.test"),
        (b"client.example", b"127.0.0.1", b"relay.test"),
    ]
    assert data.endswith(b"\nSubject: relayed\n\nhi\n\n")


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        (
            "relay:mx.example",
            "relay needs HOST:PORT (an IPv6 address in brackets), optionally followed by "
            ":no-verify: --handler relay:HOST:PORT, not 'relay:mx.example'",
        ),
        (
            "relay:::1:25",
            "relay: write an IPv6 address in brackets, as in relay:[::1]:25, not 'relay:::1:25'",
        ),
    ],
)
def test_relay_spec_errors(spec: str, line: str) -> None:
    # (The other malformed relay specs are in tests/test_handlers.py, without processes.)
    assert assert_one_line_error(["--handler", spec]) == (
        f"smtpd-trio: error: argument --handler: {line}"
    )
