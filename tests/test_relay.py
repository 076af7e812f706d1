"""The relay handler against a second smtpd-trio server on 127.0.0.1, in the same Trio run.

The client talks to the relaying server over an in-memory stream (``open_test_session``); the
relay talks to the upstream over a real loopback socket. The upstream's handler records what it
saw, so each test can check what reached it as well as what the client was told. Broken
upstreams are small scripted servers on loopback sockets.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Awaitable, Callable, Mapping

import attrs
import pytest
import trio

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    Reject,
    Reply,
    Session,
    TransactionOutcome,
    serve_smtp,
)
from smtpd_trio.handlers.relay import Relay
from smtpd_trio.testing import ClientReply, TestClient, open_test_session

UNAVAILABLE = "451 4.4.1 Upstream server unavailable, try again later"
#: A deadline for each test's waits on the upstream, so a bug fails the test instead of hanging.
DEADLINE = 20.0


@attrs.frozen
class Delivery:
    mail_from: str
    mail_params: Mapping[str, str | None]
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls_version: str | None


class Upstream(Handler):
    """The server the relay forwards to: refuses some recipients, records everything."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = 0
        self.mails: list[str] = []
        self.deliveries: list[Delivery] = []
        self.outcomes: list[TransactionOutcome] = []
        self.port = 0
        self._changed = trio.Event()

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(DEADLINE):
            while not predicate():
                await self._changed.wait()

    async def on_connect(self, session: Session) -> Reply | None:
        self.connections += 1
        self._change()
        return None

    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        self.mails.append(address)
        if address == "banned@example.com":
            raise Reject(553, "5.7.1", "Sender banned here")
        return None

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        local = address.partition("@")[0]
        if local == "nobody":
            raise Reject(550, "5.1.1", f"<{address}>: No such user here")
        if local == "later":
            raise Reject(450, "4.2.1", "Mailbox full, try again later")
        if local == "closing":
            return Reply(421, "4.3.2", "Shutting down")
        if local == "forward":
            return Reply(251, "2.1.5", "User not local; will forward")
        if local == "slow":
            await trio.sleep_forever()
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        if b"spam" in message.content:
            raise Reject(554, "5.7.1", "Looks like spam")
        envelope = message.envelope
        self.deliveries.append(
            Delivery(
                envelope.mail_from,
                dict(envelope.mail_params),
                envelope.rcpt_tos,
                message.content,
                session.tls.version if session.tls else None,
            )
        )
        return Reply(250, "2.0.0", f"Queued as {envelope.id}")

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.outcomes.append(outcome)
        self._change()

    async def on_close(self, session: Session) -> None:
        self.closed += 1
        self._change()


async def start_upstream(
    nursery: trio.Nursery, config: Config | None = None, handler: Upstream | None = None
) -> Upstream:
    handler = handler or Upstream()
    listeners = await nursery.start(
        functools.partial(
            serve_smtp,
            handler,
            port=0,
            host="127.0.0.1",
            config=config or Config(hostname="upstream.test"),
        )
    )
    handler.port = listeners[0].socket.getsockname()[1]
    return handler


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> Upstream:
    return await start_upstream(nursery)


def front(relay: Relay, **config: object) -> Config:
    return Config(hostname="front.test", **config)  # type: ignore[arg-type]


async def ehlo(client: TestClient) -> None:
    assert (await client.command("EHLO client.example")).code == 250


def text(reply: ClientReply) -> str:
    return str(reply)


MESSAGE = (
    b"From: a@example.com\r\nSubject: relayed\r\n\r\n"
    b"From the start of a line\r\n.a dot line\r\n..two dots\r\n.\r\nlast\r\n"
)


async def test_a_message_sent_with_bdat_is_relayed_with_data(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        reply = await client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
        assert text(reply) == (
            "555 5.6.3 BODY=BINARYMIME cannot be relayed here: send 8BITMIME or 7BIT"
        )
        assert (await client.command("MAIL FROM:<a@example.com> BODY=8BITMIME")).code == 250
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        half = len(MESSAGE) // 2
        await client.send(b"BDAT %d\r\n" % half + MESSAGE[:half])
        assert text(await client.read_reply()) == f"250 2.0.0 {half} octets received"
        await client.send(b"BDAT %d LAST\r\n" % (len(MESSAGE) - half) + MESSAGE[half:])
        reply = await client.read_reply()
        assert reply.code == 250
        assert reply.text.startswith("2.0.0 Queued as ")
    (delivery,) = upstream.deliveries
    assert delivery.content.endswith(b"\r\n" + MESSAGE)


async def test_each_recipient_gets_the_upstreams_own_answer(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert text(await client.command("MAIL FROM:<a@example.com> SIZE=500 BODY=8BITMIME")) == (
            "250 2.1.0 Sender OK"
        )
        answers = [
            text(await client.command(f"RCPT TO:<{local}@example.org>"))
            for local in ("b", "nobody", "later", "forward", "c")
        ]
        assert answers == [
            "250 2.1.5 Recipient OK",
            "550 5.1.1 <nobody@example.org>: No such user here",
            "450 4.2.1 Mailbox full, try again later",
            "251 2.1.5 User not local; will forward",
            "250 2.1.5 Recipient OK",
        ]
        assert (await client.command("DATA")).code == 354
        await client.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        reply = await client.read_reply()
        assert reply.code == 250
        assert reply.text.startswith("2.0.0 Queued as ")
        assert (await client.command("QUIT")).code == 221
    (delivery,) = upstream.deliveries
    assert delivery.mail_from == "a@example.com"
    assert delivery.mail_params == {"SIZE": "500", "BODY": "8BITMIME"}
    assert delivery.rcpt_tos == ("b@example.org", "forward@example.org", "c@example.org")
    # The upstream received the message exactly, with our Received header on top.
    header, _, rest = delivery.content.partition(b"From: a@example.com\r\n")
    assert b"From: a@example.com\r\n" + rest == MESSAGE
    assert header.startswith(b"Received: from client.example ([192.0.2.1])\r\n\tby front.test ")
    assert header.endswith(b"\r\n")
    assert delivery.tls_version is None
    await upstream.wait_until(lambda: upstream.closed == 1)


async def test_a_refused_sender_opens_no_transaction(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert text(await client.command("MAIL FROM:<banned@example.com>")) == (
            "553 5.7.1 Sender banned here"
        )
        assert (await client.command("RCPT TO:<b@example.org>")).code == 503
        reply = await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert reply.code == 250
    assert upstream.connections == 1
    assert [d.mail_from for d in upstream.deliveries] == ["a@example.com"]


async def test_a_refused_message_is_relayed_and_the_connection_kept(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: spam\r\n\r\nspam spam\r\n.\r\n")
        assert text(await client.read_reply()) == "554 5.7.1 Looks like spam"
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
        assert (await client.sendmail("c@example.com", ["d@example.org"], MESSAGE)).code == 250
    assert upstream.connections == 1
    assert [d.mail_from for d in upstream.deliveries] == ["a@example.com", "c@example.com"]
    await upstream.wait_until(lambda: len(upstream.outcomes) == 3)
    assert upstream.outcomes == [
        TransactionOutcome.REFUSED,
        TransactionOutcome.ACCEPTED,
        TransactionOutcome.ACCEPTED,
    ]


async def test_rset_and_a_message_refused_here_reset_the_upstream(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay, max_message_size=100)) as client:
        await ehlo(client)
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert text(await client.command("RSET")) == "250 2.0.0 Reset OK"
        await upstream.wait_until(lambda: upstream.outcomes == [TransactionOutcome.RESET])
        # Too big for this server: the upstream never sees the text, and is reset.
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"x" * 98 + b"\r\n" * 2)
        assert text(reply).startswith("552 5.3.4 ")
        await upstream.wait_until(lambda: len(upstream.outcomes) == 2)
        assert upstream.outcomes[1] is TransactionOutcome.RESET
        assert (await client.sendmail("a@example.com", ["b@example.org"], b"ok\r\n")).code == 250
    assert upstream.connections == 1
    assert len(upstream.deliveries) == 1


async def test_upstream_down_is_451_4_4_1() -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    relay = Relay("127.0.0.1", port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert text(await client.command("MAIL FROM:<a@example.com>")) == UNAVAILABLE
        assert (await client.command("RCPT TO:<b@example.org>")).code == 503
        assert (await client.command("QUIT")).code == 221


# ---- broken and silent upstreams ------------------------------------------------------------

Script = Callable[[trio.SocketStream], Awaitable[None]]


async def scripted_upstream(nursery: trio.Nursery, script: Script) -> int:
    """A loopback server that runs ``script`` on each connection; its port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await script(stream)

    nursery.start_soon(trio.serve_listeners, serve, listeners)
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def read_line(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        data = await stream.receive_some(4096)
        if not data:
            raise trio.BrokenResourceError
        buffer += data
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


def upstream_script(*answers: bytes | None, greeting: bytes = b"220 fake ESMTP\r\n") -> Script:
    """Greet, then answer each command with the next of ``answers``; at None, close."""

    async def script(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        await stream.send_all(greeting)
        for answer in answers:
            await read_line(stream, buffer)
            if answer is None:
                return
            await stream.send_all(answer)
        await trio.sleep_forever()

    return script


EHLO_OK = b"250-fake\r\n250 8BITMIME\r\n"


@pytest.mark.parametrize(
    ("script", "failing_step"),
    [
        pytest.param(upstream_script(greeting=b"hello there\r\n"), "MAIL", id="garbage-greeting"),
        pytest.param(upstream_script(greeting=b"554 go away\r\n"), "MAIL", id="refusing-greeting"),
        pytest.param(upstream_script(None), "MAIL", id="closes-at-ehlo"),
        pytest.param(upstream_script(EHLO_OK, b"what?\r\n"), "MAIL", id="garbage-reply"),
        pytest.param(upstream_script(EHLO_OK, b"354 go on\r\n"), "MAIL", id="354-to-mail"),
        pytest.param(
            upstream_script(EHLO_OK, b"250 " + b"x" * 10_000 + b"\r\n"), "MAIL", id="long-line"
        ),
        pytest.param(
            upstream_script(EHLO_OK, b"250-" + b"x\r\n250-" * 500 + b"x\r\n"),
            "MAIL",
            id="endless-reply",
        ),
        pytest.param(upstream_script(EHLO_OK, b"250 ok\r\n", None), "RCPT", id="closes-at-rcpt"),
        pytest.param(
            upstream_script(EHLO_OK, b"250 ok\r\n250 ok\r\n250 and more\r\n"),
            "RCPT",
            id="unasked-reply",
        ),
        pytest.param(
            upstream_script(EHLO_OK, b"250 ok\r\n", b"250 ok\r\n", b"250 not 354\r\n"),
            "DATA",
            id="250-to-data",
        ),
        pytest.param(
            upstream_script(EHLO_OK, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", None),
            "DATA",
            id="closes-during-data",
        ),
    ],
)
async def test_a_broken_upstream_is_451_and_never_breaks_the_session(
    nursery: trio.Nursery, script: Script, failing_step: str
) -> None:
    port = await scripted_upstream(nursery, script)
    relay = Relay("127.0.0.1", port, starttls=False, timeout=5.0)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        reply = await client.command("MAIL FROM:<a@example.com>")
        if failing_step == "MAIL":
            assert text(reply) == UNAVAILABLE
        else:
            assert reply.code == 250
            reply = await client.command("RCPT TO:<b@example.org>")
            if failing_step == "RCPT":
                assert text(reply) == UNAVAILABLE
            else:
                assert reply.code == 250
                assert (await client.command("DATA")).code == 354
                await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
                assert text(await client.read_reply()) == UNAVAILABLE
        assert (await client.command("NOOP")).code == 250
        assert (await client.command("QUIT")).code == 221
    assert b"Traceback" not in client.transcript
    assert b"Error" not in client.transcript


async def test_a_silent_upstream_is_451_after_the_connect_timeout(nursery: trio.Nursery) -> None:
    async def never_greets(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await scripted_upstream(nursery, never_greets)
    relay = Relay("127.0.0.1", port, starttls=False, connect_timeout=0.2)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert text(await client.command("MAIL FROM:<a@example.com>")) == UNAVAILABLE


async def test_a_slow_answer_is_451_and_the_next_transaction_reconnects(
    upstream: Upstream,
) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False, timeout=1.0)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        await client.command("MAIL FROM:<a@example.com>")
        assert text(await client.command("RCPT TO:<slow@example.org>")) == UNAVAILABLE
        # The upstream connection was dropped: nothing more can be relayed in this transaction.
        assert text(await client.command("RCPT TO:<b@example.org>")) == UNAVAILABLE
        assert (await client.command("RSET")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], b"x\r\n")).code == 250
    assert upstream.connections == 2
    assert len(upstream.deliveries) == 1


async def test_a_handler_timeout_drops_the_upstream_connection(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay, handler_timeout=1.0)) as client:
        await ehlo(client)
        await client.command("MAIL FROM:<a@example.com>")
        reply = await client.command("RCPT TO:<slow@example.org>")
        assert text(reply).startswith("451 4.4.5 ")
        # The conversation upstream was cut in the middle of a command: it is closed, not kept.
        assert client.session.state.upstream is None
        assert text(await client.command("RCPT TO:<b@example.org>")) == UNAVAILABLE
        assert (await client.command("RSET")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], b"x\r\n")).code == 250
    assert upstream.connections == 2


async def test_421_from_upstream_is_451_and_the_next_transaction_reconnects(
    upstream: Upstream,
) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        await client.command("MAIL FROM:<a@example.com>")
        assert text(await client.command("RCPT TO:<closing@example.org>")) == (
            "451 4.3.2 Shutting down"
        )
        assert text(await client.command("RCPT TO:<b@example.org>")) == UNAVAILABLE
        assert (await client.command("RSET")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], b"x\r\n")).code == 250
    assert upstream.connections == 2


async def test_a_kept_connection_closed_by_the_upstream_is_replaced(nursery: trio.Nursery) -> None:
    # The upstream drops idle clients after a short command timeout.
    upstream = await start_upstream(nursery, Config(hostname="upstream.test", command_timeout=1.0))
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert (await client.sendmail("a@example.com", ["b@example.org"], b"1\r\n")).code == 250
        await upstream.wait_until(lambda: upstream.closed == 1)
        assert (await client.sendmail("a@example.com", ["b@example.org"], b"2\r\n")).code == 250
    assert upstream.connections == 2
    assert [d.content[-3:] for d in upstream.deliveries] == [b"1\r\n", b"2\r\n"]


async def test_the_upstream_connection_ends_with_the_session(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        await client.command("MAIL FROM:<a@example.com>")
        assert upstream.closed == 0
    await upstream.wait_until(lambda: upstream.closed == 1)
    assert upstream.outcomes == [TransactionOutcome.ABORTED]


# ---- STARTTLS -------------------------------------------------------------------------------


@pytest.fixture
async def tls_upstream(nursery: trio.Nursery, server_ctx: ssl.SSLContext) -> Upstream:
    return await start_upstream(nursery, Config(hostname="upstream.test", tls_context=server_ctx))


async def test_starttls_with_a_verified_certificate(
    tls_upstream: Upstream, client_ctx: ssl.SSLContext
) -> None:
    relay = Relay("127.0.0.1", tls_upstream.port, tls_context=client_ctx)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    (delivery,) = tls_upstream.deliveries
    assert delivery.tls_version in ("TLSv1.2", "TLSv1.3")


async def test_an_unverifiable_certificate_is_451_never_plain_text(tls_upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", tls_upstream.port)  # the system's CAs: the test CA is unknown
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert text(await client.command("MAIL FROM:<a@example.com>")) == UNAVAILABLE
    assert tls_upstream.mails == []


async def test_no_verify_accepts_a_private_certificate(tls_upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", tls_upstream.port, verify_tls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    (delivery,) = tls_upstream.deliveries
    assert delivery.tls_version is not None


async def test_starttls_false_stays_in_plain_text(tls_upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", tls_upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    assert tls_upstream.deliveries[0].tls_version is None


def test_verify_tls_false_and_a_context_do_not_go_together(client_ctx: ssl.SSLContext) -> None:
    with pytest.raises(ValueError, match="not both"):
        Relay("127.0.0.1", 25, verify_tls=False, tls_context=client_ctx)
    with pytest.raises(ValueError, match="port"):
        Relay("127.0.0.1", 0)


# ---- SMTPUTF8 and large messages ------------------------------------------------------------


async def test_smtputf8_is_passed_on_when_the_upstream_has_it(upstream: Upstream) -> None:
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert (await client.command("MAIL FROM:<jörg@example.com> SMTPUTF8")).code == 250
        assert (await client.command("RCPT TO:<zoë@example.org>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send("Subject: grüße\r\n\r\nx\r\n.\r\n".encode())
        assert (await client.read_reply()).code == 250
    (delivery,) = upstream.deliveries
    assert delivery.mail_from == "jörg@example.com"
    assert "SMTPUTF8" in delivery.mail_params
    assert delivery.rcpt_tos == ("zoë@example.org",)


async def test_utf8_addresses_are_refused_when_the_upstream_lacks_smtputf8(
    nursery: trio.Nursery,
) -> None:
    upstream = await start_upstream(nursery, Config(hostname="upstream.test", smtputf8=False))
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    async with open_test_session(relay, config=front(relay)) as client:
        await ehlo(client)
        assert text(await client.command("MAIL FROM:<jörg@example.com> SMTPUTF8")) == (
            "553 5.6.7 Upstream server does not support SMTPUTF8 addresses"
        )
        # An ASCII sender goes on without SMTPUTF8; a UTF-8 recipient cannot.
        assert (await client.command("MAIL FROM:<a@example.com> SMTPUTF8")).code == 250
        assert text(await client.command("RCPT TO:<zoë@example.org>")) == (
            "553 5.6.7 Upstream server does not support SMTPUTF8 addresses"
        )
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        assert (await client.read_reply()).code == 250
    (delivery,) = upstream.deliveries
    assert "SMTPUTF8" not in delivery.mail_params


async def test_a_large_message_arrives_intact(nursery: trio.Nursery) -> None:
    limit = 32 * 1024 * 1024
    upstream = await start_upstream(
        nursery, Config(hostname="upstream.test", max_message_size=limit)
    )
    relay = Relay("127.0.0.1", upstream.port, starttls=False)
    lines = [b"From line %d\r\n" % n if n % 7 == 0 else b".dot %d\r\n" % n for n in range(200)]
    body = b"".join(lines) * 2500 + b"x" * 900 + b"\r\n"
    content = b"Subject: large\r\n\r\n" + body
    assert len(content) > 4 * 1024 * 1024
    async with open_test_session(relay, config=front(relay, max_message_size=limit)) as client:
        await ehlo(client)
        reply = await client.sendmail("a@example.com", ["b@example.org"], content)
        assert reply.code == 250
    (delivery,) = upstream.deliveries
    assert delivery.content.endswith(content)
    assert delivery.content[: -len(content)].startswith(b"Received: from client.example")
