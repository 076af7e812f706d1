#!/usr/bin/env python3
"""When should ``MessageHandler`` parse a message in a worker thread?

Run: ``python bench/parse_in_thread.py`` (with the project importable). Prints, never asserts:

1. how long ``email.message_from_bytes(..., policy=email.policy.default)`` takes (plus reading
   the Subject, which makes the default policy parse a header) for messages of growing size,
   in two shapes: plain text, and a multipart message with a base64 attachment;
2. the cost of one ``trio.to_thread.run_sync`` round trip (a no-op in the thread);
3. the longest stall another task sees (a ticker that sleeps 0 and measures the gaps between
   its wake-ups; the least of three runs) while one message is parsed: on the event loop in
   one call (``inline``), in a worker thread in one call (``thread``), in a worker thread fed
   64 KiB at a time (``thread-pieces``), and on the event loop fed 64 KiB at a time with a
   checkpoint after each piece (``cooperative``).

Parsing inline stalls every other session for the whole parse; in a thread it costs the round
trip, and the stall is bounded by the interpreter's switch interval (the parser holds the GIL
but must hand it over every ``sys.getswitchinterval()`` seconds).
"""

from __future__ import annotations

import base64
import email
import email.parser
import email.policy
import os
import statistics
import sys
import time
from collections.abc import Callable

import trio

PIECE = 64 * 1024
SIZES = [1_000, 10_000, 32_000, 64_000, 128_000, 256_000, 1_000_000, 10_000_000]


def plain(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    head = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hello\r\n\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def multipart(size: int) -> bytes:
    head = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hello\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\n'
        b"Content-Type: text/plain\r\n\r\nSee the attachment.\r\n--XX\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    raw = os.urandom(max(1, (size - len(head)) * 3 // 4))
    return head + base64.encodebytes(raw).replace(b"\n", b"\r\n") + b"--XX--\r\n"


def parse(data: bytes) -> None:
    message = email.message_from_bytes(data, policy=email.policy.default)
    message["Subject"]


def parse_in_pieces(data: bytes) -> None:
    """The same parse, fed to the parser PIECE octets at a time."""
    parser = email.parser.BytesFeedParser(policy=email.policy.default)
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        parser.feed(bytes(view[start : start + PIECE]))
    parser.close()["Subject"]


async def parse_cooperatively(data: bytes) -> None:
    """Fed PIECE octets at a time on the event loop, letting other tasks run in between."""
    parser = email.parser.BytesFeedParser(policy=email.policy.default)
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        parser.feed(bytes(view[start : start + PIECE]))
        await trio.lowlevel.checkpoint()
    parser.close()["Subject"]


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


async def thread_round_trip() -> float:
    times = []
    for _ in range(2000):
        start = time.perf_counter()
        await trio.to_thread.run_sync(lambda: None)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def longest_stall(data: bytes, how: str) -> float:
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await trio.lowlevel.checkpoint()
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)
        if how == "inline":
            parse(data)
        elif how == "thread":
            await trio.to_thread.run_sync(parse, data)
        elif how == "thread-pieces":
            await trio.to_thread.run_sync(parse_in_pieces, data)
        else:
            await parse_cooperatively(data)
        done = True
    return longest


async def main() -> None:
    print(f"Python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1e3} ms")
    print("\nparse time (best of several), ms")
    print(f"{'octets':>10} {'plain':>9} {'multipart':>10}")
    for size in SIZES:
        repeat = 20 if size <= 256_000 else 3
        a = best_of(lambda s=size: parse(plain(s)), repeat) * 1e3
        b = best_of(lambda s=size: parse(multipart(s)), repeat) * 1e3
        print(f"{size:>10} {a:>9.3f} {b:>10.3f}")
    round_trip = await thread_round_trip()
    print(f"\ntrio.to_thread.run_sync round trip: {round_trip * 1e6:.0f} us (median)")
    print("\nlongest stall of another task while one multipart message is parsed, ms")
    hows = ["inline", "thread", "thread-pieces", "cooperative"]
    print(f"{'octets':>10} " + " ".join(f"{how:>13}" for how in hows))
    for size in SIZES:
        data = multipart(size)
        stalls = [min([await longest_stall(data, how) for _ in range(3)]) for how in hows]
        print(f"{size:>10} " + " ".join(f"{stall * 1e3:>13.2f}" for stall in stalls))


if __name__ == "__main__":
    trio.run(main)
