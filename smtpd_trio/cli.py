"""``smtpd-trio`` / ``python -m smtpd_trio``: run a server from the command line.

Options map one to one onto :class:`~smtpd_trio.Config` fields. Bad values get one line on
stderr and exit status 2; SIGTERM or SIGINT starts a graceful shutdown, a second one stops at
once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Final, NoReturn

import trio

from . import __version__
from .auth import StaticAuthenticator
from .config import Config
from .errors import ConfigError
from .handlers import from_spec
from .server import SMTPServer, endpoint_of, open_smtp_listeners

log: Final = logging.getLogger("smtpd_trio.cli")

_CONNECTION_ID: Final = re.compile(r"\[([0-9a-f]+)\] ")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the connection id if any."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        m = _CONNECTION_ID.match(message)
        if m:
            entry["connection_id"] = m.group(1)
            message = message[m.end() :]
        entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0-65535: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block), still status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="smtpd-trio",
        description="Run an SMTP server with one of the built-in handlers.",
    )
    p.add_argument(
        "--host",
        action="append",
        help="address or name to listen on; repeat for several (default: 127.0.0.1)",
    )
    p.add_argument("--port", type=_port, default=8025, help="TCP port (default: 8025)")
    p.add_argument("--hostname", help="name announced in the banner, EHLO and Received")
    p.add_argument(
        "--handler",
        default="debugging",
        metavar="debugging|sink|maildir:DIR",
        help="what to do with each message (default: debugging, which prints it)",
    )
    p.add_argument(
        "--max-message-size", type=_positive_int, metavar="BYTES", help="default 10240000"
    )
    p.add_argument("--max-recipients", type=_positive_int, metavar="N", help="default 1000")
    p.add_argument("--max-connections", type=_positive_int, metavar="N", help="default 1000")
    p.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="command timeout (default 300)"
    )
    proxy = p.add_argument_group("PROXY protocol (behind HAProxy, nginx or a cloud load balancer)")
    proxy.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a PROXY v1/v2 header on every connection from a trusted proxy",
    )
    proxy.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="CIDR",
        help="a network (10.0.0.0/8), address, or 'unix' whose headers are believed; repeat",
    )
    proxy.add_argument(
        "--proxy-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="time allowed for the whole header (default 5)",
    )
    proxy.add_argument(
        "--untrusted-proxy-peers",
        choices=["refuse", "direct"],
        help="peers outside --trusted-proxy: refuse them (default) or serve them as direct "
        "clients, never believing a header",
    )
    tls = p.add_argument_group("TLS and AUTH")
    tls.add_argument("--tls-cert", metavar="PEM", help="certificate chain; enables STARTTLS")
    tls.add_argument("--tls-key", metavar="PEM", help="private key (default: in --tls-cert)")
    tls.add_argument(
        "--implicit-tls",
        action="store_true",
        help="TLS from the first byte, port 465 style (RFC 8314)",
    )
    tls.add_argument(
        "--require-tls", action="store_true", help="refuse MAIL until STARTTLS (530 5.7.0)"
    )
    tls.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASSWORD",
        help="accept this login (repeatable; for demos and tests: real deployments pass an "
        "authenticator in Config); AUTH is offered under TLS only",
    )
    scale = p.add_argument_group("scaling")
    scale.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run N server processes sharing the port (SO_REUSEPORT); default 1",
    )
    scale.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT so other processes may listen on the same port",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="debug logging (every refused command)"
    )
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _config(args: argparse.Namespace) -> Config:
    fields: dict[str, object] = {}
    if args.hostname is not None:
        fields["hostname"] = args.hostname
    if args.max_message_size is not None:
        fields["max_message_size"] = args.max_message_size
    if args.max_recipients is not None:
        fields["max_recipients"] = args.max_recipients
    if args.max_connections is not None:
        fields["max_connections"] = args.max_connections
    if args.timeout is not None:
        fields["command_timeout"] = args.timeout
    if args.proxy_protocol:
        fields["proxy_protocol"] = True
    if args.trusted_proxy:
        fields["trusted_proxies"] = args.trusted_proxy
    if args.proxy_timeout is not None:
        fields["proxy_timeout"] = args.proxy_timeout
    if args.untrusted_proxy_peers is not None:
        fields["untrusted_proxy_peers"] = args.untrusted_proxy_peers
    if args.tls_key and not args.tls_cert:
        raise ConfigError("--tls-key needs --tls-cert")
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --tls-cert/--tls-key: {exc}") from None
        fields["tls_context"] = context
    if args.implicit_tls:
        fields["implicit_tls"] = True
    if args.require_tls:
        fields["require_tls"] = True
    if args.auth:
        users: dict[str, str] = {}
        for entry in args.auth:
            user, sep, password = entry.partition(":")
            if not sep or not user or not password:
                raise ConfigError("--auth needs USER:PASSWORD (a user name, a colon, a password)")
            users[user] = password
        if not args.tls_cert:
            raise ConfigError("--auth needs --tls-cert: AUTH is only offered under TLS")
        fields["authenticator"] = StaticAuthenticator(users)
    return Config(**fields)  # type: ignore[arg-type]


def _setup_logging(verbose: int, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("smtpd_trio")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


async def _run(server: SMTPServer, hosts: Sequence[str], port: int, reuse_port: bool) -> None:
    # Catch the signals before announcing "listening on": a SIGTERM sent as soon as that line
    # appears must start a graceful shutdown, not kill the process with the default action.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        listeners = await open_smtp_listeners(port, host=hosts, reuse_port=reuse_port)
        for listener in listeners:
            log.info("listening on %s", endpoint_of(listener.socket.getsockname()))
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if server.shutting_down:
                        log.warning("second %s: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s received: graceful shutdown", signal.Signals(signum).name)
                    server.shutdown()

            nursery.start_soon(watch_signals)
            await server.serve(listeners)
            # serve() returns once a graceful shutdown is complete: stop watching signals.
            nursery.cancel_scope.cancel()
        log.info("stopped")


def _worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line for one worker: ours without --workers, plus --reuse-port."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [*out, "--reuse-port"]


def _die_with_parent() -> None:
    """In a worker, before exec: on Linux, get SIGTERM (a graceful shutdown) if the supervisor
    dies, even by SIGKILL, so no worker is left behind serving on the port."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _supervise(workers: int, argv: Sequence[str]) -> int:
    """Run ``workers`` server processes on one port; pass SIGTERM/SIGINT on to them.

    If one exits on its own (a bind error, say), the others are stopped too. Returns the
    highest exit status."""
    command = [sys.executable, "-m", "smtpd_trio", *_worker_argv(argv)]
    procs = [subprocess.Popen(command, preexec_fn=_die_with_parent) for _ in range(workers)]

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    statuses: list[int] = []
    while procs:
        time.sleep(0.2)
        for proc in list(procs):
            status = proc.poll()
            if status is None:
                continue
            procs.remove(proc)
            statuses.append(status)
            if status != 0:
                forward(signal.SIGTERM, None)
    return max(statuses, default=0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        handler = from_spec(args.handler)
    except (ConfigError, OSError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if args.workers > 1:
        if args.port == 0:
            parser.exit(2, f"{parser.prog}: error: --workers needs a fixed --port, not 0\n")
        sys.exit(_supervise(args.workers, argv if argv is not None else sys.argv[1:]))
    _setup_logging(args.verbose, args.log_format)
    server = SMTPServer(handler, config=config)
    try:
        trio.run(_run, server, args.host or ["127.0.0.1"], args.port, args.reuse_port)
    except OSError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130)
    sys.exit(0)
