"""What the server reports as it works, for metrics: the :class:`Observer` interface.

The server and its sessions tell ``Config.observer`` about a handful of events: a connection
refused, a PROXY header believed, a TLS handshake, an AUTH attempt, a mail transaction ended, a
session ended. Each call is made once per connection or once per message, never once per
command, and never awaits. The default, :data:`NO_OBSERVER`, does nothing.

:mod:`smtpd_trio.prometheus` keeps Prometheus metrics with one (the ``metrics`` extra; the
command line's ``--metrics``). Any object with these methods will do: count in a dict for a
test, or feed another metrics system. A method must be quick and must not raise: it runs inside
the server's own code, between two reads from the network.

What the server itself knows at any moment (connections open, memory held for message text,
stress) is read from :class:`~smtpd_trio.SMTPServer` when wanted, not reported:
:attr:`~smtpd_trio.SMTPServer.active_connections`, :attr:`~smtpd_trio.SMTPServer.buffered_bytes`
and :attr:`~smtpd_trio.SMTPServer.under_stress`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, Protocol, final, runtime_checkable

from ._smtp.events import CloseReason, TransactionOutcome

if TYPE_CHECKING:
    from .proxy import ProxyInfo

__all__ = [
    "NO_OBSERVER",
    "AuthOutcome",
    "CloseReason",
    "NullObserver",
    "Observer",
    "RefusalReason",
    "TLSOutcome",
]

#: Why the server refused a connection before serving it:
#:
#: - ``max-connections``: ``max_connections`` were open (421 4.3.2);
#: - ``per-client``: the client had ``max_connections_per_client`` open (421 4.7.0);
#: - ``rate``: the client opened more than ``max_connection_rate`` a minute (421 4.7.0);
#: - ``proxy``: the PROXY stage refused it (an untrusted peer; no, a malformed or a late
#:   header);
#: - ``on-proxy``: the handler's ``on_proxy`` refused it (or failed).
#:
#: A client that speaks before the greeting is refused by its session, which then ends with
#: :attr:`CloseReason.EARLY_TALKER` (see :meth:`Observer.session_ended`).
RefusalReason = Literal["max-connections", "per-client", "rate", "proxy", "on-proxy"]

#: How a TLS handshake (implicit TLS, or after STARTTLS) ended: ``success``, ``failure`` (the
#: client sent something that is not TLS, or failed to agree; or it went away) or ``timeout``
#: (``tls_handshake_timeout``).
TLSOutcome = Literal["success", "failure", "timeout"]

#: How an AUTH exchange that reached the authenticator ended, as the client was told:
#: ``success`` (235), ``failure`` (535, or another 5xx refusal) or ``temporary-failure`` (454,
#: or another 4xx: the authenticator raised, timed out or answered nonsense).
AuthOutcome = Literal["success", "failure", "temporary-failure"]


@runtime_checkable
class Observer(Protocol):
    """Told about what the server does; see the module docstring. Every method returns
    None, must be quick, and must not raise."""

    def connection_refused(self, reason: RefusalReason) -> None:
        """A connection was refused before a session was served on it (one call per
        connection, and no :meth:`session_ended` for it)."""

    def proxy_header(self, info: ProxyInfo | None) -> None:
        """On a PROXY listener, the PROXY stage let a connection through: ``info`` is the
        header that was believed, or None for a peer outside ``trusted_proxies`` served as a
        direct client (``untrusted_proxy_peers="direct"``). A refusal is
        ``connection_refused("proxy")`` instead."""

    def tls_handshake(self, outcome: TLSOutcome) -> None:
        """A TLS handshake ended (implicit TLS, or STARTTLS)."""

    def authentication(self, outcome: AuthOutcome) -> None:
        """An AUTH exchange reached the authenticator and was answered. Exchanges that end
        before it (a cancelled or malformed exchange, an unknown mechanism) are not reported:
        they are protocol errors."""

    def transaction_ended(self, outcome: TransactionOutcome, size: int | None) -> None:
        """A mail transaction ended: accepted (250 sent), refused, reset (RSET, HELO/EHLO),
        or aborted (the connection ended inside it). ``size`` is the octets of message text
        read, when a message was read (accepted or refused), else None."""

    def session_ended(self, reason: CloseReason, seconds: float) -> None:
        """A session is over, after ``seconds`` (from the start of the session, after any
        PROXY stage, to its end, goodbye and ``on_close`` included). One call for every
        connection a session was started for, ignored hosts included.
        ``CloseReason.EARLY_TALKER`` is a connection refused by the greeting pause."""


@final
class NullObserver:
    """The default observer: does nothing."""

    __slots__ = ()

    def connection_refused(self, reason: RefusalReason) -> None:
        pass

    def proxy_header(self, info: ProxyInfo | None) -> None:
        pass

    def tls_handshake(self, outcome: TLSOutcome) -> None:
        pass

    def authentication(self, outcome: AuthOutcome) -> None:
        pass

    def transaction_ended(self, outcome: TransactionOutcome, size: int | None) -> None:
        pass

    def session_ended(self, reason: CloseReason, seconds: float) -> None:
        pass

    def __repr__(self) -> str:
        return "NO_OBSERVER"


#: The observer ``Config`` has unless given one: it does nothing.
NO_OBSERVER: Final = NullObserver()
