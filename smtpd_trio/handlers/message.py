"""MessageHandler: a base class whose ``on_data`` parses the message with the standard
``email`` package and hands it to ``on_message``.

How it parses, and why (measured with ``bench/parse_in_thread.py``): the parser is pure Python,
about 20-40 MB/s, so a 10 MB message takes a few hundred milliseconds; parsed in one call on
the event loop, that stalls every other session for as long. A worker thread does not help
much: the parser holds the GIL, whole-message C calls inside it (decoding, splitting) cannot be
interrupted, and the event loop waits up to the switch interval each time it wants the GIL
back. What does help is feeding the parser in pieces: messages up to
:data:`PARSE_IN_ONE_CALL` octets (about 2 ms of parsing) are parsed in one call; larger ones
are fed to :class:`email.parser.BytesFeedParser` :data:`PIECE` octets at a time on the event
loop, with a checkpoint after each piece, so other sessions run in between (the longest stall
is then about one piece's parse) and a cancelled session stops parsing at once. The result is
the same as ``email.message_from_bytes(content, policy=email.policy.default)``.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import ClassVar, Final, cast

import trio

from smtpd_trio._smtp.replies import Reply
from smtpd_trio.handler import Handler, Message, Session, StateT

__all__ = ["PARSE_IN_ONE_CALL", "PIECE", "MessageHandler", "parse_message"]

#: Messages up to this many octets are parsed in one call (about 2 ms).
PARSE_IN_ONE_CALL: Final = 64 * 1024
#: Larger messages are fed to the parser this many octets at a time, with a checkpoint after
#: each piece.
PIECE: Final = 64 * 1024


async def parse_message(content: bytes) -> EmailMessage:
    """``content`` parsed with ``policy=email.policy.default`` (an :class:`EmailMessage`),
    letting other tasks run while a large message is parsed."""
    if len(content) <= PARSE_IN_ONE_CALL:
        return email.message_from_bytes(content, policy=email.policy.default)
    parser = email.parser.BytesFeedParser(policy=email.policy.default)
    view = memoryview(content)
    for start in range(0, len(content), PIECE):
        await trio.lowlevel.checkpoint()
        parser.feed(bytes(view[start : start + PIECE]))
    await trio.lowlevel.checkpoint()
    return cast(EmailMessage, parser.close())


class MessageHandler(Handler[StateT]):
    """A handler that receives each message parsed: override :meth:`on_message`.

    ::

        class Archive(MessageHandler):
            async def on_message(self, session, message, parsed):
                if parsed["Subject"] is None:
                    raise Reject(554, "5.6.0", "A Subject header is required")
                await store(message.envelope.rcpt_tos, parsed)

    ``on_data`` parses ``message.content`` (the message as the client sent it, without our
    ``Received:`` header, which stays in ``message.received_header``) with
    ``policy=email.policy.default`` and calls ``on_message(session, message, parsed)``; what
    ``on_message`` returns or raises answers the message, exactly as from ``on_data``. The
    parser never fails on malformed mail: problems are recorded in ``parsed.defects`` (and in
    each part's). Define ``on_message``, not ``on_data``; ``on_data_chunks`` cannot be combined
    with it. ``on_message`` is checked when the server is built like every callback.
    """

    #: ``on_message`` is a callback this class calls: the server checks it and does not warn
    #: about it (see ``smtpd_trio.handler.extra_callbacks``).
    extra_callbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "on_message": ("session", "message", "parsed")
    }

    async def on_data(
        self, session: Session[StateT], message: Message
    ) -> Reply | Sequence[Reply | None] | None:
        parsed = await parse_message(message.content)
        return await self.on_message(session, message, parsed)

    async def on_message(
        self, session: Session[StateT], message: Message, parsed: EmailMessage
    ) -> Reply | Sequence[Reply | None] | None:
        """A complete message, parsed. Return None (or a 250 :class:`Reply`) once it is
        safely handled, or refuse with :class:`~smtpd_trio.Reject`; in LMTP, or a list with
        one answer per recipient, as from ``on_data``."""
        return None
