"""A small SMTP client for the relay handler: Trio streams, a bound on every wait, no threads.

:class:`ReplyParser` is sans-IO: it takes bytes and gives :class:`UpstreamReply` values,
refusing anything that is not a well-formed reply (a missing or bad code, a multi-line reply
whose lines disagree, a line or reply too long) so that a broken server cannot make us buffer
without bound or misread a conversation. :class:`UpstreamConnection` speaks the protocol over a
Trio stream: the greeting, EHLO (HELO if EHLO is refused), STARTTLS, one command at a time, and
the message text, dot-stuffed as it is sent. Every read and every write has its own deadline;
whatever goes wrong (a refused connection, a timeout, a reset, a TLS failure, a malformed
reply) is an :class:`UpstreamError` whose text is for the log, never for a client.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator
from typing import Final, final

import attrs
import trio

__all__ = [
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "PIECE",
    "ReplyParser",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamReply",
    "UpstreamTimeout",
    "stuffed_pieces",
]

#: The longest reply line accepted, in octets with its line end (RFC 5321 says 512; some
#: servers send longer ones).
MAX_REPLY_LINE: Final = 4096
#: The most lines one reply may have (an EHLO reply has a dozen or two).
MAX_REPLY_LINES: Final = 100
#: Message text is sent in pieces of this many octets, each with its own deadline.
PIECE: Final = 64 * 1024

_REPLY_LINE: Final = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?\Z", re.DOTALL)
_ENHANCED: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|\Z)")


class UpstreamError(Exception):
    """The upstream server cannot be used for this command: it could not be reached, did not
    answer in time, closed the connection, failed TLS or broke the protocol. The text says
    which, for the log (without naming the server: the caller does)."""


class UpstreamTimeout(UpstreamError):
    """The upstream server did not answer (or take what we sent) within the timeout."""


@final
@attrs.frozen
class UpstreamReply:
    """One reply from the upstream server: its code and the text of each line (decoded as
    UTF-8, undecodable octets replaced)."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 code at the start of the first line, if it is there and its class
        matches the reply code's."""
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        if m is None or m.group(1) != str(self.code)[0]:
            return None
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"

    @property
    def texts(self) -> tuple[str, ...]:
        """The lines without the enhanced status code (where it is :attr:`enhanced`)."""
        enhanced = self.enhanced
        if enhanced is None:
            return self.lines
        out = []
        for line in self.lines:
            m = _ENHANCED.match(line)
            same = m is not None and f"{m.group(1)}.{m.group(2)}.{m.group(3)}" == enhanced
            out.append(line[m.end() :] if m is not None and same else line)
        return tuple(out)

    def __str__(self) -> str:
        return f"{self.code} {' | '.join(self.lines)}".rstrip()


@final
class ReplyParser:
    """Bytes in, replies out. Raises :class:`UpstreamError` for anything malformed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._code: int | None = None
        self._lines: list[str] = []

    @property
    def pending(self) -> bool:
        """True if bytes beyond the replies taken so far have arrived."""
        return bool(self._buffer) or bool(self._lines)

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_reply(self) -> UpstreamReply | None:
        """The next complete reply, or None until more bytes are fed."""
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise UpstreamError(f"a reply line longer than {MAX_REPLY_LINE} octets")
                return None
            if end + 1 > MAX_REPLY_LINE:
                raise UpstreamError(f"a reply line longer than {MAX_REPLY_LINE} octets")
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            m = _REPLY_LINE.match(line)
            if m is None:
                raise UpstreamError(f"not an SMTP reply line: {line[:80]!r}")
            code = int(m.group(1))
            if self._code is not None and code != self._code:
                raise UpstreamError(f"a multi-line reply changed its code: {self._code}, {code}")
            self._code = code
            self._lines.append((m.group(3) or b"").decode("utf-8", "replace"))
            if len(self._lines) > MAX_REPLY_LINES:
                raise UpstreamError(f"a reply of more than {MAX_REPLY_LINES} lines")
            if m.group(2) != b"-":
                reply = UpstreamReply(code, tuple(self._lines))
                self._code = None
                self._lines = []
                return reply


def stuffed_pieces(
    data: bytes, *, at_line_start: bool = True, piece: int = PIECE
) -> Iterator[bytes]:
    """``data`` dot-stuffed for DATA, in pieces made from ``piece`` octets of it each.

    A dot is doubled at the start of every line, and also after a bare CR or LF: a server that
    takes those for line ends (against RFC 5321) must not see a line that is only a dot before
    the real end, so no message can be cut short or smuggled through (only a message kept with
    ``bare_line_endings="keep"``, or sent with BDAT, can contain bare CR or LF at all).
    """
    view = memoryview(data)
    for start in range(0, len(data), piece):
        part = bytes(view[start : start + piece])
        stuffed = part.replace(b"\n.", b"\n..").replace(b"\r.", b"\r..")
        if at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        at_line_start = part.endswith((b"\n", b"\r"))
        yield stuffed


def _reason(exc: BaseException) -> str:
    """A short description of a failed network operation, for the log."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or type(cause).__name__


@final
class UpstreamConnection:
    """One SMTP client connection. Open it with :meth:`open`."""

    def __init__(self, stream: trio.abc.Stream, *, name: str, timeout: float) -> None:
        self._stream = stream
        self._parser = ReplyParser()
        #: ``host:port``, for the log.
        self.name = name
        #: The bound on each read and each write, in seconds.
        self.timeout = timeout
        #: The EHLO keywords, upper-cased, with their parameters (empty after HELO).
        self.extensions: dict[str, str] = {}
        #: The TLS version, once STARTTLS succeeded.
        self.tls_version: str | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        helo_name: str,
        tls_context: ssl.SSLContext | None,
        connect_timeout: float,
        io_timeout: float,
    ) -> UpstreamConnection:
        """Connect, read the greeting, EHLO, and STARTTLS if offered and ``tls_context`` is
        given (then EHLO again). Each step has ``connect_timeout`` seconds; later reads and
        writes ``io_timeout`` each."""
        name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            with trio.fail_after(connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise UpstreamTimeout("cannot connect: timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {_reason(exc)}") from None
        connection = cls(stream, name=name, timeout=connect_timeout)
        try:
            await connection._start(host, helo_name, tls_context)
        except BaseException:
            await connection.aclose()
            raise
        connection.timeout = io_timeout
        return connection

    async def _start(self, host: str, helo_name: str, tls_context: ssl.SSLContext | None) -> None:
        greeting = await self.read_reply("the greeting")
        if greeting.code != 220:
            raise UpstreamError(f"greeted with {greeting}")
        await self._hello(helo_name)
        if tls_context is None or "STARTTLS" not in self.extensions:
            return
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise UpstreamError(f"offered STARTTLS but answered it {reply}")
        if self._parser.pending:
            # Anything sent before the handshake would be taken as coming from under TLS.
            raise UpstreamError("sent more after its STARTTLS reply")
        tls = trio.SSLStream(self._stream, tls_context, server_hostname=host)
        with self._guard("the TLS handshake"):
            await tls.do_handshake()
        self._stream = tls
        self.tls_version = str(tls.version())
        await self._hello(helo_name)

    async def _hello(self, helo_name: str) -> None:
        reply = await self.command(f"EHLO {helo_name}")
        if reply.code == 250:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.strip().partition(" ")
                if keyword:
                    self.extensions[keyword.upper()] = params.strip()
            return
        if reply.code < 500:
            raise UpstreamError(f"answered EHLO {reply}")
        reply = await self.command(f"HELO {helo_name}")
        if reply.code != 250:
            raise UpstreamError(f"answered EHLO and HELO {reply}")
        self.extensions = {}

    @contextlib.contextmanager
    def _guard(self, what: str, timeout: float | None = None) -> Iterator[None]:
        """Bound ``what`` by the timeout; turn every way it can fail into UpstreamError."""
        limit = self.timeout if timeout is None else timeout
        try:
            with trio.fail_after(limit):
                yield
        except trio.TooSlowError:
            raise UpstreamTimeout(f"{what} took longer than {limit:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise UpstreamError(f"{what} failed: {_reason(exc)}") from None

    async def read_reply(self, what: str = "a reply") -> UpstreamReply:
        """The next reply, within the timeout."""
        with self._guard(f"waiting for {what}"):
            while True:
                reply = self._parser.next_reply()
                if reply is not None:
                    return reply
                data = await self._stream.receive_some(PIECE)
                if not data:
                    raise UpstreamError("closed the connection")
                self._parser.feed(data)

    async def _send(self, data: bytes, what: str) -> None:
        with self._guard(f"sending {what}"):
            await self._stream.send_all(data)

    async def command(self, line: str) -> UpstreamReply:
        """Send one command line, return its reply."""
        if "\r" in line or "\n" in line:
            raise ValueError("a command line cannot contain CR or LF")
        verb = line.partition(" ")[0]
        if self._parser.pending:
            raise UpstreamError(f"sent something unasked before {verb}")
        await self._send(line.encode("utf-8") + b"\r\n", verb)
        return await self.read_reply(f"the reply to {verb}")

    async def send_message(self, header: bytes, content: bytes) -> UpstreamReply:
        """After a 354: the header and the content, dot-stuffed, the end-of-data line, and the
        final reply. Each piece written has its own deadline."""
        for piece in stuffed_pieces(header):
            await self._send(piece, "the message")
        for piece in stuffed_pieces(content, at_line_start=header.endswith(b"\n")):
            await self._send(piece, "the message")
        ends_a_line = content.endswith(b"\r\n") or (not content and header.endswith(b"\r\n"))
        await self._send(b".\r\n" if ends_a_line else b"\r\n.\r\n", "the end of the message")
        return await self.read_reply("the reply to the message")

    async def quit(self) -> None:
        """QUIT and wait for the reply (failures ignored): the polite way to leave."""
        with contextlib.suppress(UpstreamError):
            await self.command("QUIT")

    async def aclose(self) -> None:
        """Close at once (never waits for the peer)."""
        await trio.aclose_forcefully(self._stream)
