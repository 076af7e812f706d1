#!/usr/bin/env python3
"""What Prometheus metrics cost: CPU per message with ``Config.observer`` off and on.

Three measurements, each printed as a table (the script never fails on a figure):

1. The calls alone: what the server calls per message (``transaction_ended``) and per
   connection (``session_ended``), timed with :mod:`timeit` for the default observer (which does
   nothing) and for :class:`smtpd_trio.prometheus.PrometheusMetrics`.
2. Whole sessions in one process: ``SMTPServer.handle_connection`` over memory streams with the
   Sink handler; persistent sessions of lockstep transactions (MAIL, RCPT, DATA, the message,
   one reply at a time), run alternately without and with metrics. CPU (``time.process_time``)
   per message for the whole process, the test client included: the difference is the cost of
   the metrics, the total is an upper bound for the server.
3. (``--cli``, with Postfix's ``smtp-source``) the command line on loopback, ``--handler sink
   -q``, alternately without and with ``--metrics 127.0.0.1:0``: server CPU per message
   (``/proc/PID/stat``), persistent sessions of 1 KiB messages, and one scrape per run.

Runs alternate off/on and the median of ``--repeat`` is kept, so a busy machine skews both
sides alike. Every target is on 127.0.0.1.

    python bench/metrics_cost.py                 # 1 and 2
    python bench/metrics_cost.py --cli           # and 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import trio
import trio.testing

from smtpd_trio import Config, Endpoint, SMTPServer, TransactionOutcome
from smtpd_trio._smtp.events import CloseReason
from smtpd_trio.handlers import Sink
from smtpd_trio.metrics import NO_OBSERVER, Observer
from smtpd_trio.prometheus import PrometheusMetrics
from smtpd_trio.testing import TestClient, dot_stuff

ROOT: Final = Path(__file__).resolve().parent.parent
SMTP_SOURCE: Final = "/usr/sbin/smtp-source"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PEER: Final = Endpoint("192.0.2.1", 40000)


def say(text: str) -> None:
    print(text, flush=True)


# ---- 1. the calls alone ---------------------------------------------------------------------


def per_call(observer: Observer, number: int) -> tuple[float, float]:
    """CPU nanoseconds per transaction_ended and per session_ended call (the best of 5)."""
    accepted = TransactionOutcome.ACCEPTED
    quit_ = CloseReason.QUIT

    def best(call: Callable[[], None]) -> float:
        timer = timeit.Timer(call, timer=time.process_time)
        return min(timer.repeat(5, number)) / number * 1e9

    return (
        best(lambda: observer.transaction_ended(accepted, 1024)),
        best(lambda: observer.session_ended(quit_, 0.02)),
    )


def calls(number: int) -> None:
    say(
        f"1. The calls alone (timeit, CPU time, best of 5 x {number:,} calls; ns per call, "
        "a lambda's call included)"
    )
    say(f"   {'observer':<28}{'per message':>14}{'per connection':>16}")
    for name, observer in (
        ("off (NO_OBSERVER)", NO_OBSERVER),
        ("on (PrometheusMetrics)", PrometheusMetrics()),
    ):
        message, session = per_call(observer, number)
        say(f"   {name:<28}{message:>14.0f}{session:>16.0f}")


# ---- 2. whole sessions in one process ------------------------------------------------------


async def _sessions(config: Config, sessions: int, messages: int, text: bytes) -> None:
    server = SMTPServer(Sink(), config=config)
    stuffed = dot_stuff(text)

    async def one() -> None:
        client_end, server_end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server.handle_connection, server_end, peer=PEER))
            client = TestClient(client_end)
            await client.read_reply()
            await client.ehlo()
            for _ in range(messages):
                await client.send(b"MAIL FROM:<a@example.com>\r\n")
                await client.read_reply()
                await client.send(b"RCPT TO:<b@example.org>\r\n")
                await client.read_reply()
                await client.send(b"DATA\r\n")
                await client.read_reply()
                await client.send(stuffed)
                reply = await client.read_reply()
                assert reply.code == 250, reply
            await client.command("QUIT")
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(one)


def in_process(sessions: int, messages: int, size: int, repeat: int) -> None:
    head = b"Subject: bench\r\n\r\n"
    lines = max(0, size - len(head)) // 72
    text = head + (b"x" * 70 + b"\r\n") * lines
    total = sessions * messages
    say(
        f"\n2. Whole sessions in one process: {sessions} sessions x {messages} messages of "
        f"{len(text)} octets, lockstep; CPU per message (server and client), median of {repeat}"
    )
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeat):
        for mode in ("off", "on"):
            observer: Observer = PrometheusMetrics() if mode == "on" else NO_OBSERVER
            config = Config(hostname="mx.test", observer=observer, max_connections=None)
            start = time.process_time()
            trio.run(_sessions, config, sessions, messages, text)
            results[mode].append((time.process_time() - start) / total * 1e6)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    say(f"   metrics off: {off:7.1f} us/message   (runs: {_runs(results['off'])})")
    say(f"   metrics on:  {on:7.1f} us/message   (runs: {_runs(results['on'])})")
    say(f"   difference:  {on - off:+7.1f} us/message ({(on - off) / off:+.1%})")


def _runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


# ---- 3. the command line on loopback -------------------------------------------------------


def _cpu(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _start(extra: Sequence[str], log: Path) -> tuple[subprocess.Popen[bytes], int, str | None]:
    """The CLI on a free port, its log (INFO: a line per connection, message and close) in
    ``log``; its port and metrics URL, read from the log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "smtpd_trio", "--handler", "sink", "--port", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--max-connections", "20000", *extra],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=env,
        )
    deadline = time.monotonic() + 30
    while True:
        text = log.read_text(errors="replace")
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        url = re.search(r"serving metrics on (\S+)", text)
        if port and (url or not extra):
            return proc, int(port.group(1)), url.group(1) if url else None
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not start: {text}")
        time.sleep(0.05)


def cli(messages: int, sessions: int, size: int, repeat: int) -> None:
    if not os.access(SMTP_SOURCE, os.X_OK):
        say(f"\n3. The command line: skipped ({SMTP_SOURCE} not found; apt-get install postfix)")
        return
    say(
        f"\n3. The command line on loopback (--handler sink, INFO log): smtp-source -d, "
        f"{sessions} sessions, {messages} messages of {size} octets; server CPU per message, "
        f"median of {repeat}"
    )
    results: dict[str, list[float]] = {"off": [], "on": []}
    scraped = 0
    log = Path(tempfile.mkdtemp(prefix="smtpd-trio-metrics-")) / "server.log"
    for _ in range(repeat):
        for mode in ("off", "on"):
            extra = ["--metrics", "127.0.0.1:0"] if mode == "on" else []
            proc, port, url = _start(extra, log)
            try:
                before = _cpu(proc.pid)
                argv = [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(messages)]
                argv += ["-l", str(size), "-f", "a@example.com", "-t", "b@example.org"]
                subprocess.run([*argv, f"127.0.0.1:{port}"], check=True, timeout=600)
                results[mode].append((_cpu(proc.pid) - before) / messages * 1e6)
                if url is not None:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        body = response.read().decode()
                    m = re.search(r'smtpd_transactions_total\{outcome="accepted"\} (\S+)', body)
                    scraped = int(float(m.group(1))) if m else -1
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    say(f"   metrics off: {off:7.1f} us/message   (runs: {_runs(results['off'])})")
    say(f"   metrics on:  {on:7.1f} us/message   (runs: {_runs(results['on'])})")
    say(f"   difference:  {on - off:+7.1f} us/message ({(on - off) / off:+.1%})")
    say(f"   the last scrape counted {scraped:,} accepted messages (of {messages:,} sent)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=200_000, help="timeit calls (200000)")
    p.add_argument("--sessions", type=int, default=20, help="sessions at once (20)")
    p.add_argument("--messages", type=int, default=500, help="messages per session, in process")
    p.add_argument("--size", type=int, default=1024, help="message size in octets (1024)")
    p.add_argument("--repeat", type=int, default=5, help="runs of each mode (5)")
    p.add_argument("--cli", action="store_true", help="also the command line, with smtp-source")
    p.add_argument("--cli-messages", type=int, default=20_000, help="messages per CLI run")
    args = p.parse_args(argv)
    steps: list[Callable[[], None]] = [
        partial(calls, args.calls),
        partial(in_process, args.sessions, args.messages, args.size, args.repeat),
    ]
    if args.cli:
        steps.append(partial(cli, args.cli_messages, args.sessions, args.size, args.repeat))
    say(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for step in steps:
        step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
