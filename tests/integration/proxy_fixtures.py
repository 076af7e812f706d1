"""Helpers for the load-balancer tests: real HAProxy and nginx processes on loopback.

Each proxy runs in the foreground (HAProxy ``-db``, nginx ``daemon off;``) with a configuration
written into the test's ``tmp_path``, listens on a free 127.0.0.1 port and forwards to our
in-process server. :func:`running_proxy` waits until the proxy's port accepts connections and
always stops the process on the way out (SIGTERM, then SIGKILL). Only loopback addresses are
ever used.

The SMTP client is :mod:`smtplib` in a worker thread, its socket bound to another loopback
address (``CLIENT_HOST``) so the real client address differs from the proxy's (127.0.0.1).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
import trio
from server_log import attached

from smtpd_trio import Endpoint, Handler, Message, Reply, Session
from smtpd_trio.proxy import ProxyCommand, ProxyInfo

#: Where the proxies listen and where they reach our server.
PROXY_HOST = "127.0.0.1"
#: The address the SMTP client binds to: the "real client" the PROXY header must name.
CLIENT_HOST = "127.0.0.2"
#: The address the readiness probe binds to, so its connection is told apart from the client's.
PROBE_HOST = "127.0.0.3"
#: How long a proxy may take to start listening.
START_DEADLINE = 5.0
#: How long a proxy may take to exit after SIGTERM before it is killed.
STOP_GRACE = 3.0
#: How long one SMTP client conversation may take.
CLIENT_DEADLINE = 8.0

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
NGINX_MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"

T = TypeVar("T")


def nginx_has_static_stream(nginx: str) -> bool:
    """True if this nginx was built with the stream module compiled in (not dynamic)."""
    return nginx_built_with(nginx, "--with-stream")


def nginx_built_with(nginx: str, flag: str) -> bool:
    """True if ``nginx -V`` lists ``flag`` (``--with-mail``: compiled in, not dynamic)."""
    done = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False)
    flags = (done.stdout + done.stderr).split()
    return flag in flags


def free_port(host: str = PROXY_HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class Seen:
    """One connection as the handler saw it once the banner was due."""

    client: Endpoint
    peer: Endpoint
    proxy: ProxyInfo | None


@attrs.frozen
class Delivered:
    """One message as the handler received it."""

    client: Endpoint
    peer: Endpoint
    proxy: ProxyInfo | None
    helo_name: str | None
    received_header: str
    content: bytes


class ProxyRecorder(Handler):
    """Accepts everything; records every connection and every message."""

    def __init__(self) -> None:
        self.connections: list[Seen] = []
        self.deliveries: list[Delivered] = []
        self._new_connection = trio.Event()

    async def on_connect(self, session: Session) -> Reply | None:
        self.connections.append(Seen(session.client, session.peer, session.proxy))
        self._new_connection.set()
        self._new_connection = trio.Event()
        return None

    async def wait_for_health_checks(self, count: int) -> None:
        """Return once ``count`` health checks have been seen."""
        while len(self.health_checks()) < count:
            await self._new_connection.wait()

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.deliveries.append(
            Delivered(
                client=session.client,
                peer=session.peer,
                proxy=session.proxy,
                helo_name=session.helo_name,
                received_header=message.received_header,
                content=message.content,
            )
        )
        return None

    def from_host(self, host: str) -> list[Seen]:
        return [seen for seen in self.connections if seen.client.host == host]

    def health_checks(self) -> list[Seen]:
        """Connections whose header was a v2 LOCAL (what HAProxy's health checks send)."""
        return [
            seen
            for seen in self.connections
            if seen.proxy is not None and seen.proxy.command is ProxyCommand.LOCAL
        ]


async def _port_accepts(host: str, port: int) -> bool:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.bind((PROBE_HOST, 0))
        await sock.connect((host, port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


@asynccontextmanager
async def running_proxy(
    argv: Sequence[str], *, port: int, log_path: Path
) -> AsyncIterator[trio.Process]:
    """Run ``argv`` in the foreground until the block ends; yield once ``port`` accepts.

    The probe connects from ``PROBE_HOST``. Output goes to ``log_path``, quoted if the proxy
    dies or never listens. The process is killed and reaped however the block ends.
    """
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        with trio.move_on_after(START_DEADLINE) as waiting:
            while not await _port_accepts(PROXY_HOST, port):
                if process.poll() is not None:
                    output = await trio.Path(log_path).read_text("utf-8", "replace")
                    pytest.fail(f"{argv[0]} exited with {process.returncode}:\n{output}")
                await trio.sleep(0.02)
        if waiting.cancelled_caught:
            output = await trio.Path(log_path).read_text("utf-8", "replace")
            pytest.fail(f"{argv[0]} did not listen on {PROXY_HOST}:{port}:\n{output}")
        yield process
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process)


async def stop_process(process: trio.Process) -> None:
    """SIGTERM (both proxies then close their listeners and exit at once), SIGKILL if it
    lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
        with trio.move_on_after(STOP_GRACE):
            await process.wait()
    if process.poll() is None:
        process.kill()
    await process.wait()


async def in_thread(function: Callable[[], T], *, deadline: float = CLIENT_DEADLINE) -> T:
    """Run a blocking client in a worker thread, failing the test past ``deadline``."""
    with trio.fail_after(deadline):
        return await trio.to_thread.run_sync(function, abandon_on_cancel=True)


class SMTPOverTLS(smtplib.SMTP_SSL):
    """Implicit-TLS SMTP with an explicit SNI name (so a client can dial an IP and still
    send ``server_hostname``, which the proxy forwards as the AUTHORITY TLV)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sni: str,
        context: ssl.SSLContext,
        local_hostname: str,
        source_address: tuple[str, int],
        timeout: float,
    ) -> None:
        self.sni = sni
        super().__init__(
            host,
            port,
            local_hostname,
            timeout=timeout,
            source_address=source_address,
            context=context,
        )

    def _get_socket(self, host: str, port: int, timeout: float) -> ssl.SSLSocket:
        raw = socket.create_connection((host, port), timeout, self.source_address)
        try:
            return self.context.wrap_socket(raw, server_hostname=self.sni)
        except BaseException:
            raw.close()
            raise


MESSAGE = b"Subject: through the proxy\r\n\r\nHello through a load balancer.\r\n"
SENDER = "a@example.com"
RECIPIENT = "b@example.org"


def send_one(smtp: smtplib.SMTP) -> None:
    """EHLO, one message, QUIT; raises if any step is refused."""
    with smtp:
        smtp.ehlo("client.test")
        refused = smtp.sendmail(SENDER, [RECIPIENT], MESSAGE)
        assert refused == {}


@attrs.frozen
class ClientTLS:
    """What the client negotiated with the proxy's TLS frontend."""

    version: str
    cipher: str


def deliver_plain(port: int) -> None:
    """One message over plain SMTP to ``PROXY_HOST:port``, from ``CLIENT_HOST``."""
    send_one(
        smtplib.SMTP(
            PROXY_HOST,
            port,
            local_hostname="client.test",
            source_address=(CLIENT_HOST, 0),
            timeout=CLIENT_DEADLINE,
        )
    )


def deliver_tls(port: int, *, sni: str, context: ssl.SSLContext) -> ClientTLS:
    """One message over implicit TLS to ``PROXY_HOST:port``, from ``CLIENT_HOST``; returns
    the TLS version and cipher the client negotiated."""
    smtp = SMTPOverTLS(
        PROXY_HOST,
        port,
        sni=sni,
        context=context,
        local_hostname="client.test",
        source_address=(CLIENT_HOST, 0),
        timeout=CLIENT_DEADLINE,
    )
    sock = smtp.sock
    assert isinstance(sock, ssl.SSLSocket)
    version, cipher = sock.version(), sock.cipher()
    assert version is not None
    assert cipher is not None
    send_one(smtp)
    return ClientTLS(version, cipher[0])


def connect_only(port: int) -> str:
    """Connect from ``CLIENT_HOST`` and read the banner; return what went wrong, if anything."""
    try:
        smtp = smtplib.SMTP(
            PROXY_HOST,
            port,
            local_hostname="client.test",
            source_address=(CLIENT_HOST, 0),
            timeout=CLIENT_DEADLINE,
        )
    except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
        return type(exc).__name__
    smtp.close()
    return "banner received"


def connect_and_reset(port: int, host: str = PROXY_HOST) -> None:
    """Open a TCP connection and abort it with a RST at once (``SO_LINGER`` 0), as HAProxy's
    plain TCP health checks do. Blocking on purpose: called from a Trio task, it finishes
    before the server gets a chance to accept."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.connect((host, port))


class DisposalWatcher(logging.Handler):
    """Counts the server's lines about connections it let go unserved: reset before they were
    served (DEBUG), or refused at the PROXY stage, and lets a test wait for a number of them.
    Records are emitted in the server's tasks, in the test's own Trio run, so setting a Trio
    event from here is safe."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "peer went away before it was served" in message or " refused " in message:
            self.lines.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` connections were let go (fails after 10 s)."""
        with trio.fail_after(10):
            while len(self.lines) < count:
                await self._changed.wait()


@contextmanager
def watching_disposals() -> Iterator[DisposalWatcher]:
    """A :class:`DisposalWatcher` on the server's logger, at DEBUG, for the ``with`` block."""
    watcher = DisposalWatcher()
    with attached(watcher, "smtpd_trio.server"):
        yield watcher
