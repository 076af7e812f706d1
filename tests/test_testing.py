"""The test harness itself: failures inside it must surface, hangs must not."""

from __future__ import annotations

import pytest
import trio

from smtpd_trio import Handler, Message, Reply, Session
from smtpd_trio.testing import dot_stuff, open_test_session


async def _fail_inside_a_session() -> None:
    async with open_test_session(Handler()) as client:
        assert (await client.command("NOOP")).code == 250
        raise AssertionError("the test's own")


async def test_a_failing_assertion_inside_the_session_fails_the_test() -> None:
    with pytest.raises(AssertionError, match="the test's own"):
        await _fail_inside_a_session()


class Hang(Handler):
    async def on_data(self, session: Session, message: Message) -> Reply | None:
        await trio.sleep_forever()
        raise AssertionError("not reached")


async def _give_up_while_the_handler_hangs() -> None:
    async with open_test_session(Hang()) as client:
        await client.command("EHLO x")
        await client.command("MAIL FROM:<a@b.c>")
        await client.command("RCPT TO:<d@e.f>")
        await client.command("DATA")
        await client.send(b"text\r\n.\r\n")
        raise LookupError("gave up waiting")


async def test_a_test_failing_while_the_handler_hangs_does_not_hang() -> None:
    with trio.fail_after(5), pytest.raises(LookupError):
        await _give_up_while_the_handler_hangs()


def test_dot_stuff_is_what_a_correct_client_sends() -> None:
    assert dot_stuff(b".a\nb\r.c") == b"..a\r\nb\r\n..c\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"
