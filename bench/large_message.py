"""Memory for one large message: streaming (on_data_chunks) against the bytes API (on_data).

Starts a server process per mode on a loopback port, sends one message of SIZE MB over a raw
socket, and prints the server's peak RSS growth while it took the message (the peak mark is
reset first; VmHWM after - VmRSS before) beside the message size. Linux only. It prints; it
never fails on a figure.

    python bench/large_message.py            # 50 MB
    python bench/large_message.py --mb 200
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = textwrap.dedent(
    """
    import logging, sys
    import trio
    from smtpd_trio import Config, Handler, Message, MessageStream, Reply, Session, serve_smtp

    class Streaming(Handler):
        async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
            total = 0
            async for chunk in message.chunks:
                total += len(chunk)
            print("received", total, flush=True)
            return None

    class Buffered(Handler):
        async def on_data(self, session: Session, message: Message) -> Reply | None:
            print("received", len(message.content), flush=True)
            return None

    logging.basicConfig(level=logging.WARNING)
    handler = Streaming() if sys.argv[2] == "stream" else Buffered()
    config = Config(max_message_size=int(sys.argv[3]), hostname="bench.test")
    trio.run(lambda: serve_smtp(handler, host="127.0.0.1", port=int(sys.argv[1]), config=config))
    """
)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # KiB
    raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reply(sock: socket.socket) -> bytes:
    """Read one (possibly multi-line) reply."""
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed")
        data += chunk
    return data


def run(mode: str, size: int) -> tuple[int, int, float]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), mode, str(size + 1_000_000)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server did not start")
        with sock:
            _reply(sock)
            # Reset the peak-RSS mark (Linux: "5" > clear_refs), so VmHWM below is this
            # message's peak, not the start-up's.
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            before = _status(proc.pid, "VmRSS")
            for command in (b"EHLO bench\r\n", b"MAIL FROM:<a@example.com>\r\n",
                            b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n"):  # fmt: skip
                sock.sendall(command)
                _reply(sock)
            line = b"x" * 998 + b"\r\n"
            block = line * 64
            sent = 0
            start = time.perf_counter()
            while sent < size:
                sock.sendall(block)
                sent += len(block)
            sock.sendall(b".\r\n")
            final = _reply(sock)
            elapsed = time.perf_counter() - start
            assert final.startswith(b"250"), final
            peak = _status(proc.pid, "VmHWM")
            sock.sendall(b"QUIT\r\n")
        return sent, peak - before, elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="message size in MB (50)")
    size = parser.parse_args().mb * 1_000_000
    print(f"one message of {size / 1e6:.0f} MB, 1000-octet lines, raw socket client")
    print("| handler API | message MB | server peak RSS growth KiB | ratio to message | MB/s |")
    print("|---|--:|--:|--:|--:|")
    for mode, label in (("stream", "on_data_chunks"), ("bytes", "on_data")):
        sent, growth_kib, elapsed = run(mode, size)
        print(
            f"| {label} | {sent / 1e6:.1f} | {growth_kib:,} | {growth_kib * 1024 / sent:.4f} |"
            f" {sent / 1e6 / elapsed:.0f} |"
        )


if __name__ == "__main__":
    main()
