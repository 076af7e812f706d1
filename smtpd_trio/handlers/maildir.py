"""Maildir: stores each message as a file in a standard Maildir (tmp/, new/, cur/).

The delivery protocol (as qmail and Dovecot do it): write the message with its Received header
to ``tmp/<unique>``, fsync the file, rename it into ``new/``, fsync the ``new/`` directory, and
only then return, so the 250 goes out only for a message that is on disk. A message refused or
interrupted at any point leaves nothing behind in ``new/``, and its temporary file is removed.
File writes run in a worker thread so a slow disk never stalls other sessions. The header and
the message are written with one ``writev``, without joining them into a second copy.

A process killed in the middle of a delivery (SIGKILL, a power cut) can leave a file in
``tmp/``: it was never acknowledged, so the client sends the message again. Such files are
removed when a Maildir handler is created, once they are older than ``stale_after`` seconds
(36 hours by default: the Maildir specification's rule, since another process may still be
writing a younger one).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from pathlib import Path
from typing import final

import trio

from smtpd_trio._smtp.replies import Reply
from smtpd_trio.handler import Handler, Message, Session

log = logging.getLogger("smtpd_trio.handlers.maildir")
_counter = itertools.count(1)
_STORE_FAILED = Reply(451, "4.3.0", "Requested action aborted: could not store the message")
#: The Maildir rule: a file in tmp/ untouched for 36 hours is left over and may be removed.
STALE_AFTER = 36 * 3600.0


def _unique_name() -> str:
    """``<seconds>.M<microseconds>P<pid>Q<counter>.<host>`` (the Maildir naming convention)."""
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{next(_counter)}.{host}"


@final
class Maildir(Handler):
    """Delivers every accepted message into the Maildir at ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str], *, stale_after: float = STALE_AFTER) -> None:
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        #: How many left-over files were removed from tmp/ when the handler was created.
        self.removed_stale = self.remove_stale(stale_after)

    def remove_stale(self, older_than: float = STALE_AFTER) -> int:
        """Remove files in ``tmp/`` not modified for ``older_than`` seconds; return how many."""
        cutoff = time.time() - older_than
        removed = 0
        with os.scandir(self.path / "tmp") as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue  # removed meanwhile by someone else
        if removed:
            log.info("removed %d left-over file(s) from %s", removed, self.path / "tmp")
        return removed

    def _deliver(self, header: bytes, content: bytes) -> Path:
        name = _unique_name()
        tmp = self.path / "tmp" / name
        new = self.path / "new" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                parts = [memoryview(header), memoryview(content)]
                while parts:
                    written = os.writev(fd, parts)
                    while parts and written >= len(parts[0]):
                        written -= len(parts[0])
                        parts.pop(0)
                    if parts:
                        parts[0] = parts[0][written:]
                    parts = [part for part in parts if part]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, new)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return new

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        header = message.received_header.encode("utf-8")
        envelope = message.envelope
        try:
            # The write is not interrupted half-way: it finishes under a shield, and if we were
            # cancelled meanwhile (shutdown deadline), the file is removed again, since the
            # client will not get its 250 and will send the message again.
            with trio.CancelScope(shield=True):
                stored = await trio.to_thread.run_sync(self._deliver, header, message.content)
        except OSError:
            log.exception("[%s] could not store message %s", session.id, envelope.id)
            return _STORE_FAILED
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            stored.unlink(missing_ok=True)
            raise
        log.debug("[%s] message %s stored as %s", session.id, envelope.id, stored.name)
        return None
