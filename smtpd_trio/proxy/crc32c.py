"""CRC32C (Castagnoli), the checksum of PROXY v2's ``PP2_TYPE_CRC32C`` TLV.

:func:`crc32c` uses the `crc32c <https://pypi.org/project/crc32c/>`_ package (installed by the
``smtpd-trio[crc32c]`` extra; hardware-accelerated on x86-64 and ARM64) when it can be imported,
and otherwise :func:`crc32c_python`, a pure-Python slicing-by-8 implementation that gives the same
results. PROXY headers are short (typically 30 to 300 bytes), so the fallback costs tens of
microseconds per checksummed header: acceptable, but the extra is recommended for busy servers.

Both functions take an optional running ``value`` so a checksum can be computed in pieces::

    crc32c(b"1234" + b"56789") == crc32c(b"56789", crc32c(b"1234")) == 0xE3069283
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

__all__ = ["IMPLEMENTATION", "crc32c", "crc32c_native", "crc32c_python"]

Buffer = bytes | bytearray | memoryview

#: The reflected form of the Castagnoli polynomial 0x1EDC6F41 (RFC 4960, appendix B).
_POLY: Final = 0x82F63B78
_MASK: Final = 0xFFFFFFFF


def _make_tables() -> tuple[tuple[int, ...], ...]:
    """Build the eight 256-entry tables of slicing-by-8; table 0 is the classic byte table."""
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [tuple(t0)]
    for _ in range(7):
        prev = tables[-1]
        tables.append(tuple((prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)))
    return tuple(tables)


_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7 = _make_tables()
_TWO_WORDS: Final = struct.Struct("<II")


def crc32c_python(data: Buffer, value: int = 0) -> int:
    """Return the CRC32C of ``data``, continuing from the checksum ``value`` (pure Python)."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7
    crc = (value & _MASK) ^ _MASK
    view = memoryview(data).cast("B")
    body = len(view) & ~7
    for lo, hi in _TWO_WORDS.iter_unpack(view[:body]):
        lo ^= crc
        crc = (
            t7[lo & 0xFF]
            ^ t6[(lo >> 8) & 0xFF]
            ^ t5[(lo >> 16) & 0xFF]
            ^ t4[lo >> 24]
            ^ t3[hi & 0xFF]
            ^ t2[(hi >> 8) & 0xFF]
            ^ t1[(hi >> 16) & 0xFF]
            ^ t0[hi >> 24]
        )
    for byte in view[body:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK


def _load_native() -> Callable[[Buffer, int], int] | None:
    try:
        import crc32c as native  # optional: the smtpd-trio[crc32c] extra
    except ImportError:
        return None
    function: Callable[[Buffer, int], int] = native.crc32c
    return function


#: The `crc32c` package's function, or None when the package is not installed.
crc32c_native: Final = _load_native()

#: Which implementation :func:`crc32c` uses: ``"crc32c"`` (the package) or ``"python"``.
IMPLEMENTATION: Final = "python" if crc32c_native is None else "crc32c"


def crc32c(data: Buffer, value: int = 0) -> int:
    """Return the CRC32C of ``data``, continuing from the checksum ``value``."""
    if crc32c_native is not None:
        return crc32c_native(data, value)
    return crc32c_python(data, value)
