"""MessageHandler: on_message gets the parsed message; extra callbacks are checked, not warned."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Mapping
from email.message import EmailMessage
from typing import ClassVar

import attrs
import pytest
import trio

from smtpd_trio import (
    Handler,
    Message,
    MessageHandler,
    MessageStream,
    Reject,
    Reply,
    Session,
    SMTPServer,
)
from smtpd_trio.handler import extra_callbacks
from smtpd_trio.handlers.message import PARSE_IN_ONE_CALL, PIECE, parse_message
from smtpd_trio.testing import open_test_session

SIMPLE = (
    b"From: Ann <a@example.com>\r\nTo: b@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello there.\r\n"
)


def multipart(attachment_octets: int) -> bytes:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    lines = attachment_octets // len(line) + 1
    return (
        b"From: a@example.com\r\nSubject: with attachment\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\npreamble\r\n--XYZ\r\n'
        b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--XYZ\r\n"
        b'Content-Type: application/octet-stream; name="a.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + line * lines + b"--XYZ--\r\nepilogue\r\n"
    )


@attrs.define
class Seen:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    received_header: str


class Collect(MessageHandler):
    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def on_message(
        self, session: Session, message: Message, parsed: EmailMessage
    ) -> Reply | None:
        if parsed["Subject"] == "refuse me":
            raise Reject(554, "5.6.0", "Not this one")
        body = parsed.get_body(preferencelist=("plain",))
        assert body is not None
        self.seen.append(
            Seen(
                message.envelope.mail_from,
                message.envelope.rcpt_tos,
                str(parsed["Subject"]),
                body.get_content(),
                message.received_header,
            )
        )
        return Reply(250, "2.0.0", f"Parsed {len(parsed.defects)} defect(s)")


async def test_on_message_gets_the_parsed_message_and_answers_it() -> None:
    handler = Collect()
    async with open_test_session(handler) as client:
        assert (await client.command("EHLO client.example")).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org"], SIMPLE)
        assert str(reply) == "250 2.0.0 Parsed 0 defect(s)"
        refused = SIMPLE.replace(b"=?utf-8?q?caf=C3=A9?=", b"refuse me")
        reply = await client.sendmail("a@example.com", ["b@example.org"], refused)
        assert str(reply) == "554 5.6.0 Not this one"
    (seen,) = handler.seen
    assert seen.sender == "a@example.com"
    assert seen.recipients == ("b@example.org",)
    assert seen.subject == "café"
    assert seen.body == "Hello there.\r\n"
    assert seen.received_header.startswith("Received: from client.example")


async def test_a_message_handler_without_on_message_accepts() -> None:
    async with open_test_session(MessageHandler()) as client:
        assert (await client.command("EHLO client.example")).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org"], SIMPLE)
        assert str(reply) == "250 2.0.0 Message accepted"


async def test_malformed_mail_is_parsed_with_defects_not_refused() -> None:
    broken = (
        b"Subject: broken\r\nContent-Type: multipart/mixed\r\n\r\nno boundary given\r\n"
        b"\xff\xfe binary junk\r\n"
    )

    class Defects(MessageHandler):
        defects: list[str]

        async def on_message(
            self, session: Session, message: Message, parsed: EmailMessage
        ) -> Reply | None:
            self.defects = [type(d).__name__ for d in parsed.defects]
            return None

    defects = Defects()
    async with open_test_session(defects) as client:
        assert (await client.command("EHLO client.example")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], broken)).code == 250
    assert "NoBoundaryInMultipartDefect" in defects.defects


@pytest.mark.parametrize("size", [PARSE_IN_ONE_CALL - 500, PARSE_IN_ONE_CALL * 3 + 17])
async def test_parse_message_matches_message_from_bytes(size: int) -> None:
    content = multipart(size)
    parsed = await parse_message(content)
    reference = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed.as_bytes() == reference.as_bytes()
    assert [p.get_content_type() for p in parsed.walk()] == [
        p.get_content_type() for p in reference.walk()
    ]
    attachment = next(parsed.iter_attachments())
    assert isinstance(attachment, EmailMessage)
    assert attachment.get_content() == next(reference.iter_attachments()).get_content()


@pytest.mark.parametrize("shift", range(-3, 3))
async def test_pieces_split_anywhere_parse_the_same(shift: int) -> None:
    # A line end, a header and a boundary line straddle the first piece boundary.
    head = b"Subject: split\r\nX-Pad: "
    pad = b"p" * (PIECE + shift - len(head) - 2)
    content = head + pad + b"\r\nX-After: yes\r\n\r\n" + b"body line\r\n" * 8000
    assert len(content) > PARSE_IN_ONE_CALL
    parsed = await parse_message(content)
    assert parsed["X-After"] == "yes"
    assert parsed["X-Pad"] == pad.decode()
    reference = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed.as_bytes() == reference.as_bytes()


async def test_other_tasks_run_while_a_large_message_is_parsed() -> None:
    content = multipart(PIECE * 8)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        before = ticks
        await parse_message(content)
        done = True
    assert ticks - before >= 4


async def test_a_cancelled_parse_stops() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await parse_message(multipart(PIECE * 2))
        pytest.fail("parse_message went on after cancellation")
    assert scope.cancelled_caught


# ---- extra callbacks: checked like the server's own, never warned about ---------------------


def test_on_message_is_not_warned_about_but_typos_are(caplog: pytest.LogCaptureFixture) -> None:
    class Typo(MessageHandler):
        async def on_message(
            self, session: Session, message: Message, parsed: EmailMessage
        ) -> Reply | None:
            return None

        async def on_mesage(self, session: Session) -> None:
            return None

    caplog.set_level(logging.WARNING, logger="smtpd_trio")
    SMTPServer(Collect())
    assert caplog.records == []
    SMTPServer(Typo())
    (record,) = caplog.records
    assert "on_mesage" in record.getMessage()
    assert "on_message" in record.getMessage()  # listed among the known names


def test_on_message_is_still_warned_about_outside_a_message_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NotAMessageHandler(Handler):
        async def on_message(self, session: Session) -> None:
            return None

    caplog.set_level(logging.WARNING, logger="smtpd_trio")
    SMTPServer(NotAMessageHandler())
    assert any("on_message" in r.getMessage() for r in caplog.records)


def test_a_sync_on_message_is_refused_when_the_server_is_built() -> None:
    class Sync(MessageHandler):
        def on_message(  # type: ignore[override]
            self, session: Session, message: Message, parsed: EmailMessage
        ) -> None:
            return None

    with pytest.raises(TypeError, match=r"Sync\.on_message must be an async function"):
        SMTPServer(Sync())


def test_an_on_message_with_the_wrong_arguments_is_refused() -> None:
    class TwoArguments(MessageHandler):
        async def on_message(self, session: Session, message: Message) -> None:  # type: ignore[override]
            return None

    with pytest.raises(
        TypeError, match=r"cannot be called as on_message\(session, message, parsed\)"
    ):
        SMTPServer(TwoArguments())


def test_on_data_chunks_cannot_be_added_to_a_message_handler() -> None:
    class Both(MessageHandler):
        async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
            return None

    with pytest.raises(TypeError, match="both on_data and on_data_chunks"):
        SMTPServer(Both())


@attrs.define
class Counts:
    messages: int = 0


def test_typed_state_through_message_handler_needs_new_state() -> None:
    class Untyped(MessageHandler):
        pass

    class Missing(MessageHandler[Counts]):
        pass

    class Typed(MessageHandler[Counts]):
        def new_state(self, session: Session[Counts]) -> Counts:
            return Counts()

    SMTPServer(Untyped())
    SMTPServer(Typed())
    with pytest.raises(TypeError, match="Missing declares a state type"):
        SMTPServer(Missing())


async def test_typed_state_reaches_on_message() -> None:
    class Counting(MessageHandler[Counts]):
        def new_state(self, session: Session[Counts]) -> Counts:
            return Counts()

        async def on_message(
            self, session: Session[Counts], message: Message, parsed: EmailMessage
        ) -> Reply | None:
            session.state.messages += 1
            return Reply(250, "2.0.0", f"message {session.state.messages}")

    async with open_test_session(Counting()) as client:
        assert (await client.command("EHLO client.example")).code == 250
        for n in (1, 2):
            reply = await client.sendmail("a@example.com", ["b@example.org"], SIMPLE)
            assert str(reply) == f"250 2.0.0 message {n}"


def test_extra_callbacks_are_collected_over_the_mro() -> None:
    class More(MessageHandler):
        extra_callbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {
            "on_spam": ("session", "message", "score"),
            "on_rcpt": ("ignored",),  # the server's own names cannot be redeclared
        }

    assert extra_callbacks(More) == {
        "on_message": ("session", "message", "parsed"),
        "on_spam": ("session", "message", "score"),
    }
    assert extra_callbacks(Handler) == {}
