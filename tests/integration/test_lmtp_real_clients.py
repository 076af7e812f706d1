"""LMTP proven with real clients, over TCP on 127.0.0.1 and over a UNIX socket:

- Postfix's lmtp(8) delivering to smtpd-trio's serve_lmtp from a private Postfix instance on
  loopback (tests/integration/postfix_instance.py). Mail goes into that Postfix with its
  sendmail and by SMTP into its smtpd; Postfix's log says, recipient by recipient, what our
  replies meant to it: sent (250), deferred (4xx, kept and retried) or bounced (5xx).
- swaks with ``--protocol LMTP`` (``--socket`` for the UNIX socket).

(Python's smtplib.LMTP is in tests/test_unix_and_lmtp_serving.py.) Skipped, saying why,
without the programs, or for Postfix without root (``.ci/run`` installs them and runs as root).
"""

from __future__ import annotations

import functools
import grp
import os
import smtplib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio

from smtpd_trio import Config, Handler, Message, Reply, Session, listener_port, serve_lmtp

from .conftest import run_client
from .postfix_instance import require_postfix, running_postfix

pytestmark = pytest.mark.integration

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]


class Mailboxes(Handler):
    """A delivery agent: ``full`` mailboxes are over quota (452 4.2.2), unknown users get 550
    5.1.1, the others get the message."""

    def __init__(self) -> None:
        self.boxes: dict[str, list[bytes]] = {"ann": [], "bob": [], "full": []}
        self.sessions: list[tuple[str, bool]] = []

    async def on_data(self, session: Session, message: Message) -> list[Reply | None]:
        self.sessions.append((session.client.host, session.lmtp))
        answers: list[Reply | None] = []
        for address in message.envelope.rcpt_tos:
            user = address.partition("@")[0]
            if user == "full":
                answers.append(Reply(452, "4.2.2", f"<{address}> Mailbox full"))
            elif user not in self.boxes:
                answers.append(Reply(550, "5.1.1", f"<{address}> No such user here"))
            else:
                self.boxes[user].append(message.with_trace())
                answers.append(None)
        return answers


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory for our socket that only root and the postfix group may enter: the socket
    itself is 0660, group postfix, so Postfix's lmtp client (user postfix) may connect and no
    one else may."""
    owner = require_postfix()
    with tempfile.TemporaryDirectory(prefix="lmtp-") as name:
        os.chown(name, 0, owner.pw_gid)
        os.chmod(name, 0o710)
        yield Path(name)


MESSAGE = (
    b"From: sender@postfix.test\r\nTo: ann@tcp.test\r\nSubject: over LMTP\r\n\r\n"
    b"Hello through Postfix.\r\n.leading dot\r\n"
)


async def test_postfix_delivers_by_lmtp_over_tcp_and_a_unix_socket(
    nursery: trio.Nursery, sockdir: Path
) -> None:
    handler = Mailboxes()
    socket_path = sockdir / "lmtp.sock"
    listeners: Listeners = await nursery.start(
        functools.partial(
            serve_lmtp,
            handler,
            port=0,
            unix=socket_path,
            config=Config(hostname="lmtp.test"),
        )
    )
    os.chown(socket_path, -1, grp.getgrnam("postfix").gr_gid)
    port = listener_port(listeners[0])
    transports = {
        "tcp.test": f"lmtp:inet:127.0.0.1:{port}",
        "unix.test": f"lmtp:unix:{socket_path}",
    }
    async with running_postfix(transports) as postfix:
        await postfix.sendmail(
            "sender@postfix.test",
            ["ann@tcp.test", "full@tcp.test", "nobody@tcp.test", "bob@tcp.test"],
            MESSAGE,
        )
        statuses = await postfix.wait_for_statuses(4)
        by_recipient = {s.recipient: s for s in statuses}
        assert {r: s.status for r, s in by_recipient.items()} == {
            "ann@tcp.test": "sent",
            "full@tcp.test": "deferred",
            "nobody@tcp.test": "bounced",
            "bob@tcp.test": "sent",
        }, postfix.log()
        assert by_recipient["ann@tcp.test"].reason == "250 2.0.0 <ann@tcp.test> Message accepted"
        assert "dsn=4.2.2" in by_recipient["full@tcp.test"].details
        assert "Mailbox full" in by_recipient["full@tcp.test"].reason
        assert "dsn=5.1.1" in by_recipient["nobody@tcp.test"].details
        assert f"relay=127.0.0.1[127.0.0.1]:{port}" in by_recipient["ann@tcp.test"].details

        # By SMTP into the private instance, on to the UNIX socket.
        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=20) as smtp:
                refused = smtp.sendmail(
                    "sender@postfix.test", ["bob@unix.test"], MESSAGE.replace(b"tcp", b"unix")
                )
                assert refused == {}

        await trio.to_thread.run_sync(submit)
        (via_unix,) = (await postfix.wait_for_statuses(5))[4:]
        assert (via_unix.recipient, via_unix.status) == ("bob@unix.test", "sent"), postfix.log()
        assert f"[{socket_path}]" in via_unix.details
    assert handler.sessions == [("127.0.0.1", True), ("unix:", True)]
    assert len(handler.boxes["ann"]) == 1
    assert len(handler.boxes["bob"]) == 2
    assert handler.boxes["full"] == []
    stored = handler.boxes["ann"][0]
    # Our Received header (LMTP), then Postfix's own, then the message exactly as sent.
    assert stored.startswith(b"Received: from mta.postfix.test ([127.0.0.1])\r\n")
    assert b" with LMTP id " in stored.split(b"\r\n\r\n")[0]
    assert stored.endswith(b"Hello through Postfix.\r\n.leading dot\r\n")
    nursery.cancel_scope.cancel()


async def test_swaks_over_tcp_and_a_unix_socket(nursery: trio.Nursery, swaks: str) -> None:
    handler = Mailboxes()
    with tempfile.TemporaryDirectory(prefix="lmtp-") as name:
        path = Path(name) / "lmtp.sock"
        listeners: Listeners = await nursery.start(
            functools.partial(serve_lmtp, handler, port=0, unix=path)
        )
        port = listener_port(listeners[0])
        common = ["--protocol", "LMTP", "--from", "a@sender.test", "--helo", "swaks.test"]
        common += ["--to", "ann@x.test,full@x.test,bob@x.test", "--header", "Subject: swaks"]
        for where in (["--server", f"127.0.0.1:{port}"], ["--socket", str(path)]):
            run = await run_client([swaks, *where, *common])
            assert "-> LHLO swaks.test" in run.output, run.output
            # swaks marks replies "<-", and the ones it takes for errors "<**".
            replies = [line for line in run.output.splitlines() if line.startswith("<")]
            assert replies[-4:] == [
                "<-  250 2.0.0 <ann@x.test> Message accepted",
                "<** 452 4.2.2 <full@x.test> Mailbox full",
                "<-  250 2.0.0 <bob@x.test> Message accepted",
                "<-  221 2.0.0 Bye",
            ], run.output
    assert len(handler.boxes["ann"]) == len(handler.boxes["bob"]) == 2
    assert handler.sessions == [("127.0.0.1", True), ("unix:", True)]
    nursery.cancel_scope.cancel()
