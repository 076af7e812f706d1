"""The handler API is hard to misuse: mistakes fail when the server is built, or are answered
with a temporary failure and one ERROR line naming the callback, never a protocol violation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from smtpd_trio import (
    BareLineEndings,
    Config,
    Envelope,
    Handler,
    Message,
    MessageStream,
    Reject,
    Reply,
    Session,
    SMTPServer,
    TransactionOutcome,
    run_session,
)
from smtpd_trio.handler import handler_callbacks
from smtpd_trio.testing import TEST_PEER, open_test_session

MESSAGE = b"Subject: t\r\n\r\nhello\r\n"

# ---- checked when the server is built ------------------------------------------------------


class SyncRcpt(Handler):
    def on_rcpt(  # type: ignore[override]
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> None:
        return None


class OldMail(Handler):
    async def on_mail(  # type: ignore[override]
        self,
        session: Session,
        envelope: Envelope,
        address: str,
        params: Mapping[str, str | None],
    ) -> Reply | None:
        return None


class TooFew(Handler):
    async def on_data(self, session: Session) -> Reply | None:  # type: ignore[override]
        return None


class OnReset(Handler):
    async def on_reset(self, session: Session, envelope: Envelope) -> None:
        return None


class Both(Handler):
    async def on_data(self, session: Session, message: Message) -> Reply | None:
        return None

    async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
        return None


@attrs.define
class Counts:
    recipients: int = 0


class StateWithoutFactory(Handler[Counts]):
    pass


class AsyncNewState(Handler):
    async def new_state(self, session: Session) -> dict[str, Any]:  # type: ignore[override]
        return {}


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (SyncRcpt(), r"SyncRcpt\.on_rcpt must be an async function"),
        (
            OldMail(),
            r"OldMail\.on_mail\(.*\) cannot be called as on_mail\(session, address, params\)",
        ),
        (TooFew(), r"TooFew\.on_data\(session\) cannot be called as on_data\(session, message\)"),
        (OnReset(), r"OnReset\.on_reset is no longer called: define on_transaction_end"),
        (Both(), r"Both defines both on_data and on_data_chunks"),
        (StateWithoutFactory(), r"StateWithoutFactory declares a state type .* new_state"),
        (AsyncNewState(), r"AsyncNewState\.new_state must be a plain \(not async\) method"),
    ],
)
def test_a_mistyped_handler_fails_when_the_server_is_built(handler: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        SMTPServer(handler)
    with pytest.raises(TypeError, match=message):
        handler_callbacks(handler)


async def test_run_session_checks_the_handler_too() -> None:
    _client, server = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match="must be an async function"):
        await run_session(server, SyncRcpt(), peer=TEST_PEER)


def test_duck_typed_handlers_are_checked_the_same_way() -> None:
    class Duck:  # not a Handler subclass: every on_* method found is checked
        async def on_helo(self, session: Session) -> None:
            return None

    with pytest.raises(TypeError, match=r"Duck\.on_helo"):
        SMTPServer(Duck())  # type: ignore[arg-type]


def test_the_inherited_no_op_callbacks_are_left_out() -> None:
    class OnlyData(Handler):
        async def on_data(self, session: Session, message: Message) -> Reply | None:
            return None

    callbacks = handler_callbacks(OnlyData())
    assert callbacks.on_data is not None
    assert (callbacks.on_connect, callbacks.on_rcpt, callbacks.new_state) == (None, None, None)


def test_unknown_on_names_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    class Typo(Handler):
        async def on_rcpt_to(self, session: Session) -> None:
            return None

    caplog.set_level(logging.WARNING, logger="smtpd_trio")
    SMTPServer(Typo())
    assert any("on_rcpt_to" in r.getMessage() for r in caplog.records)


def test_bare_line_endings_given_as_text_means_what_it_says() -> None:
    # Given as a string, "reject" must not silently behave like KEEP.
    assert Config(bare_line_endings="reject").smtp.bare_line_endings is BareLineEndings.REJECT
    assert Config(bare_line_endings="keep").smtp.bare_line_endings is BareLineEndings.KEEP


# ---- wrong answers at run time --------------------------------------------------------------


class WrongAnswers(Handler):
    """Returns replies that are not answers to their command."""

    async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
        return Reply(250, None, "hello yourself") if name == "positive.test" else None

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.startswith("go-ahead@"):
            return Reply(354, None, "Go ahead")
        if address.startswith("string@"):
            return "250 OK"  # type: ignore[return-value]
        return None


async def test_a_positive_reply_that_does_not_answer_the_command_is_a_451(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    async with open_test_session(WrongAnswers()) as client:
        reply = await client.command("EHLO positive.test")
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
        assert client.session.helo_name is None  # not accepted
        assert (await client.ehlo()).code == 250
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        reply = await client.command("RCPT TO:<go-ahead@example.org>")
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
        reply = await client.command("RCPT TO:<string@example.org>")
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
        # Nothing was accepted: DATA has no recipient to go to.
        assert (await client.command("DATA")).code == 554
        sid = client.session.id
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" returned ")[0] for r in errors] == [
        f"[{sid}] handler on_helo",
        f"[{sid}] handler on_rcpt",
        f"[{sid}] handler on_rcpt",
    ]
    assert "accept with None (accept)" in errors[0].getMessage()
    assert "354 is not an answer to RCPT TO: accept with 250/251" in errors[1].getMessage()
    assert "an answer must be a Reply or None, not str" in errors[2].getMessage()
    assert b"Go ahead" not in client.transcript


class DefaultCodes(Handler):
    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.startswith("refused@"):
            raise Reject(550)
        return Reply(250) if address.startswith("plain@") else None

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.startswith("later@"):
            raise Reject(450, text="Try later")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        raise Reject(554, text="Not today")


async def test_replies_without_an_enhanced_code_get_one_that_fits() -> None:
    # ENHANCEDSTATUSCODES is always advertised, so every reply (but the greeting and the EHLO
    # answer) carries one (RFC 2034).
    async with open_test_session(DefaultCodes()) as client:
        await client.ehlo()
        reply = await client.command("MAIL FROM:<refused@example.com>")
        assert (reply.code, reply.lines) == (550, ("5.1.0 Rejected",))
        reply = await client.command("MAIL FROM:<plain@example.com>")
        assert (reply.code, reply.enhanced) == (250, "2.1.0")
        reply = await client.command("RCPT TO:<later@example.org>")
        assert (reply.code, reply.lines) == (450, ("4.1.0 Try later",))
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(b"hi\r\n.\r\n")
        reply = await client.read_reply()
        assert (reply.code, reply.lines) == (554, ("5.0.0 Not today",))


# ---- on_transaction_end: exactly once per transaction ------------------------------------------


class Ends(Handler):
    def __init__(self, *, refuse_data: bool = False) -> None:
        self.ends: list[tuple[str, TransactionOutcome]] = []
        self.refuse_data = refuse_data

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        if self.refuse_data:
            raise Reject(554, "5.7.1", "No")
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ends.append((envelope.mail_from, outcome))


async def test_every_way_a_transaction_ends() -> None:
    handler = Ends()
    config = Config(hostname="mx.test", max_message_size=100)
    async with open_test_session(handler, config=config) as client:
        await client.ehlo()
        assert (await client.sendmail("accepted@x.test", ["b@y.test"], MESSAGE)).code == 250
        await client.command("MAIL FROM:<too-big@x.test>")
        await client.command("RCPT TO:<b@y.test>")
        await client.command("DATA")
        await client.send(b"x" * 200 + b"\r\n.\r\n")
        assert (await client.read_reply()).code == 552
        await client.command("MAIL FROM:<rset@x.test>")
        await client.command("RSET")
        await client.command("MAIL FROM:<ehlo@x.test>")
        await client.ehlo()
        await client.command("RSET")  # no transaction open: nothing ends
        await client.command("MAIL FROM:<quit@x.test>")
        await client.command("QUIT")
    assert handler.ends == [
        ("accepted@x.test", TransactionOutcome.ACCEPTED),
        ("too-big@x.test", TransactionOutcome.REFUSED),
        ("rset@x.test", TransactionOutcome.RESET),
        ("ehlo@x.test", TransactionOutcome.RESET),
        ("quit@x.test", TransactionOutcome.ABORTED),
    ]


async def test_a_message_refused_by_the_handler_ends_refused() -> None:
    handler = Ends(refuse_data=True)
    async with open_test_session(handler) as client:
        await client.ehlo()
        reply = await client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
        assert (reply.code, reply.enhanced) == (554, "5.7.1")
    assert handler.ends == [("a@x.test", TransactionOutcome.REFUSED)]


async def test_a_client_that_vanishes_mid_transaction_ends_it_aborted() -> None:
    handler = Ends()
    async with open_test_session(handler) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<gone@x.test>")
        await client.command("RCPT TO:<b@y.test>")
        await client.command("DATA")
        await client.send(b"half a message\r\n")
    assert handler.ends == [("gone@x.test", TransactionOutcome.ABORTED)]


async def test_a_timeout_mid_transaction_ends_it_aborted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Ends()
    config = Config(hostname="mx.test", command_timeout=10)
    async with open_test_session(handler, config=config) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<slow@x.test>")
        assert (await client.read_reply()).code == 421
    assert handler.ends == [("slow@x.test", TransactionOutcome.ABORTED)]


async def test_a_server_cancelled_mid_transaction_still_reports_the_end() -> None:
    handler = Ends()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_session(server_stream, handler, peer=TEST_PEER))
        await client_stream.send_all(b"EHLO c.test\r\nMAIL FROM:<cut@x.test>\r\n")
        while b"2.1.0" not in await client_stream.receive_some(65536):
            pass
        nursery.cancel_scope.cancel()
    assert handler.ends == [("cut@x.test", TransactionOutcome.ABORTED)]


# ---- typed per-connection state ------------------------------------------------------------------


class Counting(Handler[Counts]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def new_state(self, session: Session[Counts]) -> Counts:
        return Counts()

    async def on_rcpt(
        self,
        session: Session[Counts],
        envelope: Envelope,
        address: str,
        params: Mapping[str, str | None],
    ) -> Reply | None:
        session.state.recipients += 1
        return None

    async def on_close(self, session: Session[Counts]) -> None:
        self.seen.append(session.state.recipients)


async def test_typed_state_is_made_per_connection() -> None:
    handler = Counting()
    for rcpts in (2, 3):
        async with open_test_session(handler) as client:
            await client.ehlo()
            await client.command("MAIL FROM:<a@x.test>")
            for i in range(rcpts):
                await client.command(f"RCPT TO:<r{i}@y.test>")
            assert isinstance(client.session.state, Counts)
    assert handler.seen == [2, 3]


async def test_default_state_is_a_fresh_dict() -> None:
    class Plain(Handler):
        async def on_connect(self, session: Session) -> Reply | None:
            assert session.state == {}
            session.state["seen"] = True
            return None

    async with open_test_session(Plain()) as one, open_test_session(Plain()) as two:
        assert one.session.state == {"seen": True}
        assert one.session.state is not two.session.state
