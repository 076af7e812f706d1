"""ServerThread, Collector and the smtpd_server fixture from plain synchronous tests.

Nothing here imports Trio: this is how a Django or Flask test suite sees the package.
"""

from __future__ import annotations

import email.message
import errno
import smtplib
import socket
import threading
from collections.abc import Mapping
from email.policy import SMTP
from typing import Any

import pytest
from server_log import shutdown_begun

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    Reject,
    Reply,
    ServerThread,
    Session,
    SMTPServer,
)
from smtpd_trio.pytest_plugin import LiveServer
from smtpd_trio.testing import Collector, as_email

HOST = "127.0.0.1"
MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Hello\r\n\r\nHi there.\r\n"


def send(server: ServerThread | LiveServer, message: bytes = MESSAGE, **envelope: Any) -> None:
    mail_from = envelope.get("mail_from", "a@example.com")
    rcpt_tos = envelope.get("rcpt_tos", ["b@example.org"])
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=10) as smtp:
        assert smtp.sendmail(mail_from, rcpt_tos, message) == {}


# ---------------------------------------------------------------------------------------------
# ServerThread
# ---------------------------------------------------------------------------------------------


def test_messages_sent_with_smtplib_arrive() -> None:
    inbox = Collector()
    with ServerThread(inbox, config=Config(hostname="mx.test")) as server:
        assert repr(server) == f"<ServerThread Collector {HOST}:{server.port}>"
        assert server.host == HOST
        assert server.port > 0
        assert [str(a) for a in server.addresses] == [f"{HOST}:{server.port}"]
        send(server)
        send(server, b"Subject: second\r\n\r\n.leading dot\r\n", rcpt_tos=["c@example.org"])
    assert repr(server) == "<ServerThread Collector stopped>"
    first, second = inbox.messages
    assert first.content == MESSAGE
    assert first.envelope.mail_from == "a@example.com"
    assert first.envelope.rcpt_tos == ("b@example.org",)
    assert first.received_header.startswith("Received: from client.test ([127.0.0.1])")
    assert "by mx.test (smtpd-trio)" in first.received_header
    assert second.content == b"Subject: second\r\n\r\n.leading dot\r\n"
    assert second.envelope.rcpt_tos == ("c@example.org",)


def test_start_returns_once_the_port_accepts() -> None:
    server = ServerThread(Handler(), config=Config(hostname="mx.test"))
    server.start()
    try:
        # No retry: the first connection attempt after start() is served.
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            assert sock.recv(1024).startswith(b"220 mx.test ")
    finally:
        server.stop()


def test_the_handlers_refusals_reach_the_client() -> None:
    class OnlyExampleOrg(Collector):
        async def on_rcpt(
            self,
            session: Session,
            envelope: Envelope,
            address: str,
            params: Mapping[str, str | None],
        ) -> Reply | None:
            if not address.endswith("@example.org"):
                raise Reject(550, "5.1.1", "No such user here")
            return None

    inbox = OnlyExampleOrg()
    with ServerThread(inbox) as server, smtplib.SMTP(server.host, server.port) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("a@example.com", ["x@elsewhere.test"], MESSAGE)
        assert refused.value.recipients == {"x@elsewhere.test": (550, b"5.1.1 No such user here")}
        refusals = smtp.sendmail("a@example.com", ["x@elsewhere.test", "b@example.org"], MESSAGE)
        assert refusals == {"x@elsewhere.test": (550, b"5.1.1 No such user here")}
    inbox.assert_one_message(to="b@example.org")


def test_a_bad_handler_is_refused_when_built() -> None:
    class Sync(Handler):
        def on_data(self, session: Session, message: Message) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match="on_data must be an async function"):
        ServerThread(Sync())


def test_an_address_in_use_is_raised_by_start() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        server = ServerThread(Handler(), port=taken.getsockname()[1])
        with pytest.raises(OSError, match="in use") as raised:
            server.start()
    assert raised.type is OSError  # the error itself, not a group holding it
    assert raised.value.errno == errno.EADDRINUSE
    assert not server.running
    with pytest.raises(RuntimeError, match="not running"):
        server.port  # noqa: B018


def test_an_error_in_the_server_thread_is_raised_by_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    broke = threading.Event()

    async def accept_then_fail(self: SMTPServer, listener: Any, connections: object) -> None:
        stream = await listener.accept()
        await stream.aclose()
        broke.set()
        raise RuntimeError("the accept loop broke")

    monkeypatch.setattr(SMTPServer, "_accept_loop", accept_then_fail)
    server = ServerThread(Handler())
    server.start()
    socket.create_connection((server.host, server.port), timeout=10).close()
    assert broke.wait(10)
    with pytest.raises(RuntimeError, match="the accept loop broke"):
        server.stop()
    assert not server.running
    server.stop()  # once raised, it is stopped: nothing more to say


def test_an_error_in_the_server_thread_is_raised_on_leaving_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broke = threading.Event()

    async def accept_then_fail(self: SMTPServer, listener: Any, connections: object) -> None:
        await (await listener.accept()).aclose()
        broke.set()
        raise RuntimeError("the accept loop broke")

    def serve_a_connection() -> None:
        with ServerThread(Handler()) as server:
            socket.create_connection((server.host, server.port), timeout=10).close()
            assert broke.wait(10)

    monkeypatch.setattr(SMTPServer, "_accept_loop", accept_then_fail)
    with pytest.raises(RuntimeError, match="the accept loop broke"):
        serve_a_connection()


def test_stop_lets_an_open_transaction_finish() -> None:
    inbox = Collector()
    server = ServerThread(inbox, config=Config(hostname="mx.test"))
    server.start()
    stopper = threading.Thread(target=server.stop)
    with shutdown_begun() as begun, smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("a@example.com")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 250
        stopper.start()
        assert begun.wait(10)
        assert stopper.is_alive()  # stop() waits for this transaction
        code, reply = smtp.data(MESSAGE)
        assert (code, reply) == (250, b"2.0.0 Message accepted")
        # Then the server says goodbye.
        assert smtp.getreply() == (421, b"4.3.2 Service shutting down, closing connection")
    stopper.join(10)
    assert not stopper.is_alive()
    assert [m.content for m in inbox.messages] == [MESSAGE]


def test_stop_closes_idle_sessions_with_421() -> None:
    # Also when the session is still finishing the write of its last reply as the shutdown
    # begins: it must not wait for the (long) shutdown deadline before it says 421.
    server = ServerThread(Handler(), shutdown_timeout=600)
    with server, smtplib.SMTP(server.host, server.port) as smtp:
        smtp.ehlo("client.test")
        server.stop()  # were the session to wait, the command timeout (4.4.2) would end it
        assert smtp.getreply() == (421, b"4.3.2 Service shutting down, closing connection")


def test_stop_with_timeout_0_does_not_wait_for_a_transaction() -> None:
    inbox = Collector()
    server = ServerThread(inbox, shutdown_timeout=600)
    server.start()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("a@example.com")[0] == 250
        server.stop(timeout=0)  # returns without the transaction: nothing was acknowledged
        # The session was cancelled and said so.
        reply = smtp.rcpt("b@example.org")
        assert reply == (421, b"4.3.2 Service shutting down, closing connection")
    inbox.assert_no_messages()


def test_start_stop_start_again() -> None:
    inbox = Collector()
    server = ServerThread(inbox)
    with pytest.raises(RuntimeError, match="not running"):
        server.host  # noqa: B018
    server.stop()  # not running: nothing to do
    server.start()
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    send(server)
    server.stop()
    server.stop()
    server.start()
    send(server, b"Subject: again\r\n\r\n")
    server.stop()
    assert [as_email(m)["Subject"] for m in inbox.messages] == ["Hello", "again"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_several_hosts_share_one_port() -> None:
    inbox = Collector()
    with ServerThread(inbox, host=["127.0.0.1", "::1"]) as server:
        assert [a.host for a in server.addresses] == ["127.0.0.1", "::1"]
        assert {a.port for a in server.addresses} == {server.port}
        for host, label in (("127.0.0.1", "ipv4"), ("::1", "ipv6")):
            with smtplib.SMTP(host, server.port, timeout=10) as smtp:
                smtp.sendmail("a@example.com", [f"{label}@example.org"], MESSAGE)
    assert [m.envelope.rcpt_tos for m in inbox.messages] == [
        ("ipv4@example.org",),
        ("ipv6@example.org",),
    ]


# ---------------------------------------------------------------------------------------------
# Collector
# ---------------------------------------------------------------------------------------------


def test_wait_returns_once_the_messages_arrived() -> None:
    inbox = Collector()
    with ServerThread(inbox) as server:
        senders = [
            threading.Thread(target=send, args=(server,), kwargs={"rcpt_tos": [f"{n}@example.org"]})
            for n in range(3)
        ]
        for sender in senders:
            sender.start()
        arrived = inbox.wait(3)
        for sender in senders:
            sender.join()
    assert len(arrived) == 3
    assert sorted(m.envelope.rcpt_tos[0] for m in arrived) == [
        "0@example.org",
        "1@example.org",
        "2@example.org",
    ]


def test_wait_raises_timeout_error_naming_what_arrived() -> None:
    inbox = Collector()
    with ServerThread(inbox) as server:
        send(server)
        with pytest.raises(TimeoutError) as raised:
            inbox.wait(2, timeout=0.01)
    assert str(raised.value) == (
        "waited 0.01 s for 2 message(s); 1 arrived\n"
        "  from <a@example.com> to ['b@example.org'], Subject: 'Hello'"
    )


def test_assertion_helpers() -> None:
    inbox = Collector()
    rich = email.message.EmailMessage()
    rich["From"] = "shop@example.com"
    rich["To"] = "ann@example.org"
    rich["Subject"] = "Votre commande n° 42 — merci"
    rich.set_content("Bonjour Anne,\n\nvotre commande est expédiée.\n", cte="quoted-printable")
    rich.add_alternative("<p>votre commande est <b>expédiée</b></p>", subtype="html")
    with ServerThread(inbox) as server:
        inbox.assert_no_messages()
        send(
            server,
            rich.as_bytes(policy=SMTP),
            mail_from="shop@example.com",
            rcpt_tos=["ann@example.org"],
        )
    message = inbox.assert_one_message(
        mail_from="shop@example.com",
        to="ann@example.org",
        subject="Votre commande n° 42 — merci",
        contains="votre commande est expédiée",  # quoted-printable in the text: decoded
    )
    assert message is inbox.messages[0]
    assert inbox.matching(to=["ann@example.org"]) == [message]
    assert inbox.matching(contains="<b>expédiée</b>") == [message]
    assert inbox.matching(to="bob@example.org") == []

    with pytest.raises(AssertionError) as wrong:
        inbox.assert_one_message(to=["ann@example.org", "bob@example.org"], subject="Hi")
    assert str(wrong.value) == (
        "the message (from <shop@example.com> to ['ann@example.org'], Subject: "
        "'Votre commande n° 42 — merci') does not match: <bob@example.org> is not among the "
        "recipients ['ann@example.org']; the subject is 'Votre commande n° 42 — merci', "
        "not 'Hi'"
    )
    with pytest.raises(AssertionError, match="expected no message, 1 arrived"):
        inbox.assert_no_messages()
    inbox.clear()
    assert inbox.messages == []
    with pytest.raises(AssertionError, match="expected one message, 0 arrived"):
        inbox.assert_one_message()


# ---------------------------------------------------------------------------------------------
# The pytest plugin's smtpd_server fixture
# ---------------------------------------------------------------------------------------------


def test_smtpd_server_fixture(smtpd_server: LiveServer, smtpd_collector: Collector) -> None:
    assert smtpd_server.host == HOST
    send(smtpd_server)
    assert smtpd_server.messages == smtpd_collector.messages
    smtpd_server.collector.assert_one_message(to="b@example.org", subject="Hello")
    assert "by mx.test (smtpd-trio)" in smtpd_server.messages[0].received_header


class Picky(Collector):
    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.endswith("@spam.test"):
            raise Reject(550, "5.7.1", "Not from you")
        return None


@pytest.mark.smtpd(handler=Picky, config=Config(hostname="mx.example.org"))
def test_smtpd_server_with_the_marker(smtpd_server: LiveServer) -> None:
    assert isinstance(smtpd_server.thread.handler, Picky)
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(smtpd_server, mail_from="x@spam.test")
    send(smtpd_server)
    [message] = smtpd_server.messages
    assert "by mx.example.org (smtpd-trio)" in message.received_header


class Counting(Handler):
    def __init__(self) -> None:
        self.count = 0

    async def on_data(self, session: Session, message: Message) -> None:
        self.count += 1


@pytest.mark.smtpd(handler=Counting)
def test_smtpd_server_with_a_handler_that_is_not_a_collector(smtpd_server: LiveServer) -> None:
    send(smtpd_server)
    assert isinstance(smtpd_server.thread.handler, Counting)
    assert smtpd_server.thread.handler.count == 1
    with pytest.raises(RuntimeError, match="the handler, Counting, is not a Collector"):
        smtpd_server.messages  # noqa: B018
