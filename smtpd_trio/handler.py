"""What a handler sees and returns: :class:`Handler`, :class:`Session`, :class:`Envelope`,
:class:`Message`, :class:`MessageStream`, :class:`Reject`.

A handler subclasses :class:`Handler` and overrides some of these (all optional; a missing one
accepts)::

    def new_state(self, session) -> StateT                                   (sync)
    async def on_proxy(self, session, info) -> Reply | None
    async def on_connect(self, session) -> Reply | None
    async def on_helo(self, session, name, extended) -> Reply | None
    async def on_mail(self, session, address, params) -> Reply | None
    async def on_rcpt(self, session, envelope, address, params) -> Reply | None
    async def on_data(self, session, message) -> Reply | None                (LMTP: or a list)
    async def on_data_chunks(self, session, message) -> Reply | None         (streaming)
    async def on_vrfy(self, session, argument) -> Reply | None
    async def on_expn(self, session, argument) -> Reply | None
    async def on_transaction_end(self, session, envelope, outcome) -> None
    async def on_close(self, session) -> None

The server checks every callback when it is built (:func:`handler_callbacks`): a synchronous
callback, one that cannot take the arguments it will be given, or a name from an older version
of this API is a :class:`TypeError` naming the method, not a failure on every call.

To refuse, raise :class:`Reject` (or return a :class:`~smtpd_trio.Reply` with a 4xx/5xx code).
Any other exception escaping a callback is logged with the connection id and answered with a
temporary failure (``451 4.3.0``); its text never reaches the client.

In LMTP (``Config(lmtp=True)``) ``on_data`` and ``on_data_chunks`` may also return a list (or
tuple) with one answer per recipient, in the order of ``envelope.rcpt_tos``: None to accept the
message for that recipient, a 4xx/5xx :class:`~smtpd_trio.Reply` to refuse it for that one.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, cast, final

import attrs

from ._smtp.events import Envelope, TransactionOutcome
from ._smtp.facts import SessionFacts, TLSInfo
from ._smtp.replies import Reply
from ._smtp.xclient import Unavailable, XClientInfo, XForwardInfo
from .errors import SMTPDTrioError

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from .proxy import ProxyInfo

    #: The type of ``Session.state``: what :meth:`Handler.new_state` returns.
    StateT = TypeVar("StateT", default=dict[str, Any])
else:
    from typing import TypeVar

    StateT = TypeVar("StateT")

__all__ = [
    "Callbacks",
    "Endpoint",
    "Envelope",
    "Handler",
    "Message",
    "MessageAborted",
    "MessageStream",
    "Reject",
    "Session",
    "TLSInfo",
    "TransactionOutcome",
    "Unavailable",
    "XClientInfo",
    "XForwardInfo",
    "extra_callbacks",
    "handler_callbacks",
]

log: Final = logging.getLogger("smtpd_trio.handler")


@final
@attrs.frozen
class Endpoint:
    """One end of a connection: an IP address (or a UNIX socket path) and a port."""

    #: The IP address as text (``"192.0.2.1"``, ``"2001:db8::1"``), or a UNIX socket path.
    host: str
    #: The port, or None for UNIX sockets and unknown ports.
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _empty_state() -> Any:
    return {}


@final
@attrs.define(eq=False, kw_only=True, repr=False)
class Session(SessionFacts, Generic[StateT]):
    """One SMTP connection, as the handler sees it; the same object for every callback of
    that connection.

    The protocol facts (``helo_name``, ``extended``, ``tls``, ``authenticated_as``,
    ``messages_accepted``, ``xclient``) are read-only properties kept current by the protocol
    state machine; ``state`` is the handler's own (see :meth:`Handler.new_state`).
    """

    #: A short id unique within this process; every log line about the connection carries it.
    id: str
    #: The client: after a trusted PROXY header, the real client; after XCLIENT from a host
    #: allowed to send it, the client XCLIENT names (``"unknown"`` for ``[UNAVAILABLE]``);
    #: else the immediate peer.
    client: Endpoint
    #: The immediate peer (the load balancer, when there is one).
    peer: Endpoint
    #: The host name this server announces (banner, EHLO, Received).
    hostname: str
    #: The PROXY protocol header that was believed, if any.
    proxy: ProxyInfo | None = None
    #: When the connection was accepted (UTC).
    connected_at: _dt.datetime = attrs.field(factory=lambda: _dt.datetime.now(_dt.UTC))
    #: The handler's per-connection state: what :meth:`Handler.new_state` returned (a new
    #: empty dict by default).
    state: StateT = attrs.field(factory=_empty_state)
    # Written by the session driver when the reverse DNS lookup of the client is over.
    _client_name: str | None = None
    _client_name_looked_up: bool = False

    @property
    def client_name(self) -> str | None:
        """The client's host name from reverse DNS, forward-confirmed (the name's A/AAAA
        records include the client's address), with ``Config.reverse_dns``; None when that is
        off, or the name could not be found, confirmed or checked in time. Every callback
        that decides (``on_connect`` to ``on_data``, ``on_vrfy``, ``on_expn``) sees the final
        value: the server waits for the lookup, at most ``Config.reverse_dns_timeout``,
        before calling one. After XCLIENT it is the ``NAME`` the proxy forwarded (when it is
        a valid host name) instead: our own lookup was of the proxy."""
        return self._client_name

    @property
    def client_name_looked_up(self) -> bool:
        """True once the reverse DNS lookup of the client is over, whatever it found (so
        ``client_name`` None means "unknown", as in the ``Received:`` header)."""
        return self._client_name_looked_up

    def __repr__(self) -> str:
        via = f" via {self.peer}" if self.peer != self.client else ""
        name = f" ({self._client_name})" if self._client_name else ""
        return f"<Session {self.id} {self.client}{name}{via} helo={self.helo_name!r}>"


@final
@attrs.frozen
class Message:
    """A complete message, as ``on_data`` receives it."""

    #: The transaction: sender, recipients, their parameters and the transaction id.
    envelope: Envelope
    #: The message text: exactly what the client meant, without the ``Received:`` header. From
    #: DATA: dot-unstuffed, CRLF line endings, without the terminating ``.`` line. From BDAT:
    #: the chunks' octets exactly as sent (with ``BODY=BINARYMIME``, any octets at all).
    content: bytes = attrs.field(repr=lambda d: f"<{len(d)} octets>")
    #: The ``Received:`` trace header for this message (RFC 5321 §4.4), CRLF-terminated.
    received_header: str = attrs.field(repr=False)

    def with_trace(self) -> bytes:
        """The Received header followed by the content: what a storing handler keeps."""
        return self.received_header.encode("utf-8") + self.content


@final
@attrs.frozen
class MessageStream:
    """A message arriving, as ``on_data_chunks`` receives it: read ``chunks`` with
    ``async for``; iteration stops at the real end of the message, or raises
    :class:`MessageAborted` if the message is refused or the connection ends on the way."""

    envelope: Envelope
    #: The ``Received:`` trace header for this message (RFC 5321 §4.4), CRLF-terminated.
    received_header: str = attrs.field(repr=False)
    #: The message text (DATA's un-stuffed, BDAT's as sent), piece by piece, read from the
    #: client as you ask.
    chunks: AsyncIterator[bytes] = attrs.field(repr=False)


class Reject(Exception):
    """Raise from a callback to refuse with ``code`` (4xx temporary, 5xx permanent).

    Without ``enhanced``, the server gives the reply the RFC 3463 code that fits the callback
    (``X.1.0`` for MAIL, RCPT, VRFY and EXPN, ``X.7.0`` for AUTH, ``X.0.0`` otherwise), since it
    always advertises ENHANCEDSTATUSCODES.
    """

    def __init__(self, code: int, enhanced: str | None = None, text: str = "Rejected") -> None:
        if not 400 <= code <= 599:
            raise ValueError(f"Reject needs a 4xx or 5xx code, not {code}")
        self.reply = Reply(code, enhanced, text)
        super().__init__(str(self.reply))


class MessageAborted(SMTPDTrioError):
    """Raised while iterating :attr:`MessageStream.chunks`: the message will not be accepted
    (it broke a limit, or the connection ended). Stop processing it; let it propagate (the
    client gets the refusal, and nothing is logged as a handler failure)."""


class Handler(Generic[StateT]):
    """A handler that accepts everything. Subclass it and override what you need.

    Every callback is optional: the server only calls the ones your class overrides. For
    typed per-connection state, parameterize the class and define :meth:`new_state`::

        @attrs.define
        class Counts:
            recipients: int = 0

        class Counting(Handler[Counts]):
            def new_state(self, session: Session[Counts]) -> Counts:
                return Counts()

            async def on_rcpt(self, session: Session[Counts], envelope, address, params):
                session.state.recipients += 1
    """

    def new_state(self, session: Session[StateT]) -> StateT:
        """The per-connection state for ``session`` (``session.state``), made once when the
        connection is accepted, before any callback. The default is a new empty dict."""
        return cast(StateT, {})

    async def on_proxy(self, session: Session[StateT], info: ProxyInfo) -> Reply | None:
        """A trusted PROXY header was read (``session.client`` is already the real client).

        Refusing (raise :class:`Reject` or return a 4xx/5xx reply) closes the connection
        before any banner is sent, as with a malformed header."""
        return None

    async def on_connect(self, session: Session[StateT]) -> Reply | None:
        """A client connected. Return a ``220`` reply to change the banner, or refuse with
        ``Reject(554, ...)`` (then only QUIT is served) or ``Reject(421, ...)`` (closes).

        A greeting may only be 220, 554 or 421 (RFC 5321 §3.1): another 4xx, or an exception
        escaping this method, is sent as 421 (and the connection closed); another 5xx as 554.

        It is called again after an accepted XCLIENT (``Config.xclient_hosts``), for the client
        XCLIENT names (``session.client``, ``session.xclient``): its answer is the reply to
        XCLIENT, which restarts the session like a new connection.
        """
        return None

    async def on_helo(self, session: Session[StateT], name: str, extended: bool) -> Reply | None:
        """HELO (``extended`` False) or EHLO (True) with a well-formed name. Return None to
        accept (the server answers with its name and, for EHLO, the extensions) or refuse."""
        return None

    async def on_mail(
        self, session: Session[StateT], address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        """MAIL FROM. ``address`` is ``""`` for the null sender. Accepting opens a transaction
        (an :class:`~smtpd_trio.Envelope`). Positive replies: 250."""
        return None

    async def on_rcpt(
        self,
        session: Session[StateT],
        envelope: Envelope,
        address: str,
        params: Mapping[str, str | None],
    ) -> Reply | None:
        """RCPT TO, within the recipient limit; ``envelope`` is the transaction so far.
        Positive replies: 250, 251."""
        return None

    async def on_data(
        self, session: Session[StateT], message: Message
    ) -> Reply | Sequence[Reply | None] | None:
        """A complete message. Return only once it is safely stored: the 250 goes out when
        this returns. Positive replies: 250.

        In LMTP, one reply answers for every recipient, or return a list (or tuple) with one
        answer per recipient, in the order of ``message.envelope.rcpt_tos``: None (or a 250
        reply) where the message was delivered, a 4xx/5xx reply where it was not."""
        return None

    async def on_data_chunks(
        self, session: Session[StateT], message: MessageStream
    ) -> Reply | Sequence[Reply | None] | None:
        """Streaming instead of :meth:`on_data`: define this to receive the message text as
        it arrives, for messages larger than you want in memory::

            async for chunk in message.chunks:
                await sink.write(chunk)

        The server reads from the client only when you ask for the next chunk (backpressure),
        so memory stays at about one read (64 KiB) whatever the message size. Iteration
        stops at the real end of the message; if the message is refused on the way (size
        limit, bare line endings) or the connection ends, it raises :class:`MessageAborted`.
        What you do not read is read and dropped for you. Return only once the message is
        safely stored: the 250 goes out when this returns. Define this or on_data, not both.
        In LMTP it may answer per recipient, as :meth:`on_data` may.
        """
        return None

    async def on_vrfy(self, session: Session[StateT], argument: str) -> Reply | None:
        """VRFY with an argument (RFC 5321 §3.5.1), as sent. Without this callback every VRFY
        gets ``252 2.5.0``, which tells nobody which users exist; None here does the same.
        Positive replies: 250 (the mailbox, ``"Full Name <user@example.org>"``), 251 (not
        local, will forward), 252 (cannot verify, will attempt delivery). Refuse with 550
        (no such user), 551 (not local), 553 (ambiguous), or another 4xx/5xx. Counts as a
        junk command (``Config.max_junk_commands``)."""
        return None

    async def on_expn(self, session: Session[StateT], argument: str) -> Reply | None:
        """EXPN with an argument (RFC 5321 §3.5.2), as sent. Without this callback EXPN is
        not offered (``502 5.5.1``); None here gives ``252 2.5.0``. Positive replies: 250
        with one member per line (``Reply(250, None, first, (second, ...))``), 252. Refuse
        with 550 (no such list, or access denied) or another 4xx/5xx. Counts as a junk
        command (``Config.max_junk_commands``)."""
        return None

    async def on_transaction_end(
        self, session: Session[StateT], envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        """A mail transaction ended: exactly once for every accepted MAIL, with how it ended
        (accepted, refused, reset, or aborted because the connection ended). In LMTP, once the
        message was answered, ``envelope.rcpt_replies`` holds what each recipient got, in the
        order of ``envelope.rcpt_tos`` (ACCEPTED: for at least one of them)."""

    async def on_close(self, session: Session[StateT]) -> None:
        """The connection is over (the stream is being closed). It runs shielded from
        cancellation but is given at most one second."""


Callback = Callable[..., Awaitable[Any]]

# The callbacks the server calls, with the arguments it passes (after ``self``).
_SIGNATURES: Final[dict[str, tuple[str, ...]]] = {
    "on_proxy": ("session", "info"),
    "on_connect": ("session",),
    "on_helo": ("session", "name", "extended"),
    "on_mail": ("session", "address", "params"),
    "on_rcpt": ("session", "envelope", "address", "params"),
    "on_data": ("session", "message"),
    "on_data_chunks": ("session", "message"),
    "on_vrfy": ("session", "argument"),
    "on_expn": ("session", "argument"),
    "on_transaction_end": ("session", "envelope", "outcome"),
    "on_close": ("session",),
}

# Names of earlier versions of this API, and what replaced them.
_RENAMED: Final = {
    "on_reset": "on_transaction_end(self, session, envelope, outcome)",
}


@final
@attrs.frozen
class Callbacks:
    """The callbacks a handler really defines (the no-op defaults of :class:`Handler` are
    left out, so they cost nothing), checked once. Built by :func:`handler_callbacks`."""

    new_state: Callable[[Session[Any]], Any] | None = None
    on_proxy: Callback | None = None
    on_connect: Callback | None = None
    on_helo: Callback | None = None
    on_mail: Callback | None = None
    on_rcpt: Callback | None = None
    on_data: Callback | None = None
    on_data_chunks: Callback | None = None
    on_vrfy: Callback | None = None
    on_expn: Callback | None = None
    on_transaction_end: Callback | None = None
    on_close: Callback | None = None


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _declares_state_type(cls: type) -> bool:
    """True if ``cls`` derives from ``Handler[T]`` (or from a generic subclass of Handler, as
    ``MessageHandler[T]``) for a T other than the default dict. A generic base that passes its
    own type parameter on (``class MessageHandler(Handler[StateT])``) declares nothing."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Handler):
                args = typing.get_args(base)
                if args and isinstance(args[0], typing.TypeVar):
                    continue
                if args and args[0] is not Any and typing.get_origin(args[0]) is not dict:
                    return args[0] is not dict
    return False


def _check(cls: type, name: str, fn: object, params: tuple[str, ...]) -> None:
    call = f"{name}({', '.join(params)})"
    where = f"{cls.__name__}.{name}"
    if not callable(fn):
        raise TypeError(f"{where} is not callable; smtpd-trio calls {call}")
    if not _is_async(fn):
        raise TypeError(f"{where} must be an async function: async def {name}(self, ...)")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some callables have no signature to inspect
        return
    try:
        signature.bind(*params)
    except TypeError as exc:
        takes = ", ".join(signature.parameters)
        raise TypeError(f"{where}({takes}) cannot be called as {call}: {exc}") from None


def handler_callbacks(handler: object) -> Callbacks:
    """Check ``handler`` and collect its callbacks. Raises TypeError, naming the method, for
    anything that would fail on every call."""
    cls = type(handler)
    for old, new in _RENAMED.items():
        if callable(getattr(handler, old, None)):
            raise TypeError(f"{cls.__name__}.{old} is no longer called: define {new} instead")
    found: dict[str, Any] = {}
    for name in _SIGNATURES:
        fn = getattr(handler, name, None)
        if fn is None or getattr(cls, name, None) is getattr(Handler, name):
            continue
        _check(cls, name, fn, _SIGNATURES[name])
        found[name] = fn
    if "on_data" in found and "on_data_chunks" in found:
        raise TypeError(
            f"{cls.__name__} defines both on_data and on_data_chunks: define one (on_data "
            "receives the whole message, on_data_chunks streams it)"
        )
    new_state = getattr(handler, "new_state", None)
    if new_state is not None and getattr(cls, "new_state", None) is not Handler.new_state:
        if not callable(new_state) or _is_async(new_state):
            raise TypeError(f"{cls.__name__}.new_state must be a plain (not async) method")
        found["new_state"] = new_state
    elif _declares_state_type(cls):
        raise TypeError(
            f"{cls.__name__} declares a state type (Handler[...]) but does not define "
            "new_state(self, session) to make it"
        )
    extra = extra_callbacks(cls)
    for name, params in extra.items():
        fn = getattr(handler, name, None)
        if fn is not None:
            _check(cls, name, fn, params)
    for name in dir(handler):
        if name.startswith("on_") and name not in _SIGNATURES and name not in extra:
            log.warning(
                "handler %s has a method %s, which is not a callback smtpd-trio calls (known: %s)",
                cls.__name__,
                name,
                ", ".join([*_SIGNATURES, *extra]),
            )
    return Callbacks(**found)


def extra_callbacks(cls: type) -> dict[str, tuple[str, ...]]:
    """The callbacks that base classes of ``cls`` call themselves, with their arguments.

    A base class that calls further ``on_*`` methods of its subclasses (as
    :class:`~smtpd_trio.MessageHandler` calls ``on_message`` from its ``on_data``) declares
    them in a class attribute ``extra_callbacks``, a mapping of name to the arguments it
    passes after ``self``: ``{"on_message": ("session", "message", "parsed")}``. They are
    checked like the server's own callbacks (async, callable with those arguments) and are
    not warned about as unknown. Declarations are collected over the whole MRO; the server's
    own callback names cannot be redeclared.
    """
    found: dict[str, tuple[str, ...]] = {}
    for klass in reversed(cls.__mro__):
        declared = klass.__dict__.get("extra_callbacks")
        if isinstance(declared, Mapping):
            for name, params in declared.items():
                if isinstance(name, str) and name not in _SIGNATURES:
                    found[name] = tuple(params)
    return found
