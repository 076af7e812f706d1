"""The Trio driver for one SMTP session: stream <-> :class:`SMTPMachine` <-> handler callbacks.

The driver moves bytes, keeps time and awaits the handler; every protocol rule (what to answer,
when a transaction starts and ends, the SASL exchange, the STARTTLS reset, what to say when the
session ends) is the machine's. It is lockstep: one task reads, feeds the machine, awaits the
handler for each decision, and writes the queued replies in one batch whenever the machine
needs more input (so pipelined commands get batched replies). There is no reader task and no
send lock.

Time: every wait for the client (and every write to it) runs under a deadline; time spent
inside the handler never counts. A wait for a command has ``command_timeout`` (or
``stress_timeout`` while the server is nearly full), restarted by each complete command line.
While message text arrives, each read of N octets earns N / ``min_data_rate`` seconds more, up
to the same timeout (Postfix's smtpd_min_data_rate), so a client must keep up a minimum rate,
not merely send a byte now and then. No wait outlasts ``max_session_duration``. Whatever
interrupts a wait (a timeout, the session's time limit, a client that stopped reading, a
shutdown waking an idle session) is reported to the machine, which decides the goodbye.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import functools
import itertools
import logging
import math
import os
import secrets
import ssl
import sys
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from . import _loglines
from ._smtp import replies
from ._smtp.body import MemoryBudget
from ._smtp.events import (
    NEED_DATA,
    Authenticate,
    Closed,
    CloseReason,
    CommandRejected,
    Connect,
    Event,
    Expand,
    Hello,
    MailFrom,
    MessageChunk,
    MessageEnd,
    MessageReceived,
    MessageStart,
    RcptTo,
    StartTLS,
    TransactionEnded,
    TransactionOutcome,
    Verify,
    XClient,
)
from ._smtp.machine import SMTPMachine
from ._smtp.replies import Reply
from ._smtp.xclient import Unavailable, XClientInfo
from .auth import BearerCredentials, LoginCredentials
from .config import Config
from .connection import is_trusted
from .handler import (
    Callback,
    Callbacks,
    Endpoint,
    Handler,
    Message,
    MessageAborted,
    MessageStream,
    Reject,
    Session,
    TLSInfo,
    handler_callbacks,
)
from .limits import TOO_FAST, TOO_MANY, ClientLimiter, Refusal, RefusalLog, client_key
from .metrics import AuthOutcome, RefusalReason
from .rdns import ReverseDNS, client_ip
from .trace import host_name, received_header

if TYPE_CHECKING:
    from .proxy import ProxyInfo

__all__ = ["forwarding_rights", "new_session_id", "run_session"]

log: Final = logging.getLogger("smtpd_trio.session")


def _shown(text: str) -> str:
    """``text`` as a log line shows it: unchanged when every character is printable, else
    with the others (controls, line and paragraph separators, format characters such as bidi
    overrides, unpaired surrogates) written as Python escapes (``\\x85``, ``\\u2028``), so
    nothing a client sends can end, split, colour or reorder a line. For the fields a client
    controls (the sender, XCLIENT attributes, an authenticated identity)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


_RECEIVE_SIZE: Final = 65536
#: Plain sockets are read and written by file descriptor on the hot path (see _io).
_DIRECT_IO: Final = sys.platform != "win32"
_DEADLINE_SLACK: Final = 1.0
#: How long a goodbye (the last replies, on_transaction_end, on_close) may take.
_GOODBYE_TIMEOUT: Final = 1.0

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


def _descriptor(stream: trio.abc.Stream) -> int:
    """The descriptor of a plain socket stream, for the direct I/O of _io; -1 for any other
    stream (TLS, memory streams in tests, a prefixed stream) and on Windows."""
    return stream.socket.fileno() if _DIRECT_IO and type(stream) is trio.SocketStream else -1


def _send_now(fd: int, data: bytes) -> bytes:
    """Write what a plain socket takes at once, by descriptor; what it did not take (all of
    ``data`` when ``fd`` is -1).

    A reply fits the socket's send buffer nearly always, and Trio's ``send_all`` would then
    only add a trip through the scheduler that the read after it makes anyway. The caller
    hands the rest to ``send_all``, which waits for room; an OSError is a broken connection.
    """
    if fd < 0:
        return data
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        return data
    return data[sent:] if sent < len(data) else b""


async def _receive(fd: int) -> bytes:
    """Read once from a plain socket, by descriptor, as Trio's ``receive_some`` does without
    its layers: a checkpoint first (a cancelled scope or a passed deadline raises here, even
    for a client that always has more to send), then read, and wait for readability only if
    nothing is there.

    With many sessions at once, the client has usually answered by the time this task runs
    again, so the read succeeds and the socket is never registered with epoll (under the
    benchmark's 20 lockstep sessions: no epoll_ctl at all, where waiting first cost four per
    message). An OSError is a broken connection (the caller treats it as the end).
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    await trio.lowlevel.cancel_shielded_checkpoint()
    while True:
        try:
            return os.read(fd, _RECEIVE_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)


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


#: What a client refused by a per-client limit is told, and what Config.observer hears.
LIMIT_REFUSALS: Final[dict[Refusal, tuple[Reply, RefusalReason]]] = {
    TOO_MANY: (replies.TOO_MANY_FROM_CLIENT, "per-client"),
    TOO_FAST: (replies.CONNECTION_RATE_EXCEEDED, "rate"),
}


def forwarding_rights(config: Config, client: Endpoint) -> tuple[bool, bool]:
    """Whether ``client`` may send XCLIENT, and XFORWARD: is it in ``Config.xclient_hosts``,
    ``Config.xforward_hosts``? ``client`` is the connection's client as accepted: the peer, or
    after a trusted PROXY header the address the header names; never an address XCLIENT gave,
    so XCLIENT cannot grant itself the right to XCLIENT."""
    xclient_hosts = config.xclient_hosts
    xforward_hosts = config.xforward_hosts
    return (
        bool(xclient_hosts) and is_trusted(client, xclient_hosts),
        bool(xforward_hosts) and is_trusted(client, xforward_hosts),
    )


def forwarded_client(client: Endpoint, info: XClientInfo) -> Endpoint:
    """The client after XCLIENT: its ``ADDR`` (``"unknown"`` if ``[UNAVAILABLE]``) and
    ``PORT`` (None if not given with that address, or ``[UNAVAILABLE]``)."""
    addr, port = info.addr, info.port
    if addr is None and port is None:
        return client  # XCLIENT said nothing about the address
    if addr is None:
        host = client.host
    elif isinstance(addr, Unavailable):
        host = "unknown"
    else:
        host = addr
    return Endpoint(host, port if isinstance(port, int) else None)


# What a handler gave for a decision when it did not give a reply: it failed, or timed out.
_FAILED: Final = object()
_TIMED_OUT: Final = object()


def _auth_outcome(result: object) -> AuthOutcome:
    """What the client is told for the authenticator's ``result``: 235 for an identity, 535
    for None, a refusal's own code for a Reply (one that is not a refusal is answered 454, as
    is a failure, a timeout or a result of the wrong type)."""
    if result is None:
        return "failure"
    if isinstance(result, str):
        return "success"
    if isinstance(result, Reply) and result.code >= 500:
        return "failure"
    return "temporary-failure"


@final
@attrs.define(eq=False)
class Shared:
    """What the sessions of one server share (a lone :func:`run_session` has its own)."""

    #: Octets of message text all sessions hold in memory at once.
    budget: MemoryBudget
    #: Which refusals caused by clients get a log line.
    refusals: RefusalLog
    #: The server is nearly full: waits for clients use ``stress_timeout``.
    stressed: bool = False
    #: Connections at once and per minute, per client (the server's; sessions re-count a
    #: connection under the client XCLIENT names).
    limiter: ClientLimiter | None = None
    #: Client name lookups and their cache, with ``Config.reverse_dns``.
    reverse_dns: ReverseDNS | None = None

    @classmethod
    def for_config(cls, config: Config) -> Shared:
        reverse_dns = (
            ReverseDNS(config.resolver, timeout=config.reverse_dns_timeout)
            if config.reverse_dns
            else None
        )
        return cls(
            MemoryBudget(config.max_buffered_bytes),
            RefusalLog(config.refusal_log_interval),
            limiter=ClientLimiter(
                max_at_once=config.max_connections_per_client,
                per_minute=config.max_connection_rate,
            ),
            reverse_dns=reverse_dns,
        )


@final
class SessionDriver:
    """Runs one session. Built by :func:`run_session` and by the server per connection."""

    # Thousands of these live at once (one per connection): no per-instance __dict__.
    __slots__ = (
        "_admitted",
        "_broken",
        "_budget",
        "_command_timeout",
        "_fd",
        "_handler_scope",
        "_immediate",
        "_in_data",
        "_io_scope",
        "_progress",
        "_rate",
        "_rdns_pending",
        "_session_end",
        "_shutting_down",
        "_stress_timeout",
        "_wait_started",
        "_waiting",
        "_woken",
        "callbacks",
        "config",
        "machine",
        "quiet",
        "session",
        "shared",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        callbacks: Callbacks,
        *,
        config: Config,
        session: Session[Any],
        shared: Shared | None = None,
        quiet: bool = False,
    ) -> None:
        self._use(stream)
        self.shared = shared if shared is not None else Shared.for_config(config)
        #: For ignored hosts (health checks): no on_connect and no per-connection log lines.
        self.quiet = quiet
        self.config = config
        self.session = session
        self.callbacks = callbacks
        xclient, xforward = forwarding_rights(config, session.client)
        self.machine = SMTPMachine(
            config.smtp,
            facts=session,
            session_id=session.id,
            stream_body=callbacks.on_data_chunks is not None,
            budget=self.shared.budget,
            xclient=xclient,
            xforward=xforward,
            expn=callbacks.on_expn is not None,
            # The decisions no callback takes: the machine answers them without a trip
            # through this loop.
            auto_accept=_auto_accept(
                helo=callbacks.on_helo is None,
                mail=callbacks.on_mail is None,
                rcpt=callbacks.on_rcpt is None,
            ),
        )
        # The per-client limit key this session counts its connection under, after XCLIENT
        # (before it, the server counts the connection, unless its client may send XCLIENT).
        self._admitted: str | None = None
        # The command loop's I/O cancel scope, and what it is waiting for: "send", "idle"
        # (the next command outside a transaction), "receive", or None (not waiting).
        self._io_scope: trio.CancelScope | None = None
        self._waiting: str | None = None
        self._woken = False  # the server interrupted an idle wait to shut down
        self._shutting_down = False  # the server asked this session to end when idle
        self._progress = -1  # machine.lines_taken when the clock was last restarted
        self._broken = False  # nothing more can be written to the stream
        # Seconds the client has left for what it is sending now (see _io), and whether that
        # is message text (earning min_data_rate credit) or a command.
        self._budget = config.command_timeout
        self._in_data = False
        self._wait_started = 0.0
        self._command_timeout = config.command_timeout
        stress = config.stress_timeout
        self._stress_timeout = (
            self._command_timeout if stress is None else min(stress, self._command_timeout)
        )
        self._rate = config.min_data_rate
        self._handler_scope: trio.CancelScope | None = None
        # Set while the reverse DNS lookup of the client runs (see _look_up_client).
        self._rdns_pending: trio.Event | None = None
        # The events that need no await because the handler has no callback for them.
        self._immediate = _immediate_steps(
            connect=callbacks.on_connect is None or quiet,
            data=callbacks.on_data is None and callbacks.on_data_chunks is None,
            end=callbacks.on_transaction_end is None,
            vrfy=callbacks.on_vrfy is None,
        )
        duration = config.max_session_duration
        self._session_end = math.inf if duration is None else trio.current_time() + duration

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, initial_data: bytes = b"") -> Coroutine[Any, Any, None]:
        """Serve the session to its end (await the result); always closes the stream. With
        reverse DNS, the lookup of the client's name runs alongside (see
        :mod:`smtpd_trio.rdns`).

        Not a coroutine function itself: without reverse DNS it hands back :meth:`_serve`'s
        coroutine, so an idle connection holds one coroutine frame fewer (thousands are idle
        at once)."""
        rdns = self.shared.reverse_dns
        if rdns is None or self.quiet or client_ip(self.session.client.host) is None:
            return self._serve(initial_data)
        return self._serve_with_lookup(rdns, initial_data)

    async def _serve_with_lookup(self, rdns: ReverseDNS, initial_data: bytes) -> None:
        async with trio.open_nursery() as nursery:
            self._rdns_pending = trio.Event()
            nursery.start_soon(self._look_up_client, rdns, self._rdns_pending)
            try:
                await self._serve(initial_data)
            finally:
                nursery.cancel_scope.cancel()

    async def _look_up_client(self, rdns: ReverseDNS, done: trio.Event) -> None:
        """Find the client's name (bounded by the lookup's timeout) and record it."""
        session = self.session
        host = session.client.host
        try:
            name = await rdns.lookup(host)
            if session.client.host == host:  # else XCLIENT named another client meanwhile
                session._client_name = name
        finally:
            session._client_name_looked_up = True
            done.set()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] client name: %s", session.id, session._client_name or "unknown")

    async def _client_name(self) -> None:
        """Wait for the reverse DNS lookup, if one is still running."""
        pending = self._rdns_pending
        if pending is not None:
            await pending.wait()
            self._rdns_pending = None

    async def _serve(self, initial_data: bytes) -> None:
        machine = self.machine
        started = trio.current_time()
        try:
            if self.config.implicit_tls:
                if initial_data:
                    # Bytes read together with the PROXY header are the start of the client's
                    # TLS handshake, not SMTP: hand them to the TLS layer.
                    self._use(_PrefixedStream(self.stream, initial_data))
                    initial_data = b""
                info = await self._handshake()
                if info is None:
                    machine.close(CloseReason.TLS_FAILED)
                    return
                machine.tls_established(info)
            pause = self.config.greet_pause
            if pause is not None and not self.quiet:
                heard = initial_data or await self._listen(pause)
                if heard is None:
                    self._broken = True
                    machine.close(CloseReason.PEER_CLOSED)
                elif heard:
                    self._refused("early-talker", "spoke before the greeting; refused")
                    machine.close(CloseReason.EARLY_TALKER)
                initial_data = b""
            if initial_data:
                machine.receive_data(initial_data)

            # The command loop: take events until the session is over. It is inline (not a
            # method of its own) so that an idle connection holds one coroutine frame fewer.
            #
            # The hot path: one cancel scope serves many round trips. Its deadline is set to
            # the client's time when we start waiting on the client (_io) and to infinity
            # before any handler code runs (_stop_clock), so handler time is never counted, at
            # the cost of one or two deadline updates per round trip instead of a new scope per
            # read and per write. Between the end of a read and a handler call there is no
            # checkpoint, so the timeout cannot fire in between. When a wait is cut short, the
            # scope ends, _interrupted tells the machine why, and a new scope takes over.
            dispatch = _DISPATCH
            immediate = self._immediate
            closed: Closed | None = None
            while closed is None:
                with trio.CancelScope() as scope:
                    self._io_scope = scope
                    try:
                        while True:
                            event = machine.next_event()
                            if event is NEED_DATA:
                                await self._io(scope)
                                continue
                            kind = type(event)
                            if kind is Closed:
                                await self._last_words(scope)
                                closed = event  # type: ignore[assignment]
                                break
                            step = immediate.get(kind)
                            if step is not None:
                                step(self, event)  # nothing to await: no handler callback
                            else:
                                await dispatch[kind](self, event)
                    finally:
                        self._io_scope = None
                if closed is None:
                    self._interrupted()
            self._log_close(closed)
        except trio.Cancelled:
            # The server is stopping hard: say goodbye if we can, without waiting long.
            machine.close(CloseReason.SHUTDOWN)
            with trio.CancelScope(shield=True):
                await self._send_goodbye()
            raise
        finally:
            if self._admitted is not None:
                limiter = self.shared.limiter
                assert limiter is not None
                limiter.release(self._admitted)
                self._admitted = None
            ends = self._finish()
            if ends or self.callbacks.on_close is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(_GOODBYE_TIMEOUT):
                    await self._tell_the_handler(ends)
            self.config.observer.session_ended(machine.close_reason, trio.current_time() - started)
            if isinstance(self.stream, trio.SSLStream) and not self._broken:
                # End TLS with close_notify (RFC 8446 §6.1), so the client sees a clean close
                # after 221/421 rather than a truncation error.
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(_GOODBYE_TIMEOUT),
                    contextlib.suppress(trio.BrokenResourceError, ssl.SSLError),
                ):
                    await self.stream.aclose()
            stream = self.stream
            if type(stream) is trio.SocketStream:
                # What SocketStream.aclose does, without its checkpoint (a pass through the
                # scheduler under a cancelled scope, for nothing: the session is over).
                stream.socket.close()
            else:
                await trio.aclose_forcefully(stream)

    def _use(self, stream: trio.abc.Stream) -> None:
        """From now on the session speaks through ``stream`` (TLS, or a prefixed stream)."""
        self.stream = stream
        self._fd = _descriptor(stream)

    async def _last_words(self, scope: trio.CancelScope) -> None:
        """Send what the machine queued with its Closed event (221, 421), under the command
        loop's scope with a short deadline."""
        data = self.machine.data_to_send()
        if data and not self._broken:
            self._waiting = "goodbye"
            try:
                rest = _send_now(self._fd, data)
                if rest:
                    scope.deadline = trio.current_time() + _GOODBYE_TIMEOUT
                    await self.stream.send_all(rest)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._broken = True
            self._waiting = None

    def _timeout(self) -> float:
        return self._stress_timeout if self.shared.stressed else self._command_timeout

    async def _io(self, scope: trio.CancelScope) -> None:
        """The one read path: send what the machine queued, then read once, under ``scope``
        with the client's deadline (see the module docstring).

        The client's time is a budget of seconds: set to the timeout when a wait for a new
        command begins (a complete line arrived, or a handler just answered) and when message
        text begins; each read spends its elapsed time; each read of message text earns
        octets / min_data_rate seconds, up to the timeout. The scope's deadline follows it to
        within a second (moving a deadline costs more than the arithmetic), and never passes
        the end of the session.
        """
        machine = self.machine
        now = trio.current_time()
        if now >= self._session_end:
            # Time is up: what is queued (a 250 included) still goes out, with a 421 after it.
            self._refused("session-too-long", "connection time limit reached; closing")
            machine.close(CloseReason.SESSION_TOO_LONG)
            return
        timeout = self._timeout()
        if machine.reading_data:
            if not self._in_data:
                self._in_data = True
                self._budget = timeout
        elif machine.lines_taken != self._progress:
            self._progress = machine.lines_taken
            self._in_data = False
            self._budget = timeout
        budget = self._budget = min(self._budget, timeout)
        deadline = min(now + budget, self._session_end)
        if not deadline <= scope.deadline <= deadline + _DEADLINE_SLACK:
            scope.deadline = min(deadline + _DEADLINE_SLACK, self._session_end)
        self._wait_started = now
        data = machine.data_to_send()
        fd = self._fd
        if data:
            self._waiting = "send"
            try:
                rest = _send_now(fd, data)
                if rest:
                    await self.stream.send_all(rest)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._waiting = None
                self._broken = True
                machine.receive_data(b"")
                return
            if self._shutting_down and not machine.in_transaction:
                # Shutdown was asked for while we were sending: do not start an idle wait
                # it would not interrupt; the machine ends the session (421) right away.
                self._waiting = None
                return
        self._waiting = "receive" if machine.in_transaction else "idle"
        received: bytes | bytearray
        try:
            if fd >= 0:
                received = await _receive(fd)
            else:
                received = await self.stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            received = b""
        self._waiting = None
        self._budget -= trio.current_time() - now
        if self._in_data and received:
            rate = self._rate
            self._budget = timeout if rate is None else self._budget + len(received) / rate
        machine.stressed = self.shared.stressed  # as it is when the input is taken
        machine.receive_data(received)

    def _interrupted(self) -> None:
        """An I/O wait was cut short: tell the machine why (it decides the goodbye)."""
        waiting, self._waiting = self._waiting, None
        if waiting == "goodbye":
            self._broken = True  # the client is not reading its 221 or 421: no more to say
        elif waiting == "send":
            self._refused("stalled", "client stopped reading; closing")
            self._broken = True
            self.machine.close(CloseReason.STALLED)
        elif self._woken:
            self._woken = False  # shutdown: the machine already knows, and ends it when idle
        elif trio.current_time() >= self._session_end:
            self._refused("session-too-long", "connection time limit reached; closing")
            self.machine.close(CloseReason.SESSION_TOO_LONG)
        else:
            what = "message text" if self._in_data else "the client"
            self._refused("timeout", f"timeout waiting for {what}")
            self.machine.close(CloseReason.TIMEOUT)

    def _refused(self, kind: str, text: str) -> None:
        """One INFO line for a refusal the client caused, at most once per client and kind per
        ``refusal_log_interval``; the rest are counted (and reported with the next line)."""
        if self.quiet:
            return
        key = client_key(self.session.client.host, ipv6_prefix=self.config.client_ipv6_prefix)
        held = self.shared.refusals.note(key or self.session.client.host, kind, trio.current_time())
        if held is None:
            return
        more = f" ({held} more like it from this client since the last report)" if held else ""
        log.info("[%s] %s%s", self.session.id, text, more)

    def tighten(self) -> None:
        """The server is now nearly full: a wait already under way gets the stress timeout
        too (a new one does by itself)."""
        scope = self._io_scope
        if scope is not None and self._waiting is not None:
            deadline = self._wait_started + self._timeout()
            if deadline < scope.deadline:
                scope.deadline = deadline

    async def _listen(self, pause: float) -> bytes | None:
        """Listen for ``pause`` seconds before the greeting: what the client sent meanwhile
        (b"" if nothing), or None if it went away."""
        with trio.move_on_after(pause):
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            return bytes(data) or None
        return b""

    def request_shutdown(self) -> None:
        """Called by the server on graceful shutdown: the session ends (421) as soon as no
        mail transaction is open; an idle wait for the next command is interrupted at once."""
        self.machine.request_shutdown()
        self._shutting_down = True
        if self._waiting == "idle" and self._io_scope is not None:
            self._woken = True
            self._io_scope.cancel()

    def _stop_clock(self) -> None:
        """Handler code is about to run: the command timeout must not count it. (The clock is
        restarted by the next :meth:`_io`; without handler calls in between it is never
        stopped, which saves a deadline update per round trip.)"""
        scope = self._io_scope
        if scope is not None:
            scope.deadline = math.inf
            self._progress = -1  # make the next round trip restart it

    async def _send_goodbye(self) -> None:
        """Send what the machine queued last (221, 421), briefly."""
        data = self.machine.data_to_send()
        if not data or self._broken:
            return
        with trio.move_on_after(_GOODBYE_TIMEOUT):
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._broken = True

    def _finish(self) -> list[TransactionEnded]:
        """The session is over: the last transaction's end is logged and counted; returns the
        ends the handler's on_transaction_end must still hear of."""
        machine = self.machine
        machine.close(CloseReason.PEER_CLOSED)  # a no-op unless the loop did not finish
        machine.data_to_send()
        ends: list[TransactionEnded] = []
        while True:
            event = machine.next_event()
            if type(event) is not TransactionEnded:
                return ends
            self._transaction_ended(event)
            if self.callbacks.on_transaction_end is not None:
                ends.append(event)

    async def _tell_the_handler(self, ends: list[TransactionEnded]) -> None:
        """The last transaction ends, then on_close (shielded, briefly: see run())."""
        on_end = self.callbacks.on_transaction_end
        for event in ends:
            assert on_end is not None
            await self._notify("on_transaction_end", on_end, event.envelope, event.outcome)
        if self.callbacks.on_close is not None:
            await self._notify("on_close", self.callbacks.on_close)

    # ---- handler calls -----------------------------------------------------------------------

    async def _ask(self, name: str, fn: Callback, *args: object) -> object:
        """Await a deciding callback: its reply (None, a Reply, or whatever it returned), the
        reply of a Reject it raised, _FAILED if it raised anything else (logged), or
        _TIMED_OUT if it ran past ``handler_timeout``."""
        self._stop_clock()
        if self._rdns_pending is not None:
            await self._client_name()
        with trio.move_on_after(self._handler_time()) as scope:
            try:
                return await fn(self.session, *args)
            except Reject as exc:
                return exc.reply
            except Exception:
                log.exception(
                    "[%s] handler %s failed; answering with a temporary failure",
                    self.session.id,
                    name,
                )
                return _FAILED
        assert scope.cancelled_caught
        self._handler_timed_out(name)
        return _TIMED_OUT

    def _handler_time(self) -> float:
        limit = self.config.handler_timeout
        return math.inf if limit is None else limit

    def _handler_timed_out(self, name: str) -> None:
        log.warning(
            "[%s] handler %s took longer than handler_timeout (%g s); it was cancelled",
            self.session.id,
            name,
            self.config.handler_timeout,
        )

    def _answer(self, name: str, result: object) -> None:
        """Give the machine a callback's answer; a wrong one is logged and answered with a
        temporary failure (the machine checks what each decision allows)."""
        machine = self.machine
        if result is _FAILED or result is _TIMED_OUT:
            machine.fail(timed_out=result is _TIMED_OUT)
            return
        try:
            machine.respond(result)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            log.error("[%s] handler %s returned %r: %s", self.session.id, name, result, exc)
            machine.fail()

    def _answer_message(self, name: str, result: object) -> None:
        """Give the machine the answer to a message: a reply for every recipient, or (LMTP) a
        list or tuple with one answer per recipient. A wrong one is logged, and answered with a
        temporary failure (for every recipient, in LMTP)."""
        if not isinstance(result, list | tuple):
            self._answer(name, result)
            return
        try:
            self.machine.respond_recipients(result)
        except (TypeError, ValueError) as exc:
            log.error("[%s] handler %s returned %r: %s", self.session.id, name, result, exc)
            self.machine.fail()

    async def _notify(self, name: str, fn: Callback, *args: object) -> None:
        """Await a callback whose result does not matter (on_transaction_end, on_close)."""
        self._stop_clock()
        with trio.move_on_after(self._handler_time()) as scope:
            try:
                await fn(self.session, *args)
            except Exception:
                log.exception("[%s] handler %s failed", self.session.id, name)
        if scope.cancelled_caught:
            self._handler_timed_out(name)

    # ---- events ------------------------------------------------------------------------------

    async def _on_connect(self, event: Connect) -> None:
        await self._greet()

    async def _greet(self) -> None:
        fn = self.callbacks.on_connect
        if fn is None or self.quiet:
            self.machine.respond(None)
        else:
            self._answer("on_connect", await self._ask("on_connect", fn))

    async def _on_xclient(self, event: XClient) -> None:
        """XCLIENT restarted the session for the client it names: that is now
        ``session.client`` (the peer stays the peer), counted by the per-client limits and
        greeted as a new connection is: on_connect is asked again."""
        session = self.session
        info = event.info
        client = session.client = forwarded_client(session.client, info)
        if self.shared.reverse_dns is not None and not self.quiet:
            # Our lookup was of the proxy: the name the proxy forwards takes its place.
            self._rdns_pending = None
            session._client_name = host_name(info.name) if isinstance(info.name, str) else None
            session._client_name_looked_up = True
        if not self.quiet:
            log.info(
                "[%s] XCLIENT from %s: client %s (name=%s helo=%s login=%s)",
                session.id,
                session.peer,
                client,
                _shown(str(info.name)),
                _shown(str(info.helo)),
                _shown(str(info.login)),
                extra={
                    "smtpd": {
                        "connection_id": session.id,
                        "event": "xclient",
                        "client": str(client),
                    }
                },
            )
        refused = self._recount(client)
        if refused is not None:
            # The connection was served, so it ends as a session (reason "refused": the 421
            # closes it), not as a refused connection: Config.observer counts it once.
            self._refused(refused, f"refused {client} after XCLIENT: {refused}")
            self.machine.respond(LIMIT_REFUSALS[refused][0])
            return
        await self._greet()

    def _recount(self, client: Endpoint) -> Refusal | None:
        """Count this connection under ``client`` from now on (per-client limits), or say why
        that client may not have one more."""
        limiter = self.shared.limiter
        if limiter is None or self.quiet:
            return None
        key = client_key(client.host, ipv6_prefix=self.config.client_ipv6_prefix)
        if key == self._admitted:
            return None
        if key is not None:
            refused = limiter.admit(key, trio.current_time())
            if refused is not None:
                return refused
        if self._admitted is not None:
            limiter.release(self._admitted)
        self._admitted = key
        return None

    # HELO/EHLO, MAIL and RCPT reach the loop only for a handler with the callback: without
    # one, the machine accepts them itself (auto_accept).

    async def _on_hello(self, event: Hello) -> None:
        fn = self.callbacks.on_helo
        assert fn is not None
        self._answer("on_helo", await self._ask("on_helo", fn, event.name, event.extended))

    async def _on_mail(self, event: MailFrom) -> None:
        fn = self.callbacks.on_mail
        assert fn is not None
        self._answer("on_mail", await self._ask("on_mail", fn, event.address, event.params))

    async def _on_rcpt(self, event: RcptTo) -> None:
        fn = self.callbacks.on_rcpt
        assert fn is not None
        result = await self._ask("on_rcpt", fn, event.envelope, event.address, event.params)
        self._answer("on_rcpt", result)

    async def _on_message(self, event: MessageReceived) -> None:
        fn = self.callbacks.on_data
        if fn is None:
            self.machine.respond(None)
            return
        if self._rdns_pending is not None:
            self._stop_clock()
            await self._client_name()
        trace = received_header(self.session, event.envelope)
        message = Message(event.envelope, event.content, trace)
        self._answer_message("on_data", await self._ask("on_data", fn, message))

    async def _on_verify(self, event: Verify) -> None:
        fn = self.callbacks.on_vrfy
        if fn is None:
            self.machine.respond(None)
        else:
            self._answer("on_vrfy", await self._ask("on_vrfy", fn, event.argument))

    async def _on_expand(self, event: Expand) -> None:
        fn = self.callbacks.on_expn
        assert fn is not None  # the machine offers EXPN only when the handler answers it
        self._answer("on_expn", await self._ask("on_expn", fn, event.argument))

    async def _on_authenticate(self, event: Authenticate) -> None:
        machine = self.machine
        authenticator = self.config.authenticator
        assert authenticator is not None  # AUTH is only offered with one
        sid = self.session.id
        identity = await self._ask("authenticator", authenticator, event.credentials)
        self.config.observer.authentication(_auth_outcome(identity))
        if identity is _FAILED or identity is _TIMED_OUT or isinstance(identity, Reply):
            self._answer("authenticator", identity)
            return
        if identity is None:
            # Only the built-in credentials are known to keep the secret out of their repr; of
            # other credentials (a custom mechanism's token, say) only the type is logged.
            credentials = event.credentials
            what = (
                credentials
                if isinstance(credentials, LoginCredentials | BearerCredentials)
                else type(credentials).__name__
            )
            log.info("[%s] authentication failed (%s)", sid, what)
        try:
            machine.auth_result(identity)  # type: ignore[arg-type]
        except TypeError as exc:
            log.error("[%s] authenticator returned %r: %s", sid, type(identity).__name__, exc)
            machine.fail()
            return
        if identity is not None:
            log.info("[%s] authenticated as %s", sid, _shown(str(identity)))

    async def _on_starttls(self, event: StartTLS) -> None:
        sid = self.session.id
        if event.discarded:
            log.info(
                "[%s] discarded %d octet(s) sent in plaintext after STARTTLS", sid, event.discarded
            )
        info = await self._handshake(self.machine.data_to_send())
        if info is None:
            self.machine.close(CloseReason.TLS_FAILED)
            return
        self.machine.tls_established(info)
        log.info("[%s] TLS started: %s %s", sid, info.version, info.cipher)

    async def _on_message_start(self, event: MessageStart) -> None:
        """DATA with a streaming handler: hand it the chunks, then answer the end."""
        fn = self.callbacks.on_data_chunks
        assert fn is not None  # the machine streams only when the handler does
        ends: list[Event] = []
        chunks = self._chunks(ends)
        if self._rdns_pending is not None:
            self._stop_clock()
            await self._client_name()
        trace = received_header(self.session, event.envelope)
        try:
            result: object = _TIMED_OUT
            self._stop_clock()
            # handler_timeout bounds the handler's own time: each read it waits for moves the
            # deadline on by what the read took (see _chunks).
            with trio.move_on_after(self._handler_time()) as scope:
                self._handler_scope = scope
                try:
                    result = await fn(self.session, MessageStream(event.envelope, trace, chunks))
                except MessageAborted:
                    result = _FAILED if not ends else None
                except Reject as exc:
                    result = exc.reply
                except Exception:
                    log.exception(
                        "[%s] handler on_data_chunks failed; answering with a temporary failure",
                        self.session.id,
                    )
                    result = _FAILED
            self._handler_scope = None
            if scope.cancelled_caught:
                self._handler_timed_out("on_data_chunks")
            # Whatever the handler did not read is read (and dropped) here, to the real end.
            with contextlib.suppress(MessageAborted):
                async for _ in chunks:
                    pass
        finally:
            await chunks.aclose()
        end = ends[0] if ends else None
        if type(end) is MessageEnd:
            self._answer_message("on_data_chunks", result)
        elif type(end) is TransactionEnded:
            await self._on_transaction_end(end)
        # Closed: the main loop sees it next.

    async def _chunks(self, ends: list[Event]) -> AsyncGenerator[bytes, None]:
        """The message text as it arrives, read only when the handler asks (backpressure).
        Stops at a good end; raises MessageAborted if the message is refused or the
        connection ends. The event that ended it goes into ``ends``."""
        machine = self.machine
        while not ends:
            event = machine.next_event()
            if event is NEED_DATA:
                # The handler's deadline stops while we wait for the client, and moves on by
                # what the wait took: handler_timeout counts the handler's own time only.
                handler_scope = self._handler_scope
                paused = math.inf
                if handler_scope is not None:
                    paused, handler_scope.deadline = handler_scope.deadline, math.inf
                started = trio.current_time()
                with trio.CancelScope() as scope:
                    await self._io(scope)
                if scope.cancelled_caught:
                    self._interrupted()
                self._stop_clock()
                if handler_scope is not None:
                    handler_scope.deadline = paused + (trio.current_time() - started)
            elif type(event) is MessageChunk:
                yield event.data
            elif type(event) in _BETWEEN_CHUNKS:
                # Between the chunks of a BDAT message the client may send other commands; an
                # accepted HELO/EHLO ends the message (a TransactionEnded comes next).
                step = self._immediate.get(type(event))
                if step is not None:
                    step(self, event)
                else:
                    await _DISPATCH[type(event)](self, event)
            else:
                ends.append(event)
                if type(event) is not MessageEnd:
                    reply = event.reply if type(event) is TransactionEnded else None
                    raise MessageAborted(
                        f"message refused ({reply.code} {reply.enhanced})"
                        if reply is not None
                        else "connection ended before the end of the message"
                    )

    def _transaction_ended(self, event: TransactionEnded) -> None:
        """What every transaction end gets, with or without a handler callback."""
        self._log_transaction(event)  # messages are logged even from ignored hosts
        self.config.observer.transaction_ended(event.outcome, event.size)

    async def _on_transaction_end(self, event: TransactionEnded) -> None:
        self._transaction_ended(event)
        fn = self.callbacks.on_transaction_end
        if fn is not None:
            await self._notify("on_transaction_end", fn, event.envelope, event.outcome)

    async def _on_command_rejected(self, event: CommandRejected) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] %s -> %s", self.session.id, event.excerpt, event.reply)

    # ---- TLS ---------------------------------------------------------------------------------

    async def _handshake(self, pending: bytes = b"") -> TLSInfo | None:
        """Send ``pending`` (STARTTLS's 220), then run the TLS handshake on the stream, all
        under ``tls_handshake_timeout``. On success the session's stream is the TLS stream;
        on failure or timeout, one log line and None (the caller ends the session)."""
        self._stop_clock()
        context = self.config.tls_context
        assert context is not None
        _capture_sni(context)
        tls_stream = trio.SSLStream(self.stream, context, server_side=True)
        sni: list[str] = []
        token = _SNI.set(sni)
        try:
            with trio.move_on_after(self.config.tls_handshake_timeout) as scope:
                if pending:
                    await self.stream.send_all(pending)
                await tls_stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            cause = exc.__cause__
            log.info(
                "[%s] TLS handshake failed: %s",
                self.session.id,
                _tls_error_text(cause) if cause else "connection lost",
            )
            self.config.observer.tls_handshake("failure")
            self._broken = True
            return None
        finally:
            _SNI.reset(token)
        if scope.cancelled_caught:
            log.info("[%s] TLS handshake timed out", self.session.id)
            self.config.observer.tls_handshake("timeout")
            self._broken = True
            return None
        self._use(tls_stream)
        self.config.observer.tls_handshake("success")
        cipher = tls_stream.cipher()
        context_verifies = context.verify_mode != ssl.CERT_NONE
        peer_cert = tls_stream.getpeercert() if context_verifies else None
        return TLSInfo(
            version=tls_stream.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            server_name=sni[0] if sni else None,
            peer_certificate=peer_cert or None,
        )

    # ---- logging -----------------------------------------------------------------------------

    def _log_transaction(self, event: TransactionEnded) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        envelope = event.envelope
        sid = self.session.id
        outcome = event.outcome
        if outcome is TransactionOutcome.ACCEPTED or outcome is TransactionOutcome.REFUSED:
            reply = event.reply
            verdict = "accepted" if outcome is TransactionOutcome.ACCEPTED else "refused"
            code = f"{reply.code} {reply.enhanced}" if reply and reply.enhanced else ""
            _loglines.info(
                log,
                {
                    "connection_id": sid,
                    "event": f"message-{verdict}",
                    "sender": envelope.mail_from,
                    "recipients": len(envelope.rcpt_tos),
                    "size": event.size or 0,
                    "reply_code": reply.code if reply else None,
                },
                "[%s] message %s %s%s: from=<%s> rcpts=%d size=%d",
                sid,
                envelope.id,
                verdict,
                f" ({code})" if outcome is TransactionOutcome.REFUSED else "",
                _shown(envelope.mail_from),
                len(envelope.rcpt_tos),
                event.size or 0,
            )
        elif outcome is TransactionOutcome.ABORTED:
            log.info("[%s] transaction %s aborted (no 250 was sent)", sid, envelope.id)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] transaction %s reset", sid, envelope.id)

    def _log_close(self, event: Closed) -> None:
        # The connection's one INFO line: who it was, how it ended, what it sent, how long it
        # took (the "connection from" line as it opens is DEBUG).
        if self.quiet or not log.isEnabledFor(logging.INFO):
            return
        session = self.session
        client = str(session.client)
        peer = str(session.peer)
        via = f" via {peer}" if peer != client else ""
        seconds = (datetime.datetime.now(datetime.UTC) - session.connected_at).total_seconds()
        _loglines.info(
            log,
            {
                "connection_id": session.id,
                "event": "close",
                "reason": event.reason.value,
                "client": client,
                "peer": peer,
                "messages": session.messages_accepted,
                "duration": round(seconds, 3),
            },
            "[%s] closed (%s) after %d message(s): client %s%s, %.3f s",
            session.id,
            event.reason.value,
            session.messages_accepted,
            client,
            via,
            seconds,
        )


_Dispatch = Callable[[SessionDriver, Any], Awaitable[None]]
_Immediate = Callable[[SessionDriver, Any], None]


def _accept(driver: SessionDriver, event: Event) -> None:
    driver.machine.respond(None)


def _log_end(driver: SessionDriver, event: TransactionEnded) -> None:
    driver._transaction_ended(event)


def _note_rejected(driver: SessionDriver, event: CommandRejected) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("[%s] %s -> %s", driver.session.id, event.excerpt, event.reply)


@functools.cache
def _immediate_steps(
    *, connect: bool, data: bool, end: bool, vrfy: bool
) -> dict[type[Event], _Immediate]:
    """For the callbacks a handler does not define (True: absent), the events the loop can
    answer at once, without creating and awaiting a coroutine. (HELO/EHLO, MAIL and RCPT
    without a callback never reach the loop: the machine accepts them, see ``auto_accept``.)"""
    table: dict[type[Event], _Immediate] = {CommandRejected: _note_rejected}
    absent = {
        Connect: connect,
        MessageReceived: data,
        Verify: vrfy,
    }
    for kind, missing in absent.items():
        if missing:
            table[kind] = _accept
    if end:
        table[TransactionEnded] = _log_end
    return table


@functools.cache
def _auto_accept(
    *, helo: bool, mail: bool, rcpt: bool
) -> frozenset[type[Hello | MailFrom | RcptTo]]:
    """The decisions the machine takes itself for a handler without those callbacks (True:
    absent); one set per combination, shared by every session."""
    absent = ((Hello, helo), (MailFrom, mail), (RcptTo, rcpt))
    return frozenset(kind for kind, missing in absent if missing)


# The events a client's commands between two BDAT chunks can bring while a streaming handler
# reads the message (MAIL, RCPT, DATA, AUTH, STARTTLS, XCLIENT and XFORWARD are refused there).
_BETWEEN_CHUNKS: Final = frozenset({Hello, Verify, Expand, CommandRejected})

# Every event the main loop can meet, and what the driver does with it.
_DISPATCH: Final[dict[type[Event], _Dispatch]] = {
    Connect: SessionDriver._on_connect,
    Hello: SessionDriver._on_hello,
    MailFrom: SessionDriver._on_mail,
    RcptTo: SessionDriver._on_rcpt,
    MessageReceived: SessionDriver._on_message,
    MessageStart: SessionDriver._on_message_start,
    Verify: SessionDriver._on_verify,
    Expand: SessionDriver._on_expand,
    Authenticate: SessionDriver._on_authenticate,
    StartTLS: SessionDriver._on_starttls,
    TransactionEnded: SessionDriver._on_transaction_end,
    CommandRejected: SessionDriver._on_command_rejected,
    XClient: SessionDriver._on_xclient,
}


async def run_session(
    stream: trio.abc.Stream,
    handler: Handler[Any],
    *,
    peer: Endpoint,
    config: Config | None = None,
    client: Endpoint | None = None,
    proxy: ProxyInfo | None = None,
    initial_data: bytes = b"",
    session_id: str | None = None,
) -> Session[Any]:
    """Serve one SMTP session on ``stream`` and return its :class:`Session` when it ends.

    ``peer`` is the immediate peer; ``client`` the real client if it differs (after a trusted
    PROXY header, described by ``proxy``); ``initial_data`` is bytes already read from the
    stream that belong to the session. The stream is always closed on return. The handler is
    checked as :class:`~smtpd_trio.SMTPServer` checks it (TypeError for a bad callback).
    """
    config = config or Config()
    callbacks = handler_callbacks(handler)
    session = new_session(
        callbacks,
        id=session_id or new_session_id(),
        client=client or peer,
        peer=peer,
        hostname=config.hostname,
        proxy=proxy,
    )
    await SessionDriver(stream, callbacks, config=config, session=session).run(initial_data)
    return session


def new_session(
    callbacks: Callbacks,
    *,
    id: str,
    client: Endpoint,
    peer: Endpoint,
    hostname: str,
    proxy: ProxyInfo | None,
) -> Session[Any]:
    """A session with the handler's state (``new_state``) in it."""
    session: Session[Any] = Session(id=id, client=client, peer=peer, hostname=hostname, proxy=proxy)
    if callbacks.new_state is not None:
        session.state = callbacks.new_state(session)
    return session
