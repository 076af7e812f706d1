"""``smtpd-trio`` / ``python -m smtpd_trio``: run a server from the command line.

Options map one to one onto :class:`~smtpd_trio.Config` fields. Every mistake an operator can
make (a bad value, a file that cannot be used, two options that do not go together, an address
that cannot be listened on) gets one line on stderr naming the option, file or address at
fault, ``smtpd-trio: error: ...``, and exit status 2; never a traceback. SIGTERM or SIGINT
starts a graceful shutdown, a second one stops at once.

Logging is built to be cheap: records are formatted into a buffer that is written at most
every :data:`LOG_FLUSH_INTERVAL` seconds (sooner when it fills), in whole lines of at most
``PIPE_BUF`` bytes per write so that the lines of several workers sharing one pipe never
interleave; and no record looks up the process, thread or task it comes from.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import ipaddress
import json
import logging
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, NoReturn, Protocol, TextIO

import attrs
import trio

from . import __version__
from ._loglines import LineFormatter, LineHandler
from .auth import StaticAuthenticator
from .config import Config
from .errors import ConfigError
from .handler import Handler
from .handlers import BUILT_IN, from_spec
from .runner import serve_until_signalled
from .server import (
    LMTP_PORT,
    UNIX_SOCKET_MODE,
    SMTPServer,
    UnixSocketListener,
    endpoint_of,
    open_smtp_listeners,
    open_unix_listener,
)
from .trust import TrustedNetworks

log: Final = logging.getLogger("smtpd_trio.cli")

PROG: Final = "smtpd-trio"

# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------

#: Buffered log lines are written at the latest this many seconds after the first of them.
LOG_FLUSH_INTERVAL: Final = 0.1
#: ... or as soon as this many characters are waiting.
LOG_BUFFER_SIZE: Final = 64 * 1024
#: Writes of at most this many bytes to a pipe are atomic (POSIX), so lines never interleave.
_ATOMIC_WRITE: Final = getattr(select, "PIPE_BUF", 512)

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_CONNECTION_ID: Final = re.compile(r"\[([0-9a-f]+)\] ")
#: Keys of a JSON log line that structured fields (``extra={"smtpd": {...}}``) never replace.
_RESERVED_KEYS: Final = frozenset({"time", "level", "logger", "message", "exception", "stack"})
_NO_FIELDS: Final[Mapping[object, object]] = {}
#: One encoder for every record (json.dumps with options would build one per call).
_JSON: Final = json.JSONEncoder(ensure_ascii=False, default=str)
_ASCII_JSON: Final = json.JSONEncoder()


class _PerSecond:
    """A timestamp's date and time of day, formatted by ``strftime`` once per second (the
    same for every record within it), not once per record."""

    __slots__ = ("_format", "_second", "_text")

    def __init__(self, fmt: str) -> None:
        self._format = fmt
        self._second = -1
        self._text = ""

    def text(self, created: float, convert: Callable[[float], time.struct_time]) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._format, convert(second))
            self._second = second
        return self._text


class TextFormatter(LineFormatter):
    """``2026-12-03 10:00:00,123 INFO smtpd_trio.session: [672b5a1] ...``, local time.

    Structured fields (``record.smtpd``) are not shown: the message text says it all. The
    date and time of day are formatted once per second, not once per record.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._day = _PerSecond("%Y-%m-%d %H:%M:%S")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._day.text(record.created, self.converter)},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)  # the traceback's lines follow the message
        # What logging.Formatter.format makes of our format string, in one step.
        record.message = record.getMessage()
        return self.format_line(
            record.created,
            record.msecs,
            record.levelname,
            record.name,
            record.message,
            _NO_FIELDS,
        )

    def format_line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[Any, object],
    ) -> str:
        day = self._day.text(created, self.converter)
        return f"{day},{int(msecs):03d} {levelname} {name}: {message}"


class JSONFormatter(LineFormatter):
    """One JSON object per line.

    Keys: ``time`` (RFC 3339, UTC, milliseconds: ``2026-12-03T10:00:00.123Z``), ``level``,
    ``logger``, then the structured fields the record carries as ``extra={"smtpd": {...}}``
    (``connection_id``, ``client``, ``peer``, ``event``, ``sender``, ``recipients``, ``size``,
    ``reply_code``, ``reason``, ``messages``, ``duration``; they never replace ``time``,
    ``level``, ``logger``, ``message``, ``exception`` or ``stack``), then ``message``, and
    ``exception`` (the traceback) when there is one. A character that is not printable is
    written as its ``\\u`` escape, so an object is always one line.

    Without a structured ``connection_id``, a leading ``[id] `` in the message is taken as the
    connection id. A leading ``[id] `` naming the connection id is cut from ``message``. Values
    that JSON cannot represent are written as their ``str()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._day = _PerSecond("%Y-%m-%dT%H:%M:%S")

    def rfc3339(self, record: logging.LogRecord) -> str:
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        return f"{self._day.text(created, time.gmtime)}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        given = getattr(record, "smtpd", None)
        line = self.format_line(
            record.created,
            record.msecs,
            record.levelname,
            record.name,
            record.getMessage(),
            _NO_FIELDS if given is None or not isinstance(given, Mapping) else given,
        )
        if not (record.exc_info or record.stack_info):
            return line
        after: dict[str, object] = {}
        if record.exc_info:
            after["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            after["stack"] = self.formatStack(record.stack_info)
        # The same object with these keys last: '..., "exception": "..."}'.
        return f"{line[:-1]}, {self._encode(after)[1:]}"

    def format_line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[Any, object],
    ) -> str:
        entry: dict[str, object] = {
            "time": self._time(created, msecs),
            "level": levelname.lower(),
            "logger": name,
        }
        connection_id = fields.get("connection_id")
        m = _CONNECTION_ID.match(message)
        if m and (connection_id is None or str(connection_id) == m.group(1)):
            message = message[m.end() :]
            if connection_id is None:
                connection_id = m.group(1)
        if connection_id is not None:
            entry["connection_id"] = connection_id
        if fields:
            for key, value in fields.items():
                if isinstance(key, str) and key not in _RESERVED_KEYS and key not in entry:
                    entry[key] = value
        entry["message"] = message
        return self._encode(entry)

    @staticmethod
    def _encode(entry: dict[str, object]) -> str:
        line = _JSON.encode(entry)
        if line.isprintable():
            return line
        # Non-ASCII text stays as it is. A character that is not printable (a C1 control,
        # U+2028, a bidi override) can only be inside a string, where its \u escape means
        # the same: the object stays one line for every reader.
        return "".join(c if c.isprintable() else _ASCII_JSON.encode(c)[1:-1] for c in line)


def _line_chunks(data: bytes, limit: int) -> Iterator[bytes]:
    """``data`` (whole lines) cut into pieces of whole lines of at most ``limit`` bytes; a
    single longer line is a piece of its own."""
    start = 0
    while len(data) - start > limit:
        cut = data.rfind(b"\n", start, start + limit) + 1
        if cut <= start:
            cut = data.find(b"\n", start + limit) + 1 or len(data)
        yield data[start:cut]
        start = cut
    if start < len(data):
        yield data[start:]


class _BinaryStream(Protocol):
    """The binary layer of a text stream: a buffered writer, or raw (``python -u``), whose
    ``write`` may write less than asked, or nothing (None) when non-blocking and full."""

    def write(self, data: memoryview, /) -> int | None: ...

    def flush(self) -> object: ...


class BufferedLogHandler(LineHandler):
    """Writes formatted records to ``stream`` in batches instead of one write per record.

    A record is formatted and appended to a buffer: no system call. The buffer is written
    when it holds ``capacity`` characters, ``interval`` seconds after the first record in it
    (by a helper thread, so lines still come out while the event loop is busy), on
    :meth:`flush`, and on :meth:`close` (``logging.shutdown()``, run at exit, calls both).
    With a binary layer under ``stream`` (``sys.stderr.buffer``), each write is at most
    ``PIPE_BUF`` bytes of whole lines, so processes sharing a pipe never cut each other's
    lines. If the stream is gone (a closed pipe), the lines are dropped.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = LOG_FLUSH_INTERVAL,
        capacity: int = LOG_BUFFER_SIZE,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._binary: _BinaryStream | None = getattr(stream, "buffer", None)
        self._encoding: str = getattr(stream, "encoding", None) or "utf-8"
        self._interval = interval
        self._capacity = capacity
        self._pending: list[str] = []
        self._size = 0
        self._closed = False
        assert self.lock is not None  # created by logging.Handler.__init__
        self._lock = self.lock
        self._wakeup = threading.Condition(self.lock)
        self._thread = threading.Thread(
            target=self._flush_periodically, name="smtpd-trio log writer", daemon=True
        )
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called by Handler.handle() with self.lock held.
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._append(line)

    def write_line(self, line: str) -> None:
        with self._lock:  # the condition's own lock (without its Python-level __enter__)
            self._append(line)

    def _append(self, line: str) -> None:
        line += "\n"
        self._pending.append(line)
        self._size += len(line)
        if self._size >= self._capacity:
            self._write_pending()
        elif len(self._pending) == 1:
            # The first line of a batch: start the writer's clock (once per batch, not per
            # record).
            self._wakeup.notify()

    def flush(self) -> None:
        with self._wakeup:
            self._write_pending()

    def close(self) -> None:
        with self._wakeup:
            self._write_pending()
            self._closed = True
            self._wakeup.notify()
        # No join: logging.shutdown() calls this with the lock held, and the writer needs the
        # lock to see that it is closed. It ends as soon as the lock is free.
        super().close()

    def _flush_periodically(self) -> None:
        with self._wakeup:
            while not self._closed:
                if not self._pending:
                    self._wakeup.wait()
                    continue
                self._wakeup.wait(self._interval)
                self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            if self._binary is None:
                self._stream.write(data)
                self._stream.flush()
                return
            self._stream.flush()  # whatever was written as text goes first
            for chunk in _line_chunks(
                data.encode(self._encoding, "backslashreplace"), _ATOMIC_WRITE
            ):
                view = memoryview(chunk)
                while view:
                    written = self._binary.write(view)
                    if written is None:  # non-blocking and full: drop the rest
                        break
                    view = view[written:]
                self._binary.flush()
        except (OSError, ValueError):
            pass  # standard error is gone (a closed pipe or file): nowhere left to say so


def _setup_logging(level: int, fmt: str) -> BufferedLogHandler:
    """Log the ``smtpd_trio`` loggers to stderr at ``level``, as ``text`` or ``json``."""
    # What a record would otherwise look up each time, and none of our formats show: the
    # process id (a system call), the thread, the multiprocessing process, the asyncio task,
    # and the caller's file and line (a walk up the stack).
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    logging._srcfile = None
    handler = BufferedLogHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("smtpd_trio")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    return handler


# ---------------------------------------------------------------------------------------------
# Option values
# ---------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


_SIZE: Final = re.compile(r"([0-9]+)([KMG]?)", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _size(text: str) -> int:
    """Bytes: ``10240000``, or with a binary suffix: ``512K``, ``10M``, ``1G``. 0 is 0."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"not a size (bytes, or a whole number with K, M or G, as in 10M): {text!r}"
        )
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def _count(text: str) -> int:
    """A whole number, 0 or more (0 turns the limit off)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more: {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    """A number of seconds, 0 or more (0 turns the limit off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number of seconds: {text!r}")
    return value


def _prefix_length(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a prefix length: {text!r}") from None
    if not 16 <= value <= 128:
        raise argparse.ArgumentTypeError(f"must be within 16-128: {text!r}")
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


def _host(text: str) -> str:
    """An address or a name. Addresses are checked here; names are resolved at start."""
    host = text.strip()
    if not host:
        raise argparse.ArgumentTypeError("empty: give an address or a host name")
    if host.startswith("["):
        raise argparse.ArgumentTypeError(f"write IPv6 addresses without brackets: {text!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IPv6 address: {text!r}") from None
    elif all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None
    return host


_HOST_PORT: Final = re.compile(r"\[([^\]]*)\]:([^:]*)|([^:\[\]]*):([^:]*)")


def _host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, IPv6 in brackets (``[::1]:9100``); the host is required."""
    m = _HOST_PORT.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"not HOST:PORT (as in 127.0.0.1:9100 or [::1]:9100): {text!r}"
        )
    host, port = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    if not host:
        raise argparse.ArgumentTypeError(
            f"give the address to listen on, as in 127.0.0.1:9100 (0.0.0.0 for every IPv4 "
            f"interface): {text!r}"
        )
    if m.group(1) is not None and ":" not in host:
        raise argparse.ArgumentTypeError(f"brackets are for IPv6 addresses only: {text!r}")
    return _host(host), _port(port)


def _hostname(text: str) -> str:
    """Checked by Config's own rule, reported with the option's name."""
    try:
        Config(hostname=text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("hostname ")) from None
    return text


def _network(text: str) -> str:
    """A CIDR network or one address, checked by the rules of TrustedNetworks."""
    if text.strip().lower() == "unix":
        raise argparse.ArgumentTypeError(
            "'unix' is not an address or network (it is for --trusted-proxy, with --unix)"
        )
    return _trusted_network(text)


def _trusted_network(text: str) -> str:
    """As :func:`_network`, or ``unix``: the peers on the UNIX sockets (``--unix``)."""
    if text.strip().lower() == "unix":
        return "unix"
    try:
        TrustedNetworks([text])
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("trusted network ")) from None
    return text


def _unix_path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty: give the path of the socket to create")
    # sun_path holds 108 octets on Linux, 104 on BSD and macOS, with the final NUL.
    if len(os.fsencode(text)) > 103:
        raise argparse.ArgumentTypeError(f"too long for a UNIX socket path (103 octets): {text!r}")
    return text


def _mode(text: str) -> int:
    """Permission bits in octal: ``660``, ``0660``, ``0o660``."""
    digits = text.strip().lower().removeprefix("0o")
    if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
        raise argparse.ArgumentTypeError(f"not an octal mode such as 660: {text!r}")
    value = int(digits, 8)
    if value > 0o777:
        raise argparse.ArgumentTypeError(f"only permission bits (at most 777): {text!r}")
    return value


#: The limits that keep the server safe on an open port: (flag, Config field, type, metavar,
#: help). Each maps one to one onto its field; for the optional ones, 0 means "no limit".
_LIMITS: Final = (
    ("--max-connections-per-ip", "max_connections_per_client", _count, "N",
     "connections at once from one client (IPv6: per --client-ipv6-prefix network); 0: no "
     "limit (default 20)"),
    ("--max-connection-rate", "max_connection_rate", _count, "N",
     "new connections per minute from one client; 0: no limit (the default)"),
    ("--client-ipv6-prefix", "client_ipv6_prefix", _prefix_length, "BITS",
     "IPv6 clients are counted by this network (default 64)"),
    ("--max-messages-per-session", "max_messages_per_session", _count, "N",
     "mail transactions per connection; 0: no limit (default 10000)"),
    ("--max-commands-per-session", "max_commands_per_session", _count, "N",
     "command lines per connection; 0: no limit (default 100000)"),
    ("--max-junk-commands", "max_junk_commands", _count, "N",
     "NOOP, RSET, VRFY and HELP per connection (1 under stress); 0: no limit (default 100)"),
    ("--min-data-rate", "min_data_rate", _count, "BYTES_PER_S",
     "slowest message upload tolerated; 0: each chunk restarts the timeout (default 500)"),
    ("--max-session-duration", "max_session_duration", _seconds_or_zero, "SECONDS",
     "how long one connection may last; 0: no limit (default 3600)"),
    ("--handler-timeout", "handler_timeout", _seconds_or_zero, "SECONDS",
     "how long a handler callback may take (then 451 4.4.5); 0: no limit (the default)"),
    ("--stress-timeout", "stress_timeout", _seconds_or_zero, "SECONDS",
     "timeout for every wait while 80%% of --max-connections are in use; 0: never shorten "
     "(default 10)"),
    ("--greet-pause", "greet_pause", _seconds_or_zero, "SECONDS",
     "wait before the banner; a client that speaks first gets 554 (default 0: no pause)"),
    ("--max-buffered-bytes", "max_buffered_bytes", _size, "SIZE",
     "message text all sessions may hold in memory (K, M, G x1024); 0: no limit "
     "(default 256M)"),
    ("--refusal-log-interval", "refusal_log_interval", _seconds, "SECONDS",
     "log refusals a client causes once per client and kind per this long (default 60)"),
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block), still status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Run an SMTP server with a built-in handler or your own.",
    )
    p.add_argument(
        "--host",
        action="append",
        type=_host,
        help="address or name to listen on; repeat for several (default: 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=_port,
        help=f"TCP port (default: 8025; {LMTP_PORT} with --lmtp)",
    )
    p.add_argument(
        "--unix",
        action="append",
        type=_unix_path,
        metavar="PATH",
        help="listen on a UNIX socket at PATH (repeatable): instead of TCP, or besides it when "
        "--host or --port is given too. A stale socket file is replaced, any other file is "
        "left alone",
    )
    p.add_argument(
        "--unix-mode",
        type=_mode,
        metavar="MODE",
        help="permissions of the --unix sockets, in octal, whatever the umask (default 660: "
        "the owner and group may connect)",
    )
    p.add_argument(
        "--lmtp",
        action="store_true",
        help=f"speak LMTP (RFC 2033) instead of SMTP: LHLO, one reply per recipient; TCP port "
        f"{LMTP_PORT} unless --port says otherwise (never 25)",
    )
    p.add_argument(
        "--hostname", type=_hostname, help="name announced in the banner, EHLO and Received"
    )
    p.add_argument(
        "--handler",
        default="debugging",
        metavar="SPEC",
        help="what to do with each message: debugging (print it; the default), sink "
        "(discard), maildir:DIR, mbox:PATH, relay:HOST:PORT[:no-verify] (forward to another "
        "server), or your own as MODULE:ATTR (a handler class, factory or instance; imported "
        "with the current directory first on sys.path)",
    )
    p.add_argument(
        "--max-message-size",
        type=_size,
        metavar="SIZE",
        help="largest message: bytes, or with K, M, G (x1024); 0 for no limit (default 10240000)",
    )
    p.add_argument("--max-recipients", type=_positive_int, metavar="N", help="default 1000")
    p.add_argument("--max-connections", type=_positive_int, metavar="N", help="default 1000")
    p.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="command timeout (default 300)"
    )
    p.add_argument(
        "--ignored-host",
        action="append",
        type=_network,
        metavar="CIDR",
        help="client network or address (health checkers) served without on_connect and "
        "without connection log lines; repeat for several",
    )
    extensions = p.add_argument_group("extensions (promises the handler must keep)")
    extensions.add_argument(
        "--dsn",
        action="store_true",
        help="offer DSN (RFC 3461): RET, ENVID, NOTIFY and ORCPT reach the handler; it must "
        "send the delivery status notifications",
    )
    extensions.add_argument(
        "--requiretls",
        action="store_true",
        help="offer REQUIRETLS (RFC 8689) under TLS; the handler must relay such mail over "
        "TLS only; needs --tls-cert",
    )
    extensions.add_argument(
        "--reverse-dns",
        action="store_true",
        help="look up each client's host name (PTR, forward-confirmed) for the handler and "
        "the Received header",
    )
    extensions.add_argument(
        "--reverse-dns-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="the longest a reverse DNS lookup may take (default 2); needs --reverse-dns",
    )
    limits = p.add_argument_group(
        "limits (safe on an open port; see docs/security.md)",
    )
    for flag, _field, kind, metavar, text in _LIMITS:
        limits.add_argument(flag, type=kind, metavar=metavar, help=text)
    limits.add_argument(
        "--nul-octets",
        choices=["reject", "keep"],
        help="a NUL in message text: refuse the message with 550 (default) or keep it",
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
        type=_trusted_network,
        metavar="CIDR",
        help="a network (10.0.0.0/8) or address whose headers are believed; repeat",
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
    forwarding = p.add_argument_group(
        "XCLIENT and XFORWARD (behind a mail proxy such as nginx, or a content filter)"
    )
    forwarding.add_argument(
        "--xclient",
        action="append",
        type=_network,
        metavar="CIDR",
        help="a network or address (your mail proxy) that may send XCLIENT to name the client "
        "it speaks for; repeat for several",
    )
    forwarding.add_argument(
        "--xforward",
        action="append",
        type=_network,
        metavar="CIDR",
        help="a network or address (your content filter) that may send XFORWARD: where the "
        "next message came from; repeat for several",
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
    p.add_argument(
        "--metrics",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs the prometheus-client "
        "package: pip install 'smtpd-trio[metrics]'); see docs/metrics.md",
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
    logs = p.add_argument_group("logging (to standard error)")
    level = logs.add_mutually_exclusive_group()
    level.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="debug logging (every refused command); the same as --log-level debug",
    )
    level.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only; the same as --log-level warning",
    )
    level.add_argument(
        "--log-level",
        type=str.lower,
        choices=list(_LEVELS),
        help="the least severe level logged (default: info)",
    )
    logs.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines (default) or one JSON object per line",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _log_level(args: argparse.Namespace) -> int:
    if args.verbose:
        return logging.DEBUG
    if args.quiet:
        return logging.WARNING
    return _LEVELS[args.log_level or "info"]


# ---------------------------------------------------------------------------------------------
# Options -> Config
# ---------------------------------------------------------------------------------------------

_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY: Final = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_MAX_PEM: Final = 1024 * 1024


def _os_reason(exc: OSError) -> str:
    """``No such file or directory`` rather than ``[Errno 2] No such file or directory``."""
    return exc.strerror or str(exc)


def _read_pem(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_PEM + 1)
    except OSError as exc:
        raise ConfigError(f"argument {flag}: cannot read {path!r}: {_os_reason(exc)}") from None
    if len(data) > _MAX_PEM:
        raise ConfigError(f"argument {flag}: {path!r} is larger than 1 MiB: not a PEM file")
    return data


class _KeyIsEncrypted(Exception):
    """Raised by the password callback: OpenSSL asked for a passphrase."""


def _refuse_passphrase() -> bytes:
    # Without this callback OpenSSL would prompt on the terminal for the key's passphrase.
    raise _KeyIsEncrypted


def _tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """A server context with ``cert`` (and ``key``) loaded; ConfigError naming the option
    and the file if anything is wrong with them."""
    cert_data = _read_pem("--tls-cert", cert)
    key_data = _read_pem("--tls-key", key) if key is not None else cert_data
    if _CERTIFICATE not in cert_data:
        raise ConfigError(
            f"argument --tls-cert: no PEM certificate in {cert!r} (no {_CERTIFICATE.decode()} line)"
        )
    if not _PRIVATE_KEY.search(key_data):
        if key is None:
            raise ConfigError(
                f"argument --tls-cert: no private key in {cert!r}: "
                "add it to the file or give --tls-key"
            )
        raise ConfigError(
            f"argument --tls-key: no PEM private key in {key!r} "
            "(no -----BEGIN PRIVATE KEY----- line)"
        )
    key_flag, key_file = ("--tls-key", key) if key is not None else ("--tls-cert", cert)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_refuse_passphrase)
    except _KeyIsEncrypted:
        raise ConfigError(
            f"argument {key_flag}: the private key in {key_file!r} is encrypted: "
            "give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"argument {key_flag}: the private key in {key_file!r} does not match the "
                f"certificate in {cert!r}"
            ) from None
        files = repr(cert) if key is None else f"{cert!r} and {key!r}"
        raise ConfigError(
            f"argument --tls-cert: cannot load {files}: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"argument --tls-cert: cannot load {cert!r}: {_os_reason(exc)}") from None
    return context


def _check_combinations(args: argparse.Namespace) -> None:
    """Options that only make sense with another one, each named in the error."""
    if not args.proxy_protocol:
        for flag, value in (
            ("--trusted-proxy", args.trusted_proxy),
            ("--proxy-timeout", args.proxy_timeout),
            ("--untrusted-proxy-peers", args.untrusted_proxy_peers),
        ):
            if value is not None:
                raise ConfigError(f"{flag} needs --proxy-protocol")
    elif not args.trusted_proxy and args.untrusted_proxy_peers != "direct":
        raise ConfigError(
            "--proxy-protocol needs --trusted-proxy CIDR (the load balancers' networks) or "
            "--untrusted-proxy-peers direct: otherwise every connection is refused"
        )
    if args.metrics is not None and args.workers > 1:
        raise ConfigError(
            "--metrics cannot be used with --workers: each worker counts only its own "
            "connections, and only one of them could listen on the metrics port"
        )
    if args.trusted_proxy and "unix" in args.trusted_proxy and not args.unix:
        raise ConfigError("--trusted-proxy unix needs --unix (it trusts the UNIX-socket peers)")
    if args.unix_mode is not None and not args.unix:
        raise ConfigError("--unix-mode needs --unix")
    if args.unix and args.workers > 1:
        raise ConfigError(
            "--unix cannot be used with --workers: only one process can listen on a UNIX socket"
        )
    if args.lmtp and args.port == 25:
        raise ConfigError("--lmtp cannot use port 25: LMTP must not be served there (RFC 2033)")
    if args.tls_key and not args.tls_cert:
        raise ConfigError("--tls-key needs --tls-cert")
    for flag, on in (
        ("--implicit-tls", args.implicit_tls),
        ("--require-tls", args.require_tls),
        ("--requiretls", args.requiretls),
    ):
        if on and not args.tls_cert:
            raise ConfigError(f"{flag} needs --tls-cert")
    if args.reverse_dns_timeout is not None and not args.reverse_dns:
        raise ConfigError("--reverse-dns-timeout needs --reverse-dns")
    if args.auth:
        for entry in args.auth:
            user, sep, password = entry.partition(":")
            if not sep or not user or not password:
                raise ConfigError("--auth needs USER:PASSWORD (a user name, a colon, a password)")
        if not args.tls_cert:
            raise ConfigError("--auth needs --tls-cert: AUTH is only offered under TLS")


def _config(args: argparse.Namespace) -> Config:
    _check_combinations(args)
    fields: dict[str, object] = {}
    if args.hostname is not None:
        fields["hostname"] = args.hostname
    if args.max_message_size is not None:
        fields["max_message_size"] = args.max_message_size or None  # 0: no limit
    if args.max_recipients is not None:
        fields["max_recipients"] = args.max_recipients
    if args.max_connections is not None:
        fields["max_connections"] = args.max_connections
    if args.timeout is not None:
        fields["command_timeout"] = args.timeout
    if args.ignored_host:
        fields["ignored_hosts"] = args.ignored_host
    for flag in ("dsn", "requiretls", "reverse_dns"):
        if getattr(args, flag):
            fields[flag] = True
    if args.reverse_dns_timeout is not None:
        fields["reverse_dns_timeout"] = args.reverse_dns_timeout
    for flag, field, kind, _metavar, _text in _LIMITS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            off = kind in (_count, _seconds_or_zero, _size) and not value
            fields[field] = None if off else value
    if args.nul_octets is not None:
        fields["nul_octets"] = args.nul_octets
    if args.lmtp:
        fields["lmtp"] = True
    if args.proxy_protocol:
        fields["proxy_protocol"] = True
    if args.trusted_proxy:
        fields["trusted_proxies"] = args.trusted_proxy
    if args.proxy_timeout is not None:
        fields["proxy_timeout"] = args.proxy_timeout
    if args.untrusted_proxy_peers is not None:
        fields["untrusted_proxy_peers"] = args.untrusted_proxy_peers
    if args.xclient:
        fields["xclient_hosts"] = args.xclient
    if args.xforward:
        fields["xforward_hosts"] = args.xforward
    if args.tls_cert:
        fields["tls_context"] = _tls_context(args.tls_cert, args.tls_key)
    if args.implicit_tls:
        fields["implicit_tls"] = True
    if args.require_tls:
        fields["require_tls"] = True
    if args.auth:
        users: dict[str, str] = {}
        for entry in args.auth:
            user, _, password = entry.partition(":")
            users[user] = password
        fields["authenticator"] = StaticAuthenticator(users)
    return Config(**fields)  # type: ignore[arg-type]


def _handler(spec: str) -> Handler[Any]:
    """The handler for ``--handler SPEC``. For ``MODULE:ATTR`` the current directory is put
    first on sys.path, as ``python -m`` does, so that the ``smtpd-trio`` script and every
    ``--workers`` process (started in the same directory) find the same module; for the
    built-in handlers sys.path is left alone."""
    name, sep, _ = spec.partition(":")
    cwd = os.getcwd()
    if sep and name not in BUILT_IN and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return from_spec(spec)
    except ConfigError as exc:
        raise ConfigError(f"argument --handler: {exc}") from None
    except OSError as exc:
        where = f": {exc.filename!r}" if exc.filename else ""
        raise ConfigError(
            f"argument --handler: cannot use {spec!r}: {_os_reason(exc)}{where}"
        ) from None


def _server(handler: Handler[Any], config: Config, spec: str) -> SMTPServer:
    """The server; the handler check's TypeError (a callback that is not async, or cannot
    take its arguments) as a ConfigError naming --handler."""
    try:
        return SMTPServer(handler, config=config)
    except TypeError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"argument --handler: {spec!r} is not a usable handler: {text}") from None


@contextlib.contextmanager
def _handler_warnings_off() -> Iterator[None]:
    """Silence the handler check's warnings (the workers give them, once each)."""
    logger = logging.getLogger("smtpd_trio.handler")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


# ---------------------------------------------------------------------------------------------
# Listening
# ---------------------------------------------------------------------------------------------

_LISTEN_HINTS: Final = {
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "not an address of this machine",
}


class _CannotListen(Exception):
    """A listener could not be opened; the message names the address."""


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"argument --host: cannot resolve {host!r}: {_os_reason(exc)}"
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hint = _LISTEN_HINTS.get(exc.errno or 0)
    return f"cannot listen on {where}: {_os_reason(exc)}" + (f" ({hint})" if hint else "")


class _Listen(NamedTuple):
    """Where to listen: TCP on each host (none: no TCP) at the port, and UNIX sockets."""

    hosts: Sequence[str]
    port: int
    reuse_port: bool = False
    unix: Sequence[str] = ()
    unix_mode: int = UNIX_SOCKET_MODE


def _listen_on(args: argparse.Namespace) -> _Listen:
    """Where the options say to listen: TCP on ``--host`` (127.0.0.1) at ``--port`` (8025, or
    8024 with ``--lmtp``), unless only ``--unix`` is given; and on every ``--unix`` socket."""
    unix: list[str] = args.unix or []
    tcp = not unix or args.host is not None or args.port is not None
    hosts: list[str] = (args.host or ["127.0.0.1"]) if tcp else []
    port: int = args.port if args.port is not None else LMTP_PORT if args.lmtp else 8025
    mode: int = UNIX_SOCKET_MODE if args.unix_mode is None else args.unix_mode
    return _Listen(hosts, port, args.reuse_port, unix, mode)


async def _open_listeners(where: _Listen) -> list[trio.SocketListener | UnixSocketListener]:
    """Listeners on every host, one host at a time so that an error names the one at fault
    (with port 0 the hosts share the port the first one got), then on every UNIX socket."""
    listeners: list[trio.SocketListener | UnixSocketListener] = []
    port = where.port
    try:
        for host in where.hosts:
            try:
                listeners += await open_smtp_listeners(port, host=host, reuse_port=where.reuse_port)
            except OSError as exc:
                raise _CannotListen(_listen_error(host, port, exc)) from None
            if port == 0 and listeners:
                port = listeners[0].socket.getsockname()[1]
        for path in where.unix:
            try:
                listeners.append(await open_unix_listener(path, mode=where.unix_mode))
            except OSError as exc:
                raise _CannotListen(
                    f"argument --unix: cannot listen on {path!r}: {_os_reason(exc)}"
                ) from None
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


async def _open_metrics_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """The metrics endpoint's listeners, only on ``host`` (every address a name resolves
    to); errors name --metrics."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        problem = _listen_error(host, port, exc).removeprefix("argument --host: ")
        raise _CannotListen(f"argument --metrics: {problem}") from None


def _check_can_listen(hosts: Sequence[str], port: int) -> str | None:
    """Before starting workers: can this process bind every host's addresses with
    SO_REUSEPORT? Binding only, never listening, so no connection is ever queued on these
    sockets (other processes may already be serving the port). The error, if any."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return "--workers needs SO_REUSEPORT, which this system does not have"
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            return _listen_error(host, port, exc)
        for family, type_, proto, _, address in infos:
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue  # no IPv6 here, say: the workers skip it too
                return _listen_error(host, port, exc)
            with sock:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(address)
                except OSError as exc:
                    return _listen_error(host, port, exc)
    return None


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


class _MetricsEndpoint(NamedTuple):
    """Where --metrics listens, the task that serves it on listeners, and what tells the
    metrics about the server."""

    host: str
    port: int
    serve: Callable[[list[trio.SocketListener]], Awaitable[object]]
    track: Callable[[SMTPServer], None]


async def _run(
    server: SMTPServer,
    where: _Listen,
    flush_logs: Callable[[], None],
    metrics: _MetricsEndpoint | None = None,
) -> None:
    web: list[trio.SocketListener] = []

    async def open_listeners() -> list[trio.SocketListener | UnixSocketListener]:
        listeners = await _open_listeners(where)
        if metrics is not None:
            try:
                web.extend(await _open_metrics_listeners(metrics.host, metrics.port))
            except BaseException:
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                raise
        return listeners

    def listening(listeners: Sequence[trio.SocketListener | UnixSocketListener]) -> None:
        for listener in listeners:
            log.info("listening on %s", endpoint_of(listener.socket.getsockname()))
        for listener in web:
            address = endpoint_of(listener.socket.getsockname())
            log.info("serving metrics on http://%s/metrics", address)
        flush_logs()  # supervisors and tests wait for this line: no batching delay

    # The signals are caught before "listening on" is logged: a SIGTERM sent as soon as that
    # line appears starts a graceful shutdown, and a second one stops at once. The metrics
    # endpoint is served beside the server and stops with it.
    await serve_until_signalled(
        server,
        open_listeners,
        on_listening=listening,
        beside=[] if metrics is None else [functools.partial(metrics.serve, web)],
    )
    log.info("stopped")


def _with_metrics(config: Config, host: str, port: int) -> tuple[Config, _MetricsEndpoint]:
    """Prometheus metrics for ``config``'s server, and their endpoint (smtpd_trio.prometheus,
    imported only now). ConfigError if prometheus-client is not installed."""
    try:
        import prometheus_client

        from . import prometheus
    except ImportError:
        raise ConfigError(
            "--metrics needs the prometheus-client package: pip install 'smtpd-trio[metrics]'"
        ) from None
    # This process's own registry: our metrics beside the client library's process_* and
    # python_* ones, without the *_created series (a timestamp per series, of no use here).
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    observer = prometheus.PrometheusMetrics(prometheus_client.REGISTRY)
    serve = functools.partial(prometheus.serve_metrics, registry=observer.registry)
    endpoint = _MetricsEndpoint(host, port, serve, observer.track)
    return attrs.evolve(config, observer=observer), endpoint


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
    metrics: _MetricsEndpoint | None = None
    try:
        config = _config(args)
        handler = _handler(args.handler)
        if args.metrics is not None:
            config, metrics = _with_metrics(config, *args.metrics)
        if args.workers > 1:
            # Check the handler here, so that a bad one is one error line, not one per worker.
            with _handler_warnings_off():
                _server(handler, config, args.handler)
    except ConfigError as exc:
        parser.error(str(exc))
    where = _listen_on(args)
    hosts, port = where.hosts, where.port
    if args.workers > 1:
        if port == 0:
            parser.error("--workers needs a fixed --port, not 0")
        # Check once here, so that a busy port is one error line rather than one per worker.
        problem = _check_can_listen(hosts, port)
        if problem is not None:
            parser.error(problem)
        sys.exit(_supervise(args.workers, argv if argv is not None else sys.argv[1:]))
    logs = _setup_logging(_log_level(args), args.log_format)
    try:
        server = _server(handler, config, args.handler)
    except ConfigError as exc:
        logs.flush()
        parser.error(str(exc))
    if metrics is not None:
        metrics.track(server)
    try:
        trio.run(_run, server, where, logs.flush, metrics)
    except _CannotListen as exc:
        logs.flush()
        parser.error(str(exc))
    except OSError as exc:
        logs.flush()
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130)
    finally:
        logs.flush()
    sys.exit(0)
