"""The incremental PROXY header reader.

:class:`ProxyHeaderReader` takes bytes as they arrive and returns a :class:`ProxyInfo` once the
header is complete, or None while it needs more. It decides what it is looking at as early as the
bytes allow:

- the first byte picks the version: ``P`` for v1, ``\\r`` for v2, anything else is NOT_PROXY;
- every further byte of ``PROXY `` or of the v2 signature is checked as it arrives;
- v1: the protocol word is checked as soon as it cannot become ``TCP4``/``TCP6``/``UNKNOWN``,
  the characters of a TCP line as they arrive, a bare CR or LF at once, and the 107-byte limit;
- v2: the version/command byte, the family/transport byte and the length field are each checked
  on arrival, before the announced length is waited for.

It never holds more than one header: at most 107 bytes for v1 and 16 + 65535 for v2. The bytes of
the chunk that completed the header which follow it are kept in :attr:`trailing`; the caller
hands them to the next protocol layer. Feeding after the header is complete, or after an error,
is a programming error and raises :class:`RuntimeError`.
"""

from __future__ import annotations

import enum
import re
from typing import Final, final

from smtpd_trio.proxy import _v1, _v2
from smtpd_trio.proxy._errors import ProxyErrorReason, ProxyProtocolError, snippet
from smtpd_trio.proxy._info import ProxyCommand, ProxyFamily, ProxyInfo, ProxyTransport

__all__ = ["MAX_V1_LENGTH", "MAX_V2_LENGTH", "ProxyHeaderReader", "parse_proxy_header"]

#: The longest v1 header, CRLF included.
MAX_V1_LENGTH: Final = _v1.MAX_LENGTH
#: The longest v2 header: 16 fixed bytes and a 16-bit length.
MAX_V2_LENGTH: Final = _v2.MAX_LENGTH

_V1_TCP_TEXT: Final = re.compile(rb"[0-9A-Fa-f:. ]*\r?\n?")
_PREFIX_LEN: Final = len(_v1.PREFIX)
_SIG_LEN: Final = len(_v2.SIGNATURE)


class _State(enum.Enum):
    DETECT = enum.auto()
    V1 = enum.auto()
    V2 = enum.auto()
    DONE = enum.auto()
    ERROR = enum.auto()


def _error(reason: ProxyErrorReason, message: str) -> ProxyProtocolError:
    return ProxyProtocolError(reason, message)


@final
class ProxyHeaderReader:
    """Read one PROXY protocol header (v1 or v2), incrementally, without doing any I/O.

    ::

        reader = ProxyHeaderReader()
        while (info := reader.feed(await stream.receive_some())) is None:
            pass
        leftover = reader.trailing  # the start of the application protocol

    ``accept_v1`` and ``accept_v2`` restrict the versions taken; a header of a refused version
    raises :class:`ProxyProtocolError` with reason VERSION_DISABLED once its signature is seen.
    """

    __slots__ = (
        "_accept_v1",
        "_accept_v2",
        "_buf",
        "_command",
        "_family",
        "_header",
        "_info",
        "_need",
        "_state",
        "_trailing",
        "_transport",
    )

    def __init__(self, *, accept_v1: bool = True, accept_v2: bool = True) -> None:
        self._accept_v1 = accept_v1
        self._accept_v2 = accept_v2
        self._state = _State.DETECT
        self._buf = bytearray()
        self._need = 0
        self._command = ProxyCommand.LOCAL
        self._family = ProxyFamily.UNSPEC
        self._transport = ProxyTransport.UNSPEC
        self._info: ProxyInfo | None = None
        self._header = b""
        self._trailing = b""

    @property
    def info(self) -> ProxyInfo | None:
        """The parsed header, once :meth:`feed` has returned it; None before."""
        return self._info

    @property
    def header(self) -> bytes:
        """The raw header bytes, once complete (empty before)."""
        return self._header

    @property
    def trailing(self) -> bytes:
        """The bytes that followed the header in the chunk that completed it (empty before)."""
        return self._trailing

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete header are held."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> ProxyInfo | None:
        """Take the next bytes from the peer.

        Returns the :class:`ProxyInfo` when these bytes complete the header (the bytes after it
        are then in :attr:`trailing`), or None when more are needed. Raises
        :class:`ProxyProtocolError` as soon as the bytes cannot be a valid header.
        """
        if self._state is _State.DONE:
            raise RuntimeError("the PROXY header is already complete; read .trailing instead")
        if self._state is _State.ERROR:
            raise RuntimeError("this PROXY reader has already refused its input")
        if not data:
            return None
        chunk = bytes(data)
        try:
            if self._state is _State.DETECT:
                first = chunk[0]
                if first == 0x50:  # "P"
                    self._state = _State.V1
                elif first == 0x0D:  # "\r"
                    self._state = _State.V2
                else:
                    raise _error(
                        ProxyErrorReason.NOT_PROXY, f"not a PROXY header: {snippet(chunk)}"
                    )
            if self._state is _State.V1:
                return self._feed_v1(chunk)
            return self._feed_v2(chunk)
        except ProxyProtocolError:
            self._state = _State.ERROR
            self._buf.clear()
            raise

    def feed_eof(self) -> None:
        """Tell the reader the peer closed the stream.

        Raises :class:`ProxyProtocolError` (TRUNCATED) unless the header was complete.
        """
        if self._state in (_State.DONE, _State.ERROR):
            return
        held = len(self._buf)
        self._state = _State.ERROR
        self._buf.clear()
        raise _error(
            ProxyErrorReason.TRUNCATED, f"stream closed after {held} byte(s) of PROXY header"
        )

    def _finish(self, info: ProxyInfo, header: bytes, trailing: bytes) -> ProxyInfo:
        self._state = _State.DONE
        self._info = info
        self._header = header
        self._trailing = trailing
        self._buf = bytearray()
        return info

    def _feed_v1(self, chunk: bytes) -> ProxyInfo | None:
        buf = self._buf
        if not buf and self._accept_v1 and chunk.startswith(_v1.PREFIX):
            # Fast path for the common case, a whole line in one chunk: the same checks in the
            # same order as below, without copying into the buffer. Anything unusual (no CRLF
            # yet, a stray CR) takes the general path.
            lf = chunk.find(b"\n", 0, _v1.MAX_LENGTH)
            if lf > 0 and chunk.find(b"\r", _PREFIX_LEN, lf) == lf - 1:
                line = chunk[: lf + 1]
                _v1.check_protocol_prefix(line[_PREFIX_LEN : _PREFIX_LEN + 8])
                if line[_PREFIX_LEN : _PREFIX_LEN + 3] == b"TCP" and (
                    _V1_TCP_TEXT.fullmatch(line, _PREFIX_LEN + 5) is None
                ):
                    raise _error(
                        ProxyErrorReason.BAD_V1_SYNTAX,
                        f"bad character in v1 header {snippet(line)}",
                    )
                return self._finish(_v1.parse_v1(line), line, chunk[lf + 1 :])
        old = len(buf)
        window = _v1.MAX_LENGTH - old
        buf += chunk[:window]
        n = len(buf)
        if old < _PREFIX_LEN:
            k = min(n, _PREFIX_LEN)
            if buf[:k] != _v1.PREFIX[:k]:
                raise _error(ProxyErrorReason.NOT_PROXY, f"not a PROXY header: {snippet(buf)}")
            if n < _PREFIX_LEN:
                return None
            if not self._accept_v1:
                raise _error(ProxyErrorReason.VERSION_DISABLED, "PROXY v1 is not accepted here")
        _v1.check_protocol_prefix(bytes(buf[_PREFIX_LEN : _PREFIX_LEN + 8]))
        lf = buf.find(b"\n", old)
        end = n if lf < 0 else lf + 1
        if buf[_PREFIX_LEN : _PREFIX_LEN + 3] == b"TCP" and (
            _V1_TCP_TEXT.fullmatch(buf, _PREFIX_LEN + 5, end) is None
        ):
            raise _error(
                ProxyErrorReason.BAD_V1_SYNTAX, f"bad character in v1 header {snippet(buf)}"
            )
        cr = buf.find(b"\r", _PREFIX_LEN)
        if lf < 0:
            if cr >= 0 and cr != n - 1:
                raise _error(ProxyErrorReason.BAD_V1_SYNTAX, "bare CR in v1 header")
            if n >= _v1.MAX_LENGTH:
                raise _error(
                    ProxyErrorReason.TOO_LONG, f"no CRLF in the first {_v1.MAX_LENGTH} bytes"
                )
            return None
        if cr != lf - 1:
            what = "bare LF" if cr < 0 or cr > lf else "bare CR"
            raise _error(ProxyErrorReason.BAD_V1_SYNTAX, f"{what} in v1 header")
        header = bytes(buf[:end])
        info = _v1.parse_v1(header)
        return self._finish(info, header, bytes(buf[end:]) + chunk[window:])

    def _feed_v2(self, chunk: bytes) -> ProxyInfo | None:
        buf = self._buf
        if not buf and len(chunk) >= _v2.FIXED_LENGTH and chunk.startswith(_v2.SIGNATURE):
            # Fast path for the common case: the whole fixed part in one chunk.
            if not self._accept_v2:
                raise _error(ProxyErrorReason.VERSION_DISABLED, "PROXY v2 is not accepted here")
            self._command = _v2.check_command(chunk[12])
            self._family, self._transport = _v2.check_family(chunk[13], self._command)
            length = (chunk[14] << 8) | chunk[15]
            _v2.check_length(length, self._command, self._family, self._transport)
            need = _v2.FIXED_LENGTH + length
            if len(chunk) >= need:
                header = chunk[:need]
                info = _v2.parse_v2(header, self._command, self._family, self._transport)
                return self._finish(info, header, chunk[need:])
            self._need = need
            buf += chunk
            return None
        if not self._need:
            old = len(buf)
            take = _v2.FIXED_LENGTH - old
            buf += chunk[:take]
            chunk = chunk[take:]
            n = len(buf)
            if old < _SIG_LEN:
                k = min(n, _SIG_LEN)
                if buf[:k] != _v2.SIGNATURE[:k]:
                    raise _error(ProxyErrorReason.NOT_PROXY, f"not a PROXY header: {snippet(buf)}")
                if n >= _SIG_LEN and not self._accept_v2:
                    raise _error(ProxyErrorReason.VERSION_DISABLED, "PROXY v2 is not accepted here")
            if old <= 12 < n:
                self._command = _v2.check_command(buf[12])
            if old <= 13 < n:
                self._family, self._transport = _v2.check_family(buf[13], self._command)
            if n < _v2.FIXED_LENGTH:
                return None
            length = (buf[14] << 8) | buf[15]
            _v2.check_length(length, self._command, self._family, self._transport)
            self._need = _v2.FIXED_LENGTH + length
        take = self._need - len(buf)
        buf += chunk[:take]
        if len(buf) < self._need:
            return None
        header = bytes(buf)
        info = _v2.parse_v2(header, self._command, self._family, self._transport)
        return self._finish(info, header, chunk[take:])


def parse_proxy_header(
    data: bytes | bytearray | memoryview, *, accept_v1: bool = True, accept_v2: bool = True
) -> tuple[ProxyInfo, bytes]:
    """Parse a header at the start of ``data``; return it and the bytes that follow it.

    Raises :class:`ProxyProtocolError` if the header is malformed or incomplete (TRUNCATED).
    """
    reader = ProxyHeaderReader(accept_v1=accept_v1, accept_v2=accept_v2)
    info = reader.feed(data)
    if info is None:
        reader.feed_eof()
        raise AssertionError("unreachable: feed_eof raises on an incomplete header")
    return info, reader.trailing
