"""The Trio driver for one SMTP session: stream ⇄ :class:`SMTPMachine` ⇄ handler callbacks.

It is lockstep: one task reads, feeds the machine, awaits the handler for each decision, and
writes the queued replies in one batch whenever the machine needs more input (so pipelined
commands get batched replies). There is no reader task and no send lock.

Timeouts: every wait for the client (and every write to it) runs under ``command_timeout``;
time spent inside the handler never counts. On expiry the client gets ``421 4.4.2``.

Shutdown: when the server asks, a session that is waiting for a command outside a transaction
is told ``421`` at once; one inside a transaction finishes it first (up to the server's
deadline, after which it is cancelled and still told 421 if the stream allows).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import math
import secrets
import ssl
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import trio

from ._smtp import replies
from ._smtp.events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Closed,
    CloseReason,
    CommandRejected,
    Event,
    Hello,
    MailFrom,
    MessageChunk,
    MessageEnd,
    MessageReceived,
    MessageRefused,
    MessageStart,
    RcptTo,
    StartTLS,
    TransactionReset,
    Verify,
)
from ._smtp.machine import SMTPMachine
from ._smtp.replies import Reply
from .auth import Challenge, LoginCredentials, Mechanism, SASLError, SASLExchange
from .config import Config
from .handler import (
    CALLBACK_NAMES,
    Endpoint,
    Envelope,
    Handler,
    MessageAborted,
    Reject,
    Session,
    TLSInfo,
)
from .trace import received_header

if TYPE_CHECKING:
    from .proxy import ProxyInfo

__all__ = ["new_session_id", "run_session"]

log: Final = logging.getLogger("smtpd_trio.session")

_RECEIVE_SIZE: Final = 65536
_DEADLINE_SLACK: Final = 1.0
_NO_MECHANISMS: Final[Mapping[str, Mechanism]] = MappingProxyType({})
_GOODBYE_TIMEOUT: Final = 1.0  # how long a 421 may take to go out when we are being cancelled

_PREFIX: Final = secrets.token_hex(3)
_counter = itertools.count(1)


# The SNI name a client asks for is only visible to the context's sni_callback, which runs
# inside do_handshake() in the session's own task; a context variable carries it back.
_SNI: contextvars.ContextVar[list[str]] = contextvars.ContextVar("smtpd_trio_sni")
_SNI_CONTEXTS: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def _capture_sni(context: ssl.SSLContext) -> None:
    """Wrap the context's sni_callback (once) so the requested name is recorded."""
    if context in _SNI_CONTEXTS:
        return
    previous = context.sni_callback

    def callback(obj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> int | None:
        box = _SNI.get(None)
        if box is not None and name:
            box.append(name)
        return previous(obj, name, ctx) if previous is not None else None  # type: ignore[arg-type]

    context.sni_callback = callback
    _SNI_CONTEXTS.add(context)


def _tls_error_text(exc: BaseException) -> str:
    """A short, log-safe description of a handshake failure."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return type(exc).__name__


def new_session_id() -> str:
    """A short id, unique within this process (a random prefix and a counter)."""
    return f"{_PREFIX}{next(_counter):x}"


class _ShutdownSource(Protocol):
    """What a session asks the server about shutdown (see smtpd_trio.server)."""

    @property
    def shutting_down(self) -> bool: ...


Callback = Callable[..., Awaitable[Any]]


def _callbacks(handler: object) -> dict[str, Callback]:
    """The callbacks the handler really defines (the no-op defaults of Handler are skipped)."""
    found: dict[str, Callback] = {}
    cls = type(handler)
    for name in CALLBACK_NAMES:
        fn = getattr(handler, name, None)
        if fn is None:
            continue
        if getattr(cls, name, None) is getattr(Handler, name):
            continue
        found[name] = fn
    return found


def _as_greeting(reply: Reply | None) -> Reply | None:
    """Make on_connect's refusal a legal greeting: RFC 5321 §3.1 allows only 220, 554 and 421.

    A 4xx (a Reject(450), or the 451 of a failing on_connect) becomes 421, which closes the
    connection so the client retries later; any other 5xx becomes 554 (then only QUIT works).
    """
    if reply is None or reply.is_positive or reply.code in (421, 554):
        return reply
    return Reply(421 if reply.code < 500 else 554, reply.enhanced, reply.text, reply.more)


@final
class _PrefixedStream(trio.abc.Stream):
    """A stream whose first bytes were already read from it: they come back first."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._prefix:
            return await self._stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


@final
class SessionDriver:
    """Runs one session. Built by :func:`run_session` and by the server per connection."""

    # Thousands of these live at once (one per connection): no per-instance __dict__.
    __slots__ = (
        "_broken",
        "_exchange",
        "_io_scope",
        "_mechanisms",
        "_progress",
        "_transactions",
        "_waiting",
        "callbacks",
        "config",
        "envelope",
        "machine",
        "quiet",
        "server",
        "session",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: object,
        *,
        config: Config,
        session: Session,
        callbacks: Mapping[str, Callback] | None = None,
        server: _ShutdownSource | None = None,
        quiet: bool = False,
    ) -> None:
        self.stream = stream
        #: For ignored hosts (health checks): no on_connect and no per-connection log lines.
        self.quiet = quiet
        self.config = config
        self.session = session
        self.callbacks = callbacks if callbacks is not None else _callbacks(handler)
        self.server = server
        self.machine = SMTPMachine(
            hostname=config.hostname,
            max_message_size=config.max_message_size,
            max_recipients=config.max_recipients,
            max_command_line=config.max_command_line,
            max_line_length=config.max_line_length,
            max_errors=config.max_errors,
            bare_line_endings=config.bare_line_endings,
            smtputf8=config.smtputf8,
            banner=config.banner,
            starttls=config.tls_context is not None,
            require_tls=config.require_tls,
            auth_mechanisms=(
                tuple(m.name for m in config.auth_mechanisms) if config.authenticator else ()
            ),
            auth_over_plaintext=config.auth_over_plaintext,
            auth_required=config.auth_required,
            max_auth_failures=config.max_auth_failures,
            stream_body="on_data_chunks" in self.callbacks,
        )
        self._mechanisms: Mapping[str, Mechanism] = (
            {m.name.upper(): m for m in config.auth_mechanisms}
            if config.authenticator is not None
            else _NO_MECHANISMS
        )
        self._exchange: SASLExchange | None = None
        self._transactions = itertools.count(1)
        self.envelope = self._new_envelope()
        # The command loop's I/O cancel scope, and what it is waiting for: "send", "idle"
        # (the next command outside a transaction), "receive", or None (not waiting).
        self._io_scope: trio.CancelScope | None = None
        self._waiting: str | None = None
        self._progress = -1  # machine.lines_taken when the clock was last restarted
        self._broken = False

    # ---- helpers -------------------------------------------------------------------------

    def _new_envelope(self) -> Envelope:
        return Envelope(id=f"{self.session.id}.{next(self._transactions)}")

    def _stop_clock(self) -> None:
        """Handler code is about to run: the command timeout must not count it. (The clock is
        restarted by the next :meth:`_round_trip`; without handler calls in between it is
        never stopped, which saves a deadline update per round trip.)"""
        if self._io_scope is not None:
            self._io_scope.deadline = math.inf
            self._progress = -1  # make the next round trip restart it

    async def _call(self, name: str, *args: object) -> Reply | None:
        """Await a callback; Reject becomes its reply, any other exception 451 and a log line."""
        fn = self.callbacks.get(name)
        if fn is None:
            return None
        self._stop_clock()
        try:
            result = await fn(self.session, *args)
        except Reject as exc:
            return exc.reply
        except Exception:
            log.exception("[%s] handler %s failed; answering 451", self.session.id, name)
            return replies.HANDLER_FAILED
        if result is None or isinstance(result, Reply):
            return result
        log.error(
            "[%s] handler %s returned %r, not a Reply or None; answering 451",
            self.session.id,
            name,
            type(result).__name__,
        )
        return replies.HANDLER_FAILED

    async def _notify(self, name: str, *args: object) -> None:
        """Await a callback whose result does not matter (on_reset, on_close)."""
        fn = self.callbacks.get(name)
        if fn is None:
            return
        self._stop_clock()
        try:
            await fn(self.session, *args)
        except Exception:
            log.exception("[%s] handler %s failed", self.session.id, name)

    async def _flush(self) -> None:
        data = self.machine.data_to_send()
        if not data or self._broken:
            return
        with trio.move_on_after(self.config.command_timeout) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._broken = True
                return
        if scope.cancelled_caught:
            log.info("[%s] client stopped reading; closing", self.session.id)
            self._broken = True

    async def _receive(self) -> bytes | bytearray | None:
        """Bytes from the client; b"" when it closed; None on timeout."""
        with trio.move_on_after(self.config.command_timeout):
            try:
                return await self.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        return None

    def _respond(self, reply: Reply | None) -> None:
        """Answer the pending decision; a handler's 421 also closes the session, as 421 means
        "closing the transmission channel" (RFC 5321 §3.8)."""
        self.machine.respond(reply)
        if reply is not None and reply.code == 421:
            self.machine.close(None)

    def _shutting_down(self) -> bool:
        return self.server is not None and self.server.shutting_down

    # ---- the loop ------------------------------------------------------------------------

    async def run(self, initial_data: bytes = b"") -> None:
        """Serve the session to its end; always closes the stream."""
        machine = self.machine
        try:
            if self.config.implicit_tls:
                if initial_data:
                    # Bytes read together with the PROXY header are the start of the client's
                    # TLS handshake, not SMTP: hand them to the TLS layer.
                    self.stream = _PrefixedStream(self.stream, initial_data)
                    initial_data = b""
                if not await self._start_tls():
                    return
                machine.tls_active = True
            machine.greet(None if self.quiet else _as_greeting(await self._call("on_connect")))
            if initial_data:
                machine.receive_data(initial_data)
            closed = await self._command_loop()
            await self._flush()
            self._log_close(closed)
        except trio.Cancelled:
            # The server is stopping hard: try to say goodbye, without waiting long.
            machine.close(replies.SERVICE_SHUTTING_DOWN)
            with trio.CancelScope(shield=True), trio.move_on_after(_GOODBYE_TIMEOUT):
                await self._flush()
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_GOODBYE_TIMEOUT):
                await self._notify("on_close")
            if isinstance(self.stream, trio.SSLStream) and not self._broken:
                # End TLS with close_notify (RFC 8446 §6.1), so the client sees a clean close
                # after 221/421 rather than a truncation error.
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(_GOODBYE_TIMEOUT),
                    contextlib.suppress(trio.BrokenResourceError, ssl.SSLError),
                ):
                    await self.stream.aclose()
            await trio.aclose_forcefully(self.stream)

    # ---- TLS -----------------------------------------------------------------------------

    async def _start_tls(self) -> bool:
        """Run the TLS handshake on the stream (implicit TLS or after STARTTLS's 220).

        On success the session's stream is the TLS stream and ``session.tls`` is set; on
        failure or timeout, one log line and False (the caller ends the session)."""
        context = self.config.tls_context
        assert context is not None
        _capture_sni(context)
        tls_stream = trio.SSLStream(self.stream, context, server_side=True)
        sni: list[str] = []
        token = _SNI.set(sni)
        try:
            with trio.move_on_after(self.config.tls_handshake_timeout) as scope:
                await tls_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            log.info(
                "[%s] TLS handshake failed: %s",
                self.session.id,
                _tls_error_text(cause) if cause else "connection lost",
            )
            return False
        finally:
            _SNI.reset(token)
        if scope.cancelled_caught:
            log.info("[%s] TLS handshake timed out", self.session.id)
            return False
        self.stream = tls_stream
        cipher = tls_stream.cipher()
        peer_cert = tls_stream.getpeercert() if context.verify_mode != ssl.CERT_NONE else None
        self.session.tls = TLSInfo(
            version=tls_stream.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            server_name=sni[0] if sni else None,
            peer_certificate=peer_cert or None,
        )
        return True

    async def _starttls(self, event: StartTLS) -> None:
        session = self.session
        if event.discarded:
            log.warning(
                "[%s] discarded %d octet(s) sent in plaintext after STARTTLS",
                session.id,
                event.discarded,
            )
        await self._flush()
        if self._broken or not await self._start_tls():
            self.machine.close(None)
            return
        # RFC 3207 §4.2: start afresh; what the PROXY stage learnt is kept.
        session.helo_name = None
        session.extended = False
        session.authenticated_as = None
        self.envelope = self._new_envelope()
        self.machine.tls_established()
        tls = session.tls
        assert tls is not None
        log.info("[%s] TLS started: %s %s", session.id, tls.version, tls.cipher)

    # ---- AUTH ----------------------------------------------------------------------------

    async def _auth_step(self, response: bytes | None) -> None:
        """Feed the mechanism; answer with a challenge, or authenticate the credentials."""
        machine = self.machine
        exchange = self._exchange
        assert exchange is not None
        try:
            outcome = exchange.step(response)
        except SASLError as exc:
            self._exchange = None
            log.info("[%s] malformed AUTH response: %s", self.session.id, exc)
            machine.auth_finish(replies.BAD_SASL_RESPONSE)
            return
        if isinstance(outcome, Challenge):
            machine.auth_challenge(outcome.data)
            return
        self._exchange = None
        authenticator = self.config.authenticator
        assert authenticator is not None
        try:
            self._stop_clock()
            identity = await authenticator(self.session, outcome)
        except Exception:
            log.exception("[%s] authenticator failed; answering 454", self.session.id)
            machine.auth_finish(replies.AUTH_TEMPORARY_FAILURE)
            return
        if identity is None:
            # Only LoginCredentials are known to keep the secret out of their repr; of other
            # credentials (a custom mechanism's token, say) only the type is logged.
            shown = outcome if isinstance(outcome, LoginCredentials) else type(outcome).__name__
            log.info("[%s] authentication failed (%s)", self.session.id, shown)
            machine.auth_finish(replies.AUTH_FAILED)
            return
        self.session.authenticated_as = identity
        log.info("[%s] authenticated as %s", self.session.id, identity)
        machine.auth_finish(None)

    async def _command_loop(self) -> Closed:
        """Take events until the session is over.

        The hot path: one cancel scope serves many round trips. Its deadline is set to
        ``command_timeout`` from now when we start waiting on the client (:meth:`_round_trip`)
        and to infinity before any handler code runs (:meth:`_stop_clock`), so handler time is
        never counted, at the cost of one or two deadline updates per round trip instead of a
        new scope per read and per write. Between the end of a read and a handler call there
        is no checkpoint, so the timeout cannot fire in between.
        """
        machine = self.machine
        while True:
            with trio.CancelScope() as scope:
                self._io_scope = scope
                try:
                    while True:
                        event = machine.next_event()
                        if event is NEED_DATA:
                            await self._round_trip(scope)
                        elif isinstance(event, Closed):
                            return event
                        else:
                            await self._dispatch(event)
                finally:
                    self._io_scope = None
            # The scope was cancelled while we waited on the client.
            self._interrupted(scope)

    async def _round_trip(self, scope: trio.CancelScope) -> None:
        """Send what the machine queued, then read from the client, under one deadline."""
        machine = self.machine
        if self._shutting_down() and not machine.in_transaction:
            machine.close(replies.SERVICE_SHUTTING_DOWN)
            return
        # Restart the clock when the client made progress (a complete command line, or any
        # message text: RFC 5321 times each data block), at most once a second: the timeout
        # fires between command_timeout and command_timeout + 1 s after the wait for the
        # command began, however the client trickles its bytes, and a busy session does not
        # pay a deadline update on every round trip.
        if machine.lines_taken != self._progress or machine.reading_data:
            self._progress = machine.lines_taken
            deadline = trio.current_time() + self.config.command_timeout
            if not deadline <= scope.deadline <= deadline + _DEADLINE_SLACK:
                scope.deadline = deadline + _DEADLINE_SLACK
        data = machine.data_to_send()
        if data:
            self._waiting = "send"
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._broken = True
                machine.receive_data(b"")
                return
        self._waiting = "idle" if not machine.in_transaction else "receive"
        try:
            received = await self.stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            received = b""
        self._waiting = None
        machine.receive_data(received)

    def _interrupted(self, scope: trio.CancelScope) -> None:
        """The I/O scope fired: a timeout, a shutdown waking an idle session, or a client
        that stopped reading what we send. Queue the right goodbye."""
        machine = self.machine
        waiting, self._waiting = self._waiting, None
        if waiting == "send":
            log.info("[%s] client stopped reading; closing", self.session.id)
            self._broken = True
            machine.close(None)
        elif self._shutting_down() and not machine.in_transaction:
            machine.close(replies.SERVICE_SHUTTING_DOWN)
        else:
            log.info("[%s] timeout waiting for the client", self.session.id)
            machine.close(replies.SERVICE_CLOSING_TIMEOUT)

    def wake_if_idle(self) -> None:
        """Called by the server on shutdown: interrupt a wait for the next command outside a
        mail transaction (a session inside one is left to finish it)."""
        if self._waiting == "idle" and self._io_scope is not None:
            self._io_scope.cancel()

    async def _fill(self) -> None:
        """The machine needs input: send what it queued, then read (or close it on timeout,
        shutdown or a broken stream). Used while a streaming handler reads the message."""
        machine = self.machine
        await self._flush()
        if self._broken:
            machine.receive_data(b"")
            return
        if self._shutting_down() and not machine.in_transaction:
            machine.close(replies.SERVICE_SHUTTING_DOWN)
            return
        data = await self._receive()
        if data is None:
            if self._shutting_down() and not machine.in_transaction:
                machine.close(replies.SERVICE_SHUTTING_DOWN)
            else:
                log.info("[%s] timeout waiting for the client", self.session.id)
                machine.close(replies.SERVICE_CLOSING_TIMEOUT)
        else:
            machine.receive_data(data)

    # ---- streaming DATA ------------------------------------------------------------------

    async def _chunks(self, end: list[Event]) -> AsyncGenerator[bytes, None]:
        """The message text as it arrives; reading only when the handler asks (backpressure).
        Stops at a good end; raises MessageAborted if the message is refused or the
        connection ends. The event that ended it goes into ``end``."""
        machine = self.machine
        while True:
            event = machine.next_event()
            if event is NEED_DATA:
                await self._fill()
            elif isinstance(event, MessageChunk):
                yield event.data
            else:
                end.append(event)
                if isinstance(event, MessageEnd):
                    return
                raise MessageAborted(
                    f"message refused: {event.problem.value}"
                    if isinstance(event, MessageRefused)
                    else "connection ended before the end of the message"
                )

    async def _stream_message(self) -> None:
        """DATA with a streaming handler: hand it the chunks, then answer the end."""
        envelope = self.envelope
        envelope.received_header = received_header(self.session, envelope)
        end: list[Event] = []
        chunks = self._chunks(end)
        try:
            reply = await self._call("on_data_chunks", envelope, chunks)
            # Whatever the handler did not read is read (and dropped) here, to the real end.
            with contextlib.suppress(MessageAborted):
                async for _ in chunks:
                    pass
        finally:
            await chunks.aclose()
        last = end[0] if end else None
        if isinstance(last, MessageEnd):
            self._respond(reply)
            self._log_message(reply, last.size)
        elif isinstance(last, MessageRefused):
            await self._dispatch(last)
        # Closed: the main loop sees it next.

    def _log_message(self, reply: Reply | None, size: int) -> None:
        session, envelope = self.session, self.envelope
        accepted = reply is None or reply.is_positive
        if accepted:
            session.messages_accepted += 1
        log.info(
            "[%s] message %s %s: from=<%s> rcpts=%d size=%d",
            session.id,
            envelope.id,
            "accepted" if accepted else f"refused ({reply.code if reply else ''})",
            envelope.mail_from,
            len(envelope.rcpt_tos),
            size,
        )
        self.envelope = self._new_envelope()

    async def _dispatch(self, event: Event) -> None:
        machine = self.machine
        session = self.session
        envelope = self.envelope
        if isinstance(event, AuthStart):
            self._exchange = self._mechanisms[event.mechanism].start()
            await self._auth_step(event.initial_response)
        elif isinstance(event, AuthResponse):
            await self._auth_step(event.data)
        elif isinstance(event, AuthAborted):
            self._exchange = None
        elif isinstance(event, StartTLS):
            await self._starttls(event)
        elif isinstance(event, Closed):
            raise AssertionError("Closed is handled by run()")
        elif isinstance(event, MessageChunk | MessageEnd):
            raise AssertionError("message text is read by _stream_message()")
        elif isinstance(event, MailFrom):
            reply = await self._call("on_mail", envelope, event.address, event.params)
            self._respond(reply)
            if reply is None or reply.is_positive:
                envelope.mail_from = event.address
                envelope.mail_params = event.params
        elif isinstance(event, RcptTo):
            reply = await self._call("on_rcpt", envelope, event.address, event.params)
            self._respond(reply)
            if reply is None or reply.is_positive:
                envelope.rcpt_tos.append(event.address)
                envelope.rcpt_params.append(event.params)
        elif isinstance(event, MessageReceived):
            envelope.content = event.content
            envelope.received_header = received_header(self.session, envelope)
            reply = await self._call("on_data", envelope)
            self._respond(reply)
            self._log_message(reply, len(event.content))
        elif isinstance(event, MessageStart):
            await self._stream_message()
        elif isinstance(event, Hello):
            reply = await self._call("on_helo", event.name, event.extended)
            self._respond(reply)
            if reply is None or reply.is_positive:
                session.helo_name = event.name
                session.extended = event.extended
                if envelope.mail_from is not None:
                    await self._notify("on_reset", envelope)
                    self.envelope = self._new_envelope()
        elif isinstance(event, Verify):
            machine.respond(None)
        elif isinstance(event, TransactionReset):
            await self._notify("on_reset", envelope)
            self.envelope = self._new_envelope()
        elif isinstance(event, MessageRefused):
            log.info(
                "[%s] message %s refused: %s (%d octets read)",
                session.id,
                envelope.id,
                event.problem.value,
                event.size,
            )
            self.envelope = self._new_envelope()
        elif isinstance(event, CommandRejected) and log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] %s -> %s", session.id, event.excerpt, event.reply)

    def _log_close(self, event: Closed) -> None:
        if self.quiet:
            return
        sid = self.session.id
        if event.transaction_dropped:
            log.info("[%s] open transaction dropped (no 250 was sent)", sid)
        if event.reason is CloseReason.TOO_MANY_ERRORS:
            log.warning("[%s] too many errors; closing", sid)
        log.info(
            "[%s] closed (%s) after %d message(s)",
            sid,
            event.reason.value,
            self.session.messages_accepted,
        )


async def run_session(
    stream: trio.abc.Stream,
    handler: object,
    *,
    peer: Endpoint,
    config: Config | None = None,
    client: Endpoint | None = None,
    proxy: ProxyInfo | None = None,
    initial_data: bytes = b"",
    session_id: str | None = None,
) -> Session:
    """Serve one SMTP session on ``stream`` and return its :class:`Session` when it ends.

    ``peer`` is the immediate peer; ``client`` the real client if it differs (after a trusted
    PROXY header, described by ``proxy``); ``initial_data`` is bytes already read from the
    stream that belong to the session. The stream is always closed on return.
    """
    config = config or Config()
    session = Session(
        id=session_id or new_session_id(),
        client=client or peer,
        peer=peer,
        hostname=config.hostname,
        proxy=proxy,
    )
    await SessionDriver(stream, handler, config=config, session=session).run(initial_data)
    return session
