"""XCLIENT and XFORWARD through the whole pipeline, over memory streams: who may send them
(Config.xclient_hosts / xforward_hosts, checked against the client as accepted, PROXY header
included), what the handler sees (session.client, session.peer, session.xclient, on_connect
again, the Received header, Envelope.xforward), the per-client limits and the logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from smtpd_trio import (
    Config,
    Endpoint,
    Envelope,
    Handler,
    Message,
    Reply,
    Session,
    SMTPServer,
    TransactionOutcome,
    Unavailable,
    XClientInfo,
    XForwardInfo,
    run_session,
)
from smtpd_trio.testing import TEST_PEER, ClientReply, TestClient, open_test_session

MESSAGE = b"Subject: forwarded\r\n\r\nHello.\r\n"
XCLIENT = "XCLIENT ADDR=198.51.100.7 PORT=51234 NAME=mail.client.example LOGIN=alice"


@attrs.frozen
class Connected:
    client: Endpoint
    peer: Endpoint
    xclient: XClientInfo | None
    authenticated_as: str | None


class Recorder(Handler):
    """Records each greeting decision, message and transaction end."""

    def __init__(self, refuse: Mapping[str, Reply] | None = None) -> None:
        self.refuse = dict(refuse or {})
        self.connects: list[Connected] = []
        self.messages: list[tuple[Endpoint, Message]] = []
        self.rcpt_envelopes: list[Envelope] = []
        self.ends: list[tuple[Envelope, TransactionOutcome]] = []

    async def on_connect(self, session: Session) -> Reply | None:
        self.connects.append(
            Connected(session.client, session.peer, session.xclient, session.authenticated_as)
        )
        return self.refuse.get(session.client.host)

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, Any]
    ) -> Reply | None:
        self.rcpt_envelopes.append(envelope)
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append((session.client, message))
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ends.append((envelope, outcome))


def config(**fields: Any) -> Config:
    fields.setdefault("xclient_hosts", [TEST_PEER.host])
    return Config(hostname="mx.test", **fields)


def code(reply: ClientReply) -> tuple[int, str | None]:
    return reply.code, reply.enhanced


# ---- XCLIENT -------------------------------------------------------------------------------


async def test_the_handler_sees_the_forwarded_client() -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config()) as client:
        ehlo = await client.ehlo("proxy.example")
        assert "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT" in ehlo.lines
        reply = await client.command(XCLIENT)
        assert reply == ClientReply(220, ("mx.test ESMTP smtpd-trio ready",))
        session = client.session
        assert session.client == Endpoint("198.51.100.7", 51234)
        assert session.peer == TEST_PEER
        assert session.authenticated_as == "alice"
        assert session.xclient == XClientInfo(
            addr="198.51.100.7", port=51234, name="mail.client.example", login="alice"
        )
        assert (await client.ehlo("client.example")).code == 250
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    # on_connect twice: the proxy, then the client XCLIENT named, with its facts in place.
    assert handler.connects == [
        Connected(TEST_PEER, TEST_PEER, None, None),
        Connected(Endpoint("198.51.100.7", 51234), TEST_PEER, session.xclient, "alice"),
    ]
    [(seen, message)] = handler.messages
    assert seen == Endpoint("198.51.100.7", 51234)
    assert message.received_header.startswith(
        "Received: from client.example (mail.client.example [198.51.100.7])\r\n"
        "\tby mx.test (smtpd-trio) with ESMTPA id "
    )


async def test_not_in_xclient_hosts_gets_550_and_nothing_changes() -> None:
    handler = Recorder()
    others = config(xclient_hosts=["192.0.2.128/25"])  # TEST_PEER is 192.0.2.1
    async with open_test_session(handler, config=others) as client:
        ehlo = await client.ehlo("proxy.example")
        assert not [line for line in ehlo.lines if line.startswith(("XCLIENT", "XFORWARD"))]
        assert code(await client.command(XCLIENT)) == (550, "5.7.0")
        assert code(await client.command("XFORWARD ADDR=198.51.100.7")) == (550, "5.7.0")
        assert client.session.client == TEST_PEER
        assert client.session.xclient is None
        assert client.session.authenticated_as is None
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    assert len(handler.connects) == 1
    [(_, message)] = handler.messages
    assert message.received_header.startswith("Received: from proxy.example ([192.0.2.1])")


async def test_the_default_is_nobody() -> None:
    async with open_test_session(Handler(), config=Config(hostname="mx.test")) as client:
        await client.ehlo()
        assert code(await client.command(XCLIENT)) == (550, "5.7.0")


async def test_on_connect_refusing_the_forwarded_client() -> None:
    handler = Recorder(refuse={"198.51.100.7": Reply(554, "5.7.1", "Not from there")})
    async with open_test_session(handler, config=config()) as client:
        await client.ehlo("proxy.example")
        assert code(await client.command(XCLIENT)) == (554, "5.7.1")
        assert (await client.ehlo("client.example")).code == 503  # only QUIT now
        assert (await client.command("QUIT")).code == 221


async def test_on_connect_failing_closes_with_421(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Handler):
        async def on_connect(self, session: Session) -> Reply | None:
            if session.xclient is not None:
                raise RuntimeError("database down")
            return None

    caplog.set_level(logging.ERROR, logger="smtpd_trio")
    async with open_test_session(Failing(), config=config()) as client:
        await client.ehlo("proxy.example")
        assert code(await client.command(XCLIENT)) == (421, "4.3.0")
        assert await client.at_eof()
    assert any("on_connect failed" in r.getMessage() for r in caplog.records)


async def test_a_malformed_xclient_is_501_and_the_client_stays() -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config()) as client:
        await client.ehlo("proxy.example")
        assert code(await client.command("XCLIENT ADDR=somewhere")) == (501, "5.5.4")
        assert client.session.client == TEST_PEER
    assert len(handler.connects) == 1


async def test_address_unavailable_and_name_only() -> None:
    async with open_test_session(Recorder(), config=config()) as client:
        await client.ehlo("proxy.example")
        await client.command("XCLIENT NAME=only.example")
        assert client.session.client == TEST_PEER  # a name alone does not move the client
        await client.command("XCLIENT ADDR=[UNAVAILABLE]")
        assert client.session.client == Endpoint("unknown")
        await client.command("XCLIENT ADDR=IPV6:2001:db8::7")
        assert client.session.client == Endpoint("2001:db8::7")  # no PORT: no port
        await client.command("XCLIENT PORT=2525")
        assert client.session.client == Endpoint("2001:db8::7", 2525)
        assert client.session.xclient is not None
        assert client.session.xclient.name == "only.example"


async def test_received_header_with_the_forwarded_helo_and_no_address() -> None:
    handler = Recorder()
    async with open_test_session(handler, config=config()) as client:
        await client.ehlo("proxy.example")
        reply = await client.command(
            "XCLIENT ADDR=[UNAVAILABLE] NAME=[TEMPUNAVAIL] HELO=my_pc PROTO=SMTP"
        )
        assert reply.code == 220
        # HELO came with XCLIENT: no HELO/EHLO needed before MAIL.
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
    [(client_seen, message)] = handler.messages
    assert client_seen == Endpoint("unknown")
    assert client.session.xclient is not None
    assert client.session.xclient.name is Unavailable.TEMPUNAVAIL
    # No address: no TCP-info, and so no name; the HELO name goes in a comment.
    assert message.received_header.startswith(
        "Received: from unknown (helo=my_pc)\r\n\tby mx.test (smtpd-trio) with SMTP id "
    )


async def test_the_xclient_line_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    async with open_test_session(Recorder(), config=config()) as client:
        await client.ehlo("proxy.example")
        await client.command(XCLIENT)
        sid = client.session.id
    [line] = [r for r in caplog.records if "XCLIENT" in r.getMessage()]
    assert line.getMessage() == (
        f"[{sid}] XCLIENT from 192.0.2.1:40000: client 198.51.100.7:51234 "
        "(name=mail.client.example helo=None login=alice)"
    )
    assert line.smtpd == {  # type: ignore[attr-defined]
        "connection_id": sid,
        "event": "xclient",
        "client": "198.51.100.7:51234",
    }


async def test_lone_run_session_honours_xclient_hosts() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    client = TestClient(client_end)
    handler = Recorder()

    async def talk() -> None:
        assert (await client.read_reply()).code == 220
        await client.ehlo("proxy.example")
        assert (await client.command(XCLIENT)).code == 220
        await client.command("QUIT")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        session = await run_session(
            server_end,
            handler,
            peer=Endpoint("10.0.0.5", 1000),
            config=config(xclient_hosts=["10.0.0.0/8"]),
        )
    assert session.client == Endpoint("198.51.100.7", 51234)
    assert session.peer == Endpoint("10.0.0.5", 1000)


# ---- behind PROXY: the check is against the client the header names ----------------------


LB = Endpoint("192.0.2.10", 41000)  # the load balancer: the TCP peer


@pytest.mark.parametrize(
    ("header_source", "allowed"),
    [
        ("10.0.0.5", True),  # nginx, behind the balancer, is in xclient_hosts
        ("198.51.100.9", False),  # anyone else the balancer forwards is not...
    ],
)
async def test_behind_proxy_the_header_names_who_may(header_source: str, allowed: bool) -> None:
    # ...even though the balancer's own address is listed too: it never speaks SMTP itself.
    settings = config(
        proxy_protocol=True,
        trusted_proxies=["192.0.2.0/24"],
        xclient_hosts=["10.0.0.5", LB.host],
    )
    handler = Recorder()
    async with open_test_session(handler, config=settings, peer=LB, read_greeting=False) as c:
        await c.send(f"PROXY TCP4 {header_source} 192.0.2.25 40000 25\r\n".encode())
        assert (await c.read_reply()).code == 220
        await c.ehlo("proxy.example")
        reply = await c.command(XCLIENT)
        if allowed:
            assert reply.code == 220
            assert c.session.client == Endpoint("198.51.100.7", 51234)
        else:
            assert code(reply) == (550, "5.7.0")
            assert c.session.client == Endpoint(header_source, 40000)
        assert c.session.peer == LB
        assert c.session.proxy is not None


# ---- per-client limits ---------------------------------------------------------------------


@attrs.define
class Served:
    server: SMTPServer
    nursery: trio.Nursery

    async def connect(self, peer: Endpoint = TEST_PEER) -> TestClient:
        """A memory-stream connection to the server, from ``peer`` (the greeting unread)."""
        client_end, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(partial(self.server.handle_connection, server_end, peer=peer))
        return TestClient(client_end)


@asynccontextmanager
async def serving(handler: Handler, settings: Config) -> AsyncIterator[Served]:
    server = SMTPServer(handler, config=settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [])
        yield Served(server, nursery)
        nursery.cancel_scope.cancel()


async def test_connections_are_counted_under_the_forwarded_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    async with serving(handler, config(max_connections_per_client=1)) as served:
        limiter = served.server._limiter
        # The proxy itself is not limited: it speaks for many clients.
        proxied = [await served.connect() for _ in range(3)]
        for client in proxied:
            assert (await client.read_reply()).code == 220
            await client.ehlo("proxy.example")
        assert limiter.open_connections(TEST_PEER.host) == 0
        # Each connection is counted under the client its XCLIENT names.
        assert (await proxied[0].command(XCLIENT)).code == 220
        assert limiter.open_connections("198.51.100.7") == 1
        refused = await proxied[1].command(XCLIENT)
        assert code(refused) == (421, "4.7.0")
        assert "Too many connections from your address" in refused.text
        assert await proxied[1].at_eof()
        # Another client through the same proxy is fine.
        other = await proxied[2].command("XCLIENT ADDR=203.0.113.9")
        assert other.code == 220
        # Moving a connection to another client moves its count.
        assert (await proxied[0].command("XCLIENT ADDR=192.0.2.200")).code == 220
        assert limiter.open_connections("198.51.100.7") == 0
        assert limiter.open_connections("192.0.2.200") == 1
        # And the count goes when the connection ends.
        assert (await proxied[0].command("QUIT")).code == 221
        assert await proxied[0].at_eof()
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.open_connections("192.0.2.200") == 0
    assert any(
        "refused 198.51.100.7:51234 after XCLIENT: too many connections" in r.getMessage()
        for r in caplog.records
    )


async def test_direct_clients_are_still_counted() -> None:
    handler = Recorder()
    async with serving(handler, config(max_connections_per_client=1)) as served:
        direct = Endpoint("198.51.100.7", 1)
        first = await served.connect(direct)
        assert (await first.read_reply()).code == 220
        second = await served.connect(direct)
        assert code(await second.read_reply()) == (421, "4.7.0")
        # Through the proxy, the same client is over its limit too.
        proxied = await served.connect()
        assert (await proxied.read_reply()).code == 220
        assert code(await proxied.command(XCLIENT)) == (421, "4.7.0")


async def test_rate_limit_applies_to_the_forwarded_client() -> None:
    handler = Recorder()
    async with serving(handler, config(max_connection_rate=2)) as served:
        replies = []
        for _ in range(3):
            client = await served.connect()
            assert (await client.read_reply()).code == 220  # the proxy: never rate limited
            replies.append(code(await client.command(XCLIENT)))
        assert replies == [(220, None), (220, None), (421, "4.7.0")]


# ---- XFORWARD ------------------------------------------------------------------------------


async def test_xforward_facts_reach_the_handler_on_the_envelope() -> None:
    handler = Recorder()
    settings = config(xclient_hosts=[], xforward_hosts=["192.0.2.0/24"])
    async with open_test_session(handler, config=settings) as client:
        ehlo = await client.ehlo("filter.example")
        assert "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in ehlo.lines
        assert not [line for line in ehlo.lines if line.startswith("XCLIENT")]
        assert code(await client.command(XCLIENT)) == (550, "5.7.0")
        reply = await client.command(
            "XFORWARD NAME=spike.example ADDR=198.51.100.7 PROTO=ESMTP HELO=spike IDENT=4F2A"
        )
        assert code(reply) == (250, "2.0.0")
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
        assert (await client.sendmail("a@example.com", ["c@example.org"], MESSAGE)).code == 250
    want = XForwardInfo(
        name="spike.example",
        addr="198.51.100.7",
        proto="ESMTP",
        helo="spike",
        ident="4F2A",
    )
    assert [e.xforward for e in handler.rcpt_envelopes] == [want, None]
    [(first_client, first), (second_client, second)] = handler.messages
    assert first.envelope.xforward == want
    assert second.envelope.xforward is None
    assert [e.xforward for e, _ in handler.ends] == [want, None]
    # The session's client is the filter all along, and the Received header says so.
    assert first_client == second_client == TEST_PEER
    assert first.received_header.startswith("Received: from filter.example ([192.0.2.1])")
