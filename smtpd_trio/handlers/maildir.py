"""Maildir: stores each message as a file in a standard Maildir (tmp/, new/, cur/).

The delivery protocol (as qmail and Dovecot do it): write the message with its Received header
to ``tmp/<unique>``, fsync the file, rename it into ``new/``, fsync the ``new/`` directory, and
only then return, so the 250 goes out only for a message that is on disk. A message refused or
interrupted at any point leaves nothing behind in ``new/``, and its temporary file is removed.
File writes run in a worker thread so a slow disk never stalls other sessions.
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


def _unique_name() -> str:
    """``<seconds>.M<microseconds>P<pid>Q<counter>.<host>`` (the Maildir naming convention)."""
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{next(_counter)}.{host}"


@final
class Maildir(Handler):
    """Delivers every accepted message into the Maildir at ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def _deliver(self, data: bytes) -> Path:
        name = _unique_name()
        tmp = self.path / "tmp" / name
        new = self.path / "new" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
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
        data = message.with_trace()
        envelope = message.envelope
        try:
            # The write is not interrupted half-way: it finishes under a shield, and if we were
            # cancelled meanwhile (shutdown deadline), the file is removed again, since the
            # client will not get its 250 and will send the message again.
            with trio.CancelScope(shield=True):
                stored = await trio.to_thread.run_sync(self._deliver, data)
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
