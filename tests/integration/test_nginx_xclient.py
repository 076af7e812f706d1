"""A real nginx mail proxy (ngx_mail_module) in front of our server, speaking XCLIENT.

nginx listens on a free 127.0.0.1 port and asks a small ``auth_http`` endpoint, run here on
127.0.0.1 inside the test's Trio run, where to send each client: it answers ``Auth-Status: OK``
with our server's address. nginx then connects to our server (from 127.0.0.1), says EHLO,
XCLIENT with the real client's address (and, after AUTH at nginx, its login), and the client's
own EHLO, and from there passes the conversation through. The SMTP client is :mod:`smtplib`
bound to 127.0.0.2, so the client our handler must see (127.0.0.2) differs from its peer,
nginx (127.0.0.1).

Debian packages the mail module separately (``libnginx-mod-mail``; ``.ci/run`` installs it);
the tests skip, saying so, when it is missing.
"""

from __future__ import annotations

import functools
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from smtpd_trio import (
    Config,
    Endpoint,
    Handler,
    Message,
    Reply,
    Session,
    Unavailable,
    XClientInfo,
    serve_smtp,
)

from .conftest import require_program
from .proxy_fixtures import (
    CLIENT_DEADLINE,
    CLIENT_HOST,
    MESSAGE,
    NGINX_MAIL_MODULE,
    PROXY_HOST,
    RECIPIENT,
    SENDER,
    free_port,
    in_thread,
    nginx_built_with,
    running_proxy,
)

pytestmark = pytest.mark.integration

#: The largest auth_http request we read (nginx sends a few hundred octets).
_MAX_REQUEST = 16384


@pytest.fixture
def nginx() -> str:
    path = require_program("nginx", "nginx, libnginx-mod-mail")
    if not nginx_built_with(path, "--with-mail") and not Path(NGINX_MAIL_MODULE).exists():
        pytest.skip(f"nginx's mail module is missing ({NGINX_MAIL_MODULE}; libnginx-mod-mail)")
    return path


@attrs.frozen
class Seen:
    """A greeting decision: who the handler was told the client is."""

    client: Endpoint
    peer: Endpoint
    xclient: XClientInfo | None


@attrs.frozen
class Delivered:
    client: Endpoint
    peer: Endpoint
    helo_name: str | None
    authenticated_as: str | None
    xclient: XClientInfo | None
    received_header: str
    content: bytes


class Recorder(Handler):
    def __init__(self) -> None:
        self.greetings: list[Seen] = []
        self.deliveries: list[Delivered] = []

    async def on_connect(self, session: Session) -> Reply | None:
        self.greetings.append(Seen(session.client, session.peer, session.xclient))
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.deliveries.append(
            Delivered(
                client=session.client,
                peer=session.peer,
                helo_name=session.helo_name,
                authenticated_as=session.authenticated_as,
                xclient=session.xclient,
                received_header=message.received_header,
                content=message.content,
            )
        )
        return None


class AuthEndpoint:
    """nginx's ``auth_http`` peer: every request is answered ``Auth-Status: OK`` with our
    server's address, and its headers are kept."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.requests: list[dict[str, str]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.requests.append(headers)
        answer = (
            "HTTP/1.0 200 OK\r\n"
            "Auth-Status: OK\r\n"
            f"Auth-Server: {PROXY_HOST}\r\n"
            f"Auth-Port: {self.server_port}\r\n"
            "\r\n"
        )
        await stream.send_all(answer.encode("ascii"))
        await stream.aclose()


NGINX_MAIL_CONFIG = """\
{load_module}
# One process, so stopping it leaves no orphaned worker behind.
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;

events {{
    worker_connections 64;
}}

mail {{
    server_name mx-proxy.test;
    auth_http {auth_host}:{auth_port}/auth;
    xclient on;
    proxy_pass_error_message on;
{mail_extra}
    server {{
        listen {listen_host}:{port}{listen_options};
        protocol smtp;
        smtp_auth {smtp_auth};
        timeout 10s;
        proxy_timeout 10s;
    }}
}}
"""


async def start_server(nursery: trio.Nursery, handler: Handler, config: Config) -> int:
    """Serve ``handler`` on 127.0.0.1 at a free port, in ``nursery``; return the port."""
    listeners = await nursery.start(
        functools.partial(serve_smtp, handler, port=0, host=PROXY_HOST, config=config)
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def start_auth(nursery: trio.Nursery, upstream_port: int) -> tuple[AuthEndpoint, int]:
    """The auth_http endpoint, sending nginx to ``upstream_port``; it and its port."""
    auth = AuthEndpoint(upstream_port)
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, auth.handle, 0, host=PROXY_HOST)
    )
    port: int = listeners[0].socket.getsockname()[1]
    return auth, port


@asynccontextmanager
async def running_nginx(
    nginx: str,
    tmp_path: Path,
    *,
    auth_port: int,
    smtp_auth: str,
    listen_options: str = "",
    mail_extra: str = "",
) -> AsyncIterator[int]:
    """nginx's mail proxy on a free port (yielded) until the block ends."""
    port = free_port()
    load_module = (
        "" if nginx_built_with(nginx, "--with-mail") else f"load_module {NGINX_MAIL_MODULE};"
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_MAIL_CONFIG.format(
            load_module=load_module,
            prefix=tmp_path,
            auth_host=PROXY_HOST,
            auth_port=auth_port,
            mail_extra=mail_extra,
            listen_host=PROXY_HOST,
            port=port,
            listen_options=listen_options,
            smtp_auth=smtp_auth,
        )
    )
    argv = [nginx, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
    argv += ["-g", "daemon off;"]
    async with running_proxy(argv, port=port, log_path=tmp_path / "nginx.out"):
        yield port


@asynccontextmanager
async def nginx_in_front(
    nursery: trio.Nursery,
    nginx: str,
    tmp_path: Path,
    handler: Handler,
    *,
    smtp_auth: str,
    xclient_hosts: tuple[str, ...] = (PROXY_HOST,),
) -> AsyncIterator[tuple[int, AuthEndpoint]]:
    """Our server (XCLIENT allowed from nginx's address, unless told otherwise), its
    auth_http endpoint and nginx; yields nginx's port and the endpoint."""
    server_port = await start_server(
        nursery, handler, Config(hostname="mx.test", xclient_hosts=xclient_hosts)
    )
    auth, auth_port = await start_auth(nursery, server_port)
    async with running_nginx(nginx, tmp_path, auth_port=auth_port, smtp_auth=smtp_auth) as port:
        yield port, auth


def send(port: int, *, login: tuple[str, str] | None = None) -> None:
    """EHLO client.test, AUTH if asked, one message and QUIT, from ``CLIENT_HOST``."""
    with smtplib.SMTP(
        PROXY_HOST,
        port,
        local_hostname="client.test",
        source_address=(CLIENT_HOST, 0),
        timeout=CLIENT_DEADLINE,
    ) as smtp:
        smtp.ehlo()
        if login is not None:
            smtp.login(*login)
        assert smtp.sendmail(SENDER, [RECIPIENT], MESSAGE) == {}


async def test_nginx_xclient_names_the_real_client(
    nursery: trio.Nursery, tmp_path: Path, nginx: str
) -> None:
    handler = Recorder()
    async with nginx_in_front(nursery, nginx, tmp_path, handler, smtp_auth="none") as (port, auth):
        await in_thread(lambda: send(port))

    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST  # the client that connected to nginx
    assert delivery.client.port is None  # nginx sends no PORT
    assert delivery.peer.host == PROXY_HOST  # nginx itself
    assert delivery.helo_name == "client.test"  # the client's own EHLO, which nginx forwards
    assert delivery.authenticated_as is None
    # nginx looks names up only with a resolver: without one, NAME=[UNAVAILABLE].
    assert delivery.xclient == XClientInfo(addr=CLIENT_HOST, name=Unavailable.UNAVAILABLE)
    assert delivery.received_header.startswith(
        f"Received: from client.test ([{CLIENT_HOST}])\r\n\tby mx.test (smtpd-trio) with ESMTP id "
    )
    assert delivery.content == MESSAGE
    # The greeting was decided twice: for nginx, then for the client XCLIENT named.
    [first, second] = handler.greetings
    assert (first.client, first.xclient) == (first.peer, None)
    assert first.peer.host == PROXY_HOST
    assert second.client == Endpoint(CLIENT_HOST)
    assert second.peer == first.peer
    # nginx asked the endpoint about this very client.
    [request] = auth.requests
    assert request["client-ip"] == CLIENT_HOST
    assert request["auth-smtp-helo"] == "client.test"


async def test_nginx_xclient_login_is_the_identity(
    nursery: trio.Nursery, tmp_path: Path, nginx: str
) -> None:
    handler = Recorder()
    async with nginx_in_front(nursery, nginx, tmp_path, handler, smtp_auth="login plain") as (
        port,
        auth,
    ):
        await in_thread(lambda: send(port, login=("alice@example.org", "s3cret")))

    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST
    assert delivery.peer.host == PROXY_HOST
    assert delivery.helo_name == "client.test"
    # nginx checked the password (through auth_http) and forwarded the login with XCLIENT.
    assert delivery.authenticated_as == "alice@example.org"
    assert delivery.xclient is not None
    assert delivery.xclient.login == "alice@example.org"
    assert delivery.received_header.startswith(
        f"Received: from client.test ([{CLIENT_HOST}])\r\n\tby mx.test (smtpd-trio) with ESMTPA id "
    )
    [request] = auth.requests
    assert request["auth-user"] == "alice@example.org"
    assert request["auth-method"] in ("plain", "login")


def send_refused(port: int) -> str:
    """Like :func:`send`; returns how the delivery failed."""
    try:
        send(port)
    except smtplib.SMTPException as exc:
        return type(exc).__name__
    return "delivered"


async def test_nginx_outside_xclient_hosts_changes_nothing(
    nursery: trio.Nursery, tmp_path: Path, nginx: str
) -> None:
    handler = Recorder()
    async with nginx_in_front(
        nursery, nginx, tmp_path, handler, smtp_auth="none", xclient_hosts=("127.0.0.9",)
    ) as (port, _auth):
        outcome = await in_thread(lambda: send_refused(port))

    # Our 550 5.7.0 to nginx's XCLIENT ends nginx's attempt: the client's RCPT fails.
    assert outcome != "delivered"
    assert handler.deliveries == []
    [greeting] = handler.greetings  # nginx's connection, never anyone else's
    assert greeting.client == greeting.peer
    assert greeting.peer.host == PROXY_HOST
    log = (tmp_path / "error.log").read_text("utf-8", "replace")
    assert "550 5.7.0 Insufficient authorization" in log, log


# ---- with HAProxy: the check and the PROXY protocol ----------------------------------------

#: The address HAProxy connects to our server from, when it is the balancer in front of it.
BALANCER_HOST = "127.0.0.4"

HAPROXY_CONFIG = """\
global
    log stderr format raw local0 warning

defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend front
    bind {host}:{port}
    default_backend back

backend back
    server next {host}:{backend_port} {server_options}
"""


@pytest.fixture
def haproxy() -> str:
    return require_program("haproxy", "haproxy")


@asynccontextmanager
async def running_haproxy(
    haproxy: str, tmp_path: Path, *, backend_port: int, server_options: str
) -> AsyncIterator[int]:
    """HAProxy in TCP mode on a free port (yielded), forwarding to ``backend_port``."""
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(
        HAPROXY_CONFIG.format(
            host=PROXY_HOST, port=port, backend_port=backend_port, server_options=server_options
        )
    )
    argv = [haproxy, "-db", "-f", str(conf)]
    async with running_proxy(argv, port=port, log_path=tmp_path / "haproxy.log"):
        yield port


async def test_haproxy_in_front_of_nginx(
    nursery: trio.Nursery, tmp_path: Path, nginx: str, haproxy: str
) -> None:
    """client -> HAProxy (PROXY header) -> nginx (realip) -> smtpd-trio (XCLIENT): nginx is the
    one that connects to us, so it is nginx's address that xclient_hosts lists, and XCLIENT
    names the client HAProxy saw."""
    handler = Recorder()
    server_port = await start_server(
        nursery, handler, Config(hostname="mx.test", xclient_hosts=[PROXY_HOST])
    )
    _auth, auth_port = await start_auth(nursery, server_port)
    async with (
        running_nginx(
            nginx,
            tmp_path,
            auth_port=auth_port,
            smtp_auth="none",
            listen_options=" proxy_protocol",
            mail_extra=f"    set_real_ip_from {PROXY_HOST};\n",
        ) as nginx_port,
        running_haproxy(
            haproxy, tmp_path, backend_port=nginx_port, server_options="send-proxy"
        ) as port,
    ):
        await in_thread(lambda: send(port))

    [delivery] = handler.deliveries
    assert delivery.client.host == CLIENT_HOST
    assert delivery.peer.host == PROXY_HOST  # nginx
    assert delivery.received_header.startswith(f"Received: from client.test ([{CLIENT_HOST}])")


@pytest.mark.parametrize(
    ("xclient_hosts", "allowed"),
    [
        ((PROXY_HOST,), True),  # nginx, as the balancer's header names it
        ((BALANCER_HOST,), False),  # the balancer itself: that lets no one through
    ],
)
async def test_nginx_in_front_of_a_proxy_protocol_balancer(
    nursery: trio.Nursery,
    tmp_path: Path,
    nginx: str,
    haproxy: str,
    xclient_hosts: tuple[str, ...],
    allowed: bool,
) -> None:
    """client -> nginx -> HAProxy (PROXY header, from 127.0.0.4) -> smtpd-trio: the right to
    XCLIENT is checked against the client the header names (nginx), never the balancer."""
    handler = Recorder()
    config = Config(
        hostname="mx.test",
        proxy_protocol=True,
        trusted_proxies=[BALANCER_HOST],
        xclient_hosts=xclient_hosts,
    )
    server_port = await start_server(nursery, handler, config)
    async with running_haproxy(
        haproxy,
        tmp_path,
        backend_port=server_port,
        server_options=f"send-proxy source {BALANCER_HOST}",
    ) as balancer_port:
        _auth, auth_port = await start_auth(nursery, balancer_port)
        async with running_nginx(nginx, tmp_path, auth_port=auth_port, smtp_auth="none") as port:
            outcome = await in_thread(lambda: send_refused(port))

    if allowed:
        assert outcome == "delivered"
        [delivery] = handler.deliveries
        assert delivery.client.host == CLIENT_HOST
        assert delivery.peer.host == BALANCER_HOST
        assert delivery.xclient is not None
        assert delivery.xclient.addr == CLIENT_HOST
    else:
        assert outcome != "delivered"
        assert handler.deliveries == []
    # nginx's connection reached us through the balancer, named by its header.
    assert any(
        (seen.client.host, seen.peer.host, seen.xclient) == (PROXY_HOST, BALANCER_HOST, None)
        for seen in handler.greetings
    )
    if not allowed:
        log = (tmp_path / "error.log").read_text("utf-8", "replace")
        assert "550 5.7.0 Insufficient authorization" in log, log
