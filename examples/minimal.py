"""The smallest useful server: print every message it receives.

Run it, then send it a message from another terminal::

    python examples/minimal.py --port 8025
    swaks --server 127.0.0.1:8025 --from a@example.com --to b@example.org

The port also comes from the SMTP_PORT environment variable (default 8025); the server listens
on 127.0.0.1 only. Stop it with Ctrl-C (or SIGTERM): open transactions may finish, then it
exits quietly with status 0.
"""

from __future__ import annotations

import argparse
import os

import smtpd_trio
from smtpd_trio import Handler, Message, Reply, Session


class PrintingHandler(Handler):
    """Accepts every message and prints its envelope and text."""

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        envelope = message.envelope
        content = message.with_trace().decode("utf-8", "replace")
        print(f"From <{envelope.mail_from}> to {', '.join(envelope.rcpt_tos)} via {session.client}")
        print(content.replace("\r\n", "\n"))
        return None  # accept: the client gets "250 2.0.0 Message accepted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "8025")))
    args = parser.parse_args()
    print(f"Listening on 127.0.0.1:{args.port}")
    # Serves until Ctrl-C or SIGTERM, shuts down gracefully, and returns.
    smtpd_trio.run(PrintingHandler(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
