#!/usr/bin/env python3
"""Side-by-side SMTP benchmark: smtpd-trio, aiosmtpd 1.4.6 and Postfix's smtp-sink.

Run it with ``nox -s bench`` (or ``python bench/run.py`` in an environment where smtpd-trio is
installed). It uses the standard library only; what it needs besides, it installs itself:

* aiosmtpd 1.4.6 in its own virtualenv under ``.bench-cache/aiosmtpd-venv``;
* Postfix (for ``smtp-source`` and ``smtp-sink``) through apt when we are root on Debian, with
  the daemon kept from starting; otherwise the Postfix parts are skipped with a message.

Each server runs in turn on a loopback port, as its own process, logging at WARNING:

* smtpd-trio: a launcher written into the cache dir calls ``serve_smtp`` with the ``Sink``
  handler and ``Config(max_connections=20000, command_timeout=300)``;
* aiosmtpd: a handler whose ``handle_DATA`` returns ``"250 OK"``, served by
  ``loop.create_server`` with the same 10,240,000-octet size limit;
* Postfix ``smtp-sink`` (C; the practical ceiling);
* if ``/usr/sbin/haproxy`` exists: smtpd-trio behind HAProxy, once plain and once with
  ``send-proxy-v2`` and ``--proxy-protocol`` (so the PROXY cost is read against the same proxy).

Figures: msg/s (messages / wall time of smtp-source), server CPU seconds per 1,000 messages
(``/proc/PID/stat`` utime+stime), peak RSS (``VmHWM``), RSS per idle connection (a fresh server
process; N sockets that connected, read the banner and sent EHLO; VmRSS after - before, / N),
and the p50/p99 latency of one MAIL/RCPT/DATA transaction on one connection while the server is
otherwise idle. The script never fails on a figure: it exits non-zero only when nothing could
be measured at all. Every target is on 127.0.0.1.

``--profile`` runs smtpd-trio alone under cProfile through the persistent load and prints the
top entries by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import io
import os
import platform
import pstats
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
AIOSMTPD: Final = "aiosmtpd==1.4.6"
MAX_MESSAGE_SIZE: Final = 10_240_000  # smtpd-trio's default; aiosmtpd gets the same
MAX_CONNECTIONS: Final = 20_000
SENDER: Final = "a@example.com"
RECIPIENT: Final = "b@example.org"
SMTP_SOURCE: Final = "/usr/sbin/smtp-source"
SMTP_SINK: Final = "/usr/sbin/smtp-sink"
HAPROXY: Final = "/usr/sbin/haproxy"
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
INSTALL_TIMEOUT: Final = 600.0
SOCKET_TIMEOUT: Final = 30.0
FD_WANTED: Final = 65_536
FD_SPARE: Final = 200
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

TRIO_LAUNCHER: Final = '''\
"""smtpd-trio for the benchmark: the Sink handler, logging at WARNING, optional cProfile."""

import argparse
import cProfile
import functools
import logging

import trio

from smtpd_trio import Config, serve_smtp
from smtpd_trio.handlers import Sink

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--proxy-protocol", action="store_true")
p.add_argument("--profile", metavar="FILE")
args = p.parse_args()

logging.basicConfig(level=logging.WARNING)
fields = {"max_connections": %(max_connections)d, "command_timeout": 300.0}
if args.proxy_protocol:
    fields.update(proxy_protocol=True, trusted_proxies=["127.0.0.0/8"])
config = Config(**fields)
serve = functools.partial(serve_smtp, Sink(), host="127.0.0.1", port=args.port, config=config)

profiler = cProfile.Profile() if args.profile else None
try:
    if profiler is not None:
        profiler.enable()
    trio.run(serve)
except KeyboardInterrupt:
    pass
finally:
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
'''

AIOSMTPD_SERVER: Final = '''\
"""aiosmtpd 1.4.6 for the benchmark: a sink handler, asyncio, logging at WARNING."""

import asyncio
import logging
import socket
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Sink()
    hostname = socket.gethostname()  # once, as aiosmtpd's Controller does

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname=hostname,
            data_size_limit=%(max_size)d,
            enable_SMTPUTF8=True,
            timeout=300,
        )

    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


logging.basicConfig(level=logging.WARNING)
try:
    asyncio.run(main(int(sys.argv[1])))
except KeyboardInterrupt:
    pass
'''

HAPROXY_CONFIG: Final = """\
global
    maxconn {maxconn}
    nbthread 1

defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    maxconn {maxconn}

frontend smtp
    bind 127.0.0.1:{front}
    default_backend smtpd

backend smtpd
    server s1 127.0.0.1:{back}{send_proxy} maxconn {maxconn}
"""


# ---- settings and results -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    persistent: int
    per_connection: int
    sessions: int
    size: int
    idle: int
    latency: int
    repeat: int
    cache: Path
    servers: frozenset[str]


@dataclasses.dataclass
class Result:
    name: str
    persistent_rate: float | None = None
    per_connection_rate: float | None = None
    cpu_persistent: float | None = None
    cpu_per_connection: float | None = None
    peak_rss_kib: int | None = None
    idle_kib: float | None = None
    idle_count: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    proxy_cpu: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ServerPlan:
    """How to start one server: its command, and whether HAProxy sits in front of it."""

    name: str
    key: str
    haproxy: str | None = None  # None, "plain" or "v2"


COMMANDS: list[str] = []


def note_command(argv: Sequence[str], port: int | None = None) -> None:
    line = shlex.join(argv)
    if port is not None:
        line = line.replace(str(port), "PORT")
    if line not in COMMANDS:
        COMMANDS.append(line)


# ---- small system helpers ------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def raise_fd_limit() -> int:
    """Raise our RLIMIT_NOFILE as far as allowed; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (FD_WANTED, hard):
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), max(target, hard)))
            break
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), hard))
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def child_limits() -> None:
    """preexec_fn for servers: the highest file-descriptor limit allowed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def run(
    argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def first_line(argv: Sequence[str]) -> str:
    try:
        out = run(argv, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


# ---- preparing the peers -------------------------------------------------------------------


def ensure_postfix() -> bool:
    """smtp-source and smtp-sink are there, installing Postfix (daemon not started) if we can."""
    if os.access(SMTP_SOURCE, os.X_OK) and os.access(SMTP_SINK, os.X_OK):
        return True
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists() or not shutil.which("apt-get"):
        say("Postfix's smtp-source/smtp-sink are missing and cannot be installed here: skipped")
        return False
    say("installing Postfix for smtp-source and smtp-sink (its daemon is not started)")
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    try:
        if created_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        selections = "postfix postfix/main_mailer_type select No configuration\n"
        subprocess.run(
            ["debconf-set-selections"],
            input=selections,
            text=True,
            timeout=60,
            check=False,
            capture_output=True,
        )
        for argv in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
        ):
            out = run(argv, timeout=INSTALL_TIMEOUT, env=env)
            if out.returncode != 0:
                say(f"{shlex.join(argv)} failed: {out.stderr.strip()[-500:]}")
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"installing Postfix failed: {exc}")
    finally:
        if created_policy:
            with contextlib.suppress(OSError):
                policy.unlink()
    ok = os.access(SMTP_SOURCE, os.X_OK) and os.access(SMTP_SINK, os.X_OK)
    if not ok:
        say("smtp-source/smtp-sink still missing: the Postfix parts are skipped")
    return ok


def ensure_aiosmtpd(cache: Path) -> Path | None:
    """The Python of a virtualenv holding aiosmtpd 1.4.6 (created on first use)."""
    venv = cache / "aiosmtpd-venv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import aiosmtpd; print(aiosmtpd.__version__)"]
    try:
        if python.exists() and run(check, timeout=60).stdout.strip() == AIOSMTPD.split("==")[1]:
            return python
        say(f"creating {venv} with {AIOSMTPD}")
        out = run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=INSTALL_TIMEOUT)
        if out.returncode != 0:
            say(f"could not create the aiosmtpd virtualenv: {out.stderr.strip()[-500:]}")
            return None
        out = run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                AIOSMTPD,
            ],
            timeout=INSTALL_TIMEOUT,
        )
        if out.returncode != 0:
            say(f"could not install {AIOSMTPD}: {out.stderr.strip()[-500:]}")
            return None
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"aiosmtpd setup failed: {exc}")
        return None
    return python


def smtpd_trio_env() -> dict[str, str]:
    """The environment for smtpd-trio's process: the checkout on the path if not installed."""
    env = dict(os.environ)
    if importlib.util.find_spec("smtpd_trio") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# ---- running a server ----------------------------------------------------------------------


@dataclasses.dataclass
class Running:
    """A server process (and HAProxy in front of it, if any) and the port clients use."""

    pid: int
    port: int
    proxy_pid: int | None = None


def wait_ready(port: int, deadline: float, procs: Sequence[subprocess.Popen[bytes]]) -> bool:
    """True once a client gets a 220 banner on the port."""
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        s.recv(512)
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End one process we started (by its id, and its own process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def serving(
    plan: ServerPlan, settings: Settings, fd_limit: int, *, stop_signal: int = signal.SIGTERM
) -> Iterator[Running | None]:
    """Start the server (behind HAProxy if planned); always stop everything on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = settings.cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        port = free_port()
        argv = plan_argv(plan, port, settings)
        note_command(argv, port)
        env = smtpd_trio_env() if plan.key.startswith("smtpd-trio") else None
        with (logs / f"{plan.key}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    preexec_fn=child_limits,
                    start_new_session=True,
                )
            )
        client_port = port
        if plan.haproxy is not None:
            client_port = free_port()
            cfg = settings.cache / f"haproxy-{plan.haproxy}.cfg"
            maxconn = max(100, (fd_limit - FD_SPARE) // 2)
            cfg.write_text(
                HAPROXY_CONFIG.format(
                    maxconn=maxconn,
                    front=client_port,
                    back=port,
                    send_proxy=" send-proxy-v2" if plan.haproxy == "v2" else "",
                )
            )
            hargv = [HAPROXY, "-db", "-f", str(cfg)]
            note_command(hargv)
            with (logs / f"haproxy-{plan.haproxy}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        hargv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        preexec_fn=child_limits,
                        start_new_session=True,
                    )
                )
        if not wait_ready(client_port, time.monotonic() + START_TIMEOUT, procs):
            say(f"{plan.name}: did not come up; see {logs}")
            yield None
            return
        yield Running(
            pid=procs[0].pid,
            port=client_port,
            proxy_pid=procs[1].pid if len(procs) > 1 else None,
        )
    finally:
        for proc in reversed(procs):
            stop(proc, stop_signal if proc is procs[0] else signal.SIGTERM)


def plan_argv(plan: ServerPlan, port: int, settings: Settings) -> list[str]:
    cache = settings.cache
    if plan.key == "aiosmtpd":
        python = cache / "aiosmtpd-venv" / "bin" / "python"
        return [str(python), str(cache / "aiosmtpd_sink.py"), str(port)]
    if plan.key == "smtp-sink":
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        return [SMTP_SINK, *user, "-m", str(MAX_CONNECTIONS), f"{HOST}:{port}", "4096"]
    argv = [sys.executable, str(cache / "smtpd_trio_sink.py"), "--port", str(port)]
    if plan.haproxy == "v2":
        argv.append("--proxy-protocol")
    if plan.key.endswith("profile"):
        argv += ["--profile", str(cache / "smtpd-trio.prof")]
    return argv


# ---- loads ---------------------------------------------------------------------------------


def smtp_source_argv(
    port: int, messages: int, sessions: int, size: int, persistent: bool
) -> list[str]:
    argv = [SMTP_SOURCE]
    if persistent:
        argv.append("-d")
    argv += ["-s", str(sessions), "-m", str(messages), "-l", str(size)]
    argv += ["-f", SENDER, "-t", RECIPIENT, f"{HOST}:{port}"]
    return argv


def load(
    server: Running, argv: list[str], messages: int, *, record: bool = True
) -> tuple[float, float | None, float | None] | str:
    """Run smtp-source; (msg/s, server CPU s per 1,000 messages, proxy CPU) or a problem."""
    if record:
        note_command([*argv[:-1], "127.0.0.1:PORT"])
    before = cpu_seconds(server.pid)
    proxy_before = cpu_seconds(server.proxy_pid) if server.proxy_pid else None
    start = time.perf_counter()
    try:
        out = run(argv, timeout=max(120.0, messages / 50))
    except subprocess.TimeoutExpired:
        return "smtp-source timed out"
    wall = time.perf_counter() - start
    after = cpu_seconds(server.pid)
    proxy_after = cpu_seconds(server.proxy_pid) if server.proxy_pid else None
    if out.returncode != 0:
        return f"smtp-source exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}"
    cpu = None if before is None or after is None else (after - before) * 1000 / messages
    proxy_cpu = (
        None
        if proxy_before is None or proxy_after is None
        else (proxy_after - proxy_before) * 1000 / messages
    )
    return messages / wall, cpu, proxy_cpu


def repeated_load(
    server: Running, settings: Settings, messages: int, persistent: bool, result: Result
) -> tuple[float | None, float | None, float | None]:
    """The median msg/s and CPU over settings.repeat runs."""
    argv = smtp_source_argv(server.port, messages, settings.sessions, settings.size, persistent)
    rates: list[float] = []
    cpus: list[float] = []
    proxy_cpus: list[float] = []
    for _ in range(settings.repeat):
        got = load(server, argv, messages)
        if isinstance(got, str):
            result.notes.append(("persistent: " if persistent else "per connection: ") + got)
            continue
        rates.append(got[0])
        cpu = "—" if got[1] is None else f"{got[1]:.3f}"
        kind = "persistent" if persistent else "one per connection"
        say(f"  {kind}: {got[0]:,.0f} msg/s, server CPU {cpu} s per 1k msgs")
        if got[1] is not None:
            cpus.append(got[1])
        if got[2] is not None:
            proxy_cpus.append(got[2])
    return (
        statistics.median(rates) if rates else None,
        statistics.median(cpus) if cpus else None,
        statistics.median(proxy_cpus) if proxy_cpus else None,
    )


# ---- a raw-socket SMTP client --------------------------------------------------------------


class Client:
    """Just enough SMTP over a plain socket: send a line, read a whole (multi-line) reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
        self.buf = b""

    def line(self) -> bytes:
        """One reply line, with its CRLF."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[: end + 2], self.buf[end + 2 :]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk

    def reply(self) -> bytes:
        """One whole reply: lines up to the one with a space (not a dash) after the code."""
        lines = b""
        while True:
            line = self.line()
            lines += line
            if line[3:4] != b"-":
                return lines

    def command(self, data: bytes, expect: bytes) -> None:
        self.sock.sendall(data)
        got = self.reply()
        if not got.startswith(expect):
            raise ConnectionError(f"unexpected reply to {data[:20]!r}: {got[:80]!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def message_body(size: int) -> bytes:
    head = f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: benchmark\r\n\r\n".encode()
    text = bytearray(head)
    while len(text) < size:
        text += b"La la la la la la la la la la la la la la la la la la la la la la la.\r\n"
    return bytes(text[:size]).rstrip(b"\r\n") + b"\r\n.\r\n"


def latency(port: int, transactions: int, size: int) -> tuple[float, float] | str:
    """p50 and p99 of MAIL/RCPT/DATA/text transactions on one connection, in milliseconds."""
    warmup = min(100, transactions)
    body = message_body(size)
    mail = f"MAIL FROM:<{SENDER}>\r\n".encode()
    rcpt = f"RCPT TO:<{RECIPIENT}>\r\n".encode()
    times: list[float] = []
    try:
        client = Client(port)
    except OSError as exc:
        return f"latency: {exc}"
    try:
        client.reply()
        client.sock.sendall(b"EHLO bench.example\r\n")
        client.reply()
        for i in range(warmup + transactions):
            start = time.perf_counter()
            client.command(mail, b"250")
            client.command(rcpt, b"250")
            client.command(b"DATA\r\n", b"354")
            client.command(body, b"250")
            if i >= warmup:
                times.append(time.perf_counter() - start)
        client.sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        return f"latency: {exc}"
    finally:
        client.close()
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return statistics.median(times) * 1000, p99 * 1000


def idle_connections(pid: int, port: int, count: int) -> tuple[float, int] | str:
    """RSS per idle connection in KiB, and how many connections were held."""
    clients: list[Client] = []
    before = status_kib(pid, "VmRSS")
    try:
        for _ in range(count):
            try:
                client = Client(port)
            except OSError:
                break
            clients.append(client)
            try:
                if not client.reply().startswith(b"220"):
                    break
                client.sock.sendall(b"EHLO idle.example\r\n")
                if not client.reply().startswith(b"250"):
                    break
            except OSError:
                break
        time.sleep(1.0)
        after = status_kib(pid, "VmRSS")
    finally:
        for client in clients:
            client.close()
    held = len(clients)
    if before is None or after is None or held == 0:
        return "idle: could not read the server's memory"
    return (after - before) / held, held


# ---- one server, start to end --------------------------------------------------------------


def measure(plan: ServerPlan, settings: Settings, fd_limit: int, postfix: bool) -> Result:
    result = Result(plan.name)
    say(f"--- {plan.name}")
    # Idle connections on a fresh process, so no memory freed by a load is reused.
    idle = min(settings.idle, fd_limit - FD_SPARE)
    if plan.haproxy is not None:
        idle = min(idle, (fd_limit - FD_SPARE) // 2)
    if idle > 0:
        with serving(plan, settings, fd_limit) as server:
            if server is not None:
                warm = Client(server.port)
                with contextlib.suppress(OSError):
                    warm.reply()
                warm.close()
                time.sleep(0.3)
                got = idle_connections(server.pid, server.port, idle)
                if isinstance(got, str):
                    result.notes.append(got)
                else:
                    result.idle_kib, result.idle_count = got
                    if got[1] < idle:
                        result.notes.append(f"only {got[1]} of {idle} idle connections opened")
            else:
                result.notes.append("did not start")
    with serving(plan, settings, fd_limit) as server:
        if server is None:
            result.notes.append("did not start")
            return result
        if postfix:
            warmup = smtp_source_argv(server.port, 200, settings.sessions, settings.size, True)
            load(server, warmup, 200, record=False)
        if settings.latency > 0:
            lat = latency(server.port, settings.latency, settings.size)
            if isinstance(lat, str):
                result.notes.append(lat)
            else:
                result.p50_ms, result.p99_ms = lat
        if postfix:
            rate, cpu, pcpu = repeated_load(server, settings, settings.persistent, True, result)
            result.persistent_rate, result.cpu_persistent, result.proxy_cpu = rate, cpu, pcpu
            rate, cpu, _ = repeated_load(server, settings, settings.per_connection, False, result)
            result.per_connection_rate, result.cpu_per_connection = rate, cpu
        result.peak_rss_kib = status_kib(server.pid, "VmHWM")
    return result


def profile(settings: Settings, fd_limit: int) -> None:
    """smtpd-trio under cProfile through the persistent load; print the top entries."""
    plan = ServerPlan("smtpd-trio (cProfile)", "smtpd-trio-profile")
    stats_file = settings.cache / "smtpd-trio.prof"
    stats_file.unlink(missing_ok=True)
    with serving(plan, settings, fd_limit, stop_signal=signal.SIGINT) as server:
        if server is None:
            return
        argv = smtp_source_argv(
            server.port, settings.persistent, settings.sessions, settings.size, True
        )
        got = load(server, argv, settings.persistent)
        say(f"profiled load: {got if isinstance(got, str) else f'{got[0]:,.0f} msg/s'}")
    if not stats_file.exists():
        say("no profile was written")
        return
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(str(stats_file), stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(15)
        say(f"\n== top 15 by {key} ==")
        say(out.getvalue().split("\n\n", 1)[-1].rstrip())


# ---- report --------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}x"


def machine_facts(aiosmtpd_python: Path | None, postfix: bool) -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        trio_version = importlib.metadata.version("trio")
    except importlib.metadata.PackageNotFoundError:
        trio_version = "not installed"
    try:
        ours = importlib.metadata.version("smtpd-trio")
    except importlib.metadata.PackageNotFoundError:
        ours = "checkout"
    facts = [
        f"CPU: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}",
        f"Python {platform.python_version()} ({sys.executable}); trio {trio_version}; "
        f"smtpd-trio {ours}",
    ]
    if aiosmtpd_python is not None:
        facts.append(f"aiosmtpd: {first_line([str(aiosmtpd_python), '-c', AIO_VERSION])}")
    if postfix:
        facts.append(f"Postfix: {first_line(['postconf', '-d', 'mail_version'])}")
    if os.access(HAPROXY, os.X_OK):
        facts.append(f"HAProxy: {first_line([HAPROXY, '-v'])}")
    return facts


AIO_VERSION: Final = (
    "import sys, aiosmtpd; print(aiosmtpd.__version__, 'on Python', sys.version.split()[0])"
)


def report(results: list[Result], settings: Settings, facts: list[str]) -> None:
    header = [
        "server",
        "persistent msg/s",
        "1/conn msg/s",
        "CPU s/1k (pers.)",
        "CPU s/1k (1/conn)",
        "peak RSS MiB",
        "KiB/idle conn",
        "p50 ms",
        "p99 ms",
    ]
    rows = [
        [
            r.name,
            fmt(r.persistent_rate, ",.0f"),
            fmt(r.per_connection_rate, ",.0f"),
            fmt(r.cpu_persistent, ".3f"),
            fmt(r.cpu_per_connection, ".3f"),
            fmt(None if r.peak_rss_kib is None else r.peak_rss_kib / 1024, ".1f"),
            fmt(r.idle_kib, ".2f"),
            fmt(r.p50_ms, ".3f"),
            fmt(r.p99_ms, ".3f"),
        ]
        for r in results
    ]
    base = next((r for r in results if r.name.startswith("aiosmtpd")), None)
    ratio_header = ["server", "persistent", "1/conn", "CPU/msg (pers.)", "KiB/idle", "p50"]
    ratio_rows = [
        [
            r.name,
            ratio(r.persistent_rate, base.persistent_rate),
            ratio(r.per_connection_rate, base.per_connection_rate),
            ratio(r.cpu_persistent, base.cpu_persistent),
            ratio(r.idle_kib, base.idle_kib),
            ratio(r.p50_ms, base.p50_ms),
        ]
        for r in results
        if base is not None
    ]
    say("")
    say("== machine ==")
    for fact in facts:
        say(fact)
    say("")
    say(
        f"== results: {settings.sessions} sessions, {settings.size}-octet messages; persistent "
        f"{settings.persistent:,} msgs, one per connection {settings.per_connection:,} msgs "
        f"(median of {settings.repeat}); idle connections {settings.idle:,}; latency "
        f"{settings.latency:,} sequential transactions on one connection, server otherwise idle"
    )
    say(markdown_table(header, rows))
    if ratio_rows:
        say("")
        say("== ratios vs aiosmtpd (throughput: higher is better; CPU, memory, latency: lower) ==")
        say(markdown_table(ratio_header, ratio_rows))
    ours = next((r for r in results if r.name == "smtpd-trio"), None)
    if ours is not None and base is not None:
        say("")
        say("== targets ==")
        say(target("persistent >= 3x aiosmtpd", ours.persistent_rate, base.persistent_rate, 3))
        say(
            target(
                "one per connection >= 2x", ours.per_connection_rate, base.per_connection_rate, 2
            )
        )
        idle = "—" if ours.idle_kib is None else f"{ours.idle_kib:.2f} KiB"
        verdict = "unknown" if ours.idle_kib is None else "met" if ours.idle_kib <= 8 else "missed"
        say(f"<= 8 KiB per idle connection: {idle} ({verdict})")
    notes = [(r.name, n) for r in results for n in r.notes]
    proxy = [r for r in results if r.proxy_cpu is not None]
    if notes or proxy:
        say("")
        say("== notes ==")
        for name, text in notes:
            say(f"{name}: {text}")
        for r in proxy:
            say(f"{r.name}: HAProxy itself used {r.proxy_cpu:.3f} CPU s per 1k msgs (persistent)")
    say("")
    say("== commands ==")
    for line in COMMANDS:
        say(f"  {line}")


def target(label: str, ours: float | None, theirs: float | None, factor: float) -> str:
    if ours is None or theirs is None:
        return f"{label}: unknown"
    got = ours / theirs
    return f"{label}: {got:.2f}x ({'met' if got >= factor else 'missed'})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


# ---- main ----------------------------------------------------------------------------------

ALL_SERVERS: Final = ("smtpd-trio", "aiosmtpd", "smtp-sink", "haproxy")


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, bool]:
    p = argparse.ArgumentParser(
        description="Side-by-side SMTP benchmark (smtpd-trio, aiosmtpd, Postfix smtp-sink).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            Full run (the default) takes a few minutes; --quick about one.
            Examples:
              nox -s bench
              nox -s bench -- --quick
              python bench/run.py --servers smtpd-trio,aiosmtpd --persistent 20000
              python bench/run.py --profile
            """
        ),
    )
    p.add_argument("--quick", action="store_true", help="short run: smaller counts, one repeat")
    p.add_argument("--persistent", type=int, help="messages, persistent sessions (20000)")
    p.add_argument("--per-connection", type=int, help="messages, one per connection (5000)")
    p.add_argument("--sessions", type=int, default=20, help="smtp-source sessions (20)")
    p.add_argument("--size", type=int, default=1024, help="message size in octets (1024)")
    p.add_argument("--idle", type=int, help="idle connections held (10000; quick 2000)")
    p.add_argument("--latency", type=int, help="transactions timed for p50/p99 (2000)")
    p.add_argument("--repeat", type=int, help="runs of each load, median kept (3; quick 1)")
    p.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated subset of {','.join(ALL_SERVERS)}",
    )
    p.add_argument("--cache", type=Path, default=ROOT / ".bench-cache", help="cache directory")
    p.add_argument("--profile", action="store_true", help="profile smtpd-trio (persistent load)")
    args = p.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: int | None, full: int, short: int) -> int:
        return value if value is not None else short if quick else full

    settings = Settings(
        persistent=pick(args.persistent, 20_000, 2_000),
        per_connection=pick(args.per_connection, 5_000, 1_000),
        sessions=args.sessions,
        size=args.size,
        idle=pick(args.idle, 10_000, 2_000),
        latency=pick(args.latency, 2_000, 500),
        repeat=max(1, pick(args.repeat, 3, 1)),
        cache=args.cache.resolve(),
        servers=frozenset(s.strip() for s in args.servers.split(",") if s.strip()),
    )
    return settings, bool(args.profile)


def main(argv: Sequence[str] | None = None) -> int:
    settings, want_profile = parse_args(argv)
    settings.cache.mkdir(parents=True, exist_ok=True)
    (settings.cache / "smtpd_trio_sink.py").write_text(
        TRIO_LAUNCHER % {"max_connections": MAX_CONNECTIONS}
    )
    (settings.cache / "aiosmtpd_sink.py").write_text(
        AIOSMTPD_SERVER % {"max_size": MAX_MESSAGE_SIZE}
    )
    fd_limit = raise_fd_limit()
    postfix = ensure_postfix()
    if want_profile:
        if not postfix:
            say("profiling needs smtp-source")
            return 1
        profile(settings, fd_limit)
        return 0
    aiosmtpd_python = ensure_aiosmtpd(settings.cache) if "aiosmtpd" in settings.servers else None
    started = time.monotonic()
    plans: list[ServerPlan] = []
    if "smtpd-trio" in settings.servers:
        plans.append(ServerPlan("smtpd-trio", "smtpd-trio"))
    if aiosmtpd_python is not None:
        plans.append(ServerPlan("aiosmtpd 1.4.6", "aiosmtpd"))
    if "smtp-sink" in settings.servers and postfix:
        plans.append(ServerPlan("Postfix smtp-sink", "smtp-sink"))
    if "haproxy" in settings.servers:
        if os.access(HAPROXY, os.X_OK):
            plans.append(ServerPlan("smtpd-trio via HAProxy", "smtpd-trio-haproxy", "plain"))
            plans.append(
                ServerPlan("smtpd-trio via HAProxy, PROXY v2", "smtpd-trio-haproxy-v2", "v2")
            )
        else:
            say(f"{HAPROXY} not found: the HAProxy rows are skipped")
    say(f"file descriptors: {fd_limit}; cache: {settings.cache}")
    results: list[Result] = []
    for plan in plans:
        try:
            results.append(measure(plan, settings, fd_limit, postfix))
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            results.append(Result(plan.name, notes=[f"could not run: {exc}"]))
    report(results, settings, machine_facts(aiosmtpd_python, postfix))
    say(f"\ntotal time: {time.monotonic() - started:.0f} s")
    measured = any(r.persistent_rate or r.idle_kib or r.p50_ms for r in results)
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
