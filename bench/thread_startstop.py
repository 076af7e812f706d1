#!/usr/bin/env python3
"""What a test pays for a real server in a thread: start, one message, stop.

For each round: ``ServerThread(handler).start()`` (returns once the port accepts), one
message with ``smtplib`` (connect, EHLO, MAIL, RCPT, DATA, QUIT), ``stop()`` (a graceful
shutdown, the thread joined). The same with aiosmtpd's ``Controller`` when aiosmtpd can be
imported here, or from the virtualenv ``bench/run.py`` installs it into
(``.bench-cache/aiosmtpd-venv``, added at the end of ``sys.path``), for comparison. Prints the
median and the 90th percentile of each step in milliseconds; never fails on a figure.

    python bench/thread_startstop.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import importlib
import smtplib
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtpd_trio import Config, ServerThread
from smtpd_trio.testing import Collector

#: Where bench/run.py installs aiosmtpd 1.4.6.
BENCH_VENV = Path(__file__).resolve().parent.parent / ".bench-cache" / "aiosmtpd-venv"
MESSAGE = b"From: a@example.com\r\nSubject: timing\r\n\r\nHello.\r\n"


def send(host: str, port: int) -> None:
    with smtplib.SMTP(host, port, local_hostname="client.test") as smtp:
        smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smtpd_trio_round() -> tuple[float, float, float]:
    inbox = Collector()
    t0 = time.perf_counter()
    server = ServerThread(inbox, config=Config(hostname="mx.test"))
    server.start()
    t1 = time.perf_counter()
    send(server.host, server.port)
    t2 = time.perf_counter()
    server.stop()
    t3 = time.perf_counter()
    assert len(inbox.messages) == 1
    return t1 - t0, t2 - t1, t3 - t2


def aiosmtpd_round() -> tuple[float, float, float]:
    # Imported by name: aiosmtpd is optional here, and has no type information.
    Controller = importlib.import_module("aiosmtpd.controller").Controller
    Sink = importlib.import_module("aiosmtpd.handlers").Sink
    port = free_port()  # Controller cannot take port 0: its start() connects to the port
    t0 = time.perf_counter()
    controller: Any = Controller(Sink(), hostname="127.0.0.1", port=port, server_hostname="mx.test")
    controller.start()
    t1 = time.perf_counter()
    send("127.0.0.1", port)
    t2 = time.perf_counter()
    controller.stop()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def report(name: str, one_round: Callable[[], tuple[float, float, float]], rounds: int) -> None:
    one_round()  # warm up: imports, first thread
    steps: list[list[float]] = [[], [], [], []]
    for _ in range(rounds):
        times = one_round()
        for i, seconds in enumerate((*times, sum(times))):
            steps[i].append(seconds * 1000)
    cells = []
    for label, values in zip(("start", "send", "stop", "total"), steps, strict=True):
        p90 = statistics.quantiles(values, n=10)[-1]
        cells.append(f"{label} {statistics.median(values):6.2f} / {p90:6.2f}")
    print(f"{name:<22} " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    print(f"milliseconds, median / 90th percentile, {args.rounds} rounds")
    report("smtpd-trio ServerThread", smtpd_trio_round, args.rounds)
    try:
        aiosmtpd = importlib.import_module("aiosmtpd")
    except ImportError:
        for site in sorted(BENCH_VENV.glob("lib/python*/site-packages")):
            sys.path.append(str(site))
        try:
            aiosmtpd = importlib.import_module("aiosmtpd")
        except ImportError:
            aiosmtpd = None
    if aiosmtpd is None:
        print("aiosmtpd Controller      (aiosmtpd is not installed here: skipped)")
    else:
        report(f"aiosmtpd {aiosmtpd.__version__} Controller", aiosmtpd_round, args.rounds)


if __name__ == "__main__":
    main()
