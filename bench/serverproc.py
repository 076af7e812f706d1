"""Servers under test as processes of their own, for ``abuse.py`` and ``soak.py``.

Each server binds port 0 on 127.0.0.1 and names the port it got in a ``listening on
127.0.0.1:PORT`` line (smtpd-trio's CLI logs one; our aiosmtpd launcher prints the same), so
two benchmarks on one machine never race for a port. Output goes to a log file. Memory figures
come from ``/proc/PID/status``; :func:`reset_peak` clears the peak mark (``VmHWM``) so that a
figure taken after an attack is that attack's peak, not the start-up's. Linux only.

The fd-limit, aiosmtpd-install and process-stopping helpers are ``run.py``'s, imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from run import child_limits, smtpd_trio_env, status_kib, stop

LISTENING: Final = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT: Final = 30.0


@dataclasses.dataclass
class ServerProcess:
    """A running server: its process, the port it listens on, and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int | None:
        return status_kib(self.pid, "VmRSS")

    def peak_kib(self) -> int | None:
        return status_kib(self.pid, "VmHWM")


def smtpd_trio_argv(*options: str) -> list[str]:
    """The CLI, on a port of the kernel's choosing: ``python -m smtpd_trio --port 0 ...``."""
    return [sys.executable, "-m", "smtpd_trio", "--port", "0", *options]


def start(
    name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> ServerProcess:
    """Start ``argv`` in its own process group, output to ``log``; wait for its port.

    Raises RuntimeError (with the log's tail) if it exits or says nothing in time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            preexec_fn=child_limits,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with log.open("rb") as f:
                found = LISTENING.search(f.read(65536))
            if found:
                return ServerProcess(name, proc, int(found.group(1)), log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{name} did not start: {log_tail(log)}")


def log_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


@contextlib.contextmanager
def running(
    name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """:func:`start`, and stop the process (SIGTERM, then SIGKILL) however the block ends."""
    server = start(name, argv, log, env)
    try:
        yield server
    finally:
        stop(server.proc, signal.SIGTERM)


@contextlib.contextmanager
def smtpd_trio(options: Sequence[str], log: Path) -> Iterator[ServerProcess]:
    """smtpd-trio's CLI with ``options`` (the checkout on the path if it is not installed)."""
    with running("smtpd-trio", smtpd_trio_argv(*options), log, smtpd_trio_env()) as server:
        yield server


def reset_peak(pid: int) -> bool:
    """Clear the process's peak-RSS mark (``5`` into ``/proc/PID/clear_refs``)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mib(kib: int | None) -> str:
    """KiB as a MiB figure for a table, or a dash."""
    return "—" if kib is None else f"{kib / 1024:,.1f}"
