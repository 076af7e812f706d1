"""Test an SMTP handler without sockets: a server session on one end of an in-memory stream,
a small SMTP client on the other.

::

    from smtpd_trio.testing import open_test_session

    async def test_rejects_strangers():
        async with open_test_session(MyHandler()) as client:
            assert (await client.ehlo()).code == 250
            assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
            reply = await client.command("RCPT TO:<nobody@elsewhere.test>")
            assert reply.code == 550
            assert client.session.helo_name == "client.test"   # the server's own Session

The client speaks plain SMTP: :meth:`TestClient.command` sends one line and returns the
parsed reply, :meth:`TestClient.send` sends raw bytes (for pipelining, broken input and
attacks), :meth:`TestClient.read_reply` reads the next reply, :meth:`TestClient.sendmail`
runs a whole transaction with correct dot-stuffing, :meth:`TestClient.bdat` sends a BDAT chunk,
:meth:`TestClient.lhlo` greets an LMTP server, :meth:`TestClient.starttls` upgrades the
stream to TLS (certificates from :func:`tls_contexts`), and :meth:`TestClient.auth_plain`,
:meth:`TestClient.auth_login`, :meth:`TestClient.auth_oauthbearer` and
:meth:`TestClient.auth_xoauth2` authenticate.

:class:`Collector` is a handler that keeps every message it accepts, thread-safely, with
assertion helpers and waits for Trio tests and synchronous ones alike (with
:class:`smtpd_trio.ServerThread`). The pytest fixtures built on these are in
:mod:`smtpd_trio.pytest_plugin`.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.message
import email.policy
import re
import ssl
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, final

import attrs
import trio
import trio.testing

from ._smtp.oauth import oauthbearer_response, xoauth2_response
from .config import Config
from .handler import Endpoint, Handler, Message, Session
from .server import SMTPServer

__all__ = [
    "TEST_PEER",
    "ClientReply",
    "Collector",
    "ProtocolViolation",
    "TLSContexts",
    "TestClient",
    "as_email",
    "dot_stuff",
    "open_test_session",
    "tls_contexts",
]

#: The peer a test session pretends to be connected from (TEST-NET-1, RFC 5737).
TEST_PEER: Final = Endpoint("192.0.2.1", 40000)

_REPLY_LINE: Final = re.compile(rb"(\d{3})([ -])(.*)\Z", re.DOTALL)


@final
@attrs.frozen
class ClientReply:
    """A reply as the client received it."""

    code: int
    #: The text of each line, without code, separator or CRLF.
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code at the start of the first line, if any."""
        m = re.match(r"[245]\.\d{1,3}\.\d{1,3}(?= |\Z)", self.lines[0]) if self.lines else None
        return m.group(0) if m else None

    def __str__(self) -> str:
        return f"{self.code} {' | '.join(self.lines)}"


class ProtocolViolation(AssertionError):
    """The server sent something that is not a well-formed SMTP reply."""


@final
@attrs.frozen
class TLSContexts:
    """A matching pair of TLS contexts for tests: the server's certificate is signed by a
    throwaway CA that the client context trusts."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def tls_contexts(hostname: str = "mx.test") -> TLSContexts:
    """Server and client TLS contexts for ``hostname`` (and ``localhost``, ``127.0.0.1``),
    from a throwaway certificate authority. Needs the ``trustme`` package (in the ``test``
    extra)."""
    try:
        import trustme  # an optional dependency, needed only here
    except ImportError:
        raise RuntimeError(
            "tls_contexts() needs the trustme package: pip install 'smtpd-trio[test]'"
        ) from None
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname, "localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLSContexts(server, client)


@final
class TestClient:
    """The client end of an in-memory SMTP session."""

    __test__ = False  # not a pytest test class

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = bytearray()
        self._session: Session[Any] | None = None
        #: Every byte the server sent so far (before TLS, and the decrypted bytes after).
        self.transcript = bytearray()

    @property
    def session(self) -> Session[Any]:
        """The server's :class:`~smtpd_trio.Session` for this connection (its protocol facts
        and the handler's state), available from the moment the connection is served."""
        if self._session is None:
            raise RuntimeError(
                "the server has not started this session yet (with PROXY on, send the header "
                "and read the greeting first)"
            )
        return self._session

    async def _read_line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self._buf += data
            self.transcript += data

    async def read_reply(self) -> ClientReply:
        """Read one (possibly multi-line) reply."""
        lines: list[str] = []
        code: int | None = None
        while True:
            raw = await self._read_line()
            m = _REPLY_LINE.match(raw)
            if not m or (code is not None and int(m.group(1)) != code):
                raise ProtocolViolation(f"malformed reply line {raw!r}")
            code = int(m.group(1))
            lines.append(m.group(3).decode("utf-8"))
            if m.group(2) == b" ":
                return ClientReply(code, tuple(lines))

    async def send(self, data: bytes) -> None:
        """Send raw bytes, exactly."""
        await self.stream.send_all(data)

    async def command(self, line: str | bytes) -> ClientReply:
        """Send one command line (CRLF is added) and read its reply."""
        raw = line.encode("utf-8") if isinstance(line, str) else line
        await self.send(raw + b"\r\n")
        return await self.read_reply()

    async def ehlo(self, name: str = "client.test") -> ClientReply:
        """``EHLO name``; the reply (its ``lines`` after the first are the extensions)."""
        return await self.command(f"EHLO {name}")

    async def lhlo(self, name: str = "client.test") -> ClientReply:
        """``LHLO name`` (LMTP); the reply, as for :meth:`ehlo`."""
        return await self.command(f"LHLO {name}")

    async def bdat(self, chunk: bytes, *, last: bool = False) -> ClientReply:
        """``BDAT <size> [LAST]`` and the chunk's octets (RFC 3030); the reply. In LMTP the
        LAST chunk is answered once per recipient: read the others with :meth:`read_reply`."""
        await self.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
        return await self.read_reply()

    async def starttls(
        self, context: ssl.SSLContext, *, server_hostname: str | None = "mx.test"
    ) -> ClientReply:
        """``STARTTLS``; if the server answers 220, run the TLS handshake and go on over TLS
        (send EHLO again, as RFC 3207 asks). Returns the reply to STARTTLS."""
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        if self._buf:
            raise ProtocolViolation(f"the server sent {bytes(self._buf)!r} after its 220")
        tls = trio.SSLStream(self.stream, context, server_hostname=server_hostname)
        await tls.do_handshake()
        self.stream = tls
        return reply

    async def auth_plain(
        self, username: str, password: str, *, authzid: str = "", initial_response: bool = True
    ) -> ClientReply:
        """``AUTH PLAIN`` (RFC 4616), with the initial response on the AUTH line unless told
        otherwise; the final reply (235 on success)."""
        token = f"{authzid}\0{username}\0{password}".encode()
        encoded = base64.b64encode(token).decode("ascii")
        if initial_response:
            return await self.command(f"AUTH PLAIN {encoded}")
        reply = await self.command("AUTH PLAIN")
        if reply.code != 334:
            return reply
        return await self.command(encoded)

    async def auth_login(self, username: str, password: str) -> ClientReply:
        """``AUTH LOGIN``: the user name and password in answer to the two challenges; the
        final reply (235 on success)."""
        reply = await self.command("AUTH LOGIN")
        for answer in (username, password):
            if reply.code != 334:
                return reply
            reply = await self.command(base64.b64encode(answer.encode()).decode("ascii"))
        return reply

    async def auth_oauthbearer(
        self,
        user: str | None,
        token: str,
        *,
        host: str | None = None,
        port: int | None = None,
        initial_response: bool = True,
    ) -> ClientReply:
        """``AUTH OAUTHBEARER`` (RFC 7628) with a bearer token, ``user`` as the GS2
        authorization identity. If the server answers with its error challenge (334), this
        sends the dummy response ``^A`` that RFC 7628 §3.2.3 asks for. The final reply (235 on
        success)."""
        response = oauthbearer_response(user, token, host=host, port=port)
        return await self._auth_bearer("OAUTHBEARER", response, b"\x01", initial_response)

    async def auth_xoauth2(
        self, user: str, token: str, *, initial_response: bool = True
    ) -> ClientReply:
        """``AUTH XOAUTH2`` with a bearer token. If the server answers with an error challenge
        (334), this sends an empty response, as Gmail's XOAUTH2 documentation asks. The final
        reply (235 on success)."""
        return await self._auth_bearer(
            "XOAUTH2", xoauth2_response(user, token), b"", initial_response
        )

    async def _auth_bearer(
        self, mechanism: str, response: bytes, dummy: bytes, initial_response: bool
    ) -> ClientReply:
        encoded = base64.b64encode(response).decode("ascii")
        if initial_response:
            reply = await self.command(f"AUTH {mechanism} {encoded}")
        else:
            reply = await self.command(f"AUTH {mechanism}")
            if reply.code != 334:
                return reply
            reply = await self.command(encoded)
        if reply.code == 334:  # the error challenge: the client must answer it
            reply = await self.command(base64.b64encode(dummy).decode("ascii"))
        return reply

    async def sendmail(
        self, mail_from: str, rcpt_tos: Sequence[str], message: bytes, *, mail_params: str = ""
    ) -> ClientReply:
        """MAIL, RCPT for each recipient, DATA and the dot-stuffed message; the final reply.

        Raises AssertionError naming the step if MAIL, RCPT or DATA is refused.
        """
        suffix = f" {mail_params}" if mail_params else ""
        reply = await self.command(f"MAIL FROM:<{mail_from}>{suffix}")
        if reply.code != 250:
            raise AssertionError(f"MAIL refused: {reply}")
        for rcpt in rcpt_tos:
            reply = await self.command(f"RCPT TO:<{rcpt}>")
            if reply.code != 250:
                raise AssertionError(f"RCPT refused: {reply}")
        reply = await self.command("DATA")
        if reply.code != 354:
            raise AssertionError(f"DATA refused: {reply}")
        await self.send(dot_stuff(message))
        return await self.read_reply()

    async def at_eof(self) -> bool:
        """True if the server has closed the connection (all it sent was read first)."""
        if self._buf:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return True
        if data:
            self._buf += data
            self.transcript += data
            return False
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def dot_stuff(message: bytes) -> bytes:
    """What a correct client sends after DATA: line endings made CRLF, leading dots doubled,
    a final CRLF if missing, and the terminating ``.\\r\\n``."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@asynccontextmanager
async def open_test_session(
    handler: Handler[Any],
    *,
    config: Config | None = None,
    peer: Endpoint = TEST_PEER,
    read_greeting: bool = True,
) -> AsyncIterator[TestClient]:
    """Serve one connection for ``handler`` on an in-memory stream and yield its client.

    The connection goes through the same pipeline as a real one (connection limit, PROXY stage
    when ``config.proxy_protocol`` is on, the session), as if accepted from ``peer``. The
    greeting is read for you unless ``read_greeting`` is False (then read it with
    :meth:`TestClient.read_reply`; with PROXY on, send the header first). ``client.session``
    is the server's Session. On exit the client closes and the session is awaited; an
    exception escaping the session fails the test.
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = SMTPServer(handler, config=config or Config(hostname="mx.test"))
    client = TestClient(client_stream)

    def observe(session: Session[Any]) -> None:
        client._session = session

    server._session_observer = observe
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server.handle_connection, server_stream, peer=peer))
            try:
                if read_greeting:
                    greeting = await client.read_reply()
                    if greeting.code != 220:
                        raise AssertionError(f"greeting was not 220: {greeting}")
                yield client
            except BaseException:
                # The test failed: close our end and stop the server session rather than wait
                # for it (it may never end). Nothing here may checkpoint inside the cancelled
                # scope, or a Cancelled would replace the test's own exception.
                await trio.aclose_forcefully(client.stream)
                nursery.cancel_scope.cancel()
                raise
            await client.aclose()
    except BaseExceptionGroup as group:
        # One failure (the test's own, usually): raise it as itself, not wrapped in a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


# ---------------------------------------------------------------------------------------------
# Collecting messages
# ---------------------------------------------------------------------------------------------

#: How long :meth:`Collector.wait` and :meth:`Collector.wait_async` wait by default, in seconds.
DEFAULT_WAIT: Final = 10.0


def as_email(message: Message) -> email.message.EmailMessage:
    """``message.content`` parsed by the standard library (``email.policy.default``): headers
    decoded (``msg["Subject"]``), MIME parts (``msg.walk()``, ``msg.get_body()``)."""
    parsed = email.message_from_bytes(message.content, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def _texts(message: Message) -> list[str]:
    """The message's text: its raw content, and each text part decoded (quoted-printable,
    base64 and charsets undone), for ``contains=``."""
    texts = [message.content.decode("utf-8", "replace")]
    for part in as_email(message).walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError):  # an unknown charset, a broken encoding
            continue
        if isinstance(content, str):
            texts.append(content)
    return texts


def _describe(message: Message) -> str:
    envelope = message.envelope
    subject = as_email(message).get("Subject")
    return f"from <{envelope.mail_from}> to {list(envelope.rcpt_tos)}, Subject: {subject!r}"


def _mismatches(
    message: Message,
    *,
    mail_from: str | None,
    to: str | Iterable[str] | None,
    subject: str | None,
    contains: str | None,
) -> list[str]:
    """Why ``message`` does not match the criteria (an empty list: it does)."""
    problems: list[str] = []
    envelope = message.envelope
    if mail_from is not None and envelope.mail_from != mail_from:
        problems.append(f"the sender is <{envelope.mail_from}>, not <{mail_from}>")
    if to is not None:
        wanted = [to] if isinstance(to, str) else list(to)
        problems.extend(
            f"<{address}> is not among the recipients {list(envelope.rcpt_tos)}"
            for address in wanted
            if address not in envelope.rcpt_tos
        )
    if subject is not None:
        actual = as_email(message).get("Subject")
        if actual != subject:
            problems.append(f"the subject is {actual!r}, not {subject!r}")
    if contains is not None and not any(contains in text for text in _texts(message)):
        problems.append(f"{contains!r} is not in the message text")
    return problems


class Collector(Handler):
    """A handler that accepts every message and keeps it, for tests.

    Thread-safe: the server may run in another thread (:class:`smtpd_trio.ServerThread`)
    or in the test's own Trio run (:func:`open_test_session`). Subclass it to add a policy
    (override ``on_rcpt``, say); a refused message is not kept.

    - :attr:`messages`: what arrived so far, as :class:`~smtpd_trio.Message` objects;
    - :meth:`wait` (synchronous) and :meth:`wait_async` (Trio): until ``count`` messages
      have arrived, or ``TimeoutError``;
    - :meth:`assert_one_message`, :meth:`assert_no_messages` and :meth:`matching`: checks on
      the envelope, the subject and the text.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._messages: list[Message] = []
        # Trio tasks in wait_async(): (messages wanted, their run, their event).
        self._waiters: list[tuple[int, trio.lowlevel.TrioToken, trio.Event]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} with {len(self)} message(s)>"

    def __len__(self) -> int:
        with self._changed:
            return len(self._messages)

    async def on_data(self, session: Session[Any], message: Message) -> None:
        self.collect(message)

    def collect(self, message: Message) -> None:
        """Keep ``message`` and wake whoever waits for it (``on_data`` calls this; so may
        a subclass that overrides ``on_data``)."""
        with self._changed:
            self._messages.append(message)
            count = len(self._messages)
            ready = [waiter for waiter in self._waiters if waiter[0] <= count]
            self._waiters = [waiter for waiter in self._waiters if waiter[0] > count]
            self._changed.notify_all()
        for _, token, event in ready:
            # From any thread, the waiter's own included.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

    @property
    def messages(self) -> list[Message]:
        """The messages accepted so far, oldest first (a copy)."""
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages collected so far."""
        with self._changed:
            self._messages.clear()

    def _timed_out(self, count: int, timeout: float) -> TimeoutError:
        arrived = self.messages
        listed = "".join(f"\n  {_describe(m)}" for m in arrived)
        return TimeoutError(
            f"waited {timeout:g} s for {count} message(s); {len(arrived)} arrived{listed}"
        )

    def wait(self, count: int = 1, *, timeout: float = DEFAULT_WAIT) -> list[Message]:
        """Block until at least ``count`` messages have arrived and return them all; raise
        ``TimeoutError`` after ``timeout`` seconds. For synchronous code: in a Trio task use
        :meth:`wait_async`, which lets the server (and everything else) run meanwhile."""
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Collector.wait() would block Trio: use await wait_async()")
        with self._changed:
            if self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                return list(self._messages)
        raise self._timed_out(count, timeout)

    # A bound by default rather than trio.fail_after around the call: in a test, a message
    # that never comes should fail the test, not hang it.
    async def wait_async(
        self,
        count: int = 1,
        *,
        timeout: float = DEFAULT_WAIT,  # noqa: ASYNC109
    ) -> list[Message]:
        """Wait until at least ``count`` messages have arrived and return them all; raise
        ``TimeoutError`` after ``timeout`` seconds (of the Trio clock). For Trio tests, with
        the server in the same run or in a :class:`~smtpd_trio.ServerThread`."""
        with trio.move_on_after(timeout):
            with self._changed:
                if len(self._messages) >= count:
                    return list(self._messages)
                waiter = (count, trio.lowlevel.current_trio_token(), trio.Event())
                self._waiters.append(waiter)
            try:
                await waiter[2].wait()
            finally:
                with self._changed:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
            return self.messages
        raise self._timed_out(count, timeout)

    def matching(
        self,
        *,
        mail_from: str | None = None,
        to: str | Iterable[str] | None = None,
        subject: str | None = None,
        contains: str | None = None,
    ) -> list[Message]:
        """The messages that match every criterion given: the envelope sender
        ``mail_from``; every address of ``to`` among the envelope recipients (exactly as
        sent); the decoded ``Subject:`` header equal to ``subject``; ``contains`` in the
        text (the raw content, or a decoded text part)."""
        return [
            message
            for message in self.messages
            if not _mismatches(
                message, mail_from=mail_from, to=to, subject=subject, contains=contains
            )
        ]

    def assert_one_message(
        self,
        *,
        mail_from: str | None = None,
        to: str | Iterable[str] | None = None,
        subject: str | None = None,
        contains: str | None = None,
    ) -> Message:
        """Exactly one message arrived, and it matches every criterion given (as for
        :meth:`matching`); return it. AssertionError saying what arrived otherwise."""
        arrived = self.messages
        if len(arrived) != 1:
            listed = "".join(f"\n  {_describe(m)}" for m in arrived)
            raise AssertionError(f"expected one message, {len(arrived)} arrived{listed}")
        [message] = arrived
        problems = _mismatches(
            message, mail_from=mail_from, to=to, subject=subject, contains=contains
        )
        if problems:
            raise AssertionError(
                f"the message ({_describe(message)}) does not match: {'; '.join(problems)}"
            )
        return message

    def assert_no_messages(self) -> None:
        """No message arrived. AssertionError saying what did otherwise."""
        arrived = self.messages
        if arrived:
            listed = "".join(f"\n  {_describe(m)}" for m in arrived)
            raise AssertionError(f"expected no message, {len(arrived)} arrived{listed}")
