#!/usr/bin/env python3
"""Side-by-side SMTP benchmark: smtpd-trio, a minimal Trio sink (the floor), aiosmtpd 1.4.6 and
Postfix's smtp-sink.

Run it with ``nox -s bench`` (or ``python bench/run.py`` in an environment where smtpd-trio is
installed). It uses the standard library only; what it needs besides, it installs itself:

* aiosmtpd 1.4.6 in its own virtualenv under ``.bench-cache/aiosmtpd-venv``;
* Postfix (for ``smtp-source`` and ``smtp-sink``) through apt when we are root on Debian, with
  the daemon kept from starting; otherwise the Postfix parts are skipped with a message.

Each server runs on a loopback port, as its own process, in rounds: each round starts every server
in turn and runs each load on it once, and the figures are the medians of the rounds (so drift
in a shared machine's speed during the run moves every row alike):

* smtpd-trio (launcher): a launcher written into the cache dir calls ``serve_smtp`` with the
  ``Sink`` handler and ``Config(max_connections=20000, max_connections_per_client=None,
  command_timeout=300)``, logging at WARNING;
* smtpd-trio CLI: ``python -m smtpd_trio --handler sink --port P --max-connections 20000
  --max-connections-per-ip 0`` (the load comes from one address), the
  CLI's default settings, its INFO log (stderr) going to a file in the cache dir;
* the floor: a featureless Trio SMTP sink written into the cache dir (banner, fixed replies,
  the end-of-data marker found with ``bytes.find``): what any Trio server costs on this machine;
* aiosmtpd: a handler whose ``handle_DATA`` returns ``"250 OK"``, served by
  ``loop.create_server`` with the same 10,240,000-octet size limit, logging at WARNING;
* Postfix ``smtp-sink`` (C; the practical ceiling);
* if ``/usr/sbin/haproxy`` exists: the smtpd-trio launcher behind HAProxy, once plain and once
  with ``send-proxy-v2`` and ``--proxy-protocol`` (the PROXY cost read against the same proxy).

Loads, the same for every server:

* lockstep (Postfix ``smtp-source``, 20 sessions, 1 KiB messages): persistent sessions, and one
  message per connection; each command waits for its reply;
* pipelined (our own client, 20 connections): MAIL, RCPT and DATA in one write, then the message
  text, the final dot and the next transaction's MAIL, RCPT and DATA in one write (RFC 2920);
  every reply code is checked;
* connections (our own client, 20 at a time): connect, read the 220, QUIT, read the 221, close.

Figures: msg/s (or conn/s), server CPU seconds per 1,000 messages (or connections;
``/proc/PID/stat`` utime+stime over the server's process group), the load generator's own CPU,
which of server, load generator and machine was busy (so a client-bound figure is flagged),
peak RSS (``VmHWM``), RSS per idle connection (a fresh server process; N sockets that connected,
read the banner and sent EHLO; VmRSS after - before, / N), and the p50/p99 latency of one
MAIL/RCPT/DATA transaction on one connection while the server is otherwise idle. The script
never fails on a figure: it exits non-zero only when nothing could be measured at all. Every
target is on 127.0.0.1.

``--workers-scaling [N]`` adds the CLI with ``--workers 1`` and ``--workers N`` (N: the cores we
may use), the load generator pinned to other cores where there are any, and a projection for 16
cores. ``--profile`` runs the smtpd-trio launcher alone under cProfile through the persistent
load and prints the top entries by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno
import functools
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import pstats
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

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
TASKSET: Final = shutil.which("taskset")
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
INSTALL_TIMEOUT: Final = 600.0
SOCKET_TIMEOUT: Final = 30.0
PROBE_TIMEOUT: Final = 5.0
FD_WANTED: Final = 65_536
FD_SPARE: Final = 200
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
BUSY: Final = 0.85  # a process using this much of a core (or more) is what limits a load
PROJECTED_CORES: Final = 16

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
# The load comes from one address: the per-client limit would refuse it.
fields = {
    "max_connections": %(max_connections)d,
    "max_connections_per_client": None,
    "command_timeout": 300.0,
}
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

FLOOR_SERVER: Final = '''\
"""The floor: the least a Trio SMTP sink does for the benchmark's loads. No features, no
parsing beyond a command's first four letters, no logging, no limits, no timeouts."""

import functools
import sys

import trio

BANNER = b"220 floor.example ESMTP\\r\\n"
OK = b"250 OK\\r\\n"
REPLIES = {
    b"EHLO": b"250-floor.example\\r\\n250-PIPELINING\\r\\n250 8BITMIME\\r\\n",
    b"HELO": b"250 floor.example\\r\\n",
    b"MAIL": OK,
    b"RCPT": OK,
    b"RSET": OK,
    b"NOOP": OK,
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\\r\\n",
    b"QUIT": b"221 Bye\\r\\n",
}
UNKNOWN = b"500 Unknown command\\r\\n"
END = b"\\r\\n.\\r\\n"


async def session(stream):
    buf = b""
    in_data = False
    try:
        await stream.send_all(BANNER)
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            out = []
            while True:
                if in_data:
                    end = buf.find(END)
                    if end < 0:
                        buf = buf[-4:]  # the marker may be split between two reads
                        break
                    buf = buf[end + 5 :]
                    in_data = False
                    out.append(OK)
                    continue
                end = buf.find(b"\\r\\n")
                if end < 0:
                    break
                verb = buf[:4].upper()
                buf = buf[end + 2 :]
                out.append(REPLIES.get(verb, UNKNOWN))
                if verb == b"DATA":
                    in_data = True
                    buf = b"\\r\\n" + buf  # so that an empty message's lone dot is found
                elif verb == b"QUIT":
                    await stream.send_all(b"".join(out))
                    return
            if out:
                await stream.send_all(b"".join(out))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


try:
    trio.run(functools.partial(trio.serve_tcp, session, int(sys.argv[1]), host="127.0.0.1"))
except KeyboardInterrupt:
    pass
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

LOADS: Final = ("persistent", "per-connection", "pipelined", "connections")
LOAD_LABELS: Final = {
    "persistent": "persistent",
    "per-connection": "1/conn",
    "pipelined": "pipelined",
    "connections": "conn/s",
}
MESSAGE_LOADS: Final = ("persistent", "per-connection", "pipelined")


@dataclasses.dataclass(frozen=True)
class Settings:
    persistent: int
    per_connection: int
    pipelined: int
    connections: int
    sessions: int
    client_procs: int
    size: int
    idle: int
    latency: int
    repeat: int
    cache: Path
    servers: tuple[str, ...]
    loads: frozenset[str]
    scaling: int | None  # N for --workers N, or None: no scaling section

    def count(self, load: str) -> int:
        return {
            "persistent": self.persistent,
            "per-connection": self.per_connection,
            "pipelined": self.pipelined,
            "connections": self.connections,
        }[load]


@dataclasses.dataclass
class LoadRun:
    """One load against one server: rates are per message, or per connection for conn/s."""

    rate: float
    server_cpu: float | None  # CPU seconds per 1,000 messages (or connections)
    client_cpu: float | None  # the load generator's CPU seconds per 1,000
    proxy_cpu: float | None = None
    server_busy: float | None = None  # cores the server's processes kept busy
    client_busy: float | None = None  # the busiest load-generator process, in cores
    machine_busy: float | None = None  # the whole machine, in cores (other work included)
    bound: str = "unknown"
    pipelining: bool | None = None  # did the server advertise PIPELINING (our clients only)


@dataclasses.dataclass
class Result:
    name: str
    key: str
    loads: dict[str, LoadRun] = dataclasses.field(default_factory=dict)
    # Each load's run in each round (None where it could not run), for ratios taken round by
    # round (see paired).
    rounds: dict[str, list[LoadRun | None]] = dataclasses.field(default_factory=dict)
    peak_rss_kib: int | None = None
    idle_kib: float | None = None
    idle_count: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def rate(self, load: str) -> float | None:
        run = self.loads.get(load)
        return None if run is None else run.rate

    def cpu(self, load: str) -> float | None:
        run = self.loads.get(load)
        return None if run is None else run.server_cpu


@dataclasses.dataclass(frozen=True)
class ServerPlan:
    """How to start one server: its command, HAProxy in front or not, workers and pinning."""

    name: str
    key: str
    haproxy: str | None = None  # None, "plain" or "v2"
    workers: int | None = None  # the CLI's --workers, when given
    cpus: tuple[int, ...] | None = None  # pinned to these CPUs (taskset), or not pinned


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


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def pinned(argv: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    """``argv`` under ``taskset -c CPUS`` (taskset execs it: the pid stays the same)."""
    if not cpus or TASKSET is None:
        return list(argv)
    return [TASKSET, "-c", ",".join(map(str, cpus)), *argv]


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _stat_fields(path: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], pgrp [2])."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_cpu(pgid: int) -> float | None:
    """utime + stime of every process in a process group (a supervisor and its workers)."""
    total = 0.0
    found = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(f"{entry.path}/stat")
        if fields is None or int(fields[2]) != pgid:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        found = True
    return total if found else None


def machine_jiffies() -> tuple[int, int] | None:
    """(all, idle) clock ticks of the whole machine so far (/proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(values), values[3] + values[4]


def children_cpu() -> float:
    """CPU seconds of our reaped child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def listeners_on(port: int) -> int:
    """How many sockets listen on a TCP port (several with SO_REUSEPORT workers)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 3
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                count += 1
    return count


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
    """A server (its process group) and HAProxy in front of it, if any; the port clients use."""

    pid: int
    port: int
    proxy_pid: int | None = None
    workers: int = 1


def wait_ready(
    port: int, deadline: float, procs: Sequence[subprocess.Popen[bytes]], listeners: int = 1
) -> bool:
    """True once a client gets a 220 banner on the port and ``listeners`` sockets listen."""
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        s.recv(512)
                    if listeners_on(port) >= listeners:
                        return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
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
        argv = pinned(plan_argv(plan, port, settings.cache), plan.cpus)
        note_command(argv, port)
        env = smtpd_trio_env() if plan.key.startswith(("smtpd-trio", "floor")) else None
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
        workers = plan.workers or 1
        listeners = workers if plan.haproxy is None else 1
        if not wait_ready(client_port, time.monotonic() + START_TIMEOUT, procs, listeners):
            say(f"{plan.name}: did not come up; see {logs}")
            yield None
            return
        yield Running(
            pid=procs[0].pid,
            port=client_port,
            proxy_pid=procs[1].pid if len(procs) > 1 else None,
            workers=workers,
        )
    finally:
        for proc in reversed(procs):
            stop(proc, stop_signal if proc is procs[0] else signal.SIGTERM)


def plan_argv(plan: ServerPlan, port: int, cache: Path) -> list[str]:
    """The command that starts ``plan``'s server on ``port`` (scripts from write_scripts)."""
    if plan.key == "aiosmtpd":
        python = cache / "aiosmtpd-venv" / "bin" / "python"
        return [str(python), str(cache / "aiosmtpd_sink.py"), str(port)]
    if plan.key == "smtp-sink":
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        return [SMTP_SINK, *user, "-m", str(MAX_CONNECTIONS), f"{HOST}:{port}", "4096"]
    if plan.key == "floor":
        return [sys.executable, str(cache / "trio_floor.py"), str(port)]
    if plan.key == "smtpd-trio-cli":
        argv = [sys.executable, "-m", "smtpd_trio", "--handler", "sink", "--port", str(port)]
        argv += ["--max-connections", str(MAX_CONNECTIONS)]
        # The load comes from one address: the per-client limit would refuse it.
        argv += ["--max-connections-per-ip", "0"]
        if plan.workers is not None:
            argv += ["--workers", str(plan.workers)]
        return argv
    argv = [sys.executable, str(cache / "smtpd_trio_sink.py"), "--port", str(port)]
    if plan.haproxy == "v2":
        argv.append("--proxy-protocol")
    if plan.key.endswith("profile"):
        argv += ["--profile", str(cache / "smtpd-trio.prof")]
    return argv


# ---- measuring a load ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Snapshot:
    at: float
    server: float | None
    proxy: float | None
    machine: tuple[int, int] | None


def snapshot(server: Running) -> Snapshot:
    return Snapshot(
        at=time.perf_counter(),
        server=group_cpu(server.pid),
        proxy=cpu_seconds(server.proxy_pid) if server.proxy_pid else None,
        machine=machine_jiffies(),
    )


def figures(
    server: Running,
    before: Snapshot,
    after: Snapshot,
    count: int,
    client_cpu: float | None,
    client_busy: float | None,
    cores: int,
) -> LoadRun:
    """msg/s (or conn/s), CPU per 1,000, busy cores and which of them limited the load."""
    wall = after.at - before.at
    server_cpu = None
    if before.server is not None and after.server is not None:
        server_cpu = after.server - before.server
    proxy_cpu = None
    if before.proxy is not None and after.proxy is not None:
        proxy_cpu = after.proxy - before.proxy
    machine = None
    if before.machine is not None and after.machine is not None:
        ticks = after.machine[0] - before.machine[0]
        idle = after.machine[1] - before.machine[1]
        machine = (ticks - idle) / CLK_TCK / wall
    run = LoadRun(
        rate=count / wall,
        server_cpu=None if server_cpu is None else server_cpu * 1000 / count,
        client_cpu=None if client_cpu is None else client_cpu * 1000 / count,
        proxy_cpu=None if proxy_cpu is None else proxy_cpu * 1000 / count,
        server_busy=None if server_cpu is None else server_cpu / wall,
        client_busy=client_busy,
        machine_busy=machine,
    )
    run.bound = bottleneck(
        run, server.workers, None if proxy_cpu is None else proxy_cpu / wall, cores
    )
    return run


def bottleneck(run: LoadRun, workers: int, proxy_busy: float | None, cores: int) -> str:
    """Which process (or the whole machine) had no CPU left to give."""
    limits = []
    if run.server_busy is not None and run.server_busy >= BUSY * workers:
        limits.append("server")
    if run.client_busy is not None and run.client_busy >= BUSY:
        limits.append("client")
    if proxy_busy is not None and proxy_busy >= BUSY:
        limits.append("proxy")
    if limits:
        return "+".join(limits) + "-bound"
    if run.machine_busy is not None and run.machine_busy >= BUSY * cores:
        return "machine full"
    return "no core saturated"


def describe(run: LoadRun, unit: str) -> str:
    """One progress line for a load."""
    parts = [f"{run.rate:,.0f} {unit}/s"]
    if run.server_cpu is not None:
        parts.append(f"server CPU {run.server_cpu:.3f} s per 1k")
    if run.client_cpu is not None:
        parts.append(f"load generator CPU {run.client_cpu:.3f} s per 1k")
    busy = [
        f"{label} {value:.2f}"
        for label, value in (
            ("server", run.server_busy),
            ("load generator", run.client_busy),
            ("machine", run.machine_busy),
        )
        if value is not None
    ]
    if busy:
        parts.append("busy cores: " + ", ".join(busy))
    return "; ".join(parts) + f" [{run.bound}]"


def median_run(runs: Sequence[LoadRun]) -> LoadRun:
    """The median of each figure; the verdict of the run with the median rate."""

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    middle = sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]
    return LoadRun(
        rate=statistics.median(r.rate for r in runs),
        server_cpu=med([r.server_cpu for r in runs]),
        client_cpu=med([r.client_cpu for r in runs]),
        proxy_cpu=med([r.proxy_cpu for r in runs]),
        server_busy=med([r.server_busy for r in runs]),
        client_busy=med([r.client_busy for r in runs]),
        machine_busy=med([r.machine_busy for r in runs]),
        bound=middle.bound,
        pipelining=middle.pipelining,
    )


# ---- the lockstep load: Postfix smtp-source ------------------------------------------------


def smtp_source_argv(
    port: int, messages: int, sessions: int, size: int, persistent: bool
) -> list[str]:
    argv = [SMTP_SOURCE]
    if persistent:
        argv.append("-d")
    argv += ["-s", str(sessions), "-m", str(messages), "-l", str(size)]
    argv += ["-f", SENDER, "-t", RECIPIENT, f"{HOST}:{port}"]
    return argv


@dataclasses.dataclass(frozen=True)
class LoadShape:
    """How the load generator runs: connections, processes, and the CPUs it is pinned to."""

    sessions: int
    procs: int = 1
    cpus: tuple[int, ...] | None = None
    cores: int = 1  # the cores the machine gives to the server and the load together


def source_load(
    server: Running,
    messages: int,
    size: int,
    persistent: bool,
    shape: LoadShape,
    *,
    record: bool = True,
) -> LoadRun | str:
    """smtp-source (in ``shape.procs`` processes at once); the figures, or what went wrong."""
    procs = max(1, min(shape.procs, shape.sessions, messages))
    argvs = [
        pinned(smtp_source_argv(server.port, m, s, size, persistent), shape.cpus)
        for m, s in zip(split(messages, procs), split(shape.sessions, procs), strict=True)
    ]
    if record:
        for argv in argvs:
            note_command(argv, server.port)
    timeout = max(120.0, messages / 50)
    children_before = children_cpu()
    before = snapshot(server)
    started: list[subprocess.Popen[str]] = []
    problems: list[str] = []
    try:
        started.extend(  # one by one: those started before a failure are stopped
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            for argv in argvs
        )
        deadline = time.monotonic() + timeout
        for proc in started:
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return "smtp-source timed out"
            if proc.returncode != 0:
                problems.append(f"smtp-source exited {proc.returncode}: {out.strip()[-300:]}")
        after = snapshot(server)
    finally:
        for proc in started:
            stop(proc)
    if problems:
        return problems[0]
    generator = children_cpu() - children_before
    wall = after.at - before.at
    return figures(
        server, before, after, messages, generator, generator / procs / wall, shape.cores
    )


# ---- our own loads: a pipelining client and a connection churner ---------------------------


MAIL_CMD: Final = f"MAIL FROM:<{SENDER}>\r\n".encode()
RCPT_CMD: Final = f"RCPT TO:<{RECIPIENT}>\r\n".encode()
TRANSACTION: Final = MAIL_CMD + RCPT_CMD + b"DATA\r\n"
# What each reply answers, and the code it must carry.
R_MAIL, R_RCPT, R_DATA, R_DOT, R_QUIT = range(5)
EXPECTED: Final = (b"250", b"250", b"354", b"250", b"221")
ANSWERS: Final = ("MAIL", "RCPT", "DATA", "the final dot", "QUIT")


class _Piped:
    """One pipelining connection: its socket, unread input, replies awaited, unsent output."""

    __slots__ = ("buf", "out", "pending", "sock")

    def __init__(self, sock: socket.socket, buf: bytes) -> None:
        self.sock = sock
        self.buf = buf
        self.out = b""
        self.pending: collections.deque[int] = collections.deque()


class PipelinedClient:
    """Postfix's smtp client with PIPELINING, as RFC 2920 allows: MAIL, RCPT and DATA in one
    write; after the 354, the message text, the final dot and the next transaction's MAIL,
    RCPT and DATA (or QUIT after the last) in one write. Every reply code is checked."""

    def __init__(self, port: int, connections: int, messages: int, size: int) -> None:
        self.port = port
        self.connections = connections
        self.left = messages
        self.done = 0
        self.errors: list[str] = []
        self.advertised = True
        body = message_body(size)
        self.more = body + TRANSACTION
        self.last = body + b"QUIT\r\n"
        self.conns: list[_Piped] = []
        self.selector = selectors.DefaultSelector()

    def prepare(self) -> None:
        """Connect, read the banners, EHLO: not timed."""
        for _ in range(self.connections):
            client = Client(self.port)
            self.conns.append(_Piped(client.sock, b""))
            banner = client.reply()
            if not banner.startswith(b"220"):
                raise ConnectionError(f"banner: {banner[:80]!r}")
            client.sock.sendall(b"EHLO bench.example\r\n")
            ehlo = client.reply()
            if not ehlo.startswith(b"250"):
                raise ConnectionError(f"EHLO: {ehlo[:80]!r}")
            if b"PIPELINING" not in ehlo.upper():
                self.advertised = False
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.sock.setblocking(False)
            self.conns[-1].buf = client.buf

    def run(self, timeout: float) -> None:
        active = 0
        for conn in self.conns:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            active += 1
            if self.left > 0:
                self.left -= 1
                conn.pending.extend((R_MAIL, R_RCPT, R_DATA))
                self.send(conn, TRANSACTION)
            else:
                conn.pending.append(R_QUIT)
                self.send(conn, b"QUIT\r\n")
        while active:
            events = self.selector.select(timeout)
            if not events:
                self.errors.append(f"no reply for {timeout:.0f} s")
                break
            for key, mask in events:
                conn = key.data
                if mask & selectors.EVENT_WRITE:
                    self.send(conn, b"")
                if mask & selectors.EVENT_READ and self.readable(conn):
                    self.selector.unregister(conn.sock)
                    conn.sock.close()
                    active -= 1

    def send(self, conn: _Piped, data: bytes) -> None:
        data = conn.out + data
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        had = bool(conn.out)
        conn.out = data[sent:]
        if bool(conn.out) != had:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
            self.selector.modify(conn.sock, events, conn)

    def readable(self, conn: _Piped) -> bool:
        """Take what arrived; True when this connection is finished (QUIT answered, or failed)."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.errors.append(f"after {self.done} messages: {exc}")
            return True
        if not data:
            self.errors.append(f"the server closed a connection after {self.done} messages")
            return True
        buf = conn.buf + data
        start = 0
        while (end := buf.find(b"\r\n", start)) >= 0:
            line = buf[start:end]
            start = end + 2
            if line[3:4] == b"-":
                continue
            if not conn.pending:
                self.errors.append(f"a reply nothing asked for: {line[:80]!r}")
                return True
            answers = conn.pending.popleft()
            if line[:3] != EXPECTED[answers]:
                self.errors.append(f"{ANSWERS[answers]} answered {line[:80]!r}")
                return True
            if answers == R_DOT:
                self.done += 1
            elif answers == R_DATA:
                if self.left > 0:
                    self.left -= 1
                    conn.pending.extend((R_DOT, R_MAIL, R_RCPT, R_DATA))
                    self.send(conn, self.more)
                else:
                    conn.pending.extend((R_DOT, R_QUIT))
                    self.send(conn, self.last)
            elif answers == R_QUIT:
                return True
        conn.buf = buf[start:]
        return False


class _Churned:
    __slots__ = ("buf", "quit_sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.quit_sent = False


class ConnectionClient:
    """``connections`` at a time: connect, read the 220, QUIT, read the 221, close; again."""

    def __init__(self, port: int, connections: int, count: int) -> None:
        self.port = port
        self.connections = connections
        self.left = count
        self.done = 0
        self.errors: list[str] = []
        self.advertised = True
        self.selector = selectors.DefaultSelector()

    def prepare(self) -> None:
        pass

    def start(self) -> bool:
        self.left -= 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.errors.append(f"connect: {os.strerror(err)}")
            return False
        self.selector.register(sock, selectors.EVENT_READ, _Churned(sock))
        return True

    def run(self, timeout: float) -> None:
        active = sum(self.start() for _ in range(min(self.connections, self.left)))
        while active:
            events = self.selector.select(timeout)
            if not events:
                self.errors.append(f"no reply for {timeout:.0f} s")
                break
            for key, _mask in events:
                conn = key.data
                if not self.readable(conn):
                    continue
                self.selector.unregister(conn.sock)
                conn.sock.close()
                active -= 1
                if self.left > 0 and not self.errors and self.start():
                    active += 1

    def readable(self, conn: _Churned) -> bool:
        """True when this connection is finished (221 read, or failed)."""
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.errors.append(f"after {self.done} connections: {exc}")
            return True
        if not data:
            self.errors.append(f"closed before the {'221' if conn.quit_sent else '220'}")
            return True
        conn.buf += data
        while (end := conn.buf.find(b"\r\n")) >= 0:
            line, conn.buf = conn.buf[:end], conn.buf[end + 2 :]
            if line[3:4] == b"-":
                continue
            if not conn.quit_sent:
                if not line.startswith(b"220"):
                    self.errors.append(f"banner {line[:80]!r}")
                    return True
                conn.quit_sent = True
                conn.sock.send(b"QUIT\r\n")
            elif line.startswith(b"221"):
                self.done += 1
                return True
            else:
                self.errors.append(f"QUIT answered {line[:80]!r}")
                return True
        return False


def client_worker(argv: Sequence[str]) -> int:
    """One load-generator process: prepare, say "ready", wait for "go", run, print figures."""
    mode, port, connections, count, size, timeout = argv
    worker: PipelinedClient | ConnectionClient
    if mode == "pipelined":
        worker = PipelinedClient(int(port), int(connections), int(count), int(size))
    else:
        worker = ConnectionClient(int(port), int(connections), int(count))
    try:
        worker.prepare()
    except OSError as exc:
        print(json.dumps({"error": f"could not prepare the connections: {exc}"}), flush=True)
        return 1
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    worker.run(float(timeout))
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    print(
        json.dumps(
            {
                "done": worker.done,
                "errors": worker.errors[:3],
                "cpu": cpu,
                "elapsed": elapsed,
                "pipelining": worker.advertised,
            }
        ),
        flush=True,
    )
    return 0


def own_load(
    server: Running,
    mode: str,
    count: int,
    size: int,
    shape: LoadShape,
    *,
    timeout: float = SOCKET_TIMEOUT,
    record: bool = True,
) -> LoadRun | str:
    """Our client (``pipelined`` or ``connect``) in ``shape.procs`` processes; the figures."""
    procs = max(1, min(shape.procs, shape.sessions, count))
    script = str(Path(__file__).resolve())
    worker = [sys.executable, script, "--client-worker", mode, str(server.port)]
    argvs = [
        pinned([*worker, str(c), str(n), str(size), str(timeout)], shape.cpus)
        for c, n in zip(split(shape.sessions, procs), split(count, procs), strict=True)
    ]
    if record:
        for argv in argvs:
            note_command(argv, server.port)
    started: list[subprocess.Popen[str]] = []
    try:
        started.extend(  # one by one: those started before a failure are stopped
            subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for argv in argvs
        )
        for proc in started:
            line = _line(proc)
            if line != "ready":
                return worker_problem(proc, line)
        before = snapshot(server)
        for proc in started:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [_line(proc) for proc in started]
        after = snapshot(server)
        done, errors, cpu, busy, advertised = 0, [], 0.0, 0.0, True
        for proc, line in zip(started, reports, strict=True):
            try:
                got = json.loads(line)
            except ValueError:
                return worker_problem(proc, line)
            done += got["done"]
            errors += got["errors"]
            cpu += got["cpu"]
            busy = max(busy, got["cpu"] / max(got["elapsed"], 1e-9))
            advertised = advertised and got["pipelining"]
    except OSError as exc:
        return f"load generator: {exc}"
    finally:
        for proc in started:
            stop(proc)
    if errors or done != count:
        what = "messages" if mode == "pipelined" else "connections"
        return f"{done:,} of {count:,} {what} done; " + "; ".join(errors or ["no error seen"])
    run = figures(server, before, after, count, cpu, busy, shape.cores)
    run.pipelining = advertised if mode == "pipelined" else None
    return run


def _line(proc: subprocess.Popen[str]) -> str:
    out: IO[str] | None = proc.stdout
    return "" if out is None else out.readline().strip()


def worker_problem(proc: subprocess.Popen[str], line: str) -> str:
    with contextlib.suppress(ValueError):
        got = json.loads(line)
        if isinstance(got, dict) and "error" in got:
            return str(got["error"])
    stop(proc)
    err = proc.stderr.read() if proc.stderr is not None else ""
    return f"the load generator failed: {(line or err).strip()[-300:]}"


def repeated(
    name: str, unit: str, repeat: int, attempt: Callable[[], LoadRun | str], notes: list[str]
) -> LoadRun | None:
    """``attempt`` ``repeat`` times; the median figures, problems added to ``notes``."""
    runs: list[LoadRun] = []
    for _ in range(repeat):
        got = attempt()
        if isinstance(got, str):
            notes.append(f"{name}: {got}")
            say(f"  {name}: {got}")
            continue
        say(f"  {name}: {describe(got, unit)}")
        runs.append(got)
    return median_run(runs) if runs else None


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
            client.command(MAIL_CMD, b"250")
            client.command(RCPT_CMD, b"250")
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


def warm_up(server: Running, settings: Settings, shape: LoadShape, postfix: bool) -> None:
    """200 messages, not recorded: imports, caches and the allocator settle first."""
    if postfix:
        source_load(server, 200, settings.size, True, shape, record=False)
    else:
        own_load(server, "pipelined", 200, settings.size, shape, record=False)


def run_loads(
    server: Running, settings: Settings, shape: LoadShape, postfix: bool, notes: list[str]
) -> dict[str, LoadRun]:
    """Every load asked for, ``settings.repeat`` times each; the medians."""
    out: dict[str, LoadRun] = {}
    for load in LOADS:
        count = settings.count(load)
        if load not in settings.loads or count <= 0:
            continue
        attempt: Callable[[], LoadRun | str]
        unit = "msg"
        if load in ("persistent", "per-connection"):
            if not postfix:
                continue
            attempt = functools.partial(
                source_load, server, count, settings.size, load == "persistent", shape
            )
        elif load == "pipelined":
            probe = own_load(
                server,
                "pipelined",
                10,
                settings.size,
                LoadShape(sessions=1, cores=shape.cores),
                timeout=PROBE_TIMEOUT,
                record=False,
            )
            if isinstance(probe, str):
                notes.append(f"pipelined: not run, 10 pipelined transactions went wrong: {probe}")
                say(f"  pipelined: not run: {probe}")
                continue
            if not probe.pipelining:
                notes.append(
                    "pipelined: PIPELINING is not advertised, but 10 pipelined transactions "
                    "were answered correctly, so the load was run"
                )
            attempt = functools.partial(own_load, server, "pipelined", count, settings.size, shape)
        else:
            unit = "conn"
            attempt = functools.partial(own_load, server, "connect", count, settings.size, shape)
        run = repeated(LOAD_LABELS[load], unit, settings.repeat, attempt, notes)
        if run is not None:
            out[load] = run
    return out


def measure_idle(plan: ServerPlan, settings: Settings, fd_limit: int, result: Result) -> None:
    """RSS per idle connection, on a fresh process (so no memory freed by a load is reused)."""
    idle = min(settings.idle, fd_limit - FD_SPARE)
    if plan.haproxy is not None:
        idle = min(idle, (fd_limit - FD_SPARE) // 2)
    if idle <= 0:
        return
    say(f"--- {plan.name}: {idle:,} idle connections")
    with serving(plan, settings, fd_limit) as server:
        if server is None:
            result.notes.append("did not start")
            return
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
            say(f"  {got[0]:.2f} KiB per idle connection")
            if got[1] < idle:
                result.notes.append(f"only {got[1]} of {idle} idle connections opened")


def measure_round(
    plans: Sequence[ServerPlan],
    results: Sequence[Result],
    settings: Settings,
    fd_limit: int,
    postfix: bool,
    shape: LoadShape,
    first: bool,
) -> list[dict[str, LoadRun]]:
    """One round: every server started fresh and warmed up (and, in the first round, its
    latency taken), then each load run once on every server in turn, so the servers a ratio
    compares meet the machine within the same minute; the peak RSS at the end."""
    got: list[dict[str, LoadRun]] = [{} for _ in plans]
    with contextlib.ExitStack() as stack:
        servers: list[Running | None] = []
        for plan, result in zip(plans, results, strict=True):
            say(f"--- {plan.name}: starting")
            server = stack.enter_context(serving(plan, settings, fd_limit))
            servers.append(server)
            if server is None:
                result.notes.append("did not start")
                continue
            try:
                warm_up(server, settings, shape, postfix)
                if first and settings.latency > 0:
                    lat = latency(server.port, settings.latency, settings.size)
                    if isinstance(lat, str):
                        result.notes.append(lat)
                    else:
                        result.p50_ms, result.p99_ms = lat
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                result.notes.append(f"could not run: {exc}")
                servers[-1] = None
        for load in LOADS:
            if load not in settings.loads:
                continue
            once = dataclasses.replace(settings, repeat=1, loads=frozenset({load}))
            for plan, result, server, runs in zip(plans, results, servers, got, strict=True):
                if server is None:
                    continue
                say(f"--- {plan.name}")
                try:
                    runs.update(run_loads(server, once, shape, postfix, result.notes))
                except (OSError, subprocess.SubprocessError, ValueError) as exc:
                    result.notes.append(f"{LOAD_LABELS[load]}: could not run: {exc}")
        for result, server in zip(results, servers, strict=True):
            peak = None if server is None else status_kib(server.pid, "VmHWM")
            if peak is not None:
                result.peak_rss_kib = max(result.peak_rss_kib or 0, peak)
    return got


def measure_all(
    plans: Sequence[ServerPlan], settings: Settings, fd_limit: int, postfix: bool, shape: LoadShape
) -> list[Result]:
    """Every server, in rounds: each round runs every load once on every server, one server
    after the other, so a machine that gets slower or faster during the run moves every row
    alike (in turn, all the repeats of one server would carry that drift into the ratios).
    The medians of the rounds."""
    results = [Result(plan.name, plan.key) for plan in plans]
    for plan, result in zip(plans, results, strict=True):
        try:
            measure_idle(plan, settings, fd_limit, result)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            result.notes.append(f"idle connections could not be measured: {exc}")
    for round_no in range(settings.repeat):
        say(f"=== round {round_no + 1} of {settings.repeat}")
        got: list[dict[str, LoadRun]] = [{} for _ in plans]
        try:
            got = measure_round(plans, results, settings, fd_limit, postfix, shape, round_no == 0)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            for result in results:
                result.notes.append(f"round {round_no + 1} could not run: {exc}")
        # A slot per round, None where the load did not run, so rounds pair up (paired).
        for result, one in zip(results, got, strict=True):
            for load in LOADS:
                result.rounds.setdefault(load, []).append(one.get(load))
    for result in results:
        result.loads = {
            load: median_run([run for run in runs if run is not None])
            for load, runs in result.rounds.items()
            if any(run is not None for run in runs)
        }
        result.notes = list(dict.fromkeys(result.notes))  # a note each round said once
    return results


def profile(settings: Settings, fd_limit: int, shape: LoadShape) -> None:
    """The smtpd-trio launcher under cProfile through the persistent load; the top entries."""
    plan = ServerPlan("smtpd-trio (cProfile)", "smtpd-trio-profile")
    stats_file = settings.cache / "smtpd-trio.prof"
    stats_file.unlink(missing_ok=True)
    with serving(plan, settings, fd_limit, stop_signal=signal.SIGINT) as server:
        if server is None:
            return
        got = source_load(server, settings.persistent, settings.size, True, shape)
        say(f"profiled load: {got if isinstance(got, str) else f'{got.rate:,.0f} msg/s'}")
    if not stats_file.exists():
        say("no profile was written")
        return
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(str(stats_file), stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(15)
        say(f"\n== top 15 by {key} ==")
        say(out.getvalue().split("\n\n", 1)[-1].rstrip())


# ---- --workers scaling ---------------------------------------------------------------------


@dataclasses.dataclass
class ScalingRow:
    workers: int
    pinning: str
    sessions: int
    loads: dict[str, LoadRun] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def workers_scaling(settings: Settings, fd_limit: int, postfix: bool) -> list[ScalingRow]:
    """The CLI with --workers 1, then --workers N; the load pinned to other CPUs if any."""
    cpus = usable_cpus()
    most = settings.scaling or len(cpus)
    # SO_REUSEPORT spreads connections by a hash: give each worker about ten of them.
    sessions = max(settings.sessions, 10 * most)
    rows: list[ScalingRow] = []
    for workers in sorted({1, most}):
        server_cpus: tuple[int, ...] | None = None
        load_cpus: tuple[int, ...] | None = None
        if TASKSET is None:
            pinning = "not pinned: taskset is not installed"
        elif workers < len(cpus):
            server_cpus, load_cpus = tuple(cpus[:workers]), tuple(cpus[workers:])
            pinning = (
                f"workers on CPU {','.join(map(str, server_cpus))}, "
                f"load generator on CPU {','.join(map(str, load_cpus))}"
            )
        else:
            pinning = (
                f"not pinned: {workers} workers on {len(cpus)} CPUs leave none for the load "
                "generator, which shares them with the workers"
            )
        shape = LoadShape(sessions, settings.client_procs, load_cpus, len(cpus))
        plan = ServerPlan(
            f"smtpd-trio CLI --workers {workers}",
            "smtpd-trio-cli",
            workers=workers,
            cpus=server_cpus,
        )
        row = ScalingRow(workers, pinning, sessions)
        rows.append(row)
        say(f"--- {plan.name} ({pinning})")
        with serving(plan, settings, fd_limit) as server:
            if server is None:
                row.notes.append("did not start")
                continue
            warm_up(server, settings, shape, postfix)
            row.loads = run_loads(server, settings, shape, postfix, row.notes)
    return rows


def rate_of(loads: dict[str, LoadRun], load: str) -> float | None:
    run = loads.get(load)
    return None if run is None else run.rate


def cpu_of(loads: dict[str, LoadRun], load: str) -> float | None:
    run = loads.get(load)
    return None if run is None else run.server_cpu


def report_scaling(rows: list[ScalingRow], settings: Settings) -> None:
    cpus = usable_cpus()
    say("")
    say(
        f"== --workers scaling: smtpd-trio CLI (default settings), {rows[0].sessions} "
        f"connections for every load, {len(cpus)} CPUs usable =="
    )
    for row in rows:
        say(f"--workers {row.workers}: {row.pinning}")
    header = ["workers", *(rate_label(k) for k in LOADS)]
    header += [f"CPU s/1k ({LOAD_LABELS[k]})" for k in LOADS]
    header.append("limited by (persistent)")
    body = [
        [
            str(row.workers),
            *(fmt(rate_of(row.loads, k), ",.0f") for k in LOADS),
            *(fmt(cpu_of(row.loads, k), ".3f") for k in LOADS),
            row.loads["persistent"].bound if "persistent" in row.loads else "—",
        ]
        for row in rows
    ]
    say(markdown_table(header, body))
    if len(rows) == 2:
        one, many = rows
        gains = [
            f"{LOAD_LABELS[k]} {ratio(rate_of(many.loads, k), rate_of(one.loads, k))}"
            for k in LOADS
        ]
        say(f"--workers {many.workers} against --workers 1: " + ", ".join(gains))
        if many.workers >= len(cpus):
            say(
                f"  (the {many.workers}-worker figure is not a scaling figure on this machine: "
                "the load generator had no core of its own)"
            )
    for row in rows:
        for text in row.notes:
            say(f"--workers {row.workers}: {text}")
    one = rows[0]
    lines = []
    for k in LOADS:
        run = one.loads.get(k)
        if run is None or not run.server_cpu:
            continue
        per_core = 1000 / run.server_cpu
        shared = None if run.client_cpu is None else 1000 / (run.server_cpu + run.client_cpu)
        lines.append(
            [
                rate_label(k),
                f"{per_core:,.0f}",
                f"{run.server_busy or 0:.2f}",
                f"{PROJECTED_CORES * per_core:,.0f}",
                fmt(None if shared is None else PROJECTED_CORES * shared, ",.0f"),
            ]
        )
    if lines:
        say("")
        say(f"== PROJECTION for {PROJECTED_CORES} cores (arithmetic, not a measurement) ==")
        say(
            "per core = 1,000 / the server CPU s per 1k of --workers 1; "
            f"{PROJECTED_CORES} workers = {PROJECTED_CORES} x that, with the load generator on "
            f"other machines; shared = {PROJECTED_CORES} cores / (server + load generator CPU per "
            "message), with it on the same box. It assumes the workers scale linearly (they "
            "share nothing but the listening port), enough connections per worker for "
            "SO_REUSEPORT to spread them, and a load generator that is not itself the limit."
        )
        header = [
            "load",
            "per core (1 worker)",
            "worker busy cores",
            f"{PROJECTED_CORES} workers",
            f"{PROJECTED_CORES} cores shared",
        ]
        say(markdown_table(header, lines))


# ---- report --------------------------------------------------------------------------------


def rate_label(load: str) -> str:
    return "conn/s" if load == "connections" else f"{LOAD_LABELS[load]} msg/s"


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}x"


def paired(ours: Result, theirs: Result, load: str, figure: str) -> float | None:
    """``figure`` ("rate" or "server_cpu") of ``ours`` over ``theirs`` for ``load``: the
    median of the ratios taken within each round, where both servers ran on the machine as it
    was then. A slow minute of a shared machine then spoils one round's ratio, not a row."""
    ratios: list[float] = []
    for a, b in zip(ours.rounds.get(load, []), theirs.rounds.get(load, []), strict=False):
        x: float | None = None if a is None else getattr(a, figure)
        y: float | None = None if b is None else getattr(b, figure)
        if x is not None and y:
            ratios.append(x / y)
    if ratios:
        return statistics.median(ratios)
    a_run, b_run = ours.loads.get(load), theirs.loads.get(load)
    x2: float | None = None if a_run is None else getattr(a_run, figure)
    y2: float | None = None if b_run is None else getattr(b_run, figure)
    return x2 / y2 if x2 is not None and y2 else None


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


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
    load1, load5, _ = os.getloadavg()
    facts = [
        f"CPU: {model}, {os.cpu_count()} cores ({len(usable_cpus())} usable); "
        f"{platform.system()} {platform.release()}; load average {load1:.2f}, {load5:.2f}",
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


def report(results: list[Result], settings: Settings) -> None:
    say("")
    say(
        f"== results: {settings.size}-octet messages; lockstep (smtp-source, "
        f"{settings.sessions} sessions): persistent {settings.persistent:,} msgs, one per "
        f"connection {settings.per_connection:,} msgs; pipelined (our client, "
        f"{settings.sessions} connections in {settings.client_procs} process(es)) "
        f"{settings.pipelined:,} msgs; connections {settings.connections:,}, "
        f"{settings.sessions} at a time; median of {settings.repeat} =="
    )
    say("")
    say(
        f"-- lockstep load, memory ({settings.idle:,} idle connections) and latency "
        f"({settings.latency:,} sequential transactions, server otherwise idle) --"
    )
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
            fmt(r.rate("persistent"), ",.0f"),
            fmt(r.rate("per-connection"), ",.0f"),
            fmt(r.cpu("persistent"), ".3f"),
            fmt(r.cpu("per-connection"), ".3f"),
            fmt(None if r.peak_rss_kib is None else r.peak_rss_kib / 1024, ".1f"),
            fmt(r.idle_kib, ".2f"),
            fmt(r.p50_ms, ".3f"),
            fmt(r.p99_ms, ".3f"),
        ]
        for r in results
    ]
    say(markdown_table(header, rows))
    say("")
    say("-- pipelined load and connection rate (our clients; CPU per 1k msgs or 1k conns) --")
    header = [
        "server",
        "pipelined msg/s",
        "CPU s/1k (pipel.)",
        "client CPU s/1k",
        "conn/s",
        "CPU s/1k conns",
        "client CPU s/1k conns",
    ]

    def client(r: Result, load: str) -> float | None:
        run = r.loads.get(load)
        return None if run is None else run.client_cpu

    rows = [
        [
            r.name,
            fmt(r.rate("pipelined"), ",.0f"),
            fmt(r.cpu("pipelined"), ".3f"),
            fmt(client(r, "pipelined"), ".3f"),
            fmt(r.rate("connections"), ",.0f"),
            fmt(r.cpu("connections"), ".3f"),
            fmt(client(r, "connections"), ".3f"),
        ]
        for r in results
    ]
    say(markdown_table(header, rows))
    say("")
    say(
        "-- what limited each load: verdict, then busy cores of the server / the load "
        "generator's busiest process / the whole machine (other work included) --"
    )

    def limit(r: Result, load: str) -> str:
        run = r.loads.get(load)
        if run is None:
            return "—"
        busy = "/".join(fmt(v, ".2f") for v in (run.server_busy, run.client_busy, run.machine_busy))
        return f"{run.bound} {busy}"

    header = ["server", *(LOAD_LABELS[k] for k in LOADS)]
    say(markdown_table(header, [[r.name, *(limit(r, k) for k in LOADS)] for r in results]))

    base = next((r for r in results if r.key == "aiosmtpd"), None)
    if base is not None:
        say("")
        say(
            "== ratios vs aiosmtpd (throughput: higher is better; CPU, memory, latency: lower); "
            "rates and CPU: the median of each round's ratio =="
        )
        header = ["server", *(LOAD_LABELS[k] for k in LOADS)]
        header += ["CPU/msg (pers.)", "CPU/conn", "KiB/idle", "p50"]
        rows = [
            [
                r.name,
                *(times(paired(r, base, k, "rate")) for k in LOADS),
                times(paired(r, base, "persistent", "server_cpu")),
                times(paired(r, base, "connections", "server_cpu")),
                ratio(r.idle_kib, base.idle_kib),
                ratio(r.p50_ms, base.p50_ms),
            ]
            for r in results
        ]
        say(markdown_table(header, rows))
    floor = next((r for r in results if r.key == "floor"), None)
    if floor is not None:
        say("")
        say(
            "== server CPU per message (per connection for conn/s) as a ratio of the floor's; "
            "the median of each round's ratio =="
        )
        header = ["server", *(LOAD_LABELS[k] for k in LOADS)]
        rows = [
            [r.name, *(times(paired(r, floor, k, "server_cpu")) for k in LOADS)] for r in results
        ]
        say(markdown_table(header, rows))
    report_targets(results, settings, base, floor)
    report_notes(results)


def report_targets(
    results: list[Result], settings: Settings, base: Result | None, floor: Result | None
) -> None:
    cli = next((r for r in results if r.key == "smtpd-trio-cli"), None)
    launcher = next((r for r in results if r.key == "smtpd-trio"), None)
    if cli is None and launcher is None:
        return
    say("")
    say("== targets: smtpd-trio with the CLI's default settings (the launcher in brackets) ==")

    def both(check: Callable[[Result], str]) -> str:
        main = check(cli) if cli is not None else "no CLI row"
        if launcher is None:
            return main
        return f"{main} [launcher: {check(launcher)}]"

    def at_least(load: str, factor: float) -> Callable[[Result], str]:
        def check(r: Result) -> str:
            got = None if base is None else paired(r, base, load, "rate")
            if got is None:
                return "unknown"
            return f"{got:.2f}x ({'met' if got >= factor else 'missed'})"

        return check

    def near_floor(load: str) -> Callable[[Result], str]:
        def check(r: Result) -> str:
            got = None if floor is None else paired(r, floor, load, "server_cpu")
            if got is None:
                return "unknown"
            return f"{got:.2f}x the floor ({'met' if got <= 1.5 else 'missed'})"

        return check

    def idle(r: Result) -> str:
        if r.idle_kib is None:
            return "unknown"
        verdict = "met" if r.idle_kib <= 8 else "missed"
        held = "" if r.idle_count >= 10_000 else f", only {r.idle_count:,} held in this run"
        return f"{r.idle_kib:.2f} KiB ({verdict}{held})"

    say("persistent >= 3x aiosmtpd: " + both(at_least("persistent", 3)))
    say("one message per connection >= 2x aiosmtpd: " + both(at_least("per-connection", 2)))
    for load in MESSAGE_LOADS:
        say(f"server CPU per message within 1.5x of the floor, {load}: " + both(near_floor(load)))
    say("<= 8 KiB per idle connection with 10,000 held: " + both(idle))


def report_notes(results: list[Result]) -> None:
    lines = [f"{r.name}: {n}" for r in results for n in r.notes]
    for r in results:
        for load, run in r.loads.items():
            if "client" in run.bound:
                lines.append(
                    f"{r.name}, {LOAD_LABELS[load]}: CLIENT-BOUND, the load generator had no "
                    "CPU left; the figure is a lower bound for the server"
                )
        persistent = r.loads.get("persistent")
        if persistent is not None and persistent.proxy_cpu is not None:
            lines.append(
                f"{r.name}: HAProxy itself used {persistent.proxy_cpu:.3f} CPU s per 1k msgs "
                "(persistent), not counted in the server's CPU"
            )
    if lines:
        say("")
        say("== notes ==")
        for line in lines:
            say(line)


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

ALL_SERVERS: Final = ("smtpd-trio", "smtpd-trio-cli", "floor", "aiosmtpd", "smtp-sink", "haproxy")


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, bool]:
    cores = len(usable_cpus())
    p = argparse.ArgumentParser(
        description="Side-by-side SMTP benchmark (smtpd-trio, the Trio floor, aiosmtpd, "
        "Postfix smtp-sink).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            The full run (the default) takes about ten minutes; --quick about one.
            Examples:
              nox -s bench
              nox -s bench -- --quick
              nox -s bench -- --workers-scaling
              python bench/run.py --servers smtpd-trio-cli,aiosmtpd --loads persistent
              python bench/run.py --servers none --workers-scaling 2
              python bench/run.py --profile
            """
        ),
    )
    p.add_argument("--quick", action="store_true", help="short run: smaller counts, one repeat")
    p.add_argument("--persistent", type=int, help="messages, persistent sessions (20000)")
    p.add_argument("--per-connection", type=int, help="messages, one per connection (5000)")
    p.add_argument("--pipelined", type=int, help="messages, pipelined load (30000; quick 10000)")
    p.add_argument("--connections", type=int, help="connections, conn/s load (10000; quick 3000)")
    p.add_argument(
        "--sessions",
        type=int,
        default=20,
        help="smtp-source sessions, and our clients' connections at a time (20)",
    )
    p.add_argument(
        "--client-procs",
        type=int,
        default=max(1, min(4, cores // 4)),
        help="processes the load generator is spread over (1 below 8 cores)",
    )
    p.add_argument("--size", type=int, default=1024, help="message size in octets (1024)")
    p.add_argument("--idle", type=int, help="idle connections held (10000; quick 2000)")
    p.add_argument("--latency", type=int, help="transactions timed for p50/p99 (2000)")
    p.add_argument("--repeat", type=int, help="runs of each load, median kept (3; quick 1)")
    p.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated subset of {','.join(ALL_SERVERS)}, or none",
    )
    p.add_argument(
        "--loads", default=",".join(LOADS), help=f"comma-separated subset of {','.join(LOADS)}"
    )
    p.add_argument(
        "--workers-scaling",
        type=int,
        nargs="?",
        const=0,
        metavar="N",
        help="also run the CLI with --workers 1 and --workers N (default N: the usable cores)",
    )
    p.add_argument("--cache", type=Path, default=ROOT / ".bench-cache", help="cache directory")
    p.add_argument("--profile", action="store_true", help="profile smtpd-trio (persistent load)")
    args = p.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: int | None, full: int, short: int) -> int:
        return value if value is not None else short if quick else full

    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip() not in ("", "none"))
    loads = frozenset(s.strip() for s in args.loads.split(",") if s.strip())
    for name, given, known in (("server", servers, ALL_SERVERS), ("load", loads, LOADS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            p.error(f"unknown {name}(s): {', '.join(unknown)}")
    settings = Settings(
        persistent=pick(args.persistent, 20_000, 2_000),
        per_connection=pick(args.per_connection, 5_000, 1_000),
        pipelined=pick(args.pipelined, 30_000, 10_000),
        connections=pick(args.connections, 10_000, 3_000),
        sessions=max(1, args.sessions),
        client_procs=max(1, args.client_procs),
        size=args.size,
        idle=pick(args.idle, 10_000, 2_000),
        latency=pick(args.latency, 2_000, 500),
        repeat=max(1, pick(args.repeat, 3, 1)),
        cache=args.cache.resolve(),
        servers=servers,
        loads=loads,
        scaling=args.workers_scaling,
    )
    return settings, bool(args.profile)


def write_scripts(cache: Path) -> None:
    """The launcher, the floor and the aiosmtpd server, written into the cache directory."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "smtpd_trio_sink.py").write_text(TRIO_LAUNCHER % {"max_connections": MAX_CONNECTIONS})
    (cache / "trio_floor.py").write_text(FLOOR_SERVER)
    (cache / "aiosmtpd_sink.py").write_text(AIOSMTPD_SERVER % {"max_size": MAX_MESSAGE_SIZE})


def plans_for(settings: Settings, aiosmtpd_python: Path | None, postfix: bool) -> list[ServerPlan]:
    wanted = set(settings.servers)
    plans: list[ServerPlan] = []
    if "smtpd-trio" in wanted:
        plans.append(ServerPlan("smtpd-trio (launcher, WARNING)", "smtpd-trio"))
    if "smtpd-trio-cli" in wanted:
        plans.append(ServerPlan("smtpd-trio CLI (defaults, INFO to file)", "smtpd-trio-cli"))
    if "floor" in wanted:
        plans.append(ServerPlan("floor (minimal Trio sink)", "floor"))
    if aiosmtpd_python is not None:
        plans.append(ServerPlan("aiosmtpd 1.4.6", "aiosmtpd"))
    if "smtp-sink" in wanted and postfix:
        plans.append(ServerPlan("Postfix smtp-sink", "smtp-sink"))
    if "haproxy" in wanted:
        if os.access(HAPROXY, os.X_OK):
            plans.append(
                ServerPlan("smtpd-trio launcher via HAProxy", "smtpd-trio-haproxy", "plain")
            )
            plans.append(
                ServerPlan(
                    "smtpd-trio launcher via HAProxy, PROXY v2", "smtpd-trio-haproxy-v2", "v2"
                )
            )
        else:
            say(f"{HAPROXY} not found: the HAProxy rows are skipped")
    return plans


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--client-worker"]:
        return client_worker(args[1:])
    settings, want_profile = parse_args(args)
    write_scripts(settings.cache)
    for old in (settings.cache / "logs").glob("*.log"):
        old.unlink()  # this run's logs only: the CLI's INFO log grows by a line per message
    fd_limit = raise_fd_limit()
    postfix = ensure_postfix()
    shape = LoadShape(settings.sessions, settings.client_procs, None, len(usable_cpus()))
    if want_profile:
        if not postfix:
            say("profiling needs smtp-source")
            return 1
        profile(settings, fd_limit, shape)
        return 0
    aiosmtpd_python = ensure_aiosmtpd(settings.cache) if "aiosmtpd" in settings.servers else None
    started = time.monotonic()
    plans = plans_for(settings, aiosmtpd_python, postfix)
    say(f"file descriptors: {fd_limit}; cache: {settings.cache}")
    results = measure_all(plans, settings, fd_limit, postfix, shape)
    scaling: list[ScalingRow] = []
    if settings.scaling is not None:
        try:
            scaling = workers_scaling(settings, fd_limit, postfix)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            say(f"--workers scaling could not run: {exc}")
    say("")
    say("== machine ==")
    for fact in machine_facts(aiosmtpd_python, postfix):
        say(fact)
    if results:
        report(results, settings)
    if scaling:
        report_scaling(scaling, settings)
    say("")
    say("== commands ==")
    for line in COMMANDS:
        say(f"  {line}")
    say(f"\ntotal time: {time.monotonic() - started:.0f} s")
    measured = any(r.loads or r.idle_kib or r.p50_ms for r in results)
    if measured or any(row.loads for row in scaling):
        return 0
    say("nothing could be measured")
    return 1


if __name__ == "__main__":
    sys.exit(main())
