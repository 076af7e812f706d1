#!/usr/bin/env python3
"""Instructions per message and per connection, counted by Valgrind (callgrind): figures that
do not move with the load on a shared machine, for before/after comparisons of one change.

Each server runs under ``valgrind --tool=callgrind --trace-children=yes`` (the same commands
as bench/run.py), once with a small load and once with a larger one; the difference, divided
by the difference in messages (or connections), is what one more costs, with the start-up and
shutdown left out. Loads: Postfix ``smtp-source`` with 1 KiB messages in 20 lockstep
sessions, persistent or one message per connection (EHLO, MAIL, RCPT, DATA, QUIT);
bench/run.py's own pipelining client (20 connections, MAIL, RCPT and DATA in one write, the
text, the dot and the next MAIL, RCPT and DATA in the next); and its connection churner,
connecting, reading the 220, sending QUIT and closing, 20 at a time. Counted: user-space
instructions of the server's processes (the kernel's work for each system call is not in them;
bench/run.py measures CPU time, which has it). Runs take about a minute per server and load:
Valgrind runs Python some 50 times slower.

    python bench/instructions.py
    python bench/instructions.py --servers smtpd-trio,floor --loads persistent
    python bench/instructions.py --small 200 --large 2200

It prints; it never fails on a figure. Every target is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py: the servers' commands and scripts

VALGRIND = shutil.which("valgrind")
SERVERS = {
    "smtpd-trio-cli": "smtpd-trio CLI (defaults, INFO to file)",
    "smtpd-trio": "smtpd-trio (launcher, WARNING)",
    "floor": "floor (minimal Trio sink)",
    "aiosmtpd": "aiosmtpd 1.4.6",
}
LOADS = ("persistent", "one-per-connection", "pipelined", "connections")
#: The loads smtp-source applies (the others are bench/run.py's own client).
_SMTP_SOURCE_LOADS = ("persistent", "one-per-connection")
START_TIMEOUT = 120.0  # Python under Valgrind starts in seconds, not milliseconds
LOAD_TIMEOUT = 900.0
_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def apply_load(load: str, port: int, count: int) -> str | None:
    """Run ``count`` messages (or connections) of ``load``; None, or what went wrong."""
    if load in _SMTP_SOURCE_LOADS:
        persistent = load == "persistent"
        argv = run.smtp_source_argv(port, count, sessions=20, size=1024, persistent=persistent)
        done = subprocess.run(argv, capture_output=True, timeout=LOAD_TIMEOUT, check=False)
    else:
        mode = "connect" if load == "connections" else "pipelined"
        argv = [sys.executable, str(Path(run.__file__)), "--client-worker", mode]
        argv += [str(port), "20", str(count), "1024", str(LOAD_TIMEOUT)]
        done = subprocess.run(
            argv, input=b"go\n", capture_output=True, timeout=LOAD_TIMEOUT, check=False
        )
    if done.returncode != 0:
        return (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
    return None


def instructions(key: str, load: str, count: int, cache: Path) -> int | str:
    """Instructions the server's processes ran, start to exit, with ``count`` units of load."""
    port = run.free_port()
    plan = run.ServerPlan(SERVERS[key], key)
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out = Path(tmp) / "callgrind.%p"
        argv = [str(VALGRIND), "--tool=callgrind", "--trace-children=yes"]
        argv += [f"--callgrind-out-file={out}", *run.plan_argv(plan, port, cache)]
        with (Path(tmp) / "server.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True
            )
            try:
                if not run.wait_ready(port, time.monotonic() + START_TIMEOUT, [proc]):
                    return "did not come up"
                problem = apply_load(load, port, count)
                if problem is not None:
                    return f"load failed: {problem}"
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        total = 0
        for path in Path(tmp).glob("callgrind.*"):
            m = _TOTAL.search(path.read_bytes())
            if m:
                total += int(m.group(1))
        return total or "no callgrind output"


def per_unit(key: str, load: str, small: int, large: int, cache: Path) -> int | str:
    low = instructions(key, load, small, cache)
    if isinstance(low, str):
        return low
    high = instructions(key, load, large, cache)
    if isinstance(high, str):
        return high
    return round((high - low) / (large - small))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--loads", default=",".join(LOADS), help="comma-separated subset")
    parser.add_argument("--small", type=int, default=200, help="the small load (200)")
    parser.add_argument("--large", type=int, default=1200, help="the larger load (1200)")
    parser.add_argument("--cache", type=Path, default=run.ROOT / ".bench-cache")
    args = parser.parse_args(argv)
    if VALGRIND is None:
        print("valgrind is not installed (Debian: apt-get install valgrind); nothing measured")
        return 0
    cache = args.cache.resolve()
    run.write_scripts(cache)
    servers = [s for s in args.servers.split(",") if s]
    loads = [x for x in args.loads.split(",") if x]
    unknown = [s for s in servers if s not in SERVERS] + [x for x in loads if x not in LOADS]
    if unknown or args.large <= args.small:
        parser.error(f"unknown: {unknown}" if unknown else "--large must exceed --small")
    if any(x in _SMTP_SOURCE_LOADS for x in loads) and not run.ensure_postfix():
        print("smtp-source is not available: its loads are left out")
        loads = [x for x in loads if x not in _SMTP_SOURCE_LOADS]
    if "aiosmtpd" in servers and run.ensure_aiosmtpd(cache) is None:
        servers.remove("aiosmtpd")
    rows: dict[str, dict[str, int | str]] = {}
    for key in servers:
        rows[key] = {}
        for load in loads:
            rows[key][load] = got = per_unit(key, load, args.small, args.large, cache)
            shown = f"{got:,}" if isinstance(got, int) else got
            print(f"{SERVERS[key]}, {load}: {shown}", flush=True)
    floor = rows.get("floor", {})
    print()
    print(f"== instructions per message / per connection ({args.large} - {args.small}) ==")
    print("| server | " + " | ".join(f"{x} | x floor" for x in loads) + " |")
    print("|---|" + "--:|--:|" * len(loads))
    for key, row in rows.items():
        cells = []
        for load in loads:
            value, base = row.get(load), floor.get(load)
            cells.append(f"{value:,}" if isinstance(value, int) else str(value))
            if isinstance(value, int) and isinstance(base, int) and base > 0:
                cells.append(f"{value / base:.2f}x")
            else:
                cells.append("")
        print(f"| {SERVERS[key]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
