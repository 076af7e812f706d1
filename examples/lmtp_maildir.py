"""An LMTP delivery agent: one Maildir per user.

A mail server (Postfix, Exim) hands each message to it over LMTP (RFC 2033) for the users of
this machine, and it answers for each recipient on its own:

- at RCPT, ``550 5.1.1`` for a user that has no directory under ``--root``: the mail server
  bounces the message for that recipient only;
- after the message, per recipient: ``250`` once it is on disk in ``ROOT/<user>/Maildir``
  (written to tmp/, fsynced, renamed into new/), ``452 4.2.2`` for a user whose Maildir holds
  ``--quota`` bytes or more (the mail server keeps the message for them and tries again later),
  ``451 4.3.0`` if it could not be stored. Two addresses of one user get one copy.

Run it on a UNIX socket (the usual way: no port to protect) or on a TCP port::

    python examples/lmtp_maildir.py --root /srv/mail --unix /run/smtpd-trio/lmtp.sock
    python examples/lmtp_maildir.py --root /srv/mail --port 8024

and point Postfix at it, in main.cf (its lmtp client runs as the user postfix, so give the
socket's group to Postfix: the socket is created 0660)::

    mailbox_transport = lmtp:unix:/run/smtpd-trio/lmtp.sock

(Where master.cf runs lmtp chrooted, as Debian's does, an absolute path is taken inside the
chroot: listen on /var/spool/postfix/private/lmtp.sock and say lmtp:unix:private/lmtp.sock.)

Try it by hand: ``swaks --protocol LMTP --socket /run/smtpd-trio/lmtp.sock --to ann@localhost``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import trio

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    Reject,
    Reply,
    Session,
    serve_lmtp,
)
from smtpd_trio.handlers import Maildir

#: A user name is a directory under the root: no path separators, no dot files, no "..".
_USER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")


class MaildirDelivery(Handler):
    """Delivers to ``root/<user>/Maildir`` for every user with a directory under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, quota: int | None = None) -> None:
        self.root = Path(root)
        self.quota = quota
        self._maildirs: dict[str, Maildir] = {}

    def user_of(self, address: str) -> str | None:
        """The user an address delivers to (its local part, lower case), if there is one."""
        local = address.rpartition("@")[0] if "@" in address else address
        user = local.lower()
        if not _USER.match(user) or ".." in user or not (self.root / user).is_dir():
            return None
        return user

    def maildir(self, user: str) -> Maildir:
        if user not in self._maildirs:
            self._maildirs[user] = Maildir(self.root / user / "Maildir")
        return self._maildirs[user]

    def usage(self, user: str) -> int:
        """Octets in the user's Maildir (new/ and cur/)."""
        total = 0
        for sub in ("new", "cur"):
            with os.scandir(self.root / user / "Maildir" / sub) as entries:
                total += sum(entry.stat().st_size for entry in entries if entry.is_file())
        return total

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if self.user_of(address) is None:
            raise Reject(550, "5.1.1", f"<{address}> No such user here")
        return None

    async def on_data(self, session: Session, message: Message) -> list[Reply | None]:
        answers: list[Reply | None] = []
        delivered: dict[str, Reply | None] = {}  # per user: two addresses, one copy
        for address in message.envelope.rcpt_tos:
            user = self.user_of(address)
            if user is None:  # removed since RCPT
                answers.append(Reply(550, "5.1.1", f"<{address}> No such user here"))
            elif user in delivered:
                answers.append(delivered[user])
            else:
                delivered[user] = await self.deliver(session, user, address, message)
                answers.append(delivered[user])
        return answers

    async def deliver(
        self, session: Session, user: str, address: str, message: Message
    ) -> Reply | None:
        maildir = self.maildir(user)
        if self.quota is not None and await trio.to_thread.run_sync(self.usage, user) >= self.quota:
            return Reply(452, "4.2.2", f"<{address}> Mailbox full")
        # The Maildir handler writes to tmp/, fsyncs, renames into new/ and only then returns
        # None (delivered), or a 451 if the message could not be stored.
        return await maildir.on_data(session, message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="one directory per user")
    parser.add_argument("--unix", help="listen on this UNIX socket (mode 0660)")
    parser.add_argument("--port", type=int, help="listen on this TCP port on 127.0.0.1")
    parser.add_argument("--quota", type=int, help="octets a Maildir may hold (default: no limit)")
    parser.add_argument("--hostname", help="name in the banner and Received")
    args = parser.parse_args()
    if args.unix is None and args.port is None:
        parser.error("give --unix PATH, --port PORT, or both")
    handler = MaildirDelivery(args.root, quota=args.quota)
    config = Config(hostname=args.hostname) if args.hostname else Config()
    where = [f"unix:{args.unix}"] * bool(args.unix) + [f"127.0.0.1:{args.port}"] * bool(args.port)
    print(f"Delivering into {args.root}/<user>/Maildir; LMTP on {', '.join(where)}", flush=True)
    serve = functools.partial(
        serve_lmtp, handler, host="127.0.0.1", port=args.port, unix=args.unix, config=config
    )
    # Ctrl-C cancels the server (the socket file is removed); exit quietly.
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)


if __name__ == "__main__":
    main()
