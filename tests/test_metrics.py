"""Config.observer: what the server and its sessions report, path by path.

A recording observer stands in for a metrics system; every connection runs over memory streams
(``open_test_session``, or ``SMTPServer.handle_connection`` for several connections to one
server), with Trio's MockClock where time matters.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from test_cli import assert_one_line_error

from smtpd_trio import (
    Config,
    ConfigError,
    Endpoint,
    Handler,
    Message,
    MessageStream,
    Reject,
    Reply,
    Session,
    SMTPServer,
    TransactionOutcome,
)
from smtpd_trio.cli import build_parser
from smtpd_trio.metrics import (
    NO_OBSERVER,
    AuthOutcome,
    CloseReason,
    Observer,
    RefusalReason,
    TLSOutcome,
)
from smtpd_trio.proxy import ProxyInfo
from smtpd_trio.session import _FAILED, _TIMED_OUT, _auth_outcome
from smtpd_trio.testing import TestClient, open_test_session

A = Endpoint("198.51.100.7", 40000)
B = Endpoint("203.0.113.9", 40000)
BALANCER = Endpoint("192.0.2.10", 5000)
MESSAGE = b"Subject: t\r\n\r\nhello\r\n"


@attrs.define
class Recording:
    """An observer that keeps every call, in order, as (method, arguments)."""

    calls: list[tuple[str, tuple[object, ...]]] = attrs.field(factory=list)

    def connection_refused(self, reason: RefusalReason) -> None:
        self.calls.append(("connection_refused", (reason,)))

    def proxy_header(self, info: ProxyInfo | None) -> None:
        self.calls.append(("proxy_header", (info,)))

    def tls_handshake(self, outcome: TLSOutcome) -> None:
        self.calls.append(("tls_handshake", (outcome,)))

    def authentication(self, outcome: AuthOutcome) -> None:
        self.calls.append(("authentication", (outcome,)))

    def transaction_ended(self, outcome: TransactionOutcome, size: int | None) -> None:
        self.calls.append(("transaction_ended", (outcome, size)))

    def session_ended(self, reason: CloseReason, seconds: float) -> None:
        self.calls.append(("session_ended", (reason, seconds)))

    def of(self, method: str) -> list[tuple[object, ...]]:
        return [args for name, args in self.calls if name == method]

    def ends(self) -> list[CloseReason]:
        return [args[0] for args in self.of("session_ended")]  # type: ignore[misc]

    def refusals(self) -> list[object]:
        return [args[0] for args in self.of("connection_refused")]


def config(observer: Observer, **fields: Any) -> Config:
    return Config(hostname="mx.test", observer=observer, **fields)


class Accepting(Handler):
    pass


@attrs.define
class Served:
    server: SMTPServer
    connect: Callable[..., Awaitable[TestClient]]


@asynccontextmanager
async def serving(handler: Handler, observer: Observer, **fields: Any) -> AsyncIterator[Served]:
    """One server; ``await served.connect(peer)`` opens a memory-stream connection to it, and
    reads the greeting unless ``greeting=False``. Every session has ended on exit."""
    server = SMTPServer(handler, config=config(observer, **fields))
    async with trio.open_nursery() as nursery:

        async def connect(peer: Endpoint = A, *, greeting: bool = True) -> TestClient:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(partial(server.handle_connection, server_end, peer=peer))
            client = TestClient(client_end)
            if greeting:
                reply = await client.read_reply()
                assert reply.code == 220, reply
            return client

        yield Served(server, connect)


# ---- the interface ------------------------------------------------------------------------


def test_the_default_observer_does_nothing_and_is_an_observer() -> None:
    assert Config().observer is NO_OBSERVER
    assert isinstance(NO_OBSERVER, Observer)
    assert isinstance(Recording(), Observer)
    NO_OBSERVER.connection_refused("rate")
    NO_OBSERVER.session_ended(CloseReason.QUIT, 1.0)


def test_config_refuses_an_object_that_is_not_an_observer() -> None:
    with pytest.raises(ConfigError, match="observer must have the methods"):
        Config(observer=object())  # type: ignore[arg-type]


def test_the_core_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, smtpd_trio, smtpd_trio.cli, smtpd_trio.server, smtpd_trio.metrics, "
        "smtpd_trio.testing; "
        "assert 'prometheus_client' not in sys.modules, 'imported'; "
        "assert 'smtpd_trio.prometheus' not in sys.modules, 'imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


# ---- sessions and transactions ------------------------------------------------------------


async def test_a_delivery_then_quit() -> None:
    seen = Recording()
    async with open_test_session(Accepting(), config=config(seen)) as client:
        await client.ehlo()
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
        assert (await client.command("QUIT")).code == 221
    assert [name for name, _ in seen.calls] == ["transaction_ended", "session_ended"]
    assert seen.of("transaction_ended") == [(TransactionOutcome.ACCEPTED, len(MESSAGE))]
    assert seen.ends() == [CloseReason.QUIT]


class RefusesData(Handler):
    async def on_data(self, session: Session, message: Message) -> Reply | None:
        raise Reject(554, "5.7.1", "no thanks")


async def test_every_transaction_outcome() -> None:
    seen = Recording()
    async with open_test_session(RefusesData(), config=config(seen)) as client:
        await client.ehlo()
        reply = await client.command("MAIL FROM:<a@example.com>")
        assert reply.code == 250
        assert (await client.command("RSET")).code == 250
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.command("DATA")
        await client.send(b"Subject: x\r\n\r\nrefused\r\n.\r\n")
        assert (await client.read_reply()).code == 554
        await client.command("MAIL FROM:<a@example.com>")
        assert (await client.command("QUIT")).code == 221
    assert seen.of("transaction_ended") == [
        (TransactionOutcome.RESET, None),
        (TransactionOutcome.REFUSED, len(b"Subject: x\r\n\r\nrefused\r\n")),
        (TransactionOutcome.ABORTED, None),
    ]
    assert seen.ends() == [CloseReason.QUIT]


class Streaming(Handler):
    async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
        async for _ in message.chunks:
            pass
        return None


async def test_a_streamed_message() -> None:
    seen = Recording()
    cfg = config(seen, max_message_size=100)
    async with open_test_session(Streaming(), config=cfg) as client:
        await client.ehlo()
        assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
        reply = await client.sendmail("a@example.com", ["b@example.org"], b"x" * 200)
        assert reply.code == 552
        await client.command("QUIT")
    outcomes = [args[0] for args in seen.of("transaction_ended")]
    assert outcomes == [TransactionOutcome.ACCEPTED, TransactionOutcome.REFUSED]
    assert seen.of("transaction_ended")[0][1] == len(MESSAGE)
    assert seen.ends() == [CloseReason.QUIT]


async def test_a_client_that_goes_away() -> None:
    seen = Recording()
    async with open_test_session(Accepting(), config=config(seen)) as client:
        await client.ehlo()
    assert seen.ends() == [CloseReason.PEER_CLOSED]
    assert seen.of("transaction_ended") == []


async def test_session_time_is_measured_on_trio_s_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen = Recording()
    async with open_test_session(Accepting(), config=config(seen)) as client:
        await trio.sleep(42)
        await client.command("QUIT")
    ((reason, seconds),) = seen.of("session_ended")
    assert reason is CloseReason.QUIT
    assert isinstance(seconds, float)
    assert 42 <= seconds < 43


async def test_timeout(autojump_clock: trio.testing.MockClock) -> None:
    seen = Recording()
    async with open_test_session(Accepting(), config=config(seen, command_timeout=30)) as client:
        assert (await client.read_reply()).code == 421
        assert await client.at_eof()
    assert seen.ends() == [CloseReason.TIMEOUT]
    ((_, seconds),) = seen.of("session_ended")
    assert 30 <= seconds < 32  # type: ignore[operator]


async def test_graceful_shutdown() -> None:
    seen = Recording()
    async with serving(Accepting(), seen) as served:
        client = await served.connect()
        await client.ehlo()
        served.server.shutdown()
        assert (await client.read_reply()).code == 421
        assert await client.at_eof()
    assert seen.ends() == [CloseReason.SHUTDOWN]


async def test_a_hard_stop_is_a_shutdown_too() -> None:
    seen = Recording()
    with trio.CancelScope() as scope:
        async with serving(Accepting(), seen) as served:
            client = await served.connect()
            await client.ehlo()
            scope.cancel()
    assert seen.ends() == [CloseReason.SHUTDOWN]


async def test_too_many_errors() -> None:
    seen = Recording()
    async with open_test_session(Accepting(), config=config(seen, max_errors=2)) as client:
        await client.command("BOGUS")
        assert (await client.command("BOGUS")).code == 421
    assert seen.ends() == [CloseReason.TOO_MANY_ERRORS]


class RefusesAll(Handler):
    async def on_connect(self, session: Session) -> Reply | None:
        return Reply(421, "4.3.2", "not today")


async def test_a_handler_that_refuses_the_greeting() -> None:
    seen = Recording()
    async with open_test_session(RefusesAll(), config=config(seen), read_greeting=False) as client:
        assert (await client.read_reply()).code == 421
        assert await client.at_eof()
    assert seen.ends() == [CloseReason.REFUSED]
    assert seen.refusals() == []


async def test_an_ignored_host_is_observed_all_the_same() -> None:
    seen = Recording()
    cfg = config(seen, ignored_hosts=["192.0.2.0/24"])
    async with open_test_session(Accepting(), config=cfg) as client:
        await client.command("QUIT")
    assert seen.ends() == [CloseReason.QUIT]


# ---- refusals -----------------------------------------------------------------------------


async def test_max_connections() -> None:
    seen = Recording()
    async with serving(Accepting(), seen, max_connections=1) as served:
        first = await served.connect(A)
        second = await served.connect(B, greeting=False)
        assert (await second.read_reply()).code == 421
        assert await second.at_eof()
        assert seen.refusals() == ["max-connections"]
        assert seen.ends() == []
        await first.command("QUIT")
    assert seen.ends() == [CloseReason.QUIT]
    assert seen.refusals() == ["max-connections"]


async def test_per_client_and_rate() -> None:
    seen = Recording()
    async with serving(
        Accepting(), seen, max_connections_per_client=1, max_connection_rate=2
    ) as served:
        first = await served.connect(A)
        too_many = await served.connect(A, greeting=False)
        assert (await too_many.read_reply()).code == 421
        assert seen.refusals() == ["per-client"]
        await first.command("QUIT")
        assert await first.at_eof()
        await trio.testing.wait_all_tasks_blocked()
        second = await served.connect(A)  # a refused connection took no token
        await second.command("QUIT")
        assert await second.at_eof()
        await trio.testing.wait_all_tasks_blocked()
        too_fast = await served.connect(A, greeting=False)  # the third in a minute
        assert (await too_fast.read_reply()).code == 421
        other = await served.connect(B)
        await other.command("QUIT")
    assert seen.refusals() == ["per-client", "rate"]
    assert seen.ends() == [CloseReason.QUIT] * 3


async def test_a_client_over_its_limit_after_xclient_ends_a_served_session() -> None:
    # The proxy's connection was accepted and served: it is counted once, as a session that
    # ended "refused" (its 421), never also as a refused connection.
    seen = Recording()
    async with serving(
        Accepting(), seen, max_connections_per_client=1, xclient_hosts=[BALANCER.host]
    ) as served:
        direct = await served.connect(A)
        proxied = await served.connect(BALANCER)
        reply = await proxied.command(f"XCLIENT ADDR={A.host}")
        assert (reply.code, reply.enhanced) == (421, "4.7.0")
        assert await proxied.at_eof()
        await direct.command("QUIT")
    assert seen.refusals() == []
    assert sorted(seen.ends(), key=str) == [CloseReason.QUIT, CloseReason.REFUSED]


async def test_an_early_talker_ends_its_session_as_one() -> None:
    seen = Recording()
    async with serving(Accepting(), seen, greet_pause=3) as served:
        bot = await served.connect(greeting=False)
        await bot.send(b"EHLO spam.test\r\n")
        assert (await bot.read_reply()).code == 554
        assert await bot.at_eof()
    assert seen.ends() == [CloseReason.EARLY_TALKER]
    assert seen.refusals() == []


# ---- PROXY --------------------------------------------------------------------------------


def proxy_config(**fields: Any) -> dict[str, Any]:
    return {"proxy_protocol": True, "trusted_proxies": ["192.0.2.0/24"], **fields}


async def test_proxy_headers(autojump_clock: trio.testing.MockClock) -> None:
    seen = Recording()
    async with serving(Accepting(), seen, **proxy_config()) as served:
        v1 = await served.connect(BALANCER, greeting=False)
        await v1.send(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n")
        assert (await v1.read_reply()).code == 220
        await v1.command("QUIT")
        local = await served.connect(BALANCER, greeting=False)
        await local.send(b"PROXY UNKNOWN\r\n")
        assert (await local.read_reply()).code == 220
        await local.command("QUIT")
        bad = await served.connect(BALANCER, greeting=False)
        await bad.send(b"PROXY SOMETHING\r\n")
        assert await bad.at_eof()
        silent = await served.connect(BALANCER, greeting=False)
        assert await silent.at_eof()  # after proxy_timeout
        stranger = await served.connect(B, greeting=False)
        assert await stranger.at_eof()
    headers = [args[0] for args in seen.of("proxy_header")]
    assert len(headers) == 2
    assert isinstance(headers[0], ProxyInfo)
    assert headers[0].version == 1
    assert headers[0].source_address is not None
    assert isinstance(headers[1], ProxyInfo)
    assert headers[1].source_address is None
    assert seen.refusals() == ["proxy", "proxy", "proxy"]
    assert seen.ends() == [CloseReason.QUIT, CloseReason.QUIT]


async def test_an_untrusted_peer_served_directly_has_no_header() -> None:
    seen = Recording()
    fields = proxy_config(untrusted_proxy_peers="direct")
    async with serving(Accepting(), seen, **fields) as served:
        client = await served.connect(B)
        await client.command("QUIT")
    assert seen.of("proxy_header") == [(None,)]
    assert seen.ends() == [CloseReason.QUIT]


class RefusesProxies(Handler):
    async def on_proxy(self, session: Session, info: ProxyInfo) -> Reply | None:
        return Reply(550, "5.7.1", "not from there")


async def test_on_proxy_refusal() -> None:
    seen = Recording()
    async with serving(RefusesProxies(), seen, **proxy_config()) as served:
        client = await served.connect(BALANCER, greeting=False)
        await client.send(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n")
        assert await client.at_eof()
    assert len(seen.of("proxy_header")) == 1
    assert seen.refusals() == ["on-proxy"]
    assert seen.ends() == []


# ---- TLS ----------------------------------------------------------------------------------


async def test_starttls_success(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    seen = Recording()
    async with open_test_session(
        Accepting(), config=config(seen, tls_context=server_ctx)
    ) as client:
        await client.ehlo()
        assert (await client.starttls(client_ctx)).code == 220
        await client.ehlo()
        await client.command("QUIT")
    assert seen.of("tls_handshake") == [("success",)]
    assert seen.ends() == [CloseReason.QUIT]


async def test_starttls_failure(server_ctx: ssl.SSLContext) -> None:
    seen = Recording()
    async with open_test_session(
        Accepting(), config=config(seen, tls_context=server_ctx)
    ) as client:
        await client.ehlo()
        assert (await client.command("STARTTLS")).code == 220
        await client.send(b"EHLO this is not TLS\r\n")
        assert await client.at_eof()
    assert seen.of("tls_handshake") == [("failure",)]
    assert seen.ends() == [CloseReason.TLS_FAILED]


async def test_implicit_tls_timeout(
    server_ctx: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    seen = Recording()
    cfg = config(seen, tls_context=server_ctx, implicit_tls=True, tls_handshake_timeout=3)
    async with open_test_session(Accepting(), config=cfg, read_greeting=False) as client:
        assert await client.at_eof()
    assert seen.of("tls_handshake") == [("timeout",)]
    assert seen.ends() == [CloseReason.TLS_FAILED]


# ---- AUTH ---------------------------------------------------------------------------------


async def authenticator(session: Session, credentials: object) -> str | None:
    user = getattr(credentials, "username", "")
    if user == "broken":
        raise RuntimeError("the user database is down")
    if user == "locked":
        raise Reject(454, "4.7.0", "try later")
    return "alice" if getattr(credentials, "password", "") == "right" else None


async def test_auth_outcomes() -> None:
    seen = Recording()
    cfg = config(seen, authenticator=authenticator, auth_over_plaintext=True, max_auth_failures=9)
    async with open_test_session(Accepting(), config=cfg) as client:
        await client.ehlo()
        assert (await client.auth_plain("alice", "wrong")).code == 535
        assert (await client.auth_plain("broken", "x")).code == 454
        assert (await client.auth_login("locked", "x")).code == 454
        assert (await client.command("AUTH PLAIN not-base64!")).code == 501  # not reported
        assert (await client.auth_plain("alice", "right")).code == 235
        await client.command("QUIT")
    assert seen.of("authentication") == [
        ("failure",),
        ("temporary-failure",),
        ("temporary-failure",),
        ("success",),
    ]


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        ("alice", "success"),
        (None, "failure"),
        (Reply(535, "5.7.8", "no"), "failure"),
        (Reply(554, "5.7.1", "never"), "failure"),
        (Reply(454, "4.7.0", "later"), "temporary-failure"),
        (Reply(421, "4.7.0", "bye"), "temporary-failure"),
        (Reply(250, None, "a positive reply is not an answer to AUTH"), "temporary-failure"),
        (_FAILED, "temporary-failure"),
        (_TIMED_OUT, "temporary-failure"),
        (42, "temporary-failure"),
    ],
)
def test_auth_outcome_is_what_the_client_is_told(result: object, outcome: str) -> None:
    assert _auth_outcome(result) == outcome


# ---- smtpd-trio --metrics: the values (no prometheus-client needed) ------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:9100", ("localhost", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ],
)
def test_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert build_parser().parse_args(["--metrics", text]).metrics == expected
    assert build_parser().parse_args([]).metrics is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("9100", ["--metrics", "not HOST:PORT"]),
        (":9100", ["--metrics", "give the address"]),
        ("[127.0.0.1]:9100", ["--metrics", "brackets are for IPv6"]),
        ("::1:9100", ["--metrics", "not HOST:PORT"]),
        ("127.0.0.1:70000", ["--metrics", "70000"]),
        ("256.1.1.1:9100", ["--metrics", "not an IPv4 address"]),
    ],
)
def test_bad_metrics_addresses_exit_2_naming_the_option(value: str, words: list[str]) -> None:
    assert_one_line_error(["--metrics", value], *words)


def test_metrics_and_workers_do_not_go_together() -> None:
    line = assert_one_line_error(
        ["--metrics", "127.0.0.1:9100", "--workers", "2", "--port", "2525"], "--workers"
    )
    assert "--metrics cannot be used with --workers" in line


def test_metrics_without_prometheus_client_is_one_line() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from smtpd_trio.cli import main; main(['--port', '0', '--metrics', '127.0.0.1:0'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr == (
        "smtpd-trio: error: --metrics needs the prometheus-client package: "
        "pip install 'smtpd-trio[metrics]'\n"
    )
