"""Tests for the CRC32C implementations used to check PROXY v2 headers."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpd_trio.proxy import crc32c as crc_module
from smtpd_trio.proxy.crc32c import crc32c, crc32c_native, crc32c_python

CRC = Callable[[bytes | bytearray | memoryview, int], int]

# Known answers: the standard check value, RFC 3720 appendix B.4 (iSCSI) vectors, and more.
VECTORS = [
    (b"", 0x00000000),
    (b"a", 0xC1D04330),
    (b"123456789", 0xE3069283),
    (b"\x00" * 32, 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"The quick brown fox jumps over the lazy dog", 0x22620404),
]

IMPLS: list[tuple[str, CRC]] = [("python", crc32c_python), ("default", crc32c)]
if crc32c_native is not None:
    IMPLS.append(("native", crc32c_native))


@pytest.mark.parametrize("impl", [f for _, f in IMPLS], ids=[n for n, _ in IMPLS])
@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_known_vectors(impl: CRC, data: bytes, expected: int) -> None:
    assert impl(data, 0) == expected


@pytest.mark.parametrize("impl", [f for _, f in IMPLS], ids=[n for n, _ in IMPLS])
def test_accepts_bytearray_and_memoryview(impl: CRC) -> None:
    assert impl(bytearray(b"123456789"), 0) == 0xE3069283
    assert crc32c_python(memoryview(b"xx123456789")[2:]) == 0xE3069283


def test_python_fallback_on_lengths_around_the_word_size() -> None:
    data = bytes(range(256)) * 3
    for n in range(40):
        expected = crc32c_python(data[:n])
        one_by_one = 0
        for i in range(n):
            one_by_one = crc32c_python(data[i : i + 1], one_by_one)
        assert one_by_one == expected


@settings(max_examples=300)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_incremental_matches_whole(data: bytes, cut: int) -> None:
    cut = min(cut, len(data))
    assert crc32c_python(data[cut:], crc32c_python(data[:cut])) == crc32c_python(data)


@pytest.mark.skipif(crc32c_native is None, reason="the crc32c package is not installed")
@settings(max_examples=300)
@given(st.binary(max_size=2000), st.integers(0, 2**32 - 1))
def test_fallback_agrees_with_the_package(data: bytes, start: int) -> None:
    assert crc32c_native is not None
    assert crc32c_python(data, start) == crc32c_native(data, start)


def test_default_uses_the_package_when_importable() -> None:
    installed = importlib.util.find_spec("crc32c") is not None
    expected = "crc32c" if installed else "python"
    assert expected == crc_module.IMPLEMENTATION
    assert (crc_module.crc32c_native is not None) is installed


def test_fallback_is_used_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crc_module, "crc32c_native", None)
    calls: list[bytes] = []

    def spy(data: bytes, value: int = 0) -> int:
        calls.append(bytes(data))
        return crc32c_python(data, value)

    monkeypatch.setattr(crc_module, "crc32c_python", spy)
    assert crc_module.crc32c(b"123456789") == 0xE3069283
    assert calls == [b"123456789"]


def test_loader_falls_back_when_the_import_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "crc32c", None)  # makes `import crc32c` raise ImportError
    assert crc_module._load_native() is None


def test_reader_verifies_checksums_with_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from smtpd_trio.proxy import ProxyChecksumError, parse_proxy_header

    monkeypatch.setattr(crc_module, "crc32c_native", None)
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    block = bytes(12) + b"\x03\x00\x04" + bytes(4)
    header = sig + b"\x21\x11" + len(block).to_bytes(2, "big") + block
    good = header[:-4] + crc32c_python(header).to_bytes(4, "big")
    info, _ = parse_proxy_header(good)
    assert info.crc32c == crc32c_python(header)
    with pytest.raises(ProxyChecksumError):
        parse_proxy_header(good[:-1] + bytes([good[-1] ^ 1]))
