"""The ``Received:`` trace header (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3).

::

    Received: from client.example ([192.0.2.7])
            by mx.example.org (smtpd-trio) with ESMTPS id 3f9a2c.1
            for <user@example.org>; Wed, 25 Nov 2026 10:00:00 +0000

The ``from`` clause names the HELO name and, in the TCP-info comment, the real client address
(after a trusted PROXY header), IPv6 as ``[IPv6:...]``. No reverse DNS lookup is made: it
would put a network round trip on every message. ``with`` is SMTP or ESMTP plus ``S``
under TLS and ``A`` when authenticated (RFC 3848), prefixed ``UTF8`` for SMTPUTF8 transactions
(RFC 6531). ``for`` is given only when there is exactly one recipient, so a message to many
does not disclose the others.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import functools
import ipaddress
from typing import Any

from .handler import Envelope, Session


@functools.lru_cache(maxsize=4096)
def address_literal(host: str) -> str:
    """``[192.0.2.1]``, ``[IPv6:2001:db8::1]``; IPv4-mapped IPv6 is shown as IPv4."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"[{host}]" if host else "[unknown]"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"[{ip.ipv4_mapped}]"
        return f"[IPv6:{ip.compressed}]"
    return f"[{ip}]"


def protocol_name(session: Session[Any], envelope: Envelope) -> str:
    """The ``with`` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA or their UTF8 forms."""
    if not session.extended:
        return "SMTP"
    name = "ESMTP"
    if envelope.smtputf8:
        name = "UTF8SMTP"
    if session.tls is not None:
        name += "S"
    if session.authenticated_as is not None:
        name += "A"
    return name


def received_header(
    session: Session[Any], envelope: Envelope, *, now: _dt.datetime | None = None
) -> str:
    """The folded header, ending in CRLF, ready to prepend to the message."""
    when = now or _dt.datetime.now(_dt.UTC)
    helo = session.helo_name or "unknown"
    literal = address_literal(session.client.host)
    lines = [
        f"Received: from {helo} ({literal})",
        f"\tby {session.hostname} (smtpd-trio) with {protocol_name(session, envelope)}"
        f" id {envelope.id}",
    ]
    if len(envelope.rcpt_tos) == 1:
        lines.append(f"\tfor <{envelope.rcpt_tos[0]}>;")
    else:
        lines[-1] += ";"
    lines.append(f"\t{email.utils.format_datetime(when)}")
    return "\r\n".join(lines) + "\r\n"
