#!/usr/bin/env python3
"""What one log line costs the CLI: its handler and formatters as ``python -m smtpd_trio``
sets them up, the per-message line ("message ... accepted") logged N times in a loop, CPU
time per line, for the text and the JSON format, two ways: as the server writes it (without
a LogRecord, ``smtpd_trio._loglines.info``, since the CLI's handler is the only one) and
through ``logging`` (``log.info``, what any other set-up gets). Lines go to /dev/null (the
formatting and the batched writes are done; the disk is left out). Under Valgrind, run it
twice with different N and take the difference to get instructions per line:

    python bench/log_cost.py                   # 200,000 lines per format and way
    valgrind --tool=callgrind python bench/log_cost.py --records 2000 --formats text --ways direct
    valgrind --tool=callgrind python bench/log_cost.py --records 12000 --formats text --ways direct

It prints; it never fails on a figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from smtpd_trio._loglines import info
from smtpd_trio.cli import _setup_logging

WAYS = ("direct", "logging")


def per_record(fmt: str, records: int, way: str = "logging") -> float:
    """CPU seconds per line, through the CLI's handler set up for ``fmt``, written ``way``
    (``direct``: without a record, as the server does; ``logging``: ``log.info``)."""
    saved = sys.stderr
    with open(os.devnull, "w") as sink:
        sys.stderr = sink
        try:
            handler = _setup_logging(logging.INFO, fmt)
            log = logging.getLogger("smtpd_trio.session")
            start = time.process_time()
            for n in range(records):
                fields = {
                    "connection_id": "4f2a9c1",
                    "event": "message-accepted",
                    "sender": "sender@example.com",
                    "recipients": 1,
                    "size": 1150,
                    "reply_code": 250,
                }
                args = ("4f2a9c1", f"4f2a9c1-{n}", "accepted", "", "sender@example.com", 1, 1150)
                if way == "direct":
                    info(log, fields, "[%s] message %s %s%s: from=<%s> rcpts=%d size=%d", *args)
                else:
                    log.info(
                        "[%s] message %s %s%s: from=<%s> rcpts=%d size=%d",
                        *args,
                        extra={"smtpd": fields},
                    )
            handler.flush()
            spent = time.process_time() - start
            handler.close()
        finally:
            sys.stderr = saved
    return spent / records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="lines per format and way")
    parser.add_argument("--formats", default="text,json", help="text, json or both")
    parser.add_argument("--ways", default=",".join(WAYS), help="direct, logging or both")
    args = parser.parse_args(argv)
    for fmt in args.formats.split(","):
        for way in args.ways.split(","):
            seconds = per_record(fmt, args.records, way)
            print(f"{fmt}, {way}: {seconds * 1e6:.1f} µs CPU per line ({args.records:,} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
