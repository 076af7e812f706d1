#!/usr/bin/env python3
"""Soak: many messages through smtpd-trio's Maildir handler; every 250 a file, RSS flat.

Run it with ``nox -s soak`` (or ``python bench/soak.py`` where smtpd-trio is importable);
``--messages 20000`` for a short check. Standard library only; Postfix's ``smtp-source`` is
installed the way ``bench/run.py`` does it (its code, imported).

It starts the CLI, ``python -m smtpd_trio --port 0 --handler maildir:DIR`` (default settings
otherwise), and sends ``--messages`` messages with ``smtp-source -c -d -s SESSIONS`` (persistent
sessions, a counter of completed DATA commands) to 127.0.0.1, sampling the server's RSS
(``VmRSS``) every ``--interval`` seconds. The server ends a session after
``max_messages_per_session`` messages (10,000 by default), as a real server should, and
smtp-source does not reconnect, so the load runs in rounds of at most half of SESSIONS times
that limit (smtp-source's sessions do not share the messages out evenly): each round is a new
smtp-source with new sessions, as real clients reconnect. At the end:

* the count check: every round of smtp-source must exit 0 (it stops at the first refused
  message, and its counter counts completed DATA commands, a refused one too) and the number of
  files in ``DIR/new`` must equal the number of messages the rounds report sent: every 250 a
  stored file, none extra; ``DIR/tmp`` must be empty;
* RSS over time: the first sample under load, min, max, last, and a verdict: **flat** when the
  highest sample of the last quarter of the run is within ``--tolerance`` (10%) of the highest
  of the first quarter, **growing** otherwise;
* the server stops on SIGTERM and must exit 0.

Exit status 0 when all of that holds, 1 otherwise. The Maildir is deleted at the end unless
``--keep`` (a million 1 KiB messages take about 4 GiB of disk in 4 KiB blocks).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from run import ROOT, SMTP_SOURCE, ensure_postfix, first_line, raise_fd_limit, say
from serverproc import ServerProcess, mib, smtpd_trio

from smtpd_trio import Config

SENDER: Final = "a@example.com"
RECIPIENT: Final = "b@example.org"
ACCEPTED: Final = re.compile(rb"\] message \S+ accepted")
STOP_TIMEOUT: Final = 60.0


@dataclasses.dataclass(frozen=True)
class Sample:
    seconds: float
    delivered: int
    rss_kib: int


def counter_value(path: Path) -> int:
    """The last number smtp-source's ``-c`` counter wrote (``1\\r2\\r...``), 0 if none yet."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            tail = f.read()
    except OSError:
        return 0
    numbers = re.findall(rb"(\d+)\r", tail)
    return int(numbers[-1]) if numbers else 0


def count_files(directory: Path) -> int:
    with os.scandir(directory) as entries:
        return sum(1 for e in entries if e.is_file())


def count_accepted(log: Path) -> int | None:
    """Messages the server logged as accepted (None if it logs none in the expected form)."""
    total = 0
    tail = b""
    with contextlib.suppress(OSError), log.open("rb") as f:
        while chunk := f.read(1 << 20):
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            total += len(ACCEPTED.findall(data, 0, cut))
            tail = data[cut:]
        total += len(ACCEPTED.findall(tail))
    return total or None


def quarter_verdict(samples: Sequence[Sample], tolerance: float) -> tuple[str, str]:
    """("flat" | "growing" | "too short", the figures behind it)."""
    if len(samples) < 8:
        return "too short", f"{len(samples)} samples under load; 8 are needed to judge"
    quarter = len(samples) // 4
    first = max(s.rss_kib for s in samples[:quarter])
    last = max(s.rss_kib for s in samples[-quarter:])
    limit = first * (1 + tolerance)
    verdict = "flat" if last <= limit else "growing"
    return verdict, (
        f"last quarter's max {mib(last)} MiB vs first quarter's max {mib(first)} MiB "
        f"(+{(last / first - 1) * 100:.1f}%; tolerance {tolerance * 100:g}%)"
    )


def soak(args: argparse.Namespace, maildir: Path, log: Path) -> bool:
    counter_file = args.cache / "logs" / "soak-smtp-source.out"
    argv = [SMTP_SOURCE, "-c", "-d", "-s", str(args.sessions)]
    argv_end = ["-l", str(args.size), "-f", SENDER, "-t", RECIPIENT]
    per_session = Config().max_messages_per_session
    per_round = args.messages if per_session is None else max(1, args.sessions * per_session // 2)
    ok = True
    with smtpd_trio(["--handler", f"maildir:{maildir}"], log) as server:
        say(f"server: python -m smtpd_trio --port 0 --handler maildir:{maildir} (pid {server.pid})")
        rounds = -(-args.messages // per_round)
        say(
            f"load:   {shlex.join([*argv, '-m', str(min(per_round, args.messages)), *argv_end])} "
            f"127.0.0.1:PORT, {rounds:,} round(s) for {args.messages:,} messages"
        )
        idle = server.rss_kib()
        say(f"RSS before the load: {mib(idle)} MiB")
        say("")
        say(f"{'seconds':>8} {'delivered':>10} {'msg/s':>7} {'RSS MiB':>8}")
        samples, returncode, wall, stderr, reported = run_load(
            server,
            lambda count: [*argv, "-m", str(count), *argv_end, f"127.0.0.1:{server.port}"],
            per_round,
            counter_file,
            args,
        )
        files = count_files(maildir / "new")
        leftover = count_files(maildir / "tmp")
        server.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = server.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
    accepted = count_accepted(log)

    say("")
    say("== result ==")
    rate = reported / wall if wall > 0 else 0.0
    say(
        f"smtp-source: exit {returncode}, {reported:,} messages sent (its counter of completed "
        f"DATA commands) in {wall:,.1f} s, {rate:,.0f} msg/s"
    )
    if returncode != 0:
        ok = False
        say(f"  smtp-source said: {stderr.strip()[-300:] or '(nothing)'}")
    say(
        f"maildir: {files:,} files in new/, {leftover:,} in tmp/; server log: "
        f"{'—' if accepted is None else f'{accepted:,}'} accepted"
    )
    if files == reported and leftover == 0 and returncode == 0:
        say("count check: OK, every 250 is a stored file and there is none extra")
    else:
        ok = False
        say(
            f"count check: FAILED: {files:,} files in new/ for {reported:,} messages reported "
            f"({files - reported:+,}), {leftover:,} in tmp/"
        )
    if samples:
        rss = [s.rss_kib for s in samples]
        say(
            f"RSS MiB under load: first {mib(rss[0])}, min {mib(min(rss))}, max {mib(max(rss))}, "
            f"last {mib(rss[-1])} ({len(rss)} samples, every {args.interval:g} s)"
        )
        step = max(1, (len(samples) - 1) // 11)
        picked = [*samples[:-1:step], samples[-1]] if len(samples) > 1 else list(samples)
        series = ", ".join(f"{s.seconds:.0f} s: {mib(s.rss_kib)}" for s in picked)
        say(f"RSS over time (MiB): {series}")
        verdict, why = quarter_verdict(samples, args.tolerance)
        say(f"RSS verdict: {verdict}: {why}")
        ok = ok and verdict != "growing"
    else:
        say("RSS: no samples under load")
    say(f"server exit status after SIGTERM: {'timed out' if status is None else status}")
    return ok and status == 0


def run_load(
    server: ServerProcess,
    argv: Callable[[int], list[str]],
    per_round: int,
    counter_file: Path,
    args: argparse.Namespace,
) -> tuple[list[Sample], int, float, str, int]:
    """Run smtp-source in rounds of at most ``per_round`` messages, sampling the server;
    (samples, exit status of the last round, seconds, its stderr, messages it reported sent).
    A round that fails ends the load."""
    samples: list[Sample] = []
    deadline_s = 600 + args.messages / 50
    counter_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    next_sample = start + args.interval
    last_count, last_time = 0, start
    done = 0  # messages reported sent by the rounds before this one
    returncode, err = 0, b""
    while done < args.messages and returncode == 0:
        with counter_file.open("wb") as out:
            proc = subprocess.Popen(
                argv(min(per_round, args.messages - done)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
            )
            try:
                while proc.poll() is None:
                    now = time.monotonic()
                    if now - start > deadline_s:
                        say(f"smtp-source still running after {deadline_s:.0f} s: stopped")
                        proc.kill()
                        break
                    if now >= next_sample:
                        next_sample += args.interval
                        rss = server.rss_kib()
                        delivered = done + counter_value(counter_file)
                        if rss is not None:
                            samples.append(Sample(now - start, delivered, rss))
                            rate = (delivered - last_count) / (now - last_time)
                            say(
                                f"{now - start:8.0f} {delivered:10,} {rate:7,.0f} {rss / 1024:8.1f}"
                            )
                        last_count, last_time = delivered, now
                    time.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
                _out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        returncode = proc.returncode
        done += counter_value(counter_file)
    wall = time.monotonic() - start
    rss = server.rss_kib()
    if rss is not None:
        samples.append(Sample(wall, done, rss))
    return samples, returncode, wall, err.decode(errors="replace"), done


def machine_facts() -> list[str]:
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
    return [
        f"CPU: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"load average at the start {os.getloadavg()[0]:.2f}",
        f"Python {platform.python_version()}; smtpd-trio at {commit} (smtpd_trio/ last "
        f"changed in {package})",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak smtpd-trio's Maildir handler with smtp-source; check counts and RSS.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            Examples:
              nox -s soak
              nox -s soak -- --messages 20000 --interval 1
              python bench/soak.py --messages 100000 --sessions 20 --keep
            """
        ),
    )
    p.add_argument("--messages", type=int, default=1_000_000, help="messages (1000000)")
    p.add_argument("--sessions", type=int, default=10, help="smtp-source sessions (10)")
    p.add_argument("--size", type=int, default=1024, help="message size in octets (1024)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument(
        "--tolerance", type=float, default=0.10, help="RSS growth still 'flat' (0.10 = 10%%)"
    )
    p.add_argument("--dir", type=Path, help="the Maildir (default: under the cache; emptied)")
    p.add_argument("--keep", action="store_true", help="keep the Maildir afterwards")
    p.add_argument("--cache", type=Path, default=ROOT / ".bench-cache", help="cache directory")
    args = p.parse_args(argv)
    args.cache = args.cache.resolve()
    if args.messages < 1 or args.sessions < 1 or args.interval <= 0:
        p.error("--messages, --sessions and --interval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not ensure_postfix():
        say("the soak needs smtp-source")
        return 1
    raise_fd_limit()
    maildir = (args.dir or args.cache / "soak" / "maildir").resolve()
    shutil.rmtree(maildir, ignore_errors=True)
    log = args.cache / "logs" / "soak-smtpd-trio.log"
    say("== machine ==")
    for fact in machine_facts():
        say(fact)
    say("")
    say(
        f"== soak: {args.messages:,} messages of {args.size:,} octets, {args.sessions} "
        f"persistent sessions =="
    )
    try:
        ok = soak(args, maildir, log)
    finally:
        if not args.keep:
            shutil.rmtree(maildir, ignore_errors=True)
    say(f"\nsoak {'passed' if ok else 'FAILED'}; server log: {log}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
