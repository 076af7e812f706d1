"""Accept mail only for my domain, and store it in a Maildir.

Recipients outside ``--domain`` are refused at RCPT time with ``550 5.1.1``, so the sending
server keeps the bounce (we never accept a message we cannot deliver). Accepted messages are
written to a Maildir with their Received header, and only acknowledged once they are on disk.

::

    python examples/my_domain_only.py --domain example.org --maildir /tmp/mail --port 2525
    swaks --server 127.0.0.1:2525 --from a@example.com --to user@example.org  # 250
    swaks --server 127.0.0.1:2525 --from a@example.com --to user@example.net  # 550 5.1.1

Each option can also come from the environment: MY_DOMAIN, MAILDIR, SMTP_PORT.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import smtpd_trio
from smtpd_trio import Config, Envelope, Handler, Message, Reject, Reply, Session
from smtpd_trio.handlers import Maildir


class MyDomainOnly(Handler):
    """Accepts recipients at ``domain`` (and its subdomains if ``subdomains``), stores mail in
    the Maildir at ``maildir``."""

    def __init__(
        self, domain: str, maildir: str | os.PathLike[str], *, subdomains: bool = False
    ) -> None:
        self.domain = domain.lower().rstrip(".")
        self.subdomains = subdomains
        self.store = Maildir(maildir)

    def is_mine(self, address: str) -> bool:
        """True if ``address`` is at our domain. Domains compare case-insensitively."""
        local, at, domain = address.rpartition("@")
        if not at or not local:
            return False  # "postmaster" without a domain (RFC 5321 §4.5.1): not ours to take
        domain = domain.lower().rstrip(".")
        return domain == self.domain or (self.subdomains and domain.endswith("." + self.domain))

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if not self.is_mine(address):
            raise Reject(550, "5.1.1", f"We only accept mail for {self.domain}")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        # The Maildir handler writes tmp/, fsyncs, renames into new/ and only then returns,
        # so the 250 goes out for a message that is safely on disk (451 if it could not be).
        return await self.store.on_data(session, message)


def main() -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default=env.get("MY_DOMAIN", "example.org"))
    parser.add_argument("--maildir", type=Path, default=Path(env.get("MAILDIR", "Maildir")))
    parser.add_argument("--port", type=int, default=int(env.get("SMTP_PORT", "2525")))
    parser.add_argument("--hostname", default=None, help="name in the banner and Received")
    args = parser.parse_args()

    handler = MyDomainOnly(args.domain, args.maildir)
    config = Config(hostname=args.hostname) if args.hostname else Config()
    print(f"Accepting mail for {handler.domain} on 127.0.0.1:{args.port}, into {args.maildir}")
    # Serves until Ctrl-C or SIGTERM, shuts down gracefully, and returns.
    smtpd_trio.run(handler, host="127.0.0.1", port=args.port, config=config)


if __name__ == "__main__":
    main()
