"""Real load balancers in front of a real server: HAProxy and nginx speaking the PROXY protocol.

Each test writes the proxy's configuration into ``tmp_path``, runs the proxy in the foreground
on a free loopback port, and sends mail through it with :mod:`smtplib` bound to 127.0.0.2, so
the real client (127.0.0.2) differs from the proxy (127.0.0.1). Our server runs in the test's own
Trio run and records what its handler saw. A test skips, saying why, when its proxy is not
installed (``.ci/run`` installs HAProxy and nginx with its stream module).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from smtpd_trio import Config, Handler, serve_smtp
from smtpd_trio.proxy import ProxyCommand, ProxyFamily, ProxyTransport, SSLClientFlags

from .conftest import require_program
from .proxy_fixtures import (
    CLIENT_HOST,
    NGINX_STREAM_MODULE,
    PROXY_HOST,
    ProxyRecorder,
    connect_and_reset,
    connect_only,
    deliver_plain,
    deliver_tls,
    free_port,
    in_thread,
    nginx_has_static_stream,
    running_proxy,
    watching_disposals,
)

pytestmark = pytest.mark.integration

SNI_NAME = "mx.test"
RECEIVED_FROM_CLIENT = f"Received: from client.test ([{CLIENT_HOST}])\r\n"


@pytest.fixture
def haproxy() -> str:
    return require_program("haproxy", "haproxy")


@pytest.fixture
def nginx() -> str:
    path = require_program("nginx", "nginx, libnginx-mod-stream")
    if not nginx_has_static_stream(path) and not Path(NGINX_STREAM_MODULE).exists():
        pytest.skip(
            f"nginx's stream module is missing ({NGINX_STREAM_MODULE}; libnginx-mod-stream)"
        )
    return path


async def start_server(
    nursery: trio.Nursery,
    handler: Handler,
    *,
    trusted_proxies: Sequence[str] = ("127.0.0.0/8",),
) -> int:
    """Serve ``handler`` with PROXY on, on 127.0.0.1 at a free port; return the port."""
    config = Config(proxy_protocol=True, trusted_proxies=trusted_proxies, hostname="mx.test")
    listeners = await nursery.start(
        functools.partial(serve_smtp, handler, port=0, host="127.0.0.1", config=config)
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


# ---- HAProxy ------------------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    log stderr format raw local0 warning

defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid

frontend smtp_in
    bind {bind}
    default_backend smtpd_trio

backend smtpd_trio
    {backend_options}
    server app 127.0.0.1:{server_port} {server_options}
"""


HAProxyFront = Callable[..., AbstractAsyncContextManager[int]]


@pytest.fixture
def haproxy_front(haproxy: str, tmp_path: Path) -> HAProxyFront:
    """``async with haproxy_front(server_port, server_options=..., bind=..., backend_options=...)
    as port``: HAProxy (configuration checked first) in front of our server at
    ``server_port``, listening on ``port`` until the block ends."""

    @asynccontextmanager
    async def front(
        server_port: int,
        *,
        server_options: str,
        bind: str = f"{PROXY_HOST}:{{port}}",
        backend_options: str = "",
    ) -> AsyncIterator[int]:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                bind=bind.format(port=port),
                server_port=server_port,
                server_options=server_options,
                backend_options=backend_options,
            )
        )
        check = await trio.run_process(
            [haproxy, "-c", "-f", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode("utf-8", "replace")
        argv = [haproxy, "-db", "-f", str(config)]
        async with running_proxy(argv, port=port, log_path=tmp_path / "haproxy.log"):
            yield port

    return front


@pytest.mark.parametrize(("option", "version"), [("send-proxy", 1), ("send-proxy-v2", 2)])
async def test_haproxy_send_proxy(
    nursery: trio.Nursery, tmp_path: Path, haproxy_front: HAProxyFront, option: str, version: int
) -> None:
    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler)
    async with haproxy_front(server_port, server_options=option) as port:
        await in_thread(lambda: deliver_plain(port))

    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST
    assert delivery.peer.host == PROXY_HOST
    assert delivery.helo_name == "client.test"
    assert delivery.received_header.startswith(RECEIVED_FROM_CLIENT)
    info = delivery.proxy
    assert info is not None
    assert info.version == version
    assert info.command is ProxyCommand.PROXY
    assert info.family is ProxyFamily.INET
    assert info.transport is ProxyTransport.STREAM
    assert info.source_address == ipaddress.IPv4Address(CLIENT_HOST)
    assert info.source_port == delivery.client.port
    assert info.destination_address == ipaddress.IPv4Address(PROXY_HOST)
    assert info.destination_port == port
    assert info.tlvs == ()
    [seen] = handler.from_host(CLIENT_HOST)
    assert seen.peer.host == PROXY_HOST


async def test_haproxy_v2_tlvs_behind_tls_frontend(
    nursery: trio.Nursery, tmp_path: Path, haproxy_front: HAProxyFront
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(SNI_NAME)
    pem = tmp_path / "frontend.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)

    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler)
    async with haproxy_front(
        server_port,
        bind=f"{PROXY_HOST}:{{port}} ssl crt {pem}",
        server_options="send-proxy-v2 proxy-v2-options crc32c,unique-id,authority,ssl,ssl-cipher",
    ) as port:
        negotiated = await in_thread(lambda: deliver_tls(port, sni=SNI_NAME, context=context))

    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST
    assert delivery.peer.host == PROXY_HOST
    assert delivery.received_header.startswith(RECEIVED_FROM_CLIENT)
    # TLS ended at HAProxy: our own session is plain SMTP.
    assert "\tby mx.test (smtpd-trio) with ESMTP id " in delivery.received_header
    info = delivery.proxy
    assert info is not None
    assert info.version == 2
    assert info.command is ProxyCommand.PROXY
    assert info.source_address == ipaddress.IPv4Address(CLIENT_HOST)
    # The checksum is only reported once the reader has verified it against the header.
    assert info.crc32c is not None
    assert info.authority == SNI_NAME
    # unique-id-format: %{+X}o %ci:%cp_%fi:%fp_%Ts_%rt:%pid, in hexadecimal.
    assert info.unique_id is not None
    client_hex = f"{int(ipaddress.IPv4Address(CLIENT_HOST)):X}"
    assert info.unique_id.startswith(f"{client_hex}:{delivery.client.port:04X}_".encode())
    tls = info.ssl
    assert tls is not None
    assert tls.client == SSLClientFlags.SSL  # TLS, and no client certificate
    assert tls.version == negotiated.version
    assert tls.cipher == negotiated.cipher
    assert tls.verified is False  # no client certificate


async def test_haproxy_health_checks_send_v2_local(
    nursery: trio.Nursery, tmp_path: Path, haproxy_front: HAProxyFront
) -> None:
    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler)
    async with haproxy_front(
        server_port,
        server_options="send-proxy-v2 check inter 200ms fall 1 rise 1",
        backend_options="option smtpchk EHLO lb.test",
    ) as port:
        with trio.fail_after(5):
            await handler.wait_for_health_checks(2)
        # The server is still serving: real mail goes through between checks.
        await in_thread(lambda: deliver_plain(port))

    log = await trio.Path(tmp_path / "haproxy.log").read_text("utf-8", "replace")
    assert "is DOWN" not in log, log
    for check in handler.health_checks():
        assert check.client == check.peer  # LOCAL: the real endpoints
        assert check.peer.host == PROXY_HOST
        assert check.proxy is not None
        assert check.proxy.version == 2
    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST
    assert delivery.received_header.startswith(RECEIVED_FROM_CLIENT)


async def test_haproxy_outside_the_allowlist_is_refused(
    nursery: trio.Nursery,
    tmp_path: Path,
    haproxy_front: HAProxyFront,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler, trusted_proxies=["10.0.0.0/8"])
    async with haproxy_front(server_port, server_options="send-proxy-v2") as port:
        outcome = await in_thread(lambda: connect_only(port))

    assert outcome in ("SMTPServerDisconnected", "ConnectionResetError")
    assert handler.connections == []
    assert handler.deliveries == []
    refused = [
        r.getMessage()
        for r in caplog.records
        if r.name == "smtpd_trio.server" and " refused " in r.getMessage()
    ]
    # The client's connection and the readiness probe's both arrive from HAProxy; neither
    # header is read. (A probe already reset when accepted can show up as "unknown".)
    assert all(message.endswith("is not a trusted proxy") for message in refused), refused
    assert any(f"refused {PROXY_HOST}:" in message for message in refused), refused


# A connection reset before it is accepted (HAProxy's plain `check` does this: it connects,
# sends its LOCAL header and closes with a RST) must not be reported as an untrusted peer.
# Today getpeername() fails on the dead socket, the peer becomes "unknown", and the trust check
# logs a WARNING "refused unknown: peer unknown is not a trusted proxy" for every check.


def trust_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "smtpd_trio.server" and r.getMessage().endswith("is not a trusted proxy")
    ]


async def test_reset_connection_from_trusted_network_is_not_a_trust_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler)

    with watching_disposals() as watcher:
        connect_and_reset(server_port)
        await watcher.wait_for(1)  # the server let it go

    assert handler.connections == []
    assert trust_warnings(caplog) == []


async def test_haproxy_plain_tcp_checks_are_not_trust_warnings(
    nursery: trio.Nursery,
    tmp_path: Path,
    haproxy_front: HAProxyFront,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpd_trio")
    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler)
    with watching_disposals() as watcher:
        async with haproxy_front(server_port, server_options="send-proxy-v2 check inter 100ms"):
            await watcher.wait_for(10)  # ten checks came and went

    assert trust_warnings(caplog) == []


# ---- nginx --------------------------------------------------------------------------------

NGINX_CONFIG = """\
{load_module}
# One process, so stopping it leaves no orphaned worker behind.
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 64;
}}

stream {{
    server {{
        listen {listen_host}:{port};
        proxy_pass 127.0.0.1:{server_port};
        proxy_protocol on;
        proxy_connect_timeout 2s;
        proxy_timeout 10s;
    }}
}}
"""


async def test_nginx_stream_proxy_protocol(
    nursery: trio.Nursery, tmp_path: Path, nginx: str
) -> None:
    handler = ProxyRecorder()
    server_port = await start_server(nursery, handler)
    port = free_port()
    load_module = "" if nginx_has_static_stream(nginx) else f"load_module {NGINX_STREAM_MODULE};"
    config = tmp_path / "nginx.conf"
    config.write_text(
        NGINX_CONFIG.format(
            load_module=load_module,
            prefix=tmp_path,
            listen_host=PROXY_HOST,
            port=port,
            server_port=server_port,
        )
    )
    argv = [
        nginx,
        "-p",
        str(tmp_path),
        "-e",
        str(tmp_path / "error.log"),
        "-c",
        str(config),
        "-g",
        "daemon off;",
    ]
    async with running_proxy(argv, port=port, log_path=tmp_path / "nginx.out"):
        await in_thread(lambda: deliver_plain(port))

    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST
    assert delivery.peer.host == PROXY_HOST
    assert delivery.received_header.startswith(RECEIVED_FROM_CLIENT)
    info = delivery.proxy
    assert info is not None
    assert info.version == 1
    assert info.family is ProxyFamily.INET
    assert info.source_address == ipaddress.IPv4Address(CLIENT_HOST)
    assert info.source_port == delivery.client.port
    assert info.destination_address == ipaddress.IPv4Address(PROXY_HOST)
    assert info.destination_port == port
