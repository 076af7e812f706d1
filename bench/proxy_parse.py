"""Parse cost per PROXY header: smtpd_trio.proxy beside two other Python parsers.

Run (the peers are not project dependencies, so use a separate environment)::

    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install proxy-protocol==0.11.3 aiosmtpd==1.4.6 attrs trio crc32c
    PYTHONPATH=. /tmp/benchvenv/bin/python bench/proxy_parse.py

What is measured, per header, in microseconds (best of 5 runs):

- smtpd-trio: ``ProxyHeaderReader().feed(header)``: detection, full validation, every TLV
  decoded into value types, and the CRC32C verified when the TLV is present.
- proxy-protocol 0.11: ``ProxyProtocolDetect().unpack(header)``: detection and parsing; TLVs
  are split into a dict of raw bytes (typed values are decoded later, on access); the CRC32C
  is verified when the ``crc32c`` package is installed.
- aiosmtpd 1.4.6: ``await get_proxy(reader)`` on an in-memory reader that never suspends,
  inside one running asyncio loop; for the TLV case ``.tlv`` is also read, which splits the
  TLVs (SSL sub-TLVs included). It never checks the CRC32C. Its parser reads the stream
  itself, so this includes its coroutine and reader calls, but no socket or loop scheduling.

A peer that cannot be imported is skipped with the reason. Timings are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import platform
import time
import timeit
from collections.abc import Callable

from smtpd_trio.proxy import ProxyHeaderReader, ProxyInfo
from smtpd_trio.proxy.crc32c import IMPLEMENTATION, crc32c

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def tlv(tlv_type: int, value: bytes) -> bytes:
    return bytes([tlv_type]) + len(value).to_bytes(2, "big") + value


def v2_inet(extra: bytes = b"", *, with_crc: bool = False, before: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv4Address("203.0.113.7").packed
        + ipaddress.IPv4Address("192.0.2.25").packed
        + (51234).to_bytes(2, "big")
        + (25).to_bytes(2, "big")
    )
    block += before
    crc_at = None
    if with_crc:
        crc_at = 16 + len(block) + 3
        block += tlv(0x03, b"\x00" * 4)
    block += extra
    header = SIG + b"\x21\x11" + len(block).to_bytes(2, "big") + block
    if crc_at is not None:
        header = header[:crc_at] + crc32c(header).to_bytes(4, "big") + header[crc_at + 4 :]
    return header


SSL = tlv(
    0x20,
    b"\x07\x00\x00\x00\x00"
    + tlv(0x21, b"TLSv1.3")
    + tlv(0x22, b"client.example.org")
    + tlv(0x23, b"TLS_AES_256_GCM_SHA384")
    + tlv(0x24, b"RSA-SHA256")
    + tlv(0x25, b"RSA2048"),
)
CASES: list[tuple[str, bytes]] = [
    ("v1 TCP4", b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
    ("v1 TCP6", b"PROXY TCP6 2001:db8::1 2001:db8:85a3::8a2e:370:7334 56324 25\r\n"),
    ("v2 INET, no TLV", v2_inet()),
    (
        "v2 INET + CRC32C, UNIQUE_ID, AUTHORITY, SSL",
        # AUTHORITY (0x02) before CRC32C (0x03): proxy-protocol 0.11 recomputes the checksum
        # over its own re-encoding of the TLVs, sorted by type, so it only verifies headers
        # whose TLVs are in type order.
        v2_inet(tlv(0x05, b"\x8a" * 32) + SSL, with_crc=True, before=tlv(0x02, b"mx.example.org")),
    ),
]

Parser = Callable[[bytes], object]


def ours() -> Parser:
    def parse(header: bytes) -> ProxyInfo:
        info = ProxyHeaderReader().feed(header)
        assert info is not None
        return info

    return parse


def proxy_protocol_peer() -> Parser:
    from proxyprotocol.detect import ProxyProtocolDetect

    detect = ProxyProtocolDetect()

    def parse(header: bytes) -> object:
        return detect.unpack(header)

    return parse


class _MemoryReader:
    """The AsyncReader aiosmtpd's parser wants, over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    async def readexactly(self, n: int) -> bytes:
        chunk = self._data[self._pos : self._pos + n]
        if len(chunk) < n:
            raise asyncio.IncompleteReadError(chunk, n)
        self._pos += n
        return chunk

    async def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        end = self._data.find(separator, self._pos)
        if end < 0:
            raise asyncio.IncompleteReadError(self._data[self._pos :], None)
        chunk = self._data[self._pos : end + len(separator)]
        self._pos = end + len(separator)
        return chunk


def time_ours_or_proxy_protocol(parse: Parser, header: bytes) -> float:
    timer = timeit.Timer(lambda: parse(header))
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def time_aiosmtpd(header: bytes, read_tlvs: bool) -> float:
    from aiosmtpd.proxy_protocol import get_proxy

    async def once() -> object:
        data = await get_proxy(_MemoryReader(header))
        if not data.valid:
            raise ValueError(f"aiosmtpd refused the header: {data.error}")
        if read_tlvs:
            _ = data.tlv
        return data

    async def run(number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            await once()
        return time.perf_counter() - start

    async def measure() -> float:
        await once()
        number = 1000
        while (await run(number)) < 0.2:
            number *= 2
        return min([await run(number) for _ in range(5)]) / number * 1e6

    return asyncio.run(measure())


def main() -> None:
    print(
        f"PROXY header parse cost - Python {platform.python_version()}, {platform.machine()}, "
        f"smtpd-trio CRC32C via {IMPLEMENTATION!r}"
    )
    columns: list[tuple[str, Callable[[str, bytes], float] | None, str]] = []

    parse_ours = ours()
    columns.append(("smtpd-trio", lambda _n, h: time_ours_or_proxy_protocol(parse_ours, h), ""))
    try:
        parse_pp = proxy_protocol_peer()
    except ImportError as exc:
        columns.append(("proxy-protocol 0.11", None, f"not importable: {exc}"))
    else:
        columns.append(
            ("proxy-protocol 0.11", lambda _n, h: time_ours_or_proxy_protocol(parse_pp, h), "")
        )
    try:
        import aiosmtpd.proxy_protocol  # noqa: F401
    except ImportError as exc:
        columns.append(("aiosmtpd 1.4.6", None, f"not importable: {exc}"))
    else:
        columns.append(("aiosmtpd 1.4.6", lambda n, h: time_aiosmtpd(h, "CRC32C" in n), ""))

    for name, run, why in columns:
        if run is None:
            print(f"skipping {name}: {why}")
    live = [(name, run) for name, run, _ in columns if run is not None]
    head = f"{'header (bytes)':52}" + "".join(f"{name:>22}" for name, _ in live)
    print("microseconds per header (best of 5)")
    print(head)
    print("-" * len(head))
    for case, header in CASES:
        cells = []
        for _name, run in live:
            try:
                cells.append(f"{run(case, header):22.2f}")
            except Exception as exc:
                cells.append(f"{'failed: ' + type(exc).__name__:>21} ")
        label = f"{case} ({len(header)})"
        print(f"{label:52}" + "".join(cells))
    print(
        "Notes: smtpd-trio decodes every TLV and checks the CRC32C; proxy-protocol splits TLVs "
        "and checks the CRC32C; aiosmtpd splits TLVs and never checks the CRC32C."
    )


if __name__ == "__main__":
    main()
