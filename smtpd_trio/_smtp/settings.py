"""The protocol settings of an SMTP machine: one frozen value, built once per server.

:class:`smtpd_trio.Config` validates what a user gives and builds an :class:`SMTPSettings`
from it once; every connection's machine shares it. The replies that depend only on the
settings (the greeting, the HELO and EHLO answers) are built here, once, too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, final

import attrs

from .body import BareLineEndings, NulOctets
from .replies import Reply
from .sasl import Mechanism
from .xclient import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES

__all__ = ["DEFAULT_MAX_COMMAND_LINE", "SMTPSettings"]

#: RFC 5321 §4.5.3.1.4: 512 octets with CRLF, plus what extensions allow: SIZE (RFC 1870, 26),
#: BODY=8BITMIME (RFC 6152, 14) and SMTPUTF8 (RFC 6531, 10).
DEFAULT_MAX_COMMAND_LINE: Final = 512 + 26 + 14 + 10

#: What the DSN parameters (RFC 3461) add to a command line: on RCPT, `` NOTIFY=`` and the
#: longest list (29) and `` ORCPT=`` with its 500 characters (506); more than MAIL's
#: `` RET=HDRS ENVID=`` with 100 characters (116).
DSN_COMMAND_LINE: Final = 29 + 506
#: `` REQUIRETLS`` (RFC 8689) on MAIL.
REQUIRETLS_COMMAND_LINE: Final = 11


def _mechanisms(value: Iterable[Mechanism]) -> tuple[Mechanism, ...]:
    return tuple(value)


@final
@attrs.frozen(kw_only=True)
class SMTPSettings:
    """What one server's sessions are allowed and offered. See :class:`smtpd_trio.Config` for
    the meaning of each field (the names are the same)."""

    hostname: str = "localhost"
    banner: str = "ESMTP smtpd-trio ready"
    max_message_size: int | None = 10_240_000
    max_recipients: int = 1000
    max_command_line: int = DEFAULT_MAX_COMMAND_LINE
    max_line_length: int | None = 1000
    max_errors: int = 20
    #: Converted, so the text ``"reject"`` means REJECT (a plain string never compares ``is``).
    bare_line_endings: BareLineEndings = attrs.field(
        default=BareLineEndings.REJECT, converter=BareLineEndings
    )
    nul_octets: NulOctets = attrs.field(default=NulOctets.REJECT, converter=NulOctets)
    #: Mail transactions (accepted MAIL commands) per session; None: no cap.
    max_messages: int | None = 10_000
    #: Command lines per session; None: no cap.
    max_commands: int | None = 100_000
    #: NOOP, RSET, VRFY, EXPN and HELP commands per session (Postfix's smtpd_junk_command_limit);
    #: None: no cap.
    max_junk_commands: int | None = 100
    smtputf8: bool = True
    #: CHUNKING and BINARYMIME (RFC 3030) are offered: BDAT.
    chunking: bool = True
    #: The session speaks LMTP (RFC 2033): LHLO instead of HELO/EHLO, and one reply per
    #: recipient after the message.
    lmtp: bool = False
    #: STARTTLS is offered (the I/O layer has a TLS context).
    starttls: bool = False
    require_tls: bool = False
    #: The SASL mechanisms offered, in order; empty means AUTH is not offered.
    auth_mechanisms: tuple[Mechanism, ...] = attrs.field(default=(), converter=_mechanisms)
    auth_over_plaintext: bool = False
    auth_required: bool = False
    max_auth_failures: int = 3
    #: DSN (RFC 3461) is offered: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT.
    dsn: bool = False
    #: REQUIRETLS (RFC 8689) is offered under TLS.
    requiretls: bool = False

    # Derived once from the fields above.
    mechanisms: Mapping[str, Mechanism] = attrs.field(init=False, repr=False, eq=False)
    greeting: Reply = attrs.field(init=False, repr=False, eq=False)
    helo_reply: Reply = attrs.field(init=False, repr=False, eq=False)
    help_reply: Reply = attrs.field(init=False, repr=False, eq=False)
    #: HELP's answer when a handler answers EXPN.
    help_reply_expn: Reply = attrs.field(init=False, repr=False, eq=False)
    #: The values MAIL's BODY parameter may take (RFC 6152, and BINARYMIME with CHUNKING).
    body_types: frozenset[str] = attrs.field(init=False, repr=False, eq=False)
    _ehlo_plain: Reply = attrs.field(init=False, repr=False, eq=False)
    _ehlo_tls: Reply = attrs.field(init=False, repr=False, eq=False)
    # For the sessions allowed XCLIENT or XFORWARD: (tls_active, xclient, xforward) -> reply.
    _ehlo_forwarding: Mapping[tuple[bool, bool, bool], Reply] = attrs.field(
        init=False, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        mechanisms = {m.name.upper(): m for m in self.auth_mechanisms}
        if len(mechanisms) != len(self.auth_mechanisms):
            raise ValueError(f"duplicate SASL mechanism names: {list(mechanisms)}")
        derived = {
            "mechanisms": mechanisms,
            "greeting": Reply(220, None, f"{self.hostname} {self.banner}"),
            "helo_reply": Reply(250, None, self.hostname),
            "help_reply": Reply(214, "2.0.0", "Commands: " + " ".join(self.commands())),
            "help_reply_expn": Reply(
                214, "2.0.0", "Commands: " + " ".join(self.commands(expn=True))
            ),
            "body_types": frozenset(
                ("7BIT", "8BITMIME", "BINARYMIME") if self.chunking else ("7BIT", "8BITMIME")
            ),
            "_ehlo_plain": Reply(250, None, self.hostname, tuple(self.ehlo_keywords(False))),
            "_ehlo_tls": Reply(250, None, self.hostname, tuple(self.ehlo_keywords(True))),
            "_ehlo_forwarding": {
                (tls, xclient, xforward): Reply(
                    250,
                    None,
                    self.hostname,
                    tuple(self.ehlo_keywords(tls, xclient=xclient, xforward=xforward)),
                )
                for tls in (False, True)
                for xclient in (False, True)
                for xforward in (False, True)
            },
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def auth_offered(self, tls_active: bool) -> bool:
        """AUTH is offered under TLS, or without it when ``auth_over_plaintext``."""
        return bool(self.auth_mechanisms) and (tls_active or self.auth_over_plaintext)

    def ehlo_keywords(
        self, tls_active: bool, *, xclient: bool = False, xforward: bool = False
    ) -> list[str]:
        """The extensions advertised in the EHLO reply (XCLIENT and XFORWARD only to the
        clients allowed to use them)."""
        keywords = [f"SIZE {self.max_message_size}" if self.max_message_size else "SIZE"]
        keywords.append("8BITMIME")
        if self.smtputf8:
            keywords.append("SMTPUTF8")
        keywords.append("PIPELINING")
        if self.chunking:
            keywords += ["CHUNKING", "BINARYMIME"]
        keywords.append("ENHANCEDSTATUSCODES")
        if self.starttls and not tls_active:
            keywords.append("STARTTLS")
        if self.auth_offered(tls_active):
            keywords.append("AUTH " + " ".join(m.name.upper() for m in self.auth_mechanisms))
        if self.dsn:
            keywords.append("DSN")
        if self.requiretls and tls_active:
            keywords.append("REQUIRETLS")
        keywords.append(self.limits_keyword())
        if xclient:
            keywords.append(" ".join(("XCLIENT", *XCLIENT_ATTRIBUTES)))
        if xforward:
            keywords.append(" ".join(("XFORWARD", *XFORWARD_ATTRIBUTES)))
        keywords.append("HELP")
        return keywords

    def commands(self, *, expn: bool = False) -> list[str]:
        """The commands HELP lists (EXPN when a handler answers it)."""
        hello = ["LHLO"] if self.lmtp else ["HELO", "EHLO"]
        data = ["DATA", "BDAT"] if self.chunking else ["DATA"]
        verify = ["VRFY", "EXPN"] if expn else ["VRFY"]
        return [*hello, "MAIL", "RCPT", *data, "RSET", "NOOP", "QUIT", *verify, "HELP"]

    def limits_keyword(self) -> str:
        """LIMITS (RFC 9422) with the limits in force: recipients per transaction, and mail
        transactions per session unless that is not capped."""
        limits = f"LIMITS RCPTMAX={self.max_recipients}"
        if self.max_messages is not None:
            limits += f" MAILMAX={self.max_messages}"
        return limits

    def ehlo_reply(
        self, tls_active: bool, *, xclient: bool = False, xforward: bool = False
    ) -> Reply:
        if xclient or xforward:
            return self._ehlo_forwarding[(tls_active, xclient, xforward)]
        return self._ehlo_tls if tls_active else self._ehlo_plain
