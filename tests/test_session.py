"""The Trio session driver over memory streams: callbacks, replies, failures, timeouts."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    Reject,
    Reply,
    Session,
    TransactionOutcome,
    run_session,
)
from smtpd_trio.testing import TEST_PEER, open_test_session

MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n.leading dot\r\n"
SECRET = "secret detail"


class Recorder(Handler):
    """Accepts everything and records each call with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.sessions: list[Session] = []
        self.messages: list[Message] = []

    async def on_connect(self, session: Session) -> Reply | None:
        self.sessions.append(session)
        self.calls.append(("connect", session.client, session.peer))
        return None

    async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
        self.calls.append(("helo", name, extended))
        return None

    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        self.calls.append(("mail", address, dict(params)))
        return None

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        self.calls.append(("rcpt", address, envelope.mail_from))
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        envelope = message.envelope
        self.calls.append(("data", envelope.mail_from, list(envelope.rcpt_tos), message.content))
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.calls.append(("end", envelope.mail_from, list(envelope.rcpt_tos), outcome))

    async def on_close(self, session: Session) -> None:
        self.calls.append(("close",))


def names(handler: Recorder) -> list[str]:
    return [call[0] for call in handler.calls]


async def test_happy_path_replies() -> None:
    async with open_test_session(Recorder()) as client:
        ehlo = await client.command("EHLO client.example")
        assert ehlo.code == 250
        assert ehlo.lines[0] == "mx.test"
        assert {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"} <= set(ehlo.lines)
        assert "SIZE 10240000" in ehlo.lines
        mail = await client.command("MAIL FROM:<a@example.com>")
        assert (mail.code, mail.enhanced) == (250, "2.1.0")
        rcpt = await client.command("RCPT TO:<b@example.org>")
        assert (rcpt.code, rcpt.enhanced) == (250, "2.1.5")
        data = await client.command("DATA")
        assert data.code == 354
        await client.send(b"Subject: hi\r\n\r\nHello.\r\n.\r\n")
        done = await client.read_reply()
        assert (done.code, done.enhanced) == (250, "2.0.0")
        quit_ = await client.command("QUIT")
        assert (quit_.code, quit_.enhanced) == (221, "2.0.0")
        assert await client.at_eof()
    assert client.transcript.startswith(b"220 mx.test ")


async def test_callbacks_in_order_with_their_arguments() -> None:
    handler = Recorder()
    async with open_test_session(handler) as client:
        await client.command("EHLO client.example")
        reply = await client.sendmail(
            "a@example.com",
            ["b@example.org", "c@example.org"],
            MESSAGE,
            mail_params="BODY=8BITMIME",
        )
        assert reply.code == 250
        assert (await client.command("QUIT")).code == 221
    assert handler.calls == [
        ("connect", TEST_PEER, TEST_PEER),
        ("helo", "client.example", True),
        ("mail", "a@example.com", {"BODY": "8BITMIME"}),
        ("rcpt", "b@example.org", "a@example.com"),
        ("rcpt", "c@example.org", "a@example.com"),
        ("data", "a@example.com", ["b@example.org", "c@example.org"], MESSAGE),
        ("end", "a@example.com", ["b@example.org", "c@example.org"], TransactionOutcome.ACCEPTED),
        ("close",),
    ]
    (message,) = handler.messages
    assert message.content == MESSAGE  # un-stuffed, exactly as meant
    assert message.envelope.body_type == "8BITMIME"
    assert message.received_header.startswith("Received: from client.example ([192.0.2.1])")
    assert message.received_header.endswith("\r\n")
    assert message.with_trace() == message.received_header.encode() + MESSAGE
    session = handler.sessions[0]
    assert session.helo_name == "client.example"
    assert session.extended is True
    assert session.messages_accepted == 1


async def test_helo_is_not_extended() -> None:
    handler = Recorder()
    async with open_test_session(handler) as client:
        reply = await client.command("HELO old.example")
        assert reply.lines == ("mx.test",)
        assert reply.code == 250
    assert ("helo", "old.example", False) in handler.calls
    assert handler.sessions[0].extended is False


async def test_transaction_end_on_rset_and_on_helo_during_a_transaction() -> None:
    handler = Recorder()
    async with open_test_session(handler) as client:
        await client.command("EHLO c.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        reply = await client.command("RSET")
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
        reset = TransactionOutcome.RESET
        assert handler.calls[-1] == ("end", "a@example.com", ["b@example.org"], reset)
        # RSET with no transaction open ends nothing.
        assert (await client.command("RSET")).code == 250
        assert handler.calls[-1] == ("end", "a@example.com", ["b@example.org"], reset)
        # The transaction is gone: RCPT needs a new MAIL.
        assert (await client.command("RCPT TO:<b@example.org>")).code == 503

        await client.command("MAIL FROM:<x@example.com>")
        reply = await client.command("HELO again.example")
        assert reply.code == 250
        assert handler.calls[-2:] == [
            ("helo", "again.example", False),
            ("end", "x@example.com", [], reset),
        ]
        assert (await client.command("RCPT TO:<b@example.org>")).code == 503
        # A second message gets a fresh envelope.
        assert (await client.sendmail("y@example.com", ["z@example.org"], b"x\r\n")).code == 250
    assert handler.messages[0].envelope.mail_from == "y@example.com"
    assert handler.messages[0].envelope.rcpt_tos == ("z@example.org",)
    assert names(handler).count("close") == 1


async def test_on_close_once_when_the_client_just_leaves() -> None:
    handler = Recorder()
    async with open_test_session(handler) as client:
        await client.command("EHLO c.example")
    assert names(handler) == ["connect", "helo", "close"]


class RejectingRcpt(Handler):
    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.startswith("nobody@"):
            raise Reject(550, "5.1.1", "No such user here")
        if address.startswith("busy@"):
            return Reply(452, "4.2.2", "Mailbox full")
        if address.startswith("vip@"):
            return Reply(250, "2.1.5", "Welcome, VIP")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        session.state["rcpts"] = list(message.envelope.rcpt_tos)
        return Reply(250, "2.0.0", f"Queued as {message.envelope.id}")


async def test_reject_and_replies_from_callbacks() -> None:
    async with open_test_session(RejectingRcpt()) as client:
        await client.command("EHLO c.example")
        await client.command("MAIL FROM:<a@example.com>")
        reply = await client.command("RCPT TO:<nobody@example.org>")
        assert (reply.code, reply.enhanced) == (550, "5.1.1")
        assert b"\r\n550 5.1.1 No such user here\r\n" in client.transcript
        reply = await client.command("RCPT TO:<busy@example.org>")
        assert (reply.code, reply.enhanced) == (452, "4.2.2")
        # Only refused recipients so far: DATA has no one to deliver to.
        assert (await client.command("DATA")).code == 554
        reply = await client.command("RCPT TO:<vip@example.org>")
        assert reply.code == 250
        assert reply.lines == ("2.1.5 Welcome, VIP",)
        assert (await client.command("DATA")).code == 354
        await client.send(b"hi\r\n.\r\n")
        reply = await client.read_reply()
        assert reply.code == 250
        assert re.fullmatch(r"2\.0\.0 Queued as [0-9a-f]+-1", reply.lines[0])


class Exploding(Handler):
    """on_mail raises once with a secret; on_rcpt returns the wrong type."""

    def __init__(self) -> None:
        self.failures = 0
        self.session: Session | None = None

    async def on_connect(self, session: Session) -> Reply | None:
        self.session = session
        return None

    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError(SECRET)
        return None

    async def on_rcpt(  # type: ignore[override]
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> object:
        if address.startswith("str@"):
            return "250 OK"  # the wrong type: not a Reply
        return None


async def test_a_failing_callback_answers_451_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Exploding()
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    async with open_test_session(handler) as client:
        await client.command("EHLO c.example")
        reply = await client.command("MAIL FROM:<a@example.com>")
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
        # The session goes on: the same command now works.
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        reply = await client.command("RCPT TO:<str@example.org>")
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
        assert (await client.command("RCPT TO:<ok@example.org>")).code == 250
        assert (await client.command("QUIT")).code == 221
    assert SECRET.encode() not in client.transcript
    assert b"RuntimeError" not in client.transcript
    assert handler.session is not None
    sid = handler.session.id
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failed) == 2
    assert all(f"[{sid}]" in r.getMessage() for r in failed)
    assert failed[0].exc_info is not None
    assert "on_mail" in failed[0].getMessage()
    assert "on_rcpt" in failed[1].getMessage()


class RefuseAtConnect(Handler):
    async def on_connect(self, session: Session) -> Reply | None:
        raise Reject(554, "5.7.1", "Go away")


async def test_refused_greeting_then_only_quit() -> None:
    async with open_test_session(RefuseAtConnect(), read_greeting=False) as client:
        greeting = await client.read_reply()
        assert greeting.code == 554
        assert greeting.lines == ("5.7.1 Go away",)
        for command in ("EHLO c.example", "HELO c.example", "MAIL FROM:<a@example.com>", "NOOP"):
            reply = await client.command(command)
            assert (reply.code, reply.enhanced) == (503, "5.5.1"), command
        assert (await client.command("QUIT")).code == 221
        assert await client.at_eof()


class ExplodingAtConnect(Handler):
    def __init__(self) -> None:
        self.closed = 0

    async def on_connect(self, session: Session) -> Reply | None:
        raise RuntimeError(SECRET)

    async def on_close(self, session: Session) -> None:
        self.closed += 1


async def test_on_connect_failing_answers_421_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A failure in on_connect is a local, temporary problem: the greeting is 421 (RFC 5321
    # §3.1 allows only 220, 554 or 421 there) and the connection is closed, so the client
    # comes back later instead of talking to a session that can only answer 503.
    handler = ExplodingAtConnect()
    async with open_test_session(handler, read_greeting=False) as client:
        greeting = await client.read_reply()
        assert (greeting.code, greeting.enhanced) == (421, "4.3.0")
        assert await client.at_eof()
    assert SECRET.encode() not in client.transcript
    assert handler.closed == 1
    assert any(
        r.levelno == logging.ERROR and "on_connect" in r.getMessage() for r in caplog.records
    )


class TempRefuseAtConnect(Handler):
    async def on_connect(self, session: Session) -> Reply | None:
        raise Reject(450, "4.7.1", "Try later")


async def test_on_connect_temporary_refusal_is_a_421_greeting() -> None:
    async with open_test_session(TempRefuseAtConnect(), read_greeting=False) as client:
        greeting = await client.read_reply()
        assert greeting.code == 421
        assert greeting.lines == ("4.7.1 Try later",)
        assert await client.at_eof()


async def test_vrfy_noop_help_and_unknown() -> None:
    async with open_test_session(Handler()) as client:
        assert (await client.command("VRFY someone")).code == 252
        assert (await client.command("NOOP")).code == 250
        assert (await client.command("HELP")).code == 214
        reply = await client.command("FROB")
        assert (reply.code, reply.enhanced) == (500, "5.5.2")
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 503


async def test_pipelined_commands_are_answered_in_order() -> None:
    handler = RejectingRcpt()
    async with open_test_session(handler) as client:
        await client.command("EHLO c.example")
        await client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<nobody@example.org>\r\n"
            b"RCPT TO:<b@example.org>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n"
        )
        codes = [(await client.read_reply()).code for _ in range(6)]
        assert codes == [250, 550, 250, 354, 250, 221]
        assert await client.at_eof()


# ---- a session never leaks an exception on bad input --------------------------------------

_REPLY_LINE = re.compile(rb"[2-5]\d\d[ -][^\r\n]*\Z")

_FRAGMENTS = st.sampled_from(
    [
        b"EHLO x.example\r\n",
        b"HELO x\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<a@b.example> SIZE=999999999999\r\n",
        b"RCPT TO:<d@e.example>\r\n",
        b"DATA\r\n",
        b"RSET\r\n",
        b".\r\n",
        b"\r\n",
        b"\n.\n",
        b"\r.\r",
        b"..\r\n",
        b"\xff\xfe\r\n",
        b"QUIT\r\n",
        b"x" * 700,
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.one_of(st.binary(max_size=80), _FRAGMENTS), max_size=25))
async def test_random_input_ends_cleanly_with_well_formed_replies(chunks: list[bytes]) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    handler = Recorder()
    sessions: list[Session] = []

    async def serve() -> None:
        sessions.append(
            await run_session(server_stream, handler, peer=TEST_PEER, config=Config(hostname="mx"))
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            # The server may close first (QUIT, too many errors): then sending breaks.
            with contextlib.suppress(trio.BrokenResourceError):
                for chunk in chunks:
                    await client_stream.send_all(chunk)
                await client_stream.send_eof()
            received = bytearray()
            while data := await client_stream.receive_some(65536):
                received += data
    assert len(sessions) == 1
    assert names(handler).count("close") == 1
    assert received.endswith(b"\r\n")
    lines = bytes(received).split(b"\r\n")[:-1]
    assert lines[0].startswith(b"220 mx ")
    for line in lines:
        assert _REPLY_LINE.match(line), line
    # The last line ends a reply (no dangling continuation line).
    assert lines[-1][3:4] == b" "


# ---- timeouts (MockClock via the autojump_clock fixture) ---------------------------------

TIMEOUT = 30.0


class SlowData(Recorder):
    async def on_data(self, session: Session, message: Message) -> Reply | None:
        await trio.sleep(TIMEOUT * 3)
        return await super().on_data(session, message)


async def test_idle_client_times_out(autojump_clock: trio.testing.MockClock) -> None:
    handler = Recorder()
    config = Config(hostname="mx.test", command_timeout=TIMEOUT)
    async with open_test_session(handler, config=config) as client:
        start = trio.current_time()
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        # The clock is restarted at most once a second: the timeout is met to within 1 s late.
        assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + 1
        assert await client.at_eof()
    assert names(handler) == ["connect", "close"]


async def test_client_silent_in_the_middle_of_data_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Recorder()
    # Without a minimum data rate, each chunk of text restarts the full timeout.
    config = Config(hostname="mx.test", command_timeout=TIMEOUT, min_data_rate=None)
    async with open_test_session(handler, config=config) as client:
        await client.command("EHLO c.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.command("DATA")).code == 354
        # Chunks arriving within the timeout keep the session alive...
        for _ in range(3):
            await trio.sleep(TIMEOUT * 0.9)
            await client.send(b"more text\r\n")
        start = trio.current_time()
        # ...then silence.
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        # The clock is restarted at most once a second: the timeout is met to within 1 s late.
        assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + 1
        assert await client.at_eof()
    assert "data" not in names(handler)


async def test_handler_time_never_counts_as_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = SlowData()
    config = Config(hostname="mx.test", command_timeout=TIMEOUT)
    async with open_test_session(handler, config=config) as client:
        await client.command("EHLO c.example")
        start = trio.current_time()
        reply = await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
        assert trio.current_time() - start >= TIMEOUT * 3
        assert (await client.command("QUIT")).code == 221
    assert handler.messages[0].content == MESSAGE


class GoingAway(Handler):
    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        raise Reject(421, "4.3.2", "Going away")


async def test_a_421_from_a_callback_closes_the_connection() -> None:
    # 421 means "closing the transmission channel" (RFC 5321 §3.8): the server must close.
    async with open_test_session(GoingAway()) as client:
        await client.command("EHLO c.example")
        await client.command("MAIL FROM:<a@example.com>")
        reply = await client.command("RCPT TO:<b@example.org>")
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
        assert await client.at_eof()


async def test_bad_input_gets_its_reply_and_a_log_line_with_the_connection_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids: list[str] = []

    class Remember(Handler):
        async def on_connect(self, session: Session) -> Reply | None:
            ids.append(session.id)
            return None

    caplog.set_level(logging.DEBUG, logger="smtpd_trio")
    async with open_test_session(Remember()) as client:
        await client.send(b"\x00\xff\xfe garbage\r\n")
        assert (await client.read_reply()).code == 500
        await client.send(b"MAIL FROM:<a@b.c>\nRCPT TO:<d@e.f>\r\n")
        assert (await client.read_reply()).code == 500
        await client.send(b"X" * 5000 + b"\r\n")
        assert (await client.read_reply()).code == 500
        assert (await client.command("NOOP")).code == 250  # still serving
        assert (await client.command("QUIT")).code == 221
    (sid,) = ids
    about_it = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"[{sid}] ")]
    refusals = [m for m in about_it if "-> 500" in m]
    assert len(refusals) == 3, about_it
    assert any(m.startswith(f"[{sid}] closed (quit)") for m in about_it)
    assert not any(r.exc_info for r in caplog.records)  # nothing leaked as a traceback


async def test_a_client_trickling_bytes_cannot_stretch_a_command_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(hostname="mx.test", command_timeout=TIMEOUT)
    async with open_test_session(Recorder(), config=config) as client:
        start = trio.current_time()

        async def trickle() -> None:
            # One byte of "NOOP" every half timeout: bytes keep coming, a command never does.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for byte in b"NOOPNOOPNOOPNOOP":
                    await client.send(bytes([byte]))
                    await trio.sleep(TIMEOUT / 2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            reply = await client.read_reply()
            nursery.cancel_scope.cancel()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + 1


async def test_a_client_that_stops_reading_is_dropped(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A lockstep stream has no buffer: a send completes only when the other side reads. The
    # client pipelines commands and never reads a reply; the server must not wait forever.
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    client, server = trio.testing.lockstep_stream_pair()
    handler = Recorder()
    sessions: list[Session] = []
    config = Config(hostname="mx.test", command_timeout=TIMEOUT)

    async def serve() -> None:
        sessions.append(await run_session(server, handler, peer=TEST_PEER, config=config))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        start = trio.current_time()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await client.send_all(b"NOOP\r\n" * 100)
        await trio.sleep(TIMEOUT * 3)
    assert len(sessions) == 1
    (session,) = sessions
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"[{session.id}]")]
    assert f"[{session.id}] client stopped reading; closing" in lines
    assert any(line.startswith(f"[{session.id}] closed (stalled)") for line in lines)
    assert names(handler) == ["connect", "close"]
    assert trio.current_time() - start >= TIMEOUT
