"""Debugging: prints each message with its envelope and session facts (like Python's old
``smtpd.DebuggingServer`` and aiosmtpd's ``Debugging`` handler)."""

from __future__ import annotations

import sys
from typing import TextIO, final

from smtpd_trio._smtp.replies import Reply
from smtpd_trio.handler import Handler, Message, Session


@final
class Debugging(Handler):
    """Prints every accepted message to ``stream`` (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        out = self._stream or sys.stdout
        envelope = message.envelope
        content = message.with_trace()
        header = [
            "---------- MESSAGE FOLLOWS ----------",
            f"X-Connection-Id: {session.id}",
            f"X-Peer: {session.client}",
        ]
        if session.peer != session.client:
            header.append(f"X-Proxy-Peer: {session.peer}")
        header += [
            f"X-Helo: {session.helo_name}",
            f"X-Mail-From: <{envelope.mail_from}>",
            f"X-Rcpt-To: {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}",
            f"X-Size: {len(message.content)}",
            "",
        ]
        text = content.decode("utf-8", "replace").replace("\r\n", "\n")
        out.write("\n".join(header) + "\n" + text)
        if not text.endswith("\n"):
            out.write("\n")
        out.write("------------ END MESSAGE ------------\n")
        out.flush()
        return None
