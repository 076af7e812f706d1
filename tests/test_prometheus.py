"""smtpd_trio.prometheus: the counters a real session leaves, the gauges, the HTTP endpoint,
and ``smtpd-trio --metrics`` end to end (a delivery, then a scrape).

Skipped as a whole without the prometheus-client package (the ``test`` extra installs it).
"""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest

pytest.importorskip(
    "prometheus_client",
    reason="prometheus-client is not installed: pip install 'smtpd-trio[metrics]' "
    "(the test extra has it)",
)

import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_cli import _busy_socket, assert_one_line_error, cli_server, deliver

from smtpd_trio import (
    Config,
    Endpoint,
    Handler,
    Message,
    Reply,
    Session,
    SMTPServer,
    TransactionOutcome,
)
from smtpd_trio.prometheus import (
    MAX_REQUEST_HEAD,
    MAX_SCRAPES,
    REQUEST_TIMEOUT,
    PrometheusMetrics,
    _Endpoint,
    answer,
    serve_metrics,
)
from smtpd_trio.testing import TestClient, open_test_session

A = Endpoint("198.51.100.7", 40000)
BALANCER = Endpoint("192.0.2.10", 5000)
MESSAGE = b"Subject: t\r\n\r\nhello\r\n"


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def connections(metrics: PrometheusMetrics, outcome: str, reason: str) -> float:
    return value(metrics, "smtpd_connections_total", outcome=outcome, reason=reason)


# ---- counters -----------------------------------------------------------------------------


def test_every_series_exists_from_the_start_at_zero() -> None:
    metrics = PrometheusMetrics()
    for reason in ("quit", "peer-closed", "timeout", "shutdown", "tls-failed", "limit"):
        assert connections(metrics, "served", reason) == 0
    for reason in ("max-connections", "per-client", "rate", "proxy", "on-proxy", "early-talker"):
        assert connections(metrics, "refused", reason) == 0
    assert (
        metrics.registry.get_sample_value(
            "smtpd_connections_total", {"outcome": "served", "reason": "early-talker"}
        )
        is None
    )
    for outcome in ("accepted", "refused", "reset", "aborted"):
        assert value(metrics, "smtpd_transactions_total", outcome=outcome) == 0
    for outcome in ("v1", "v2", "local", "direct", "refused"):
        assert value(metrics, "smtpd_proxy_headers_total", outcome=outcome) == 0
    for outcome in ("success", "failure", "timeout"):
        assert value(metrics, "smtpd_tls_handshakes_total", outcome=outcome) == 0
    for outcome in ("success", "failure", "temporary-failure"):
        assert value(metrics, "smtpd_auth_attempts_total", outcome=outcome) == 0
    assert value(metrics, "smtpd_session_duration_seconds_count") == 0
    # Nothing tracked: no gauges rather than made-up zeros.
    assert metrics.registry.get_sample_value("smtpd_connections_active") is None


def test_two_sets_of_metrics_do_not_collide() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.transaction_ended(TransactionOutcome.ACCEPTED, 10)
    assert value(first, "smtpd_transactions_total", outcome="accepted") == 1
    assert value(second, "smtpd_transactions_total", outcome="accepted") == 0
    other = PrometheusMetrics(CollectorRegistry(), namespace="mx")
    assert other.registry.get_sample_value("mx_transactions_total", {"outcome": "accepted"}) == 0


async def test_a_session_s_counters() -> None:
    metrics = PrometheusMetrics()
    config = Config(hostname="mx.test", observer=metrics)
    async with open_test_session(Handler(), config=config) as client:
        await client.ehlo()
        for _ in range(2):
            assert (await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)).code == 250
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RSET")
        await client.command("QUIT")
    assert connections(metrics, "served", "quit") == 1
    assert value(metrics, "smtpd_transactions_total", outcome="accepted") == 2
    assert value(metrics, "smtpd_transactions_total", outcome="reset") == 1
    assert value(metrics, "smtpd_message_bytes_total", outcome="accepted") == 2 * len(MESSAGE)
    assert value(metrics, "smtpd_session_duration_seconds_count") == 1
    assert value(metrics, "smtpd_session_duration_seconds_sum") >= 0


async def test_refusals_by_proxy_and_early_talkers(autojump_clock: trio.testing.MockClock) -> None:
    metrics = PrometheusMetrics()
    config = Config(
        hostname="mx.test",
        observer=metrics,
        proxy_protocol=True,
        trusted_proxies=["192.0.2.0/24"],
        greet_pause=2,
    )
    server = SMTPServer(Handler(), config=config)
    async with trio.open_nursery() as nursery:

        async def connect(peer: Endpoint) -> TestClient:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(partial(server.handle_connection, server_end, peer=peer))
            return TestClient(client_end)

        bad = await connect(BALANCER)
        await bad.send(b"PROXY NONSENSE\r\n")
        assert await bad.at_eof()
        bot = await connect(BALANCER)
        await bot.send(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\nEHLO bot.test\r\n")
        assert (await bot.read_reply()).code == 554
        assert await bot.at_eof()
        v2_local = await connect(BALANCER)
        await v2_local.send(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
        assert (await v2_local.read_reply()).code == 220
        await v2_local.command("QUIT")
        assert await v2_local.at_eof()
    assert connections(metrics, "refused", "proxy") == 1
    assert value(metrics, "smtpd_proxy_headers_total", outcome="refused") == 1
    assert connections(metrics, "refused", "early-talker") == 1
    assert value(metrics, "smtpd_proxy_headers_total", outcome="v1") == 1
    assert value(metrics, "smtpd_proxy_headers_total", outcome="local") == 1
    assert connections(metrics, "served", "quit") == 1
    # Only served sessions are timed.
    assert value(metrics, "smtpd_session_duration_seconds_count") == 1


# ---- gauges -------------------------------------------------------------------------------


class Holding(Handler):
    """Keeps each message's on_data waiting until told to go on."""

    def __init__(self) -> None:
        self.holding = trio.Event()
        self.go_on = trio.Event()

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.holding.set()
        await self.go_on.wait()
        return None


async def test_gauges_read_the_tracked_server() -> None:
    metrics = PrometheusMetrics()
    handler = Holding()
    config = Config(hostname="mx.test", observer=metrics, max_connections=1)
    server = SMTPServer(handler, config=config)
    metrics.track(server)
    assert value(metrics, "smtpd_connections_active") == 0
    assert value(metrics, "smtpd_under_stress") == 0
    async with trio.open_nursery() as nursery:
        client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(partial(server.handle_connection, server_end, peer=A))
        client = TestClient(client_end)
        assert (await client.read_reply()).code == 220
        assert value(metrics, "smtpd_connections_active") == 1
        assert value(metrics, "smtpd_under_stress") == 1  # 1 of 1: past 80%
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.command("DATA")
        await client.send(MESSAGE + b".\r\n")
        await handler.holding.wait()
        held = value(metrics, "smtpd_buffered_bytes")
        assert held == server.buffered_bytes >= len(MESSAGE)
        handler.go_on.set()
        assert (await client.read_reply()).code == 250
        assert value(metrics, "smtpd_buffered_bytes") == 0
        await client.command("QUIT")
        assert await client.at_eof()
    assert value(metrics, "smtpd_connections_active") == 0
    assert value(metrics, "smtpd_under_stress") == 0


# ---- the HTTP endpoint --------------------------------------------------------------------


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, text = line.partition(":")
        headers[name.strip().lower()] = text.strip()
    assert int(headers["content-length"]) == len(body) or not body
    assert headers["connection"] == "close"
    return status, headers, body


def test_get_metrics_in_the_prometheus_text_format() -> None:
    metrics = PrometheusMetrics()
    status, headers, body = split(answer(b"GET /metrics HTTP/1.1\r\nHost: x", metrics.registry))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"smtpd_connections", "smtpd_transactions", "smtpd_session_duration_seconds"} <= names


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    metrics = PrometheusMetrics()
    request = (
        b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n"
        b"Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
    )
    status, headers, body = split(answer(request, metrics.registry))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=x",
        "text/plain;version=zz",
        "text/plain;version=1.0.0;escaping=bogus",
        "\u00ff\u00fe; q=;;,,",
    ],
)
def test_a_malformed_accept_header_gets_text(accept: str) -> None:
    request = b"GET /metrics HTTP/1.1\r\nAccept: " + accept.encode("latin-1")
    status, headers, body = split(answer(request, PrometheusMetrics().registry))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain")
    assert b"smtpd_connections_total" in body


def test_head_has_the_headers_only() -> None:
    metrics = PrometheusMetrics()
    status, headers, body = split(answer(b"HEAD /metrics HTTP/1.0", metrics.registry))
    assert status == "HTTP/1.1 200 OK"
    assert body == b""
    assert int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET / HTTP/1.1", "HTTP/1.1 404 Not Found"),
        (b"GET /metrics/x HTTP/1.1", "HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1", "HTTP/1.1 405 Method Not Allowed"),
        (b"GET /metrics", "HTTP/1.1 400 Bad Request"),
        (b"GET /metrics SMTP/1.0", "HTTP/1.1 400 Bad Request"),
        (b"\x00\xff", "HTTP/1.1 400 Bad Request"),
    ],
)
def test_other_requests(request_head: bytes, status: str) -> None:
    got, headers, _ = split(answer(request_head, CollectorRegistry()))
    assert got == status
    if "405" in status:
        assert headers["allow"] == "GET, HEAD"


class Broken:
    def collect(self) -> list[object]:
        raise RuntimeError("this collector is broken")


def test_a_failing_collector_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())  # type: ignore[arg-type]
    status, _, _ = split(answer(b"GET /metrics HTTP/1.1", registry))
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert any("collecting the metrics failed" in r.getMessage() for r in caplog.records)


@asynccontextmanager
async def endpoint(registry: CollectorRegistry) -> AsyncIterator[int]:
    """serve_metrics on a loopback port; yields the port."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(serve_metrics, listeners, registry)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def exchange(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    return bytes(data)


async def test_serve_metrics_over_tcp() -> None:
    metrics = PrometheusMetrics()
    async with endpoint(metrics.registry) as port:
        response = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, body = split(response)
        assert status == "HTTP/1.1 200 OK"
        assert b'smtpd_transactions_total{outcome="accepted"} 0.0' in body
        too_big = b"GET /metrics HTTP/1.1\r\nX: " + b"x" * MAX_REQUEST_HEAD + b"\r\n\r\n"
        status, _, _ = split(await exchange(port, too_big))
        assert status == "HTTP/1.1 431 Request Header Fields Too Large"
        bad_accept = b"GET /metrics HTTP/1.1\r\nAccept: text/plain;version=x\r\n\r\n"
        status, _, _ = split(await exchange(port, bad_accept))
        assert status == "HTTP/1.1 200 OK"
        # Bare LF line ends are understood too.
        status, _, _ = split(await exchange(port, b"GET /metrics HTTP/1.0\n\n"))
        assert status == "HTTP/1.1 200 OK"


async def test_scrapes_at_once_are_bounded() -> None:
    async with endpoint(CollectorRegistry()) as port:
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_SCRAPES)]
        for stream in idle:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\n")  # and nothing more, for now
        await trio.testing.wait_all_tasks_blocked()
        async with await trio.open_tcp_stream("127.0.0.1", port) as one_too_many:
            assert await one_too_many.receive_some(65536) == b""  # closed unanswered
        await idle[0].send_all(b"\r\n")
        assert (await idle[0].receive_some(65536)).startswith(b"HTTP/1.1 200 OK")
        for stream in idle:
            await stream.aclose()


async def test_a_silent_scraper_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_Endpoint(CollectorRegistry()).handle, server_end)
        start = trio.current_time()
        assert await client_end.receive_some(100) == b""
        assert trio.current_time() - start >= REQUEST_TIMEOUT


# ---- smtpd-trio --metrics -----------------------------------------------------------------

METRICS_URL = re.compile(r"serving metrics on (http://127\.0\.0\.1:(\d+)/metrics)")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_cli_metrics_after_a_delivery() -> None:
    with cli_server("--handler", "sink", "--metrics", "127.0.0.1:0") as server:
        match = METRICS_URL.search(server.wait_for("serving metrics on"))
        assert match, server.lines
        url, metrics_port = match.group(1), int(match.group(2))
        before = scrape(url)
        assert before[sample("smtpd_transactions_total", outcome="accepted")] == 0
        assert before[sample("smtpd_connections_active")] == 0
        assert sample("process_cpu_seconds_total") in before  # the client library's own
        assert not [key for key in before if key[0].endswith("_created")]
        deliver(server.port, MESSAGE)
        quit_key = sample("smtpd_connections_total", outcome="served", reason="quit")
        active_key = sample("smtpd_connections_active")
        deadline = time.monotonic() + 15
        # The session ends just after the 221, and the connection a moment later.
        while (after := scrape(url))[quit_key] < 1 or after[active_key] > 0:
            assert time.monotonic() < deadline, after
            time.sleep(0.05)
        assert after[quit_key] == 1
        assert after[sample("smtpd_transactions_total", outcome="accepted")] == 1
        assert after[sample("smtpd_message_bytes_total", outcome="accepted")] == len(MESSAGE)
        assert after[sample("smtpd_session_duration_seconds_count")] == 1
        assert after[sample("smtpd_under_stress")] == 0
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url.removesuffix("metrics"), timeout=10)
        assert error.value.code == 404
        error.value.close()
        assert server.stop() == 0
    # It stopped with the server.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", metrics_port), timeout=5),
    ):
        pass


def test_cli_metrics_port_in_use_is_one_line_naming_the_option() -> None:
    with _busy_socket() as blocker:
        port = blocker.getsockname()[1]
        line = assert_one_line_error(
            ["--port", "0", "--metrics", f"127.0.0.1:{port}"], "--metrics", str(port)
        )
    assert line == (
        f"smtpd-trio: error: argument --metrics: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    )
