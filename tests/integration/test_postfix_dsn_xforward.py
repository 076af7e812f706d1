"""DSN and XFORWARD proven with a real client: Postfix's smtp(8) relaying to our server.

A client submits to a private Postfix instance on loopback (tests/integration/postfix_instance.py)
by SMTP from 127.0.0.2 with DSN parameters (RFC 3461); Postfix relays the message to our server
on 127.0.0.1, which offers DSN (``Config(dsn=True)``) and XFORWARD to 127.0.0.1
(``Config(xforward_hosts=...)``; Postfix: ``smtp_send_xforward_command = yes``). What must
arrive: the client's RET, ENVID, NOTIFY and ORCPT, parsed, and XFORWARD naming the client
(127.0.0.2, its HELO name) behind Postfix (the peer, 127.0.0.1).

Without DSN on our side Postfix keeps the promise itself: for ``NOTIFY=SUCCESS`` it sends the
sender a "relayed" notice, since the next hop cannot. With DSN offered it passes the request
on and sends nothing. Both are asserted from Postfix's log. Skipped, saying why, without Postfix
or without root (``.ci/run`` installs it and runs as root).
"""

from __future__ import annotations

import functools
import re
import smtplib
from collections.abc import Sequence

import pytest
import trio

from smtpd_trio import Config, Handler, Message, Reply, Session, listener_port, serve_smtp
from smtpd_trio.dsn import DSNReturn, Notify, OriginalRecipient

from .postfix_instance import PostfixInstance, require_postfix, running_postfix

pytestmark = pytest.mark.integration

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]

MESSAGE = b"From: a@sender.test\r\nTo: b@dsn.test\r\nSubject: DSN through Postfix\r\n\r\nHello.\r\n"


class Recorder(Handler):
    def __init__(self) -> None:
        self.messages: list[tuple[str, Message]] = []

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append((session.client.host, message))
        return None


def submit(port: int) -> None:
    """Mail to Postfix's smtpd from 127.0.0.2, asking for every DSN (RFC 3461)."""
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="client.example", source_address=("127.0.0.2", 0)
    ) as smtp:
        refused = smtp.sendmail(
            "a@sender.test",
            ["b@dsn.test"],
            MESSAGE,
            mail_options=["RET=HDRS", "ENVID=QQ314159"],
            rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Original+2Bb@dsn.test"],
        )
        assert refused == {}


async def delivered(postfix: PostfixInstance) -> tuple[str, str]:
    """The queue id of the one message and Postfix's log, once Postfix has sent it and is done
    with it (its notices, if any, are made before qmgr logs ``removed``)."""
    (status,) = await postfix.wait_for_statuses(1)
    assert status.status == "sent", postfix.log()
    found = re.search(r" postfix/smtp\[\d+\]: (\w+): to=<b@dsn\.test>", postfix.log())
    assert found, postfix.log()
    queue_id = found.group(1)
    return queue_id, await postfix.wait_for_log(f"{queue_id}: removed")


@pytest.fixture
def postfix_here() -> None:
    """Skip, saying why, unless a private Postfix can run here. A synchronous fixture: a skip
    raised inside a Trio test's nursery loses its reason."""
    require_postfix()


@pytest.mark.usefixtures("postfix_here")
@pytest.mark.parametrize("dsn", [True, False], ids=["dsn-offered", "dsn-not-offered"])
async def test_postfix_relays_dsn_requests_and_xforward(nursery: trio.Nursery, dsn: bool) -> None:
    handler = Recorder()
    config = Config(hostname="mx.test", dsn=dsn, xforward_hosts=["127.0.0.1/32"])
    listeners: Listeners = await nursery.start(
        functools.partial(serve_smtp, handler, port=0, config=config)
    )
    port = listener_port(listeners[0])
    settings = ["smtp_send_xforward_command = yes"]
    async with running_postfix({"dsn.test": f"smtp:[127.0.0.1]:{port}"}, settings) as postfix:
        await trio.to_thread.run_sync(submit, postfix.smtp_port)
        queue_id, log = await delivered(postfix)

    ((peer, message),) = handler.messages
    envelope = message.envelope
    assert peer == "127.0.0.1"
    assert envelope.mail_from == "a@sender.test"
    assert envelope.rcpt_tos == ("b@dsn.test",)
    assert b"\r\nSubject: DSN through Postfix\r\n" in message.content
    assert message.content.endswith(b"\r\n\r\nHello.\r\n")

    # XFORWARD: the client behind Postfix, for this transaction.
    xforward = envelope.xforward
    assert xforward is not None
    assert xforward.addr == "127.0.0.2"
    assert xforward.helo == "client.example"
    assert xforward.proto == "ESMTP"
    assert xforward.ident == queue_id
    assert xforward.source in ("LOCAL", "REMOTE")
    # The session is still Postfix's: the Received header names the peer that delivered it
    # (docs/load-balancers.md, "XFORWARD: where the next message came from").
    assert message.received_header.startswith("Received: from mta.postfix.test ([127.0.0.1])")

    notice = f"{queue_id}: sender delivery status notification"
    if dsn:
        assert envelope.dsn.ret is DSNReturn.HEADERS
        assert envelope.dsn.envid == "QQ314159"
        (recipient,) = envelope.recipients
        assert recipient.notify == frozenset({Notify.SUCCESS, Notify.DELAY})
        assert recipient.orcpt == OriginalRecipient("rfc822", "Original+b@dsn.test")
        assert notice not in log, log  # passed on, not answered by Postfix
    else:
        assert envelope.mail_params.keys() <= {"SIZE", "BODY"}
        assert envelope.rcpt_params == ({},)
        assert notice in log, log  # "relayed": Postfix kept the promise itself
