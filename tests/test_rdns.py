"""Reverse DNS of the client: forward confirmation, the name checks, the timeout, the cache, and
what a session does with it (``session.client_name``, the ``Received:`` header).

No test depends on real DNS but the last, which asks the system resolver about 127.0.0.1 and is
skipped if that finds no name. Timeouts run on Trio's mock clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from functools import partial

import pytest
import trio
import trio.testing

from smtpd_trio import (
    Config,
    ConfigError,
    Endpoint,
    Envelope,
    Handler,
    Message,
    Reply,
    Session,
    SMTPServer,
)
from smtpd_trio.rdns import Resolver, ReverseDNS, SystemResolver, client_ip
from smtpd_trio.testing import TEST_PEER, open_test_session

CLIENT = TEST_PEER.host  # 192.0.2.1
NAME = "mail.example.net"


class FakeResolver:
    """PTR and A/AAAA records from two dicts; ``delay`` seconds per answer; every question
    recorded in ``asked``."""

    def __init__(
        self,
        ptr: Mapping[str, str] | None = None,
        addresses: Mapping[str, Sequence[str]] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        self.ptr = dict(ptr or {})
        self.addresses = dict(addresses or {})
        self.delay = delay
        self.asked: list[str] = []

    async def reverse(self, address: str) -> str | None:
        self.asked.append(f"PTR {address}")
        await trio.sleep(self.delay)
        return self.ptr.get(address)

    async def forward(self, name: str) -> Iterable[str]:
        self.asked.append(f"A {name}")
        await trio.sleep(self.delay)
        return self.addresses.get(name, [])


def confirmed(address: str = CLIENT, name: str = NAME) -> FakeResolver:
    return FakeResolver({address: name}, {name: ["198.51.100.9", address]})


def test_the_fake_is_a_resolver() -> None:
    assert isinstance(FakeResolver(), Resolver)
    assert isinstance(SystemResolver(), Resolver)


# ---- ReverseDNS --------------------------------------------------------------------------------


async def test_a_forward_confirmed_name() -> None:
    resolver = confirmed()
    assert await ReverseDNS(resolver).lookup(CLIENT) == NAME
    assert resolver.asked == [f"PTR {CLIENT}", f"A {NAME}"]


async def test_a_name_whose_addresses_do_not_include_the_client_is_unknown() -> None:
    resolver = FakeResolver({CLIENT: "mail.example.net"}, {"mail.example.net": ["192.0.2.99"]})
    assert await ReverseDNS(resolver).lookup(CLIENT) is None
    resolver = FakeResolver({CLIENT: "mail.example.net"})  # no A record at all
    assert await ReverseDNS(resolver).lookup(CLIENT) is None


async def test_no_ptr_record_is_unknown() -> None:
    resolver = FakeResolver()
    assert await ReverseDNS(resolver).lookup(CLIENT) is None
    assert resolver.asked == [f"PTR {CLIENT}"]


@pytest.mark.parametrize(
    "ptr",
    [
        "mail.example.net (spoofed)",
        "x;y.example",
        "a)b(c.example",
        "mail.example.net\r\nX-Injected: 1",
        "192.0.2.7",  # an address in disguise
        "host.123",  # a numeric top label
        "-bad.example",
        "a..b.example",
        "under_score.example",
        "b\u00fccher.example",  # not an A-label
        "[192.0.2.1]",
        "x" * 64 + ".example",
        ".".join(["a" * 63] * 5),  # over 255 octets
        "",
        ".",
    ],
)
async def test_a_name_that_is_not_a_host_name_is_unknown_and_never_looked_up(ptr: str) -> None:
    resolver = FakeResolver({CLIENT: ptr}, {ptr: [CLIENT]})
    assert await ReverseDNS(resolver).lookup(CLIENT) is None
    assert resolver.asked == [f"PTR {CLIENT}"]


async def test_one_trailing_dot_is_dropped() -> None:
    resolver = FakeResolver({CLIENT: NAME + "."}, {NAME: [CLIENT]})
    assert await ReverseDNS(resolver).lookup(CLIENT) == NAME


@pytest.mark.parametrize(
    ("client", "asked", "answer"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1", "192.0.2.1"),  # IPv4-mapped: looked up as IPv4
        ("192.0.2.1", "192.0.2.1", "::ffff:192.0.2.1"),  # and compared as IPv4
        ("2001:db8::7", "2001:db8::7", "2001:0db8:0000:0000:0000:0000:0000:0007"),
        ("fe80::1%eth0", "fe80::1", "fe80::1"),  # a zone id is not part of the address
    ],
)
async def test_addresses_are_compared_as_addresses(client: str, asked: str, answer: str) -> None:
    resolver = FakeResolver({asked: NAME}, {NAME: [answer]})
    assert await ReverseDNS(resolver).lookup(client) == NAME
    assert resolver.asked[0] == f"PTR {asked}"


@pytest.mark.parametrize("host", ["unix:/run/smtp.sock", "unknown", "", "mail.example.net"])
async def test_a_client_without_an_ip_address_is_never_looked_up(host: str) -> None:
    resolver = confirmed()
    assert client_ip(host) is None
    assert await ReverseDNS(resolver).lookup(host) is None
    assert resolver.asked == []


async def test_the_timeout_bounds_the_whole_lookup(autojump_clock: trio.testing.MockClock) -> None:
    resolver = confirmed()
    resolver.delay = 1.5  # each answer: both together exceed the 2 s
    rdns = ReverseDNS(resolver, timeout=2.0)
    start = trio.current_time()
    assert await rdns.lookup(CLIENT) is None
    assert trio.current_time() - start == pytest.approx(2.0)
    assert len(rdns) == 0  # a timeout is not an answer: not cached
    resolver.delay = 0.5
    assert await rdns.lookup(CLIENT) == NAME


async def test_answers_are_cached_for_their_time(autojump_clock: trio.testing.MockClock) -> None:
    resolver = FakeResolver({CLIENT: NAME, "192.0.2.2": "x.example"}, {NAME: [CLIENT]})
    rdns = ReverseDNS(resolver, ttl=300.0)
    assert await rdns.lookup(CLIENT) == NAME
    assert await rdns.lookup("192.0.2.2") is None  # "unknown" is an answer too
    assert await rdns.lookup("::ffff:192.0.2.1") == NAME  # the same address
    assert len(resolver.asked) == 4
    await trio.sleep(299)
    assert await rdns.lookup(CLIENT) == NAME
    assert await rdns.lookup("192.0.2.2") is None
    assert len(resolver.asked) == 4
    await trio.sleep(2)
    assert await rdns.lookup(CLIENT) == NAME
    assert len(resolver.asked) == 6


async def test_the_cache_is_bounded_least_recently_used_first() -> None:
    resolver = FakeResolver()
    rdns = ReverseDNS(resolver, cache_size=2)
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3"):
        await rdns.lookup(host)
    assert len(rdns) == 2
    resolver.asked.clear()
    await rdns.lookup("192.0.2.1")  # kept: used more recently than .2
    await rdns.lookup("192.0.2.2")  # dropped when .3 came
    assert resolver.asked == ["PTR 192.0.2.2"]


async def test_a_failing_resolver_is_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeResolver):
        async def reverse(self, address: str) -> str | None:
            raise RuntimeError("resolver exploded")

    rdns = ReverseDNS(Broken())
    with caplog.at_level(logging.ERROR, logger="smtpd_trio.rdns"):
        assert await rdns.lookup(CLIENT) is None
    assert "reverse DNS lookup of 192.0.2.1 failed" in caplog.text
    assert len(rdns) == 0


def test_the_resolver_is_checked_when_the_config_is_built() -> None:
    with pytest.raises(ConfigError, match=r"resolver must have async methods reverse"):
        Config(reverse_dns=True, resolver=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reverse_dns_timeout must be a positive number"):
        Config(reverse_dns=True, reverse_dns_timeout=0)


# ---- in a session ------------------------------------------------------------------------------


def rdns_config(resolver: Resolver, **options: object) -> Config:
    return Config(hostname="mx.test", reverse_dns=True, resolver=resolver, **options)  # type: ignore[arg-type]


class Recorder(Handler):
    """Records what each callback saw of the client's name, and the messages."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, bool]] = []
        self.messages: list[Message] = []

    def _note(self, where: str, session: Session) -> None:
        self.seen.append((where, session.client_name, session.client_name_looked_up))

    async def on_connect(self, session: Session) -> Reply | None:
        self._note("connect", session)
        return None

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: object
    ) -> Reply | None:
        self._note("rcpt", session)
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self._note("data", session)
        self.messages.append(message)
        return None


async def send_one(config: Config, handler: Handler) -> Session:
    async with open_test_session(handler, config=config) as client:
        await client.ehlo("client.example")
        await client.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nhi\r\n")
        assert (await client.command("QUIT")).code == 221
        return client.session


async def test_every_deciding_callback_and_the_header_see_the_name() -> None:
    handler = Recorder()
    session = await send_one(rdns_config(confirmed()), handler)
    assert handler.seen == [(where, NAME, True) for where in ("connect", "rcpt", "data")]
    assert session.client_name == NAME
    header = handler.messages[0].received_header
    assert header.startswith(f"Received: from client.example ({NAME} [{CLIENT}])\r\n")
    assert f"({NAME})" in repr(session)


async def test_an_unknown_client_is_unknown_in_the_header() -> None:
    handler = Recorder()
    session = await send_one(rdns_config(FakeResolver({CLIENT: NAME})), handler)
    assert session.client_name is None
    assert session.client_name_looked_up
    header = handler.messages[0].received_header
    assert header.startswith(f"Received: from client.example (unknown [{CLIENT}])\r\n")


async def test_off_by_default_nothing_is_asked() -> None:
    resolver = confirmed()
    handler = Recorder()
    session = await send_one(Config(hostname="mx.test", resolver=resolver), handler)
    assert resolver.asked == []
    assert handler.seen == [(where, None, False) for where in ("connect", "rcpt", "data")]
    assert session.client_name is None
    header = handler.messages[0].received_header
    assert header.startswith(f"Received: from client.example ([{CLIENT}])\r\n")


async def test_ignored_hosts_are_never_looked_up() -> None:
    resolver = confirmed()
    config = rdns_config(resolver, ignored_hosts=["192.0.2.0/24"])
    await send_one(config, Handler())
    assert resolver.asked == []


async def test_a_slow_resolver_never_holds_up_the_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The lookup runs while the greeting, EHLO, MAIL and RCPT are answered (no callback needs
    it); only the Received header waits for it, never past the timeout."""
    resolver = confirmed()
    resolver.delay = 60.0  # far past the timeout
    received: list[Message] = []
    times: list[float] = []

    class Store(Handler):
        async def on_data(self, session: Session, message: Message) -> Reply | None:
            received.append(message)
            return None

    start = trio.current_time()
    async with open_test_session(
        Store(), config=rdns_config(resolver, reverse_dns_timeout=2.0)
    ) as client:
        times.append(trio.current_time() - start)  # the greeting
        await client.ehlo()
        assert (await client.command("MAIL FROM:<a@example.org>")).code == 250
        assert (await client.command("RCPT TO:<b@example.net>")).code == 250
        times.append(trio.current_time() - start)
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        assert (await client.read_reply()).code == 250
        times.append(trio.current_time() - start)
    assert times == [0.0, 0.0, pytest.approx(2.0)]
    assert f"(unknown [{CLIENT}])" in received[0].received_header


async def test_a_handler_that_decides_at_connect_waits_at_most_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = confirmed()
    resolver.delay = 60.0
    handler = Recorder()
    start = trio.current_time()
    async with open_test_session(handler, config=rdns_config(resolver, reverse_dns_timeout=1.5)):
        assert trio.current_time() - start == pytest.approx(1.5)  # the greeting came then
    assert handler.seen == [("connect", None, True)]


async def test_the_cache_serves_the_next_connection() -> None:
    resolver = confirmed()
    server = SMTPServer(Recorder(), config=rdns_config(resolver))
    for _ in range(2):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server.handle_connection, server_stream, peer=TEST_PEER))
            await client_stream.receive_some()
            await client_stream.send_all(b"QUIT\r\n")
            while await client_stream.receive_some():
                pass
    assert resolver.asked == [f"PTR {CLIENT}", f"A {NAME}"]


async def test_a_proxied_client_is_looked_up_by_its_real_address() -> None:
    real = "198.51.100.7"
    resolver = confirmed(real, "real.example.net")
    config = rdns_config(resolver, proxy_protocol=True, trusted_proxies=["192.0.2.0/24"])
    handler = Recorder()
    async with open_test_session(handler, config=config, read_greeting=False) as client:
        await client.send(f"PROXY TCP4 {real} 203.0.113.25 40000 25\r\n".encode())
        assert (await client.read_reply()).code == 220
        await client.ehlo()
        await client.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nhi\r\n")
    assert resolver.asked == [f"PTR {real}", "A real.example.net"]
    assert "(real.example.net [198.51.100.7])" in handler.messages[0].received_header


@pytest.mark.parametrize(
    ("xclient", "name", "tcp_info"),
    [
        ("ADDR=198.51.100.7 NAME=client.example.org", "client.example.org", "client.example.org"),
        ("ADDR=198.51.100.7 NAME=[UNAVAILABLE]", None, "unknown"),
        ("ADDR=198.51.100.7", None, "unknown"),
        ("ADDR=198.51.100.7 NAME=host.123", None, "unknown"),  # not a host name
    ],
)
async def test_after_xclient_the_forwarded_name_replaces_the_lookup_of_the_proxy(
    autojump_clock: trio.testing.MockClock, xclient: str, name: str | None, tcp_info: str
) -> None:
    # The proxy's own name (slow to come, to show it can never overwrite the forwarded one).
    resolver = confirmed(CLIENT, "proxy.example.net")
    resolver.delay = 0.5
    handler = Recorder()
    config = rdns_config(resolver, xclient_hosts=[CLIENT])
    async with open_test_session(handler, config=config) as client:
        assert (await client.command(f"XCLIENT {xclient}")).code == 220
        await client.ehlo("client.example")
        await trio.sleep(1)  # the proxy's lookup is over by now
        await client.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nhi\r\n")
        session = client.session
    assert session.client == Endpoint("198.51.100.7", None)
    assert (session.client_name, session.client_name_looked_up) == (name, True)
    assert handler.seen[-2:] == [("rcpt", name, True), ("data", name, True)]
    header = handler.messages[0].received_header
    assert header.startswith(f"Received: from client.example ({tcp_info} [198.51.100.7])\r\n")


# ---- the system resolver, on 127.0.0.1 ---------------------------------------------------------


async def test_the_system_resolver_confirms_localhost() -> None:
    system = SystemResolver()
    name = await system.reverse("127.0.0.1")
    if name is None or "127.0.0.1" not in await system.forward(name):
        pytest.skip("the system resolver finds no confirmed name for 127.0.0.1")
    assert await ReverseDNS().lookup("127.0.0.1") == name.rstrip(".")
    handler = Recorder()
    config = Config(hostname="mx.test", reverse_dns=True)
    async with open_test_session(
        handler, config=config, peer=Endpoint("127.0.0.1", 40000)
    ) as client:
        await client.ehlo()
        await client.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nhi\r\n")
    assert f"({name.rstrip('.')} [127.0.0.1])" in handler.messages[0].received_header


async def test_a_session_cancelled_during_the_lookup_ends_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = confirmed()
    resolver.delay = 60.0
    server = SMTPServer(Handler(), config=rdns_config(resolver, reverse_dns_timeout=30.0))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.move_on_after(5):
        await server.handle_connection(server_stream, peer=TEST_PEER)
    assert server.active_connections == 0
    # Cancelled: the session said goodbye as a hard shutdown does, and closed the stream.
    said = b""
    while chunk := await client_stream.receive_some():
        said += chunk
    assert said == (
        b"220 mx.test ESMTP smtpd-trio ready\r\n"
        b"421 4.3.2 Service shutting down, closing connection\r\n"
    )
    assert resolver.asked == [f"PTR {CLIENT}"]  # still waiting for it when cancelled
