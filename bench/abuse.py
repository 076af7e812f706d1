#!/usr/bin/env python3
"""Abuse benchmark: smtpd-trio and aiosmtpd 1.4.6 under the attacks an open port gets.

Run it with ``nox -s abuse`` (or ``python bench/abuse.py`` where smtpd-trio is importable);
``--quick`` for a run of a minute or two. Standard library only; aiosmtpd 1.4.6 is installed into
``.bench-cache/aiosmtpd-venv`` the way ``bench/run.py`` does it (its code, imported).

Each attack runs against a fresh server process on a loopback port, one server at a time:
smtpd-trio is its CLI (``python -m smtpd_trio``) with default settings except what the attack
needs (``--timeout``, ``--max-message-size``), with ``--handler sink``, or ``maildir:DIR`` when
messages are stored; aiosmtpd gets the same limits (its size limit set to smtpd-trio's default,
its ``timeout`` to the same value; it has no connection limit) and a handler that discards, or
stores the way smtpd-trio's Maildir does: ``tmp/``, fsync, rename into ``new/``, fsync ``new/``,
then 250, in a worker thread.

The attacks (all attacker connections come from 127.0.0.1, held by this one process with
non-blocking sockets and a selector, so the attacker is cheap):

* ``slow-data``: N connections each send EHLO, MAIL, RCPT, DATA, then B bytes of message text
  every K seconds (each pace in ``--paces`` is a row), with the server's ``--timeout T``;
* ``slow-line``: N connections send EHLO, then trickle a command line (``NOOP xxx...``, never
  ending it) at the same paces;
* ``slow-noop``: N connections send EHLO, then a complete ``NOOP`` every 0.8 T, just under the
  timeout;
* ``idle``: N connections read the banner and send nothing more (default timeout);
* ``parked``: M connections each send S MiB of a message to the storing handler and hold back
  the final dot; once the server has read every byte (our send queues and its receive queues are
  empty) its RSS is taken; then all are finished, and each must get 250 and be in ``new/``;
* ``large``: one message of S MiB at a raised size limit; its peak RSS as a multiple of the
  message.

During each attack a **normal client** arrives, from another loopback address (127.0.0.2 by
default, so a per-address limit on the attackers does not also catch it), as a process of its
own: connect, EHLO, MAIL, RCPT, DATA, a small message, QUIT. It is **served** when its message
got 250 within ``--client-timeout``; the table gives the time from connect to that 250, or what
it got instead (a 421, no reply in time, the connection refused or closed). It arrives after
2 T + 1.5 s of attack for the slow attacks (when any per-command timeout would have fired), one
second after the last idle connection opened, once the parked messages are all in the server,
and half-way through the large message.

Figures per attack and server: the normal client's result; attacker connections the server
held (open, in their attack phase) when the client arrived and at the end (after 3 T for the
slow attacks); what happened to the others; the server's RSS when the client arrived
(``VmRSS``) and its peak (``VmHWM``, reset at the start of the attack). The script prints; it
never fails on a figure. Every target is on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno
import fcntl
import heapq
import json
import os
import platform
import random
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from run import ROOT, ensure_aiosmtpd, first_line, markdown_table, raise_fd_limit, say
from serverproc import ServerProcess, log_tail, mib, reset_peak, running, smtpd_trio

HOST: Final = "127.0.0.1"
SENDER: Final = "attacker@example.com"
RECIPIENT: Final = "b@example.org"
DEFAULT_SIZE_LIMIT: Final = 10_240_000  # smtpd-trio's default; aiosmtpd gets the same
DEFAULT_TIMEOUT: Final = 300.0  # smtpd-trio's default; aiosmtpd's too
MIB: Final = 1024 * 1024
LINE: Final = b"x" * 78 + b"\r\n"
BLOCK_LINES: Final = 13_107  # 1 MiB of 80-octet lines, near enough
RAMP_TIMEOUT: Final = 120.0
FINISH_TIMEOUT: Final = 300.0
MESSAGE_ID: Final = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
REPLY_CODE: Final = re.compile(r"^(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3}))?")

AIOSMTPD_SERVER: Final = r'''"""aiosmtpd 1.4.6 for abuse.py: a sink, or stores like smtpd-trio."""

import argparse
import asyncio
import itertools
import logging
import os
import socket
import sys
import time

from aiosmtpd.smtp import SMTP

COUNTER = itertools.count(1)


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


class Store:
    """tmp/<unique>, fsync, rename into new/, fsync new/, then 250; the writing in a thread."""

    def __init__(self, path):
        self.path = path
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)

    def deliver(self, data):
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(COUNTER)}.abuse"
        tmp = os.path.join(self.path, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.path, "new", name))
        dir_fd = os.open(os.path.join(self.path, "new"), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def handle_DATA(self, server, session, envelope):
        trace = f"Received: from {session.host_name} ([{session.peer[0]}]) by aiosmtpd\r\n"
        data = trace.encode() + envelope.original_content
        await asyncio.get_running_loop().run_in_executor(None, self.deliver, data)
        return "250 OK"


async def main(args):
    loop = asyncio.get_running_loop()
    kind, _, path = args.handler.partition(":")
    handler = Store(path) if kind == "store" else Sink()
    hostname = socket.gethostname()

    def factory():
        return SMTP(
            handler,
            hostname=hostname,
            data_size_limit=args.size,
            enable_SMTPUTF8=True,
            timeout=args.timeout,
        )

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


p = argparse.ArgumentParser()
p.add_argument("--handler", default="sink")
p.add_argument("--timeout", type=float, default=300.0)
p.add_argument("--size", type=int, default=10240000)
logging.basicConfig(level=logging.WARNING)
try:
    asyncio.run(main(p.parse_args()))
except KeyboardInterrupt:
    pass
'''


# ---- settings ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pace:
    """``count`` octets every ``every`` seconds."""

    count: int
    every: float

    @property
    def label(self) -> str:
        if self.every == 1:
            return f"{self.count} B/s"
        return f"{self.count} B every {self.every:g} s"

    @classmethod
    def parse(cls, text: str) -> Pace:
        count, _, every = text.partition("/")
        pace = cls(int(count), float(every or "1"))
        if pace.count < 1 or not pace.every > 0:
            raise ValueError(f"bad pace {text!r}: want OCTETS/SECONDS, such as 1/8 or 3/1")
        return pace


@dataclasses.dataclass(frozen=True)
class Settings:
    connections: int
    max_connections: int | None
    timeout: float
    paces: tuple[Pace, ...]
    noop_every: float
    probe_after: float
    hold: float
    parked: int
    parked_mib: float
    large_mib: float
    large_limit: int
    client_timeout: float
    client_source: str
    ramp: int
    attacks: tuple[str, ...]
    servers: tuple[str, ...]
    cache: Path
    keep: bool
    quick: bool
    json: Path | None
    extra: tuple[str, ...] = ()  # more smtpd-trio command-line options, as given


ALL_ATTACKS: Final = ("slow-data", "slow-line", "slow-noop", "idle", "parked", "large")
ALL_SERVERS: Final = ("smtpd-trio", "aiosmtpd")


# ---- the attacker: many connections in one selector loop -----------------------------------


@dataclasses.dataclass(frozen=True)
class Trickle:
    """What a connection sends in its attack phase: the octets of ``prefix`` followed by
    ``cycle`` repeated forever, ``pace.count`` of them every ``pace.every`` seconds."""

    prefix: bytes
    cycle: bytes
    pace: Pace

    def chunk(self, offset: int, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            at = offset + len(out)
            if at < len(self.prefix):
                out += self.prefix[at : at + count - len(out)]
            else:
                at = (at - len(self.prefix)) % len(self.cycle)
                out += self.cycle[at : at + count - len(out)]
        return bytes(out)


@dataclasses.dataclass(frozen=True)
class Bulk:
    """A message sent as fast as the server takes it: a header with a Message-ID unique to the
    connection, ``size`` octets of 80-octet lines, and (if ``final``) the ending dot."""

    size: int
    tag: str
    final: bool

    def message_id(self, index: int) -> str:
        return f"<{self.tag}-{index}@abuse.test>"

    def parts(self, index: int) -> Iterator[memoryview]:
        head = (
            f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {self.tag} {index}\r\n"
            f"Message-ID: {self.message_id(index)}\r\n\r\n"
        ).encode()
        yield memoryview(head)
        lines = self.size // len(LINE)
        block = memoryview(LINE * BLOCK_LINES)
        for _ in range(lines // BLOCK_LINES):
            yield block
        yield memoryview(LINE * (lines % BLOCK_LINES))
        if self.final:
            yield memoryview(b".\r\n")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How each attacker connection behaves: commands with the reply each must get, then a
    trickle, a bulk message, or nothing (idle)."""

    script: tuple[tuple[bytes, str], ...]
    trickle: Trickle | None = None
    bulk: Bulk | None = None


EHLO: Final = (b"EHLO attacker.example\r\n", "250")
TRANSACTION: Final = (
    EHLO,
    (f"MAIL FROM:<{SENDER}>\r\n".encode(), "250"),
    (f"RCPT TO:<{RECIPIENT}>\r\n".encode(), "250"),
    (b"DATA\r\n", "354"),
)


def reply_code(reply: str) -> str:
    """``421 4.4.2`` from a reply: the code and the enhanced status code if there is one."""
    m = REPLY_CODE.match(reply)
    if not m:
        return repr(reply[:20])
    return m.group(1) + (f" {m.group(2)}" if m.group(2) else "")


def take_reply(buf: bytearray) -> str | None:
    """Remove and return one complete (possibly multi-line) reply from ``buf``, if there is."""
    start = 0
    while True:
        end = buf.find(b"\n", start)
        if end < 0:
            return None
        line = buf[start:end]
        start = end + 1
        if len(line) < 4 or line[3:4] != b"-":
            text = bytes(buf[:start]).decode("utf-8", "replace")
            del buf[:start]
            return text


class Conn:
    """One attacker connection and where it is."""

    __slots__ = (
        "bulk",
        "current",
        "end",
        "end_seconds",
        "final",
        "flushed",
        "hold_reply",
        "hold_since",
        "inbuf",
        "index",
        "last_reply",
        "phase",
        "sent",
        "sock",
        "step",
        "trickled",
    )

    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index = index
        self.sock: socket.socket | None = sock
        self.phase = "connect"  # connect, banner, script, hold, finish, done
        self.inbuf = bytearray()
        self.step = 0
        self.hold_since = 0.0
        self.trickled = 0
        self.sent = 0
        self.bulk: Iterator[memoryview] | None = None
        self.current: memoryview | None = None
        self.flushed = False
        self.last_reply = ""
        self.hold_reply = ""  # the last reply in the attack phase (a 421 before a close)
        self.final = ""
        self.end = ""  # how it ended, for the summary
        self.end_seconds: float | None = None


class Attacker:
    """Opens ``count`` connections (at most ``ramp`` handshaking at once) and drives each
    through ``plan``; :meth:`poll` does one round of I/O and timers."""

    def __init__(self, port: int, plan: Plan, count: int, ramp: int, seed: int = 1) -> None:
        self.port = port
        self.plan = plan
        self.to_open = count
        self.ramp = ramp
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.timers: list[tuple[float, int, Conn]] = []
        self.random = random.Random(seed)
        self.handshaking = 0

    # ---- driving

    def poll(self, timeout: float) -> None:
        self._open_more()
        if self.timers:
            timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
        for key, mask in self.sel.select(timeout) if self.sel.get_map() else ():
            conn: Conn = key.data
            if mask & selectors.EVENT_WRITE:
                self._writable(conn)
            if mask & selectors.EVENT_READ and conn.sock is not None:
                self._readable(conn)
        if not self.sel.get_map():
            time.sleep(timeout)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _when, _n, conn = heapq.heappop(self.timers)
            self._tick(conn, now)

    def run_until(
        self, done: Callable[[], bool], timeout: float, also: Callable[[], None] | None = None
    ) -> bool:
        """Poll until ``done()``; False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(0.05, left))
            if also is not None:
                also()
        return True

    # ---- counts

    def ramped(self) -> bool:
        """Every connection opened and through its commands (or ended)."""
        return self.to_open == 0 and self.handshaking == 0

    def held(self) -> int:
        """Connections open in their attack phase (trickling, idle, or sending a message)."""
        return sum(1 for c in self.conns if c.phase in ("hold", "finish") and c.sock is not None)

    def octets_sent(self) -> int:
        return sum(c.sent for c in self.conns)

    def all_sent(self) -> bool:
        """Every bulk connection sent all it has, or ended."""
        return self.ramped() and all(c.flushed or c.sock is None for c in self.conns)

    def unsent_octets(self) -> int:
        """Octets still in our sockets' send queues (not yet taken by the server's kernel)."""
        total = 0
        for c in self.conns:
            if c.sock is not None:
                with contextlib.suppress(OSError):
                    raw = fcntl.ioctl(c.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                    total += struct.unpack("i", raw)[0]
        return total

    def local_ports(self) -> set[int]:
        ports = set()
        for c in self.conns:
            if c.sock is not None:
                with contextlib.suppress(OSError):
                    ports.add(c.sock.getsockname()[1])
        return ports

    def ended(self) -> bool:
        return self.ramped() and all(c.sock is None for c in self.conns)

    def summary(self) -> str:
        """How the connections that are no longer held ended: count, label, time range."""
        groups: dict[str, list[float]] = collections.defaultdict(list)
        counts: collections.Counter[str] = collections.Counter()
        for c in self.conns:
            label = c.end or (
                "still handshaking" if c.phase in ("connect", "banner", "script") else ""
            )
            if not label:
                continue
            counts[label] += 1
            if c.end_seconds is not None:
                groups[label].append(c.end_seconds)
        if self.to_open:
            counts["never opened"] += self.to_open
        parts = []
        for label, n in counts.most_common():
            times = groups.get(label)
            span = ""
            if times:
                lo, hi = min(times), max(times)
                span = f" after {lo:.1f} s" if hi - lo < 0.05 else f" after {lo:.1f}-{hi:.1f} s"
            parts.append(f"{n} {label}{span}")
        return "; ".join(parts) or "—"

    # ---- finishing and closing

    def finish_all(self) -> None:
        """Send the final dot on every connection holding a message back."""
        for c in self.conns:
            if c.phase == "hold" and c.sock is not None:
                c.phase = "finish"
                c.hold_since = time.monotonic()
                c.bulk = iter([memoryview(b".\r\n")])
                c.current = None
                c.flushed = False
                self._want_write(c, True)

    def close_all(self) -> None:
        """Close every connection at once (RST, so no TIME_WAIT piles up between attacks)."""
        for c in self.conns:
            if c.sock is not None:
                with contextlib.suppress(OSError):
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._close(c)
        self.sel.close()

    # ---- internals

    def _open_more(self) -> None:
        while self.to_open and self.handshaking < self.ramp:
            self.to_open -= 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            conn = Conn(len(self.conns), sock)
            self.conns.append(conn)
            self.handshaking += 1
            err = sock.connect_ex((HOST, self.port))
            if err not in (0, errno.EINPROGRESS):
                self._end(conn, "refused" if err == errno.ECONNREFUSED else errno.errorcode[err])
                continue
            self.sel.register(sock, selectors.EVENT_WRITE, conn)

    def _want_write(self, conn: Conn, on: bool) -> None:
        if conn.sock is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
            self.sel.modify(conn.sock, events, conn)

    def _writable(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        if conn.phase == "connect":
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._end(conn, "refused" if err == errno.ECONNREFUSED else errno.errorcode[err])
                return
            conn.phase = "banner"
            self._want_write(conn, False)
            return
        while True:
            if not conn.current:
                conn.current = next(conn.bulk, None) if conn.bulk is not None else None
                if conn.current is None:
                    conn.flushed = True
                    self._want_write(conn, False)
                    return
            try:
                n = sock.send(conn.current)
            except BlockingIOError:
                return
            except OSError:
                self._closed_by_server(conn, reset=True)
                return
            conn.sent += n
            conn.current = conn.current[n:]

    def _readable(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._closed_by_server(conn, reset=True)
            return
        if not data:
            self._closed_by_server(conn, reset=False)
            return
        conn.inbuf += data
        while conn.sock is not None and (reply := take_reply(conn.inbuf)) is not None:
            self._reply(conn, reply)

    def _reply(self, conn: Conn, reply: str) -> None:
        conn.last_reply = reply
        if conn.phase == "banner":
            if not reply.startswith("220"):
                self._end(conn, f"{reply_code(reply)} at the banner")
                return
            self._next_command(conn)
        elif conn.phase == "script":
            command, expect = self.plan.script[conn.step]
            if not reply.startswith(expect):
                name = command.split(b" ", 1)[0].strip().decode()
                self._end(conn, f"{reply_code(reply)} to {name}")
                return
            conn.step += 1
            self._next_command(conn)
        elif conn.phase == "finish":
            # The answer to the message (early if the server refused it before the dot).
            conn.final = reply
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.send(b"QUIT\r\n")
            self._end(conn, f"{reply_code(reply)} to the message", conn.hold_since)
        else:
            conn.hold_reply = reply

    def _next_command(self, conn: Conn) -> None:
        assert conn.sock is not None
        if conn.step < len(self.plan.script):
            conn.phase = "script"
            try:
                conn.sock.send(self.plan.script[conn.step][0])
            except OSError:
                self._closed_by_server(conn, reset=True)
            return
        conn.phase = "hold"
        conn.hold_since = time.monotonic()
        self.handshaking -= 1
        trickle = self.plan.trickle
        if trickle is not None:
            first = conn.hold_since + self.random.uniform(0, trickle.pace.every)
            heapq.heappush(self.timers, (first, conn.index, conn))
        bulk = self.plan.bulk
        if bulk is not None:
            conn.bulk = bulk.parts(conn.index)
            if bulk.final:
                conn.phase = "finish"
            self._want_write(conn, True)

    def _tick(self, conn: Conn, now: float) -> None:
        trickle = self.plan.trickle
        if conn.sock is None or conn.phase != "hold" or trickle is None:
            return
        data = trickle.chunk(conn.trickled, trickle.pace.count)
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._closed_by_server(conn, reset=True)
            return
        conn.trickled += n
        heapq.heappush(self.timers, (now + trickle.pace.every, conn.index, conn))

    def _closed_by_server(self, conn: Conn, *, reset: bool) -> None:
        # A reset is most often our send meeting a close we had not read yet: one label.
        how = "closed by the server"
        if conn.phase in ("hold", "finish"):
            said = f" (told {reply_code(conn.hold_reply)})" if conn.hold_reply else " (no reply)"
        else:
            said = f" (told {reply_code(conn.last_reply)})" if conn.last_reply else ""
        if conn.phase == "hold":
            self._end(conn, f"{how}{said}", conn.hold_since)
        elif conn.phase == "finish":
            self._end(conn, f"{how} before the final reply{said}", conn.hold_since)
        else:
            self._end(conn, f"{how} during {conn.phase}{said}")

    def _end(self, conn: Conn, label: str, since: float | None = None) -> None:
        if conn.phase in ("connect", "banner", "script"):
            self.handshaking -= 1
        conn.end = label
        conn.end_seconds = None if since is None else time.monotonic() - since
        conn.phase = "done"
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        sock, conn.sock = conn.sock, None
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(sock)
        sock.close()


# ---- the normal client ---------------------------------------------------------------------


def probe_steps() -> list[tuple[str, bytes, str]]:
    message_id = f"<probe-{os.getpid()}-{time.time_ns()}@abuse.test>"
    message = (
        f"From: <client@example.com>\r\nTo: <{RECIPIENT}>\r\nSubject: a normal client\r\n"
        f"Message-ID: {message_id}\r\n\r\nHello.\r\nThis one should get through.\r\n.\r\n"
    ).encode()
    return [
        ("the banner", b"", "220"),
        ("EHLO", b"EHLO client.example\r\n", "250"),
        ("MAIL", b"MAIL FROM:<client@example.com>\r\n", "250"),
        ("RCPT", f"RCPT TO:<{RECIPIENT}>\r\n".encode(), "250"),
        ("DATA", b"DATA\r\n", "354"),
        ("the message", message, "250"),
    ]


def probe(port: int, source: str, timeout: float) -> dict[str, str | float]:
    """One ordinary delivery from ``source``; what happened, as a JSON-ready dict."""
    start = time.monotonic()
    deadline = start + timeout
    step = "connect"
    buf = bytearray()

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    def elapsed() -> float:
        return time.monotonic() - start

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((source, 0))
            sock.settimeout(left())
            sock.connect((HOST, port))
            for step, data, expect in probe_steps():
                if data:
                    sock.settimeout(left())
                    sock.sendall(data)
                while (reply := take_reply(buf)) is None:
                    sock.settimeout(left())
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed by the server")
                    buf += chunk
                if not reply.startswith(expect):
                    first = reply.splitlines()[0] if reply.strip() else reply
                    return {"outcome": "reply", "step": step, "reply": first, "seconds": elapsed()}
            served = elapsed()
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
            return {"outcome": "served", "step": "QUIT", "seconds": served}
    except TimeoutError:
        return {"outcome": "timeout", "step": step, "seconds": elapsed()}
    except ConnectionRefusedError:
        return {"outcome": "refused", "step": step, "seconds": elapsed()}
    except OSError as exc:
        return {"outcome": "closed", "step": step, "detail": str(exc), "seconds": elapsed()}


def seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def describe_probe(result: dict[str, str | float]) -> str:
    outcome = result.get("outcome")
    seconds = float(result.get("seconds", 0.0))
    step = str(result.get("step", "?"))
    if outcome == "served":
        return f"served in {seconds_text(seconds)}"
    if outcome == "reply":
        code = reply_code(str(result.get("reply", "")))
        where = "at connect" if step == "the banner" else f"to {step}"
        return f"{code} {where}, {seconds_text(seconds)}"
    if outcome == "timeout":
        return f"no reply to {step} in {seconds:.0f} s"
    if outcome == "refused":
        return "connection refused"
    if outcome == "closed":
        return f"closed at {step}, {seconds_text(seconds)}"
    return f"? {result}"


class Probe:
    """The normal client, as a process of its own (``abuse.py --probe PORT``), so its timing
    is not disturbed by the attacker's loop."""

    def __init__(self, port: int, settings: Settings) -> None:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--probe",
            str(port),
            "--client-source",
            settings.client_source,
            "--client-timeout",
            f"{settings.client_timeout:g}",
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def done(self) -> bool:
        return self.proc.poll() is not None

    def describe(self) -> str:
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return "probe did not finish"
        try:
            result = json.loads(out)
        except ValueError:
            return f"probe failed: {err.decode(errors='replace').strip()[-200:]}"
        return describe_probe(result)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# ---- the servers ---------------------------------------------------------------------------

COMMANDS: list[str] = []


def note_command(argv: Sequence[str], workdir: Path) -> None:
    line = " ".join(argv).replace(str(workdir), "DIR")
    if line not in COMMANDS:
        COMMANDS.append(line)


@dataclasses.dataclass(frozen=True)
class Attack:
    key: str  # for file names
    title: str
    plan: Plan
    count: int
    timeout: float | None = None  # the server's command timeout, if not its default
    size_limit: int | None = None  # the server's size limit, if not its default
    store: bool = False  # store messages (smtpd-trio's maildir, aiosmtpd's Store)


def server_argv(
    name: str, attack: Attack, maildir: Path, settings: Settings, aiosmtpd: Path | None
) -> list[str]:
    if name == "smtpd-trio":
        argv = ["--handler", f"maildir:{maildir}" if attack.store else "sink"]
        if settings.max_connections is not None:
            argv += ["--max-connections", str(settings.max_connections)]
        if attack.timeout is not None:
            argv += ["--timeout", f"{attack.timeout:g}"]
        if attack.size_limit is not None:
            argv += ["--max-message-size", str(attack.size_limit)]
        return [*argv, *settings.extra]
    assert aiosmtpd is not None
    return [
        str(aiosmtpd),
        str(settings.cache / "aiosmtpd_abuse.py"),
        "--handler",
        f"store:{maildir}" if attack.store else "sink",
        "--timeout",
        f"{attack.timeout or DEFAULT_TIMEOUT:g}",
        "--size",
        str(attack.size_limit or DEFAULT_SIZE_LIMIT),
    ]


@contextlib.contextmanager
def serve(
    name: str, attack: Attack, workdir: Path, settings: Settings, aiosmtpd: Path | None
) -> Iterator[ServerProcess]:
    maildir = workdir / "maildir"
    log = settings.cache / "logs" / f"abuse-{attack.key}-{name}.log"
    argv = server_argv(name, attack, maildir, settings, aiosmtpd)
    if name == "smtpd-trio":
        note_command(["python", "-m", "smtpd_trio", "--port", "0", *argv], workdir)
        with smtpd_trio(argv, log) as server:
            yield server
    else:
        note_command(["aiosmtpd-python", "aiosmtpd_abuse.py", *argv[2:]], workdir)
        with running(name, argv, log) as server:
            yield server


# ---- running one attack against one server -------------------------------------------------


@dataclasses.dataclass
class Row:
    attack: str
    server: str
    client: str = "—"
    held_at_client: int | None = None
    held_at_end: int | None = None
    others: str = "—"
    rss_at_client: int | None = None
    peak: int | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


class Sampler:
    """The server's VmRSS every half second: the highest seen."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.next = 0.0
        self.max_kib: int | None = None

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.5
        rss = self.server.rss_kib()
        if rss is not None:
            self.max_kib = rss if self.max_kib is None else max(self.max_kib, rss)


def server_unread(port: int, client_ports: set[int]) -> int:
    """Octets that arrived at the server's sockets from ``client_ports`` but that the server
    has not read yet (the receive queues in /proc/net/tcp)."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            ours = int(local.rsplit(":", 1)[1], 16) == port
            if ours and int(remote.rsplit(":", 1)[1], 16) in client_ports:
                total += int(queues.split(":")[1], 16)
    return total


def stored_ids(maildir: Path) -> tuple[collections.Counter[str], int]:
    """The Message-IDs of the files in ``new/`` (with how often each), and files in ``tmp/``."""
    ids: collections.Counter[str] = collections.Counter()
    with contextlib.suppress(OSError):
        for entry in os.scandir(maildir / "new"):
            with open(entry.path, "rb") as f:
                m = MESSAGE_ID.search(f.read(16384))
            ids[m.group(1).decode() if m else "(none)"] += 1
    try:
        tmp = len(os.listdir(maildir / "tmp"))
    except OSError:
        tmp = 0
    return ids, tmp


def check_stored(attacker: Attacker, bulk: Bulk, maildir: Path, row: Row) -> None:
    """Every message that got 250 is in new/, once; nothing there that was not sent."""
    acked = {bulk.message_id(c.index) for c in attacker.conns if c.final.startswith("250")}
    sent = {bulk.message_id(c.index) for c in attacker.conns}
    ids, tmp = stored_ids(maildir)
    ours = {i: n for i, n in ids.items() if not i.startswith("<probe-")}
    stored = set(ours)
    row.notes.append(
        f"250 for {len(acked)}/{len(attacker.conns)}; {len(acked & stored)}/{len(acked)} of "
        f"those in new/"
    )
    if stored - acked:
        row.notes.append(f"{len(stored - acked)} in new/ without a 250")
    if stored - sent:
        row.notes.append(f"{len(stored - sent)} in new/ never sent!")
    if any(n > 1 for n in ours.values()):
        row.notes.append("duplicates in new/!")
    if tmp:
        row.notes.append(f"{tmp} files left in tmp/")


def hold_flow(
    attack: Attack, server: ServerProcess, attacker: Attacker, settings: Settings, row: Row
) -> None:
    """Slow and idle attacks: ramp up, hold, let the normal client in, hold on."""
    sampler = Sampler(server)
    reset_peak(server.pid)
    if not attacker.run_until(attacker.ramped, RAMP_TIMEOUT + attack.count / 50, sampler.tick):
        row.notes.append("not every attacker got through its commands in time")
    ramp_end = time.monotonic()
    slow = attack.timeout is not None
    probe_at = ramp_end + (settings.probe_after if slow else 1.0)
    hold_until = ramp_end + (settings.hold if slow else 0.0)
    attacker.run_until(lambda: time.monotonic() >= probe_at, settings.hold + 60, sampler.tick)
    row.rss_at_client = server.rss_kib()
    row.held_at_client = attacker.held()
    client = Probe(server.port, settings)
    try:
        attacker.run_until(
            lambda: client.done() and time.monotonic() >= hold_until,
            settings.hold + settings.client_timeout + 60,
            sampler.tick,
        )
        row.client = client.describe()
    finally:
        client.kill()
    row.held_at_end = attacker.held()
    row.others = attacker.summary()
    row.peak = server.peak_kib()


def parked_flow(
    attack: Attack,
    server: ServerProcess,
    attacker: Attacker,
    settings: Settings,
    row: Row,
    maildir: Path,
) -> None:
    """M messages sent but for the final dot; RSS once the server has them; then finished."""
    bulk = attack.plan.bulk
    assert bulk is not None
    sampler = Sampler(server)
    reset_peak(server.pid)
    before = server.rss_kib()
    total = attack.count * bulk.size
    if not attacker.run_until(attacker.all_sent, RAMP_TIMEOUT + total / 5e6, sampler.tick):
        row.notes.append(f"only {attacker.octets_sent() / MIB:,.0f} MiB sent in time")
    ports = attacker.local_ports()
    unread = 0

    def settled() -> bool:
        nonlocal unread
        unread = attacker.unsent_octets() + server_unread(server.port, ports)
        return unread == 0

    if not attacker.run_until(settled, 60, sampler.tick):
        row.notes.append(f"{unread / MIB:,.1f} MiB not yet read by the server after 60 s")
    row.rss_at_client = server.rss_kib()
    row.held_at_client = attacker.held()
    if before is not None and row.rss_at_client is not None:
        growth = (row.rss_at_client - before) * 1024 / total
        row.notes.append(f"RSS growth while parked {growth:.2f}x the parked octets")
    client = Probe(server.port, settings)
    try:
        attacker.run_until(client.done, settings.client_timeout + 30, sampler.tick)
        row.client = client.describe()
    finally:
        client.kill()
    attacker.finish_all()
    if not attacker.run_until(attacker.ended, FINISH_TIMEOUT, sampler.tick):
        row.notes.append("not every message was answered in time")
    row.held_at_end = attacker.held()
    row.others = attacker.summary()
    row.peak = server.peak_kib()
    check_stored(attacker, bulk, maildir, row)


def large_flow(
    attack: Attack,
    server: ServerProcess,
    attacker: Attacker,
    settings: Settings,
    row: Row,
    maildir: Path,
) -> None:
    """One large message; the normal client arrives half-way; peak RSS against its size."""
    bulk = attack.plan.bulk
    assert bulk is not None
    sampler = Sampler(server)
    reset_peak(server.pid)
    before = server.rss_kib()
    attacker.run_until(
        lambda: attacker.octets_sent() >= bulk.size / 2 or attacker.ended(),
        FINISH_TIMEOUT,
        sampler.tick,
    )
    row.rss_at_client = server.rss_kib()
    row.held_at_client = attacker.held()
    client = Probe(server.port, settings)
    try:
        if not attacker.run_until(
            lambda: attacker.ended() and client.done(), FINISH_TIMEOUT, sampler.tick
        ):
            row.notes.append("the message was not answered in time")
        row.client = client.describe()
    finally:
        client.kill()
    row.held_at_end = attacker.held()
    row.others = attacker.summary()
    row.peak = server.peak_kib()
    if row.peak is not None:
        text = f"peak {row.peak * 1024 / bulk.size:.2f}x the message"
        if before is not None:
            text += f" ({(row.peak - before) * 1024 / bulk.size:.2f}x above the idle server)"
        row.notes.append(text)
    check_stored(attacker, bulk, maildir, row)


def run_one(attack: Attack, name: str, settings: Settings, aiosmtpd: Path | None) -> Row:
    row = Row(attack.title, name if name == "smtpd-trio" else "aiosmtpd 1.4.6")
    workdir = settings.cache / "abuse" / f"{attack.key}-{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    say(f"--- {attack.title}: {row.server}")
    try:
        with serve(name, attack, workdir, settings, aiosmtpd) as server:
            attacker = Attacker(server.port, attack.plan, attack.count, settings.ramp)
            try:
                if attack.plan.bulk is None:
                    hold_flow(attack, server, attacker, settings, row)
                elif attack.plan.bulk.final:
                    large_flow(attack, server, attacker, settings, row, workdir / "maildir")
                else:
                    parked_flow(attack, server, attacker, settings, row, workdir / "maildir")
            finally:
                attacker.close_all()
            if server.proc.poll() is not None:
                row.notes.append(f"the server exited ({server.proc.returncode})")
                row.notes.append(log_tail(server.log, 2))
    except (OSError, RuntimeError) as exc:
        row.notes.append(f"could not run: {exc}")
    finally:
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    say(
        f"    client: {row.client}; held {row.held_at_client} -> {row.held_at_end}; "
        f"RSS {mib(row.rss_at_client)} MiB, peak {mib(row.peak)} MiB"
    )
    for note in [row.others, *row.notes]:
        say(f"    {note}")
    return row


# ---- the attacks ---------------------------------------------------------------------------


def build_attacks(settings: Settings) -> list[Attack]:
    n, t = settings.connections, settings.timeout
    attacks: list[Attack] = []
    if "slow-data" in settings.attacks:
        for i, pace in enumerate(settings.paces):
            attacks.append(
                Attack(
                    f"slow-data-{i}",
                    f"slow DATA: {n:,} conns, {pace.label}, --timeout {t:g}",
                    Plan(TRANSACTION, trickle=Trickle(b"", b"x" * 62 + b"\r\n", pace)),
                    n,
                    timeout=t,
                )
            )
    if "slow-line" in settings.attacks:
        for i, pace in enumerate(settings.paces):
            attacks.append(
                Attack(
                    f"slow-line-{i}",
                    f"slow command line: {n:,} conns, {pace.label}, --timeout {t:g}",
                    Plan((EHLO,), trickle=Trickle(b"NOOP ", b"x", pace)),
                    n,
                    timeout=t,
                )
            )
    if "slow-noop" in settings.attacks:
        every = settings.noop_every
        attacks.append(
            Attack(
                "slow-noop",
                f"NOOP every {every:g} s: {n:,} conns, --timeout {t:g}",
                Plan((EHLO,), trickle=Trickle(b"", b"NOOP\r\n", Pace(6, every))),
                n,
                timeout=t,
            )
        )
    if "idle" in settings.attacks:
        attacks.append(Attack("idle", f"idle: {n:,} conns from one address", Plan(()), n))
    if "parked" in settings.attacks:
        size = round(settings.parked_mib * MIB)
        attacks.append(
            Attack(
                "parked",
                f"parked: {settings.parked} x {settings.parked_mib:g} MiB, final dot held back",
                Plan(TRANSACTION, bulk=Bulk(size, "parked", final=False)),
                settings.parked,
                store=True,
            )
        )
    if "large" in settings.attacks:
        size = round(settings.large_mib * MIB)
        attacks.append(
            Attack(
                "large",
                f"one {settings.large_mib:g} MiB message, limit {settings.large_limit:,}",
                Plan(TRANSACTION, bulk=Bulk(size, "large", final=True)),
                1,
                size_limit=settings.large_limit,
                store=True,
            )
        )
    return attacks


# ---- report --------------------------------------------------------------------------------


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def machine_facts(aiosmtpd: Path | None) -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    package = first_line(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %cs", "--", "smtpd_trio"]
    )
    facts = [
        f"CPU: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"load average at the start {os.getloadavg()[0]:.2f}",
        f"Python {platform.python_version()}; smtpd-trio at {commit} (smtpd_trio/ last "
        f"changed in {package})",
    ]
    if aiosmtpd is not None:
        version = "import sys, aiosmtpd; print(aiosmtpd.__version__, sys.version.split()[0])"
        facts.append(f"aiosmtpd, Python: {first_line([str(aiosmtpd), '-c', version])}")
    return facts


def report(rows: list[Row], settings: Settings, facts: list[str], started: float) -> None:
    say("")
    say("== machine ==")
    for fact in facts:
        say(fact)
    say("")
    say(
        f"== results{' (--quick)' if settings.quick else ''}: normal client from "
        f"{settings.client_source}, deadline {settings.client_timeout:g} s; slow attacks: "
        f"client after {settings.probe_after:g} s, held until {settings.hold:g} s after the "
        f"last attacker got through its commands =="
    )
    header = [
        "attack",
        "server",
        "normal client",
        "held when it came",
        "held at end",
        "the other attacker connections",
        "RSS when it came MiB",
        "peak RSS MiB",
        "notes",
    ]
    table = [
        [
            r.attack,
            r.server,
            r.client,
            count(r.held_at_client),
            count(r.held_at_end),
            r.others,
            mib(r.rss_at_client),
            mib(r.peak),
            "; ".join(r.notes) or "—",
        ]
        for r in rows
    ]
    say(markdown_table(header, table))
    say("")
    say("== commands ==")
    for line in COMMANDS:
        say(f"  {line}")
    say(f"\ntotal time: {time.monotonic() - started:.0f} s")
    say(f"load average at the end {os.getloadavg()[0]:.2f}")
    if settings.json is not None:
        document = {
            "machine": facts,
            "settings": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(settings).items()
            },
            "commands": COMMANDS,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        settings.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        say(f"results written to {settings.json}")


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Attacks on an open SMTP port: smtpd-trio beside aiosmtpd 1.4.6.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            The full run takes about ten minutes, --quick one or two; [full; quick] defaults.
            Examples:
              nox -s abuse
              nox -s abuse -- --quick
              python bench/abuse.py --attacks slow-data,idle --connections 500
              python bench/abuse.py --servers smtpd-trio --attacks parked --parked 20
            """
        ),
    )
    p.add_argument("--quick", action="store_true", help="small counts, short timeouts")
    p.add_argument(
        "--attacks",
        default=",".join(ALL_ATTACKS),
        help=f"comma-separated subset of {','.join(ALL_ATTACKS)}",
    )
    p.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated subset of {','.join(ALL_SERVERS)}",
    )
    p.add_argument("--connections", type=int, help="attackers in slow and idle attacks [2000; 200]")
    p.add_argument(
        "--max-connections",
        type=int,
        help="smtpd-trio's --max-connections [its default, 1000; quick: half the attackers]",
    )
    p.add_argument("--timeout", type=float, help="server --timeout in slow attacks [10; 2]")
    p.add_argument(
        "--paces",
        help="slow-data and slow-line paces, OCTETS/SECONDS, comma-separated [1/8,3/1; 1/1.5,3/1]",
    )
    p.add_argument("--noop-every", type=float, help="slow-noop: seconds between NOOPs [0.8 T]")
    p.add_argument("--probe-after", type=float, help="slow attacks: client arrives at [2 T + 1.5]")
    p.add_argument("--hold", type=float, help="slow attacks: seconds held after ramp-up [3 T]")
    p.add_argument("--parked", type=int, help="parked: messages [50; 10]")
    p.add_argument("--parked-mib", type=float, help="parked: MiB each [9; 2]")
    p.add_argument("--large-mib", type=float, help="large: message MiB [200; 20]")
    p.add_argument("--large-limit", type=int, help="large: size limit [300000000; 30000000]")
    p.add_argument("--client-timeout", type=float, help="normal client's deadline [30; 10]")
    p.add_argument("--client-source", default="127.0.0.2", help="normal client's address")
    p.add_argument("--ramp", type=int, default=200, help="attackers handshaking at once [200]")
    p.add_argument("--cache", type=Path, default=ROOT / ".bench-cache", help="cache directory")
    p.add_argument("--keep", action="store_true", help="keep the maildirs under the cache")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--smtpd-trio-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more smtpd-trio command-line option, e.g. --smtpd-trio-option=--max-buffered-"
        "bytes=64M (repeatable)",
    )
    p.add_argument("--probe", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)

    def pick(value: float | None, full: float, short: float) -> float:
        return value if value is not None else short if quick else full

    timeout = pick(args.timeout, 10.0, 2.0)
    paces_text = args.paces or ("1/1.5,3/1" if quick else "1/8,3/1")
    paces = tuple(Pace.parse(p.strip()) for p in paces_text.split(",") if p.strip())
    probe_after = pick(args.probe_after, 2 * timeout + 1.5, 2 * timeout + 1.5)
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    for name in attacks:
        if name not in ALL_ATTACKS:
            raise SystemExit(f"unknown attack {name!r}: choose from {', '.join(ALL_ATTACKS)}")
    for name in servers:
        if name not in ALL_SERVERS:
            raise SystemExit(f"unknown server {name!r}: choose from {', '.join(ALL_SERVERS)}")
    connections = int(pick(args.connections, 2000, 200))
    max_connections = args.max_connections
    if max_connections is None and quick:
        max_connections = max(1, connections // 2)
    return Settings(
        connections=connections,
        max_connections=max_connections,
        timeout=timeout,
        paces=paces,
        noop_every=pick(args.noop_every, 0.8 * timeout, 0.8 * timeout),
        probe_after=probe_after,
        hold=max(probe_after, pick(args.hold, 3 * timeout, 3 * timeout)),
        parked=int(pick(args.parked, 50, 10)),
        parked_mib=pick(args.parked_mib, 9, 2),
        large_mib=pick(args.large_mib, 200, 20),
        large_limit=int(pick(args.large_limit, 300_000_000, 30_000_000)),
        client_timeout=pick(args.client_timeout, 30, 10),
        client_source=args.client_source,
        ramp=max(1, args.ramp),
        attacks=attacks,
        servers=servers,
        cache=args.cache.resolve(),
        keep=bool(args.keep),
        quick=quick,
        json=args.json,
        extra=tuple(args.smtpd_trio_option),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.probe, args.client_source, args.client_timeout or 30)))
        return 0
    settings = settings_from(args)
    started = time.monotonic()
    settings.cache.mkdir(parents=True, exist_ok=True)
    (settings.cache / "aiosmtpd_abuse.py").write_text(AIOSMTPD_SERVER)
    fd_limit = raise_fd_limit()
    if settings.connections + 100 > fd_limit:
        say(f"file descriptors: {fd_limit}, too few for {settings.connections:,} connections")
        return 1
    aiosmtpd = ensure_aiosmtpd(settings.cache) if "aiosmtpd" in settings.servers else None
    servers = [s for s in settings.servers if s != "aiosmtpd" or aiosmtpd is not None]
    say(f"file descriptors: {fd_limit:,}; cache: {settings.cache}")
    facts = machine_facts(aiosmtpd)  # now, for the load average at the start
    rows = [
        run_one(attack, name, settings, aiosmtpd)
        for attack in build_attacks(settings)
        for name in servers
    ]
    report(rows, settings, facts, started)
    return 0 if any(r.client != "—" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
