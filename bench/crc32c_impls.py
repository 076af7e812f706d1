"""Compare CRC32C implementations on PROXY-header-sized inputs and on 64 KiB.

Run: python bench/crc32c_impls.py  (with the project on PYTHONPATH)

Prints one table: microseconds per call and throughput, for
- the ``crc32c`` package (what smtpd_trio.proxy.crc32c uses when installed),
- ``google-crc32c`` (if installed),
- smtpd_trio's pure-Python slicing-by-8 fallback,
- a plain byte-at-a-time table loop (the textbook fallback), for reference.
Timings are printed, never asserted.
"""

from __future__ import annotations

import os
import platform
import timeit
from collections.abc import Callable

from smtpd_trio.proxy.crc32c import _T0, crc32c_native, crc32c_python

Impl = Callable[[bytes], int]
SIZES = [30, 64, 128, 300, 64 * 1024]


def bytewise(data: bytes, value: int = 0) -> int:
    table = _T0
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def implementations() -> list[tuple[str, Impl | None, str]]:
    impls: list[tuple[str, Impl | None, str]] = []
    if crc32c_native is not None:
        native = crc32c_native
        impls.append(("crc32c package", lambda d: native(d, 0), ""))
    else:
        impls.append(("crc32c package", None, "not installed"))
    try:
        import google_crc32c
    except ImportError as exc:
        impls.append(("google-crc32c", None, f"not importable ({exc})"))
    else:
        note = f"implementation={google_crc32c.implementation}"
        impls.append(("google-crc32c", google_crc32c.value, note))
    impls.append(("pure Python, slicing-by-8 (ours)", crc32c_python, ""))
    impls.append(("pure Python, byte at a time", bytewise, ""))
    return impls


def time_call(impl: Impl, data: bytes) -> float:
    """Return the best of 5 runs, in microseconds per call."""
    timer = timeit.Timer(lambda: impl(data))
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e6


def main() -> None:
    print(f"CRC32C implementations - Python {platform.python_version()}, {platform.machine()}")
    inputs = {size: os.urandom(size) for size in SIZES}
    check = b"123456789"
    header = f"{'implementation':34}" + "".join(
        f"{(f'{s} B' if s < 1024 else f'{s // 1024} KiB'):>12}" for s in SIZES
    )
    print("microseconds per call (best of 5); last column also as MB/s")
    print(header)
    print("-" * len(header))
    for name, impl, note in implementations():
        if impl is None:
            print(f"{name:34}  skipped: {note}")
            continue
        if impl(check) != 0xE3069283:
            print(f"{name:34}  skipped: wrong check value {impl(check):#010x}")
            continue
        cells = []
        for size in SIZES:
            us = time_call(impl, inputs[size])
            cells.append(f"{us:12.2f}")
        mbps = SIZES[-1] / (float(cells[-1]) * 1e-6) / 1e6
        suffix = f"  ({mbps:,.0f} MB/s)" + (f"  [{note}]" if note else "")
        print(f"{name:34}" + "".join(cells) + suffix)


if __name__ == "__main__":
    main()
