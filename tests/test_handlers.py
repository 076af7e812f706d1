"""The ready-made handlers: Maildir, Debugging, Sink, and from_spec."""

from __future__ import annotations

import email
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpd_trio import Config, ConfigError, Handler, MessageHandler
from smtpd_trio.handlers import Debugging, Maildir, Mbox, Relay, Sink, from_spec, load_handler
from smtpd_trio.testing import open_test_session

MESSAGE = b"From: a@example.com\r\nSubject: stored\r\n\r\nBody line.\r\n.leading dot\r\n"


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


async def test_maildir_delivers_into_new_with_a_received_header(tmp_path: Path) -> None:
    maildir = tmp_path / "Mail"
    handler = Maildir(maildir)
    assert {p.name for p in files(maildir)} == {"tmp", "new", "cur"}
    async with open_test_session(handler) as client:
        assert (await client.command("EHLO client.example")).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
        reply = await client.sendmail("c@example.com", ["d@example.org"], b"second\r\n")
        assert reply.code == 250
    stored = files(maildir / "new")
    assert len(stored) == 2
    assert files(maildir / "tmp") == []
    assert files(maildir / "cur") == []
    contents = sorted(p.read_bytes() for p in stored)
    first = next(c for c in contents if c.endswith(MESSAGE))
    header, _, rest = first.partition(b"From: a@example.com")
    assert b"From: a@example.com" + rest == MESSAGE
    assert header.startswith(b"Received: from client.example ([192.0.2.1])\r\n")
    assert b"\tfor <b@example.org>;\r\n" in header
    parsed = email.message_from_bytes(first)
    assert parsed["Subject"] == "stored"
    assert "[192.0.2.1]" in parsed["Received"]


async def test_maildir_stores_nothing_for_a_message_refused_by_size(tmp_path: Path) -> None:
    handler = Maildir(tmp_path)
    config = Config(hostname="mx.test", max_message_size=100)
    async with open_test_session(handler, config=config) as client:
        assert (await client.command("EHLO client.example")).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"y" * 60 + b"\r\n" * 30)
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
    assert files(tmp_path / "new") == []
    assert files(tmp_path / "tmp") == []


def test_maildir_removes_left_over_tmp_files_older_than_36_hours(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    old = tmp_path / "tmp" / "1.M1P1Q1.host"
    young = tmp_path / "tmp" / "2.M2P2Q2.host"
    old.write_bytes(b"half a message")
    young.write_bytes(b"being written by another process")
    long_ago = time.time() - 37 * 3600
    os.utime(old, (long_ago, long_ago))
    handler = Maildir(tmp_path)
    assert handler.removed_stale == 1
    assert files(tmp_path / "tmp") == [young]
    assert Maildir(tmp_path, stale_after=0).removed_stale == 1
    assert files(tmp_path / "tmp") == []


async def test_maildir_writes_header_and_message_even_in_small_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # writev may write less than asked: the rest must follow, in order, whatever the split.
    real_writev = os.writev

    def stingy_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_writev(fd, [buffers[0][:7]])

    monkeypatch.setattr(os, "writev", stingy_writev)
    handler = Maildir(tmp_path)
    body = b"".join(b"line %d\r\n" % i for i in range(500))
    async with open_test_session(handler) as client:
        assert (await client.command("EHLO client.example")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], body)).code == 250
    (stored,) = files(tmp_path / "new")
    data = stored.read_bytes()
    assert data.startswith(b"Received: from client.example ")
    assert data.endswith(b"\r\n" + body)


def test_from_spec_builds_each_handler(tmp_path: Path) -> None:
    assert isinstance(from_spec("debugging"), Debugging)
    assert isinstance(from_spec("sink"), Sink)
    maildir = from_spec(f"maildir:{tmp_path / 'box'}")
    assert isinstance(maildir, Maildir)
    assert maildir.path == tmp_path / "box"
    assert (tmp_path / "box" / "new").is_dir()
    mbox = from_spec(f"mbox:{tmp_path / 'inbox'}")
    assert isinstance(mbox, Mbox)
    assert mbox.path == tmp_path / "inbox"
    assert (tmp_path / "inbox").is_file()


@pytest.mark.parametrize(
    ("spec", "host", "port", "verified"),
    [
        ("relay:127.0.0.1:2525", "127.0.0.1", 2525, True),
        ("relay:mx.example.org:25", "mx.example.org", 25, True),
        ("relay:[::1]:587", "::1", 587, True),
        ("relay:10.0.0.5:25:no-verify", "10.0.0.5", 25, False),
        ("relay:[2001:db8::25]:25:no-verify", "2001:db8::25", 25, False),
    ],
)
def test_from_spec_relay(spec: str, host: str, port: int, verified: bool) -> None:
    relay = from_spec(spec)
    assert isinstance(relay, Relay)
    assert (relay.host, relay.port) == (host, port)
    assert relay.tls_context is not None
    assert relay.tls_context.check_hostname is verified


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("maildir", "directory"),
        ("maildir:", "directory"),
        ("mbox", "mbox needs a file"),
        ("nope", "unknown handler 'nope'"),
        ("", "unknown handler"),
        ("sink:extra", "sink takes no argument"),
        ("debugging:", "debugging takes no argument"),
        ("Debugging", "unknown handler"),
        ("relay", "relay needs HOST:PORT"),
        ("relay:", "relay needs HOST:PORT"),
        ("relay:[::1]", "relay needs HOST:PORT"),
        ("relay::25", "no host"),
        ("relay: :25", "no host"),
        ("relay:[::1]:0", "the port must be a number within 1-65535, not '0'"),
        ("relay:mx.example:smtp", "the port must be a number within 1-65535, not 'smtp'"),
        ("relay:mx.example:70000", "the port must be a number within 1-65535, not '70000'"),
        ("relay:::1:25", "write an IPv6 address in brackets"),
        (
            "relay:mx.example:25:noverify",
            "unknown option 'noverify' \\(the only one is no-verify\\)",
        ),
        ("my-module:X", "unknown handler"),
    ],
)
def test_from_spec_errors(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        from_spec(spec)
    assert isinstance(info.value, ValueError)


# ---- your own handler: module:attr ----------------------------------------------------------

HANDLERS = '''
import os
from pathlib import Path

from smtpd_trio import Handler, MessageHandler, Reject


class Recording(Handler):
    """Appends one line per message to got.txt in the current directory."""

    async def on_rcpt(self, session, envelope, address, params):
        if address.startswith("nobody@"):
            raise Reject(550, "5.1.1", "No such user here")

    async def on_data(self, session, message):
        line = f"{os.getpid()} {message.envelope.mail_from} {len(message.content)}\\n"
        with open("got.txt", "a") as f:
            f.write(line)


class Subjects(MessageHandler):
    async def on_message(self, session, message, parsed):
        with open("subjects.txt", "a") as f:
            f.write(str(parsed["Subject"]) + "\\n")


def make_recording():
    return Recording()


recording = Recording()


class NeedsAPath(Handler):
    def __init__(self, path):
        self.path = path


class SyncData(Handler):
    def on_data(self, session, message):
        return None


class Nothing:
    pass


class DuckTyped:
    async def on_data(self, session, message):
        return None


def not_a_handler():
    return "handler"


async def async_factory():
    return Recording()


class Holder:
    inner = Recording()


class ExplodingFactory:
    def __init__(self):
        raise RuntimeError("no database at db.example:5432")
'''


@pytest.fixture
def handler_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """my_handlers.py and friends on sys.path; forgotten again afterwards."""
    (tmp_path / "my_handlers.py").write_text(HANDLERS)
    (tmp_path / "broken_handlers.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "needs_a_dependency.py").write_text("import surely_not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("my_handlers", "broken_handlers", "needs_a_dependency"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("my_handlers:Recording", "Recording"),
        ("my_handlers:make_recording", "Recording"),
        ("my_handlers:recording", "Recording"),
        ("my_handlers:Holder.inner", "Recording"),
        ("my_handlers:Subjects", "Subjects"),
        ("my_handlers:DuckTyped", "DuckTyped"),
    ],
)
def test_load_handler_takes_a_class_a_factory_or_an_instance(
    handler_modules: Path, target: str, kind: str
) -> None:
    handler = from_spec(target)
    assert type(handler).__name__ == kind
    assert load_handler(target) is not None
    module = sys.modules["my_handlers"]
    if target == "my_handlers:recording":
        assert handler is module.recording
    if kind == "Subjects":
        assert isinstance(handler, MessageHandler)
    elif kind == "DuckTyped":
        assert not isinstance(handler, Handler)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "no_such_module:Handler",
            "cannot import 'no_such_module' for 'no_such_module:Handler': no module named "
            "'no_such_module'",
        ),
        (
            "my_handlers.sub:Handler",
            "cannot import 'my_handlers.sub' for 'my_handlers.sub:Handler': no module named "
            "'my_handlers.sub'",
        ),
        (
            "broken_handlers:Handler",
            "cannot import 'broken_handlers' for 'broken_handlers:Handler': RuntimeError: boom "
            "at import",
        ),
        (
            "needs_a_dependency:Handler",
            "cannot import 'needs_a_dependency' for 'needs_a_dependency:Handler': "
            "ModuleNotFoundError: No module named 'surely_not_installed_anywhere'",
        ),
        (
            "my_handlers:Recordin",
            "'my_handlers' has no attribute 'Recordin' (did you mean 'Recording'?)",
        ),
        ("my_handlers:Holder.outer", "'my_handlers.Holder' has no attribute 'outer'"),
        (
            "my_handlers:NeedsAPath",
            "'my_handlers:NeedsAPath': creating the handler failed (class called with no "
            "arguments): TypeError: NeedsAPath.__init__() missing 1 required positional "
            "argument: 'path'",
        ),
        (
            "my_handlers:ExplodingFactory",
            "'my_handlers:ExplodingFactory': creating the handler failed (class called with no "
            "arguments): RuntimeError: no database at db.example:5432",
        ),
        (
            "my_handlers:Nothing",
            "'my_handlers:Nothing': the class gave Nothing, not a handler (no callback such as "
            "on_data; subclass smtpd_trio.Handler)",
        ),
        (
            "my_handlers:not_a_handler",
            "'my_handlers:not_a_handler': the factory gave str, not a handler (no callback "
            "such as on_data; subclass smtpd_trio.Handler)",
        ),
        (
            "my_handlers:async_factory",
            "'my_handlers:async_factory' is an async function: a factory must be a plain "
            "function that returns the handler",
        ),
        (
            "my_handlers:__name__",
            "'my_handlers:__name__' is str, not a handler class, factory or instance",
        ),
        (
            "my_handlers:",
            "'my_handlers:' is not module:attr (as in mypackage.handlers:MyHandler)",
        ),
    ],
)
def test_load_handler_errors_are_one_line_naming_the_target(
    handler_modules: Path, target: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_spec(target)
    assert str(info.value) == message


async def test_debugging_prints_envelope_and_message() -> None:
    out = io.StringIO()
    async with open_test_session(Debugging(out)) as client:
        assert (await client.command("EHLO client.example")).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org", "c@example.org"], MESSAGE)
        assert reply.code == 250
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "---------- MESSAGE FOLLOWS ----------"
    assert lines[-1] == "------------ END MESSAGE ------------"
    assert "X-Peer: 192.0.2.1:40000" in lines
    assert "X-Helo: client.example" in lines
    assert "X-Mail-From: <a@example.com>" in lines
    assert "X-Rcpt-To: <b@example.org>, <c@example.org>" in lines
    assert f"X-Size: {len(MESSAGE)}" in lines
    assert "Received: from client.example ([192.0.2.1])" in lines
    assert "Subject: stored" in lines
    assert ".leading dot" in lines
    assert "\r" not in text


async def test_sink_accepts_everything() -> None:
    async with open_test_session(Sink()) as client:
        assert (await client.command("EHLO client.example")).code == 250
        for n in range(3):
            reply = await client.sendmail(f"a{n}@example.com", ["b@example.org"], b"gone\r\n")
            assert (reply.code, reply.enhanced) == (250, "2.0.0")
        assert (await client.command("QUIT")).code == 221
