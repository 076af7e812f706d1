"""The ready-made handlers: Maildir, Debugging, Sink, and from_spec."""

from __future__ import annotations

import email
import io
import os
import time
from pathlib import Path

import pytest

from smtpd_trio import Config, ConfigError
from smtpd_trio.handlers import Debugging, Maildir, Sink, from_spec
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


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("maildir", "directory"),
        ("maildir:", "directory"),
        ("nope", "unknown handler 'nope'"),
        ("", "unknown handler"),
        ("sink:extra", "unknown handler"),
        ("Debugging", "unknown handler"),
    ],
)
def test_from_spec_errors(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        from_spec(spec)
    assert isinstance(info.value, ValueError)


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
