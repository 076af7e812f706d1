"""Mbox: appends each message to a Unix mbox file, in the mboxrd format.

Each message is written as a ``From <sender> <date>`` separator line (the sender, or
``MAILER-DAEMON`` for the null sender ``<>``; the date in UTC, ``asctime`` style), the message
with its ``Received:`` header and Unix line ends (CRLF becomes LF), and a blank line. Lines of
the message that start with ``From `` after any number of ``>`` get one more ``>`` (mboxrd), so
no line of a message can be taken for a separator and a reader can undo the quoting exactly.

Locking, the way Postfix's local delivery agent does it on Linux (``mailbox_delivery_lock =
fcntl, dotlock``), because that is what mail readers and other delivery agents honour:

- a dot-lock: ``PATH.lock``, created with ``O_EXCL`` (on by default; it needs write access to
  the mbox's directory, so the handler refuses to start without it). A dot-lock older than
  :data:`STALE_LOCK_AGE` seconds is left over from a crash and is removed (Postfix's
  ``stale_lock_time``);
- an exclusive ``fcntl`` record lock (``lockf``) on the file itself;
- and, because ``fcntl`` locks belong to a process and so do not keep two deliveries of the
  same process apart, a lock per mbox file within the process: deliveries from several
  sessions (and several handlers on the same file) take their turn.

The locks are tried without blocking and retried until :attr:`Mbox.lock_timeout` seconds have
passed; then the client gets ``450 4.2.0 Mailbox busy, try again later``. The waiting happens on
the event loop (cancellable); the file work happens in worker threads. The message is written
with one ``writev`` and fsynced before the 250 is sent; if writing fails, or the session is
cancelled meanwhile (the client will then send it again), the file is truncated back to its
size before the delivery. A message that cannot be stored gets ``451 4.3.0``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Final, final

import attrs
import trio

from smtpd_trio._smtp.replies import Reply
from smtpd_trio.handler import Handler, Message, Session

__all__ = ["LOCK_TIMEOUT", "STALE_LOCK_AGE", "Mbox", "mboxrd_escape"]

log = logging.getLogger("smtpd_trio.handlers.mbox")

#: How long a delivery waits for the mailbox locks before answering 450.
LOCK_TIMEOUT: Final = 30.0
#: A dot-lock older than this many seconds is stale and removed (Postfix's stale_lock_time).
STALE_LOCK_AGE: Final = 500.0

_BUSY: Final = Reply(450, "4.2.0", "Mailbox busy, try again later")
_STORE_FAILED: Final = Reply(451, "4.3.0", "Requested action aborted: could not store the message")
_WHITESPACE: Final = re.compile(r"\s")

# One lock per mbox file (by its real path) for the deliveries of this process.
_process_locks: dict[str, trio.Lock] = {}


def mboxrd_escape(data: bytes) -> bytes:
    """``data`` (LF line ends) with ``>`` added before every line matching ``^>*From ``."""
    pos = data.find(b"From ")
    if pos < 0:
        return data
    out: list[bytes] = []
    start = 0
    while pos >= 0:
        line_start = pos
        while line_start > 0 and data[line_start - 1] == 0x3E:  # ">"
            line_start -= 1
        if line_start == 0 or data[line_start - 1] == 0x0A:  # at the start of a line
            out.append(data[start:line_start])
            out.append(b">")
            start = line_start
        pos = data.find(b"From ", pos + 5)
    if not out:
        return data
    out.append(data[start:])
    return b"".join(out)


def _entry(sender: str, received_header: str, content: bytes, when: float) -> list[bytes]:
    """The separator line, the escaped message and the blank line after it."""
    sender = _WHITESPACE.sub("_", sender) or "MAILER-DAEMON"
    separator = f"From {sender} {time.asctime(time.gmtime(when))}\n".encode()
    header = mboxrd_escape(received_header.encode("utf-8").replace(b"\r\n", b"\n"))
    body = mboxrd_escape(content.replace(b"\r\n", b"\n"))
    end = b"\n" if (body or header).endswith(b"\n") else b"\n\n"
    return [separator, header, body, end]


def _write_all(fd: int, parts: list[bytes]) -> None:
    views = [memoryview(part) for part in parts if part]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


class _Busy(Exception):
    """The mailbox stayed locked for lock_timeout seconds."""


@attrs.define
class _Held:
    """The mailbox, open and locked: its descriptor, its size before this delivery, and the
    dot-lock we created (if any)."""

    fd: int
    size: int
    dotlock: Path | None


@final
class Mbox(Handler):
    """Appends every accepted message to the mbox file at ``path`` (created if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dotlock: bool = True,
        lock_timeout: float = LOCK_TIMEOUT,
        stale_lock_age: float = STALE_LOCK_AGE,
    ) -> None:
        """Raises OSError if the file cannot be opened for appending (or created), is not a
        regular file (a symbolic link is refused too), or, with ``dotlock``, if its directory
        is not writable."""
        self.path = Path(path)
        self.dotlock = dotlock
        self.lock_timeout = lock_timeout
        self.stale_lock_age = stale_lock_age
        os.close(self._open())
        if dotlock and not os.access(self.path.parent, os.W_OK):
            raise PermissionError(
                errno.EACCES,
                "cannot create a dot-lock here (the directory is not writable)",
                str(self._dotlock_path),
            )
        real = os.path.realpath(self.path)
        self._process_lock = _process_locks.setdefault(real, trio.Lock())

    @property
    def _dotlock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(self.path))
        except BaseException:
            os.close(fd)
            raise
        return fd

    # ---- in worker threads -------------------------------------------------------------------

    def _remove_if_stale(self, dotlock: Path) -> None:
        try:
            age = time.time() - dotlock.stat().st_mtime
            if age > self.stale_lock_age:
                dotlock.unlink()
                log.warning("removed a stale dot-lock %s (%.0f s old)", dotlock, age)
        except FileNotFoundError:
            pass  # released meanwhile

    def _try_lock(self) -> _Held | None:
        """Take the dot-lock and the fcntl lock without waiting; None if either is held."""
        dotlock: Path | None = None
        if self.dotlock:
            dotlock = self._dotlock_path
            try:
                lock_fd = os.open(
                    dotlock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
                )
            except FileExistsError:
                self._remove_if_stale(dotlock)
                return None
            try:
                os.write(lock_fd, b"%d\n" % os.getpid())
            finally:
                os.close(lock_fd)
        try:
            fd = self._open()
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    if dotlock is not None:
                        dotlock.unlink(missing_ok=True)
                    return None
                raise
            try:
                size = os.fstat(fd).st_size
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            if dotlock is not None:
                dotlock.unlink(missing_ok=True)
            raise
        return _Held(fd, size, dotlock)

    def _append(self, held: _Held, parts: list[bytes]) -> None:
        fd = held.fd
        try:
            if held.size:
                # The separator must start a line after a blank one, whatever the file ends with.
                tail = os.pread(fd, 2, max(0, held.size - 2))
                missing = 2 - (len(tail) - len(tail.rstrip(b"\n")))
                if missing > 0:
                    parts = [b"\n" * missing, *parts]
            _write_all(fd, parts)
            os.fsync(fd)
        except BaseException:
            self._truncate(held)
            raise

    def _truncate(self, held: _Held) -> None:
        """Undo this delivery: back to the size before it."""
        try:
            os.ftruncate(held.fd, held.size)
            os.fsync(held.fd)
        except OSError:
            log.exception("could not truncate %s back to %d octets", self.path, held.size)

    def _release(self, held: _Held) -> None:
        try:
            fcntl.lockf(held.fd, fcntl.LOCK_UN)
        finally:
            os.close(held.fd)
            if held.dotlock is not None:
                held.dotlock.unlink(missing_ok=True)

    # ---- on the event loop -------------------------------------------------------------------

    async def _acquire(self) -> _Held:
        deadline = trio.current_time() + self.lock_timeout
        pause = 0.01
        while True:
            held = await trio.to_thread.run_sync(self._try_lock)
            if held is not None:
                return held
            now = trio.current_time()
            if now >= deadline:
                raise _Busy
            await trio.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.5)

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        envelope = message.envelope
        parts = await trio.to_thread.run_sync(
            _entry, envelope.mail_from, message.received_header, message.content, time.time()
        )
        try:
            async with self._process_lock:
                held = await self._acquire()
                try:
                    # Written and fsynced under a shield; if we were cancelled meanwhile (the
                    # shutdown deadline) the client gets no 250 and will send the message
                    # again, so it is taken out again.
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(self._append, held, parts)
                    try:
                        await trio.lowlevel.checkpoint_if_cancelled()
                    except trio.Cancelled:
                        with trio.CancelScope(shield=True):
                            await trio.to_thread.run_sync(self._truncate, held)
                        raise
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(self._release, held)
        except _Busy:
            log.warning(
                "[%s] %s stayed locked for %g s; message %s deferred",
                session.id,
                self.path,
                self.lock_timeout,
                envelope.id,
            )
            return _BUSY
        except OSError:
            log.exception(
                "[%s] could not store message %s in %s", session.id, envelope.id, self.path
            )
            return _STORE_FAILED
        log.debug("[%s] message %s appended to %s", session.id, envelope.id, self.path)
        return None
