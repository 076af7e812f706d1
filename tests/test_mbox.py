"""The mbox handler: mboxrd format, locking against other sessions and processes, rollback."""

from __future__ import annotations

import errno
import mailbox
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from smtpd_trio import Endpoint, Envelope, Message, Session
from smtpd_trio.handlers.mbox import Mbox, mboxrd_escape
from smtpd_trio.testing import open_test_session

SEPARATOR = re.compile(
    rb"^From (\S+) (Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    rb" [ 1-3]\d \d\d:\d\d:\d\d \d{4}$"
)


def separators(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.startswith(b"From ")]


async def deliver(handler: Mbox, sender: str, content: bytes, rcpt: str = "b@example.org") -> str:
    async with open_test_session(handler) as client:
        assert (await client.command("EHLO client.example")).code == 250
        return str(await client.sendmail(sender, [rcpt], content))


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        (b"From me\n", b">From me\n"),
        (b">From me\n", b">>From me\n"),
        (b">>From me\n", b">>>From me\n"),
        (b"a\nFrom x\n>From y\nFrom\nFromage\n From z\nx From w\n", None),
        (b"no such line\n", b"no such line\n"),
        (b"", b""),
        (b"From ", b">From "),
        (b"\n>>>From From From \n", b"\n>>>>From From From \n"),
    ],
)
def test_mboxrd_escape(text: bytes, escaped: bytes | None) -> None:
    if escaped is None:
        escaped = b"a\n>From x\n>>From y\nFrom\nFromage\n From z\nx From w\n"
    assert mboxrd_escape(text) == escaped
    # mboxrd is reversible: take one ">" off every line matching ^>+From .
    assert re.sub(rb"(?m)^>(>*From )", rb"\1", escaped) == text


async def test_messages_are_appended_in_mboxrd_format(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    handler = Mbox(path)
    assert path.read_bytes() == b""
    first = b"Subject: one\r\n\r\nFrom the start\r\n>From quoted\r\n.dot\r\n"
    assert await deliver(handler, "a@example.com", first) == "250 2.0.0 Message accepted"
    assert await deliver(handler, "", b"Subject: two\r\n\r\nbounce\r\n") == (
        "250 2.0.0 Message accepted"
    )
    data = path.read_bytes()
    assert b"\r" not in data
    one, two = data.split(b"\n\nFrom ")
    one_lines = one.split(b"\n")
    assert SEPARATOR.match(one_lines[0]), one_lines[0]
    assert one_lines[0].startswith(b"From a@example.com ")
    assert one_lines[1].startswith(b"Received: from client.example ([192.0.2.1])")
    assert one.endswith(b"\nSubject: one\n\n>From the start\n>>From quoted\n.dot")
    assert SEPARATOR.match(b"From " + two.split(b"\n")[0])
    assert two.startswith(b"MAILER-DAEMON ")
    assert two.endswith(b"\nSubject: two\n\nbounce\n\n")
    assert separators(data) == [one_lines[0], b"From " + two.split(b"\n")[0]]
    box = mailbox.mbox(path, create=False)
    try:
        subjects = [m["Subject"] for m in box]
    finally:
        box.close()
    assert subjects == ["one", "two"]


async def test_a_message_without_a_final_line_end_still_gets_a_blank_line(
    tmp_path: Path,
) -> None:
    handler = Mbox(tmp_path / "box")
    assert (await deliver(handler, "a@example.com", b"")).startswith("250 ")
    data = (tmp_path / "box").read_bytes()
    assert data.endswith(b"\n\n")
    assert not data.endswith(b"\n\n\n")


async def test_a_file_not_ending_in_a_blank_line_is_separated_first(tmp_path: Path) -> None:
    path = tmp_path / "box"
    path.write_bytes(b"From x@y Thu Jan  1 00:00:00 1970\nSubject: old\n\nno blank line after")
    handler = Mbox(path)
    assert (await deliver(handler, "a@example.com", b"Subject: new\r\n\r\nhi\r\n")).startswith(
        "250 "
    )
    data = path.read_bytes()
    assert b"no blank line after\n\nFrom a@example.com " in data
    assert len(separators(data)) == 2


@pytest.mark.parametrize("dotlock", [True, False])
async def test_concurrent_sessions_never_interleave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dotlock: bool
) -> None:
    path = tmp_path / "box"
    # Two handlers on the same file, as two servers in one process would have.
    handlers = [Mbox(path, dotlock=dotlock), Mbox(tmp_path / "." / "box", dotlock=dotlock)]
    # Small writes, so that deliveries would interleave if nothing kept them apart.
    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, buffers: real_writev(fd, [buffers[0][:1000]]))
    line = b"x" * 76 + b"\r\n"
    bodies = {n: b"Subject: %d\r\n\r\n" % n + (b"%03d " % n + line) * 3000 for n in range(12)}
    replies: list[str] = []

    async def one(n: int) -> None:
        replies.append(await deliver(handlers[n % 2], f"s{n}@example.com", bodies[n]))

    async with trio.open_nursery() as nursery:
        for n in bodies:
            nursery.start_soon(one, n)
    assert replies == ["250 2.0.0 Message accepted"] * len(bodies)
    data = path.read_bytes()
    entries = data.split(b"\n\nFrom ")
    assert len(entries) == len(bodies)
    seen = set()
    for entry in entries:
        match = re.match(rb"(From )?s(\d+)@example.com ", entry)
        assert match, entry[:80]
        n = int(match.group(2))
        seen.add(n)
        assert b"\nReceived: from client.example " in entry
        body = bodies[n].replace(b"\r\n", b"\n")
        assert entry.rstrip(b"\n").endswith(body.rstrip(b"\n"))
        assert data.count(b"\n%03d " % n) == 3000  # no piece of it anywhere else
    assert seen == set(bodies)


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.write(fd, b"From holder@example.com Thu Jan  1 00:00:00 1970\\n\\nheld\\n")
print("locked", flush=True)
sys.stdin.readline()
os.write(fd, b"released\\n\\n")
os.fsync(fd)
fcntl.lockf(fd, fcntl.LOCK_UN)
"""


class Watched:
    """Wraps ``Mbox._try_lock`` to tell when an attempt found the mailbox locked."""

    def __init__(self, handler: Mbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.found_locked = trio.Event()
        real = handler._try_lock
        token = trio.lowlevel.current_trio_token()

        def try_lock() -> object:
            held = real()
            if held is None:
                trio.from_thread.run_sync(self.found_locked.set, trio_token=token)
            return held

        monkeypatch.setattr(handler, "_try_lock", try_lock)


async def test_waits_for_another_process_holding_the_fcntl_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "box"
    handler = Mbox(path, dotlock=False)
    watched = Watched(handler, monkeypatch)
    holder = await trio.lowlevel.open_process(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        said = b""
        while not said.endswith(b"\n"):
            said += await holder.stdout.receive_some(100)
        assert said == b"locked\n"
        reply: list[str] = []
        async with trio.open_nursery() as nursery:

            async def deliver_one() -> None:
                reply.append(await deliver(handler, "a@example.com", b"Subject: mine\r\n\r\nx\r\n"))

            nursery.start_soon(deliver_one)
            await watched.found_locked.wait()
            assert b"mine" not in path.read_bytes()
            await holder.stdin.send_all(b"go\n")
        assert reply == ["250 2.0.0 Message accepted"]
    finally:
        with trio.move_on_after(5):
            await holder.wait()
        if holder.poll() is None:
            holder.kill()
            await holder.wait()
    data = path.read_bytes()
    assert data.index(b"released\n\nFrom a@example.com ") > 0
    assert data.endswith(b"Subject: mine\n\nx\n\n")


async def test_waits_for_a_dot_lock_and_removes_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "box"
    handler = Mbox(path)
    lock = tmp_path / "box.lock"
    lock.write_text("12345\n")
    watched = Watched(handler, monkeypatch)
    async with trio.open_nursery() as nursery:
        reply: list[str] = []

        async def deliver_one() -> None:
            reply.append(await deliver(handler, "a@example.com", b"Subject: x\r\n\r\nx\r\n"))

        nursery.start_soon(deliver_one)
        await watched.found_locked.wait()
        assert path.read_bytes() == b""
        lock.unlink()
    assert reply == ["250 2.0.0 Message accepted"]
    assert not lock.exists()
    # A dot-lock left over from a crash (older than stale_lock_age) is removed.
    lock.write_text("12345\n")
    long_ago = time.time() - 600
    os.utime(lock, (long_ago, long_ago))
    assert (await deliver(handler, "a@example.com", b"Subject: y\r\n\r\ny\r\n")).startswith("250 ")
    assert not lock.exists()
    assert len(separators(path.read_bytes())) == 2


async def test_a_mailbox_locked_too_long_is_450_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "box"
    handler = Mbox(path, lock_timeout=0.2)
    (tmp_path / "box.lock").write_text("12345\n")
    reply = await deliver(handler, "a@example.com", b"Subject: x\r\n\r\nx\r\n")
    assert reply == "450 4.2.0 Mailbox busy, try again later"
    assert path.read_bytes() == b""
    assert (tmp_path / "box.lock").read_text() == "12345\n"  # somebody else's: left alone


async def test_a_failed_write_is_truncated_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "box"
    handler = Mbox(path)
    assert (await deliver(handler, "a@example.com", b"Subject: kept\r\n\r\nx\r\n")).startswith(
        "250 "
    )
    before = path.read_bytes()
    real_writev = os.writev
    calls = 0

    def writev_then_full(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_writev(fd, [buffers[0][:10]])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", writev_then_full)
    reply = await deliver(handler, "a@example.com", b"Subject: lost\r\n\r\nx\r\n")
    assert reply == "451 4.3.0 Requested action aborted: could not store the message"
    assert path.read_bytes() == before
    assert not (tmp_path / "box.lock").exists()


async def test_a_delivery_cancelled_while_writing_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "box"
    handler = Mbox(path)
    path.write_bytes(b"From x@y Thu Jan  1 00:00:00 1970\n\nold\n\n")
    started = trio.Event()
    proceed = threading.Event()
    token = trio.lowlevel.current_trio_token()
    real_append = handler._append

    def slow_append(held: object, parts: list[bytes]) -> None:
        trio.from_thread.run_sync(started.set, trio_token=token)
        proceed.wait(10)
        real_append(held, parts)  # type: ignore[arg-type]

    monkeypatch.setattr(handler, "_append", slow_append)
    session = Session(
        id="c1", client=Endpoint("192.0.2.1", 1), peer=Endpoint("192.0.2.1", 1), hostname="mx"
    )
    message = Message(
        Envelope("c1-1", "a@example.com", rcpt_tos=("b@example.org",)),
        b"Subject: cancelled\r\n\r\nx\r\n",
        "Received: from x\r\n",
    )
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler.on_data, session, message)
            await started.wait()
            scope.cancel()
            proceed.set()
    assert scope.cancelled_caught
    assert path.read_bytes() == b"From x@y Thu Jan  1 00:00:00 1970\n\nold\n\n"
    assert not (tmp_path / "box.lock").exists()


def test_unusable_paths_are_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        Mbox(tmp_path)
    with pytest.raises(FileNotFoundError):
        Mbox(tmp_path / "missing" / "box")
    (tmp_path / "real").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError, match="Too many levels of symbolic links") as info:
        Mbox(tmp_path / "link")
    assert info.value.errno == errno.ELOOP


def test_a_dot_lock_needs_a_writable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "box").write_bytes(b"")
    real_access = os.access

    def no_writing_here(path: object, mode: int, **kwargs: object) -> bool:
        if Path(str(path)) == tmp_path and mode & os.W_OK:
            return False
        return real_access(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", no_writing_here)
    with pytest.raises(PermissionError, match="dot-lock") as info:
        Mbox(tmp_path / "box")
    assert info.value.filename == str(tmp_path / "box.lock")
    Mbox(tmp_path / "box", dotlock=False)
