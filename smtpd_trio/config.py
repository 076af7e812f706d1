"""Server configuration: one validated attrs class with safe defaults. No global state."""

from __future__ import annotations

import enum
import math
import socket
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, final

import attrs

from ._smtp.body import BareLineEndings, NulOctets
from ._smtp.settings import (
    DEFAULT_MAX_COMMAND_LINE,
    DSN_COMMAND_LINE,
    REQUIRETLS_COMMAND_LINE,
    SMTPSettings,
)
from .auth import Authenticator, Login, Mechanism, Plain
from .errors import ConfigError
from .metrics import NO_OBSERVER, Observer
from .trust import TrustedNetworks, TrustEntry

if TYPE_CHECKING:
    from .rdns import Resolver

__all__ = ["BareLineEndings", "Config", "NulOctets", "UntrustedPeers"]


class UntrustedPeers(enum.Enum):
    """What a PROXY listener does with a peer outside ``Config.trusted_proxies``."""

    #: Close the connection at once, without a banner (the default).
    REFUSE = "refuse"
    #: Serve it as a direct client: its own address is the client's and no header is read,
    #: so a PROXY header it sends is just a bad command, never believed.
    DIRECT = "direct"


def _positive_int_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive integer or None, not {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive integer, not {value!r}")


def _positive_seconds_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _positive_seconds(instance, attribute, value)


def _ipv6_prefix(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 128:
        raise ConfigError(f"{attribute.name} must be a prefix length within 16-128, not {value!r}")


def _positive_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or math.isnan(value)
        or value <= 0
    ):
        raise ConfigError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


def _hostname(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(
            f"{attribute.name} must be a non-empty name without spaces, not {value!r}"
        )


def _one_line(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        raise ConfigError(f"{attribute.name} must be one line of text, not {value!r}")


def _command_line(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _positive_int(instance, attribute, value)
    assert isinstance(value, int)
    if value < 512:
        raise ConfigError(f"max_command_line must be at least 512 (RFC 5321), not {value}")


def _recipients(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _positive_int(instance, attribute, value)


def _bare_line_endings(value: BareLineEndings | str) -> BareLineEndings:
    try:
        return BareLineEndings(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in BareLineEndings)
        raise ConfigError(f"bare_line_endings must be one of {choices}, not {value!r}") from None


def _nul_octets(value: NulOctets | str) -> NulOctets:
    try:
        return NulOctets(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in NulOctets)
        raise ConfigError(f"nul_octets must be one of {choices}, not {value!r}") from None


def _untrusted_peers(value: UntrustedPeers | str) -> UntrustedPeers:
    try:
        return UntrustedPeers(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in UntrustedPeers)
        raise ConfigError(
            f"untrusted_proxy_peers must be one of {choices}, not {value!r}"
        ) from None


def _networks(value: TrustedNetworks | Iterable[TrustEntry]) -> TrustedNetworks:
    return value if isinstance(value, TrustedNetworks) else TrustedNetworks(value)


def _mechanisms(value: Iterable[Mechanism]) -> tuple[Mechanism, ...]:
    mechanisms = tuple(value)
    names = [m.name.upper() for m in mechanisms]
    if len(set(names)) != len(names):
        raise ConfigError(f"auth_mechanisms has duplicate names: {names}")
    return mechanisms


def _default_mechanisms() -> tuple[Mechanism, ...]:
    return (Plain(), Login())


def _observer(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Observer):
        raise ConfigError(
            f"observer must have the methods of smtpd_trio.metrics.Observer, not {value!r}"
        )


def _resolver(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    for method in ("reverse", "forward"):
        if not callable(getattr(value, method, None)):
            raise ConfigError(
                f"resolver must have async methods reverse(address) and forward(name) "
                f"(smtpd_trio.rdns.Resolver), not {value!r}"
            )


def _default_hostname() -> str:
    return socket.gethostname() or "localhost"


_SMTP_BANNER = "ESMTP smtpd-trio ready"
_LMTP_BANNER = "LMTP smtpd-trio ready"


@final
@attrs.frozen(kw_only=True)
class Config:
    """Everything a server or a session can be told. Each field is checked when you build it.

    Times are seconds. ``None`` for a ``max_*`` field means "no limit" (think twice).
    """

    #: The name announced in the banner, the EHLO reply and Received headers.
    hostname: str = attrs.field(factory=_default_hostname, validator=_hostname)
    #: Text after the host name in the 220 banner (with ``lmtp``, the default says LMTP).
    banner: str = attrs.field(default=_SMTP_BANNER, validator=_one_line)
    #: Largest message accepted, in octets (advertised with SIZE, enforced while reading).
    max_message_size: int | None = attrs.field(default=10_240_000, validator=_positive_int_or_none)
    #: Recipients per transaction (RFC 5321 asks for at least 100); more get 452.
    max_recipients: int = attrs.field(default=1000, validator=_recipients)
    #: Longest command line in octets with CRLF: 512 plus the extensions' allowances (DSN and
    #: REQUIRETLS, when on, add theirs to this).
    max_command_line: int = attrs.field(default=DEFAULT_MAX_COMMAND_LINE, validator=_command_line)
    #: Longest line of message text with CRLF (RFC 5321: 1000); None disables the check.
    max_line_length: int | None = attrs.field(default=1000, validator=_positive_int_or_none)
    #: Protocol errors tolerated in one session; the last one is answered 421 and closes.
    max_errors: int = attrs.field(default=20, validator=_positive_int)
    #: Connections served at once per server; further ones get 421 and are closed.
    max_connections: int | None = attrs.field(default=1000, validator=_positive_int_or_none)
    #: How long to wait for each command or chunk of message text (RFC 5321 §4.5.3.2: 5 min).
    #: Time spent in the handler is not counted.
    command_timeout: float = attrs.field(default=300.0, validator=_positive_seconds)
    #: On graceful shutdown, how long open transactions may take to finish.
    shutdown_timeout: float = attrs.field(default=30.0, validator=_positive_seconds)
    #: What a bare CR or LF in message text does (the message still only ends at CRLF.CRLF).
    bare_line_endings: BareLineEndings = attrs.field(
        default=BareLineEndings.REJECT, converter=_bare_line_endings
    )
    #: What a NUL octet in message text does (RFC 5322 and RFC 6152 forbid it).
    nul_octets: NulOctets = attrs.field(default=NulOctets.REJECT, converter=_nul_octets)
    #: Offer SMTPUTF8 (RFC 6531).
    smtputf8: bool = True
    #: Offer CHUNKING and BINARYMIME (RFC 3030): messages sent in counted chunks with BDAT,
    #: binary MIME (NUL octets included) with ``BODY=BINARYMIME``.
    chunking: bool = True
    #: Speak LMTP (RFC 2033) instead of SMTP: LHLO instead of HELO/EHLO, and after a message
    #: one reply per recipient, which ``on_data`` may decide one by one. Never on port 25.
    lmtp: bool = False
    #: Offer DSN (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT, parsed into
    #: ``envelope.dsn`` and ``envelope.recipients``. Off by default: advertising DSN promises
    #: that the handler sends the reports (and honours NOTIFY=NEVER), which only it can do.
    #: With it, command lines may be longer by what the parameters need.
    dsn: bool = False
    #: Offer REQUIRETLS (RFC 8689) to clients under TLS: ``envelope.require_tls``. Off by
    #: default: it promises that the handler relays such messages only over verified TLS to
    #: servers that offer REQUIRETLS, or returns them. Needs a ``tls_context``.
    requiretls: bool = False
    #: Look up each client's host name (PTR, forward-confirmed) for ``session.client_name``
    #: and the ``Received:`` header, as Postfix does (see :mod:`smtpd_trio.rdns`).
    reverse_dns: bool = False
    #: The longest a reverse DNS lookup may take; then the client is "unknown".
    reverse_dns_timeout: float = attrs.field(default=2.0, validator=_positive_seconds)
    #: The resolver for reverse DNS (:class:`smtpd_trio.rdns.Resolver`); None: the system's.
    resolver: Resolver | None = attrs.field(default=None, validator=_resolver)

    # Safe on an open port (see docs/security.md)
    #: Connections at once from one client (the real client behind a trusted proxy; IPv6
    #: clients are counted by network, see ``client_ipv6_prefix``); more get 421 4.7.0.
    max_connections_per_client: int | None = attrs.field(
        default=20, validator=_positive_int_or_none
    )
    #: New connections per minute from one client (a token bucket); more get 421 4.7.0.
    max_connection_rate: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    #: IPv6 clients are counted by this network prefix (a host often owns a whole /64).
    client_ipv6_prefix: int = attrs.field(default=64, validator=_ipv6_prefix)
    #: Mail transactions per session; the next MAIL gets 421 4.7.0 and the session ends.
    max_messages_per_session: int | None = attrs.field(
        default=10_000, validator=_positive_int_or_none
    )
    #: Command lines per session; the next one gets 421 4.7.0 and the session ends.
    max_commands_per_session: int | None = attrs.field(
        default=100_000, validator=_positive_int_or_none
    )
    #: NOOP, RSET, VRFY, EXPN and HELP commands per session (Postfix's smtpd_junk_command_limit);
    #: the next one gets 421 4.7.0 and the session ends. Under stress the limit is 1.
    max_junk_commands: int | None = attrs.field(default=100, validator=_positive_int_or_none)
    #: The slowest message upload tolerated, in octets per second (Postfix's
    #: smtpd_min_data_rate): each read of message text earns octets/rate seconds more for the
    #: rest, never more than ``command_timeout``. None: every read restarts the full timeout.
    min_data_rate: int | None = attrs.field(default=500, validator=_positive_int_or_none)
    #: How long one connection may last in all (its waits for the client are cut at this
    #: point: 421 4.4.2). None: no limit.
    max_session_duration: float | None = attrs.field(
        default=3600.0, validator=_positive_seconds_or_none
    )
    #: How long one handler callback may take; then it is cancelled and the client gets
    #: 451 4.4.5 (421 for on_connect, 454 for the authenticator). None: no limit.
    handler_timeout: float | None = attrs.field(default=None, validator=_positive_seconds_or_none)
    #: When 80% of ``max_connections`` are in use, every wait for a client gets this timeout
    #: instead of ``command_timeout`` (Postfix's stress-dependent smtpd_timeout). None: never.
    stress_timeout: float | None = attrs.field(default=10.0, validator=_positive_seconds_or_none)
    #: Wait this long before the banner; a client that speaks first gets 554 5.5.1 and is
    #: closed, and the handler never sees it (postscreen's greet wait). None: no pause.
    greet_pause: float | None = attrs.field(default=None, validator=_positive_seconds_or_none)
    #: Octets of message text all sessions together may hold in memory (``on_data``; streaming
    #: holds about one read per session). A message that does not fit is read to its end
    #: without being kept and refused with 452 4.3.1. None: no limit.
    max_buffered_bytes: int | None = attrs.field(
        default=256 * 1024 * 1024, validator=_positive_int_or_none
    )
    #: Refusals caused by a client (limits, timeouts) are logged once per client and kind per
    #: this many seconds; the rest are counted and summarised.
    refusal_log_interval: float = attrs.field(default=60.0, validator=_positive_seconds)

    # PROXY protocol (see docs/load-balancers.md)
    #: Expect a PROXY header (v1 or v2) at the start of every connection from a trusted peer.
    proxy_protocol: bool = False
    #: The proxies whose headers are believed: CIDR networks, bare addresses (one host), and
    #: ``"unix"`` for UNIX-socket listeners.
    trusted_proxies: TrustedNetworks = attrs.field(factory=TrustedNetworks, converter=_networks)
    #: How long a trusted peer has to send its whole header (the spec asks for at least 3 s).
    proxy_timeout: float = attrs.field(default=5.0, validator=_positive_seconds)
    #: What to do with a peer outside ``trusted_proxies`` when ``proxy_protocol`` is on.
    untrusted_proxy_peers: UntrustedPeers = attrs.field(
        default=UntrustedPeers.REFUSE, converter=_untrusted_peers
    )
    #: Real client networks (health checkers, monitoring) whose connections skip on_connect
    #: and the per-connection log lines.
    ignored_hosts: TrustedNetworks = attrs.field(factory=TrustedNetworks, converter=_networks)

    # XCLIENT and XFORWARD (see docs/load-balancers.md)
    #: The clients that may send XCLIENT (Postfix's smtpd_authorized_xclient_hosts): a mail
    #: proxy such as nginx in front of this server. XCLIENT replaces who the client is, so list
    #: only your proxies. Compared with the connection's client as accepted: the peer, or the
    #: address a trusted PROXY header names. Others get ``550 5.7.0``.
    xclient_hosts: TrustedNetworks = attrs.field(factory=TrustedNetworks, converter=_networks)
    #: The clients that may send XFORWARD (Postfix's smtpd_authorized_xforward_hosts), such
    #: as a content filter passing on mail: its facts about where a message came from go on
    #: the transaction's Envelope. Compared like ``xclient_hosts``.
    xforward_hosts: TrustedNetworks = attrs.field(factory=TrustedNetworks, converter=_networks)

    # TLS and AUTH (see docs/tls-and-auth.md)
    #: The server-side TLS context (certificate and key loaded). With it, STARTTLS is offered.
    tls_context: ssl.SSLContext | None = None
    #: Start TLS at once on every connection, before the banner (RFC 8314, port 465).
    implicit_tls: bool = False
    #: Refuse MAIL (530 5.7.0) until the session is under TLS.
    require_tls: bool = False
    #: How long a client has to complete a TLS handshake.
    tls_handshake_timeout: float = attrs.field(default=30.0, validator=_positive_seconds)
    #: Checks credentials: ``async (session, credentials) -> identity | None``. With it, AUTH
    #: is offered (only under TLS unless ``auth_over_plaintext``).
    authenticator: Authenticator | None = None
    #: The SASL mechanisms offered, in order (PLAIN and LOGIN by default).
    auth_mechanisms: tuple[Mechanism, ...] = attrs.field(
        factory=_default_mechanisms, converter=_mechanisms
    )
    #: Offer AUTH without TLS too (passwords in clear text: for tests and trusted networks).
    auth_over_plaintext: bool = False
    #: Refuse MAIL (530 5.7.0) until the client authenticated (a submission server).
    auth_required: bool = False
    #: Failed AUTH attempts before the session ends with 421.
    max_auth_failures: int = attrs.field(default=3, validator=_positive_int)

    # Metrics (see docs/metrics.md)
    #: Told about each refused connection, session end, transaction end, TLS handshake, AUTH
    #: attempt and PROXY header (:class:`smtpd_trio.metrics.Observer`); the default does
    #: nothing. :class:`smtpd_trio.prometheus.PrometheusMetrics` keeps Prometheus metrics.
    observer: Observer = attrs.field(default=NO_OBSERVER, validator=_observer)

    #: What the protocol state machine needs of all this, built once (see :attr:`smtp`).
    _smtp: SMTPSettings = attrs.field(init=False, repr=False, eq=False)

    @property
    def smtp(self) -> SMTPSettings:
        """The protocol settings every session's state machine shares."""
        return self._smtp

    def __attrs_post_init__(self) -> None:
        if (self.implicit_tls or self.require_tls) and self.tls_context is None:
            raise ConfigError("implicit_tls and require_tls need a tls_context")
        if self.requiretls and self.tls_context is None:
            raise ConfigError("requiretls needs a tls_context (REQUIRETLS is offered under TLS)")
        if self.auth_required and self.authenticator is None:
            raise ConfigError("auth_required needs an authenticator")
        if self.max_message_size is None and self.max_line_length is None:
            raise ConfigError(
                "max_message_size and max_line_length cannot both be None: a message line "
                "without CRLF would be buffered without bound"
            )
        if (
            self.proxy_protocol
            and not self.trusted_proxies
            and self.untrusted_proxy_peers is UntrustedPeers.REFUSE
        ):
            raise ConfigError(
                "proxy_protocol is on but trusted_proxies is empty: every connection would be "
                "refused (add the load balancers' networks)"
            )
        settings = SMTPSettings(
            hostname=self.hostname,
            banner=_LMTP_BANNER if self.lmtp and self.banner == _SMTP_BANNER else self.banner,
            max_message_size=self.max_message_size,
            max_recipients=self.max_recipients,
            max_command_line=self.max_command_line
            + (DSN_COMMAND_LINE if self.dsn else 0)
            + (REQUIRETLS_COMMAND_LINE if self.requiretls else 0),
            max_line_length=self.max_line_length,
            max_errors=self.max_errors,
            bare_line_endings=self.bare_line_endings,
            nul_octets=self.nul_octets,
            max_messages=self.max_messages_per_session,
            max_commands=self.max_commands_per_session,
            max_junk_commands=self.max_junk_commands,
            smtputf8=self.smtputf8,
            chunking=self.chunking,
            lmtp=self.lmtp,
            starttls=self.tls_context is not None,
            require_tls=self.require_tls,
            auth_mechanisms=self.auth_mechanisms if self.authenticator is not None else (),
            auth_over_plaintext=self.auth_over_plaintext,
            auth_required=self.auth_required,
            max_auth_failures=self.max_auth_failures,
            dsn=self.dsn,
            requiretls=self.requiretls,
        )
        object.__setattr__(self, "_smtp", settings)
