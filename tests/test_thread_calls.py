"""Calling into a ServerThread's Trio run from the test's thread (``trio_token``), and a
graceful stop while a handler is still storing a message."""

from __future__ import annotations

import smtplib
import threading

import trio
from server_log import shutdown_begun

from smtpd_trio import Config, Message, ServerThread, Session
from smtpd_trio.testing import Collector

MESSAGE = b"Subject: held\r\n\r\nWaiting for the gate.\r\n"


class Gated(Collector):
    """Keeps each message only once the test opens the gate (a Trio event, set from the
    test's thread through the server's trio_token)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.inside = threading.Event()  # on_data has begun: the client waits for its 250

    async def on_data(self, session: Session, message: Message) -> None:
        self.inside.set()
        await self.gate.wait()
        await super().on_data(session, message)


def send(server: ServerThread, replies: list[object]) -> None:
    smtp = smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=10)
    try:
        replies.append(smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE))
    finally:
        smtp.close()  # no QUIT: during a shutdown the server has said 421 and gone


def test_the_test_thread_opens_a_gate_in_the_handler() -> None:
    inbox = Gated()
    replies: list[object] = []
    with ServerThread(inbox) as server:
        sender = threading.Thread(target=send, args=(server, replies))
        sender.start()
        assert inbox.inside.wait(10)
        assert replies == []  # no 250 while on_data runs
        inbox.assert_no_messages()
        trio.from_thread.run_sync(inbox.gate.set, trio_token=server.trio_token)
        sender.join(10)
    assert replies == [{}]
    inbox.assert_one_message(subject="held")


def test_stop_waits_for_a_message_being_stored() -> None:
    inbox = Gated()
    replies: list[object] = []
    server = ServerThread(inbox, config=Config(hostname="mx.test", shutdown_timeout=600))
    server.start()
    token = server.trio_token
    sender = threading.Thread(target=send, args=(server, replies))
    sender.start()
    assert inbox.inside.wait(10)
    stopper = threading.Thread(target=server.stop)
    with shutdown_begun() as begun:
        stopper.start()
        assert begun.wait(10)
    assert stopper.is_alive()  # waiting for the message being stored
    trio.from_thread.run_sync(inbox.gate.set, trio_token=token)
    sender.join(10)
    stopper.join(10)
    assert not stopper.is_alive()
    assert replies == [{}]  # acknowledged, and kept
    inbox.assert_one_message(to="b@example.org")
