"""The ``Received:`` trace header (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3).

::

    Received: from client.example ([192.0.2.7])
            by mx.example.org (smtpd-trio) with ESMTPS id 3f9a2c-1
            for <user@example.org>; Wed, 25 Nov 2026 10:00:00 +0000

The ``from`` clause names the HELO name and, in the TCP-info comment, the real client address
(after a trusted PROXY header, or the one XCLIENT named), IPv6 as ``[IPv6:...]``. With
``Config.reverse_dns`` the TCP-info also names the client, as Postfix writes it:
``(mail.example.net [192.0.2.7])`` with the forward-confirmed name, ``(unknown [192.0.2.7])``
without one (see :mod:`smtpd_trio.rdns`); without it no lookup is made, but a host name that
XCLIENT forwarded (its ``NAME``, looked up by the proxy) still goes before the address. (After
XCLIENT its ``NAME`` takes the place of our own lookup, which was of the proxy.) ``with`` is
SMTP, ESMTP or LMTP plus ``S`` under TLS and ``A`` when authenticated (RFC 3848), prefixed
``UTF8`` for SMTPUTF8 transactions (RFC 6531): only names registered with IANA. ``for`` is given
only when there is exactly one recipient, so a message to many does not disclose the others.

The HELO name, the recipient and (through a PROXY header) the client address come from the
client, so nothing is written as given unless it fits the grammar of its place; the header
is safe whatever :class:`Session` and :class:`Envelope` hold, validated by the SMTP core or not:

- the HELO name is written as a Domain (one trailing dot dropped) or, when it is an IP
  address literal, in canonical form; any other name is written as ``unknown`` followed by the
  comment ``(helo=...)`` holding the name percent-encoded (every octet outside
  ``A-Z a-z 0-9 - . _ ~ / : + , = @`` becomes ``%XX``), so no character of it can end the
  stamp, open or close a comment, or fake an address literal;
- the client address is an IP literal, or ``[unix:...]`` with the path percent-encoded the same
  way; an address that is neither (an unnamed UNIX socket, a stream with no address, XCLIENT's
  ``ADDR=[UNAVAILABLE]``) leaves the TCP-info out, as RFC 5321 allows;
- the client's name (from reverse DNS, written by whoever controls the PTR record, or XCLIENT's
  ``NAME``) is written only if it is a Domain whose last label is not all digits
  (:func:`host_name`), and only before an address literal; with reverse DNS any other name is
  written as ``unknown``, without it (XCLIENT's ``[UNAVAILABLE]``, ``[TEMPUNAVAIL]``, ...) it is
  left out;
- the server host name (``Config.hostname``) is treated like the HELO name (``by unknown`` and a
  ``(hostname=...)`` comment when it is not a Domain);
- the ``id`` is an Atom: characters outside ``atext`` become ``-``;
- ``for <...>`` is written only for a valid RFC 5321 (or, with SMTPUTF8, RFC 6531) mailbox with
  no control character (C0, DEL, C1), line or paragraph separator, or unpaired surrogate, of
  at most 256 octets, whose domain labels are LDH labels or U-labels (letters, marks and
  digits); otherwise the clause is left out.

So the header is ASCII unless the transaction is SMTPUTF8 (then only the ``for`` address may be
UTF-8), no line exceeds 998 octets, and :meth:`str.splitlines` splits it only at its CRLFs.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import functools
import ipaddress
import re
import string
import time
import unicodedata
from typing import Any, Final

from ._smtp.commands import MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, parse_mailbox
from .handler import Envelope, Session

_LDH_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
#: RFC 5322 §3.2.3 atext: what an Atom (RFC 5321 §4.1.2) is made of.
_ATEXT: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
#: Kept as they are by the percent-encoding; none is special in a header field or a comment.
_KEPT: Final = frozenset(string.ascii_letters + string.digits + "-._~/:+,=@")
#: Characters never written: C0, DEL and C1 controls, unpaired surrogates, U+2028, U+2029.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
#: Bounds that keep every line far below RFC 5322's 998 octets whatever the input.
_MAX_COMMENT: Final = 255
_MAX_LITERAL: Final = 330  # a 108-octet UNIX path, every octet encoded
_MAX_ID: Final = 64


def trace_domain(name: str) -> str | None:
    """``name`` as an RFC 5321 Domain (LDH labels, ASCII), one trailing dot dropped; else None."""
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_DOMAIN or not name.isascii():
        return None
    if all(_LDH_LABEL.match(label) for label in name.split(".")):
        return name
    return None


def host_name(name: str) -> str | None:
    """``name`` as a host name from reverse DNS: a Domain (see :func:`trace_domain`) whose last
    label is not all digits, so that it can never pass for an address; else None."""
    domain = trace_domain(name)
    if domain is None or domain.rpartition(".")[2].isdigit():
        return None
    return domain


def ip_literal(text: str) -> str | None:
    """``[192.0.2.1]`` or ``[IPv6:...]`` in canonical form if ``text`` is an IP address literal."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1]
    if not inner.isascii() or "%" in inner:
        return None
    try:
        if inner[:5].upper() == "IPV6:":
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def address_literal(host: str) -> str | None:
    """The TCP-info literal for a client address, or None if it has none.

    ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``; IPv4-mapped IPv6 is shown as IPv4 and a zone id is
    dropped. A UNIX socket path is ``[unix:/run/smtp.sock]``, percent-encoded where needed.
    """
    if host.startswith("unix:"):
        encoded = percent_encode(host[5:])
        return f"[unix:{encoded}]" if 0 < len(encoded) <= _MAX_LITERAL else None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"[{ip.ipv4_mapped}]"
        return f"[IPv6:{ip.compressed}]"
    return f"[{ip}]"


def percent_encode(text: str) -> str:
    """``text`` with every UTF-8 octet outside a small inert set written as ``%XX``.

    Unpaired surrogates from ``surrogateescape`` decoding are written as the octet they stand
    for; any other surrogate as its (surrogatepass) UTF-8 form.
    """
    out: list[str] = []
    for ch in text:
        if ch in _KEPT:
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"%{ord(ch) - 0xDC00:02X}")
        else:
            out.extend(f"%{octet:02X}" for octet in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _comment(key: str, value: str) -> str:
    encoded = percent_encode(value)
    if len(encoded) > _MAX_COMMENT:
        cut = _MAX_COMMENT - 3
        percent = encoded.rfind("%", cut - 2, cut)
        encoded = encoded[: percent if percent >= 0 else cut] + "..."
    return f"({key}={encoded})"


#: The common shapes, taken without the slower general checks (each a strict subset of what
#: those accept): an Atom as the transaction ids are made, a dot-atom@LDH-domain mailbox.
_ATOM_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]{1,64}\Z")
_COMMON_MAILBOX: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]{1,64}(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)


def id_atom(text: str) -> str:
    """``text`` as an Atom (at most 64 characters; ``""`` if empty): non-atext becomes ``-``."""
    if _ATOM_RE.match(text):
        return text
    return "".join(ch if ch in _ATEXT else "-" for ch in text[:_MAX_ID])


def forward_path(address: str, *, utf8: bool) -> str | None:
    """``address`` if it may stand in ``for <...>``: a valid mailbox, UTF-8 only with SMTPUTF8."""
    if (
        _COMMON_MAILBOX.match(address)
        and len(address) + 2 <= MAX_PATH
        and address.find("@") <= MAX_LOCAL_PART
    ):
        return address
    ascii_only = address.isascii()
    if not ascii_only and not utf8:
        return None
    if any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in address):
        return None
    if len(address.encode("utf-8")) + 2 > MAX_PATH:
        return None
    if parse_mailbox(address, utf8=not ascii_only) is None:
        return None
    domain = address.rpartition("@")[2]
    if not domain.startswith("[") and not all(map(_is_label, domain.split("."))):
        return None
    return address


def _is_label(label: str) -> bool:
    """An LDH label, or (approximately) a U-label: NFC letters, marks, digits and inner hyphens
    whose A-label fits in 63 octets (RFC 5890). The RCPT parser is more lenient than this."""
    if label.isascii():
        return _LDH_LABEL.match(label) is not None
    if label[0] == "-" or label[-1] == "-" or unicodedata.normalize("NFC", label) != label:
        return False
    if not all(
        (ch.isascii() and (ch.isalnum() or ch == "-")) or unicodedata.category(ch)[0] in "LMN"
        for ch in label
    ):
        return False
    return len(label.lower().encode("punycode")) <= 63 - len("xn--")


def protocol_name(session: Session[Any], envelope: Envelope) -> str:
    """The ``with`` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP, LMTPS, LMTPA, LMTPSA
    or their UTF8 forms (UTF8SMTP..., UTF8LMTP...).

    Only names in the IANA "Mail Transmission Types" registry: there is no "SMTPS", so a HELO
    session is SMTP whatever else is true of it.
    """
    if session.lmtp:
        name = "UTF8LMTP" if envelope.smtputf8 else "LMTP"
    elif not session.extended:
        return "SMTP"
    else:
        name = "UTF8SMTP" if envelope.smtputf8 else "ESMTP"
    if session.tls is not None:
        name += "S"
    if session.authenticated_as is not None:
        name += "A"
    return name


@functools.lru_cache(maxsize=4096)
def _from_clause(
    helo: str | None, literal: str | None, client_name: str | None = None, named: bool = False
) -> str:
    """``named``: a name was looked up, so its absence is written ``unknown``."""
    if literal is None:
        tcp_info = ""
    else:
        name = host_name(client_name) if client_name is not None else None
        if name is None and named:
            name = "unknown"
        tcp_info = f" ({name} {literal})" if name is not None else f" ({literal})"
    if not helo:
        return f"unknown{tcp_info}"
    domain = trace_domain(helo)
    if domain is not None:
        return f"{domain}{tcp_info}"
    as_literal = ip_literal(helo)
    if as_literal is not None and literal is not None:
        # RFC 5321: an address literal is an Extended-Domain only with TCP-info after it.
        return f"{as_literal}{tcp_info}"
    return f"unknown{tcp_info} {_comment('helo', helo)}"


def received_header(
    session: Session[Any], envelope: Envelope, *, now: _dt.datetime | None = None
) -> str:
    """The folded header, ending in CRLF, ready to prepend to the message."""
    literal = address_literal(session.client.host)
    atom = id_atom(envelope.id)
    if session.client_name_looked_up:
        from_clause = _from_clause(session.helo_name, literal, session.client_name, True)
    else:
        xclient = session.xclient
        name = xclient.name if xclient is not None and isinstance(xclient.name, str) else None
        from_clause = _from_clause(session.helo_name, literal, name)
    lines = [
        f"Received: from {from_clause}",
        f"\tby {_by_clause(session.hostname)} with {protocol_name(session, envelope)}"
        + (f" id {atom}" if atom else ""),
    ]
    path = None
    if len(envelope.rcpt_tos) == 1:
        path = forward_path(envelope.rcpt_tos[0], utf8=envelope.smtputf8)
    if path is not None:
        lines.append(f"\tfor <{path}>;")
    else:
        lines[-1] += ";"
    date = _date(int(time.time())) if now is None else email.utils.format_datetime(now)
    lines.append(f"\t{date}")
    return "\r\n".join(lines) + "\r\n"


@functools.lru_cache(maxsize=64)
def _by_clause(hostname: str) -> str:
    host = trace_domain(hostname)
    if host is None:
        return f"unknown (smtpd-trio) {_comment('hostname', hostname)}"
    return f"{host} (smtpd-trio)"


@functools.lru_cache(maxsize=4)
def _date(second: int) -> str:
    """The RFC 5322 date-time of a Unix time, in UTC: built once per second, not per message."""
    return email.utils.format_datetime(_dt.datetime.fromtimestamp(second, _dt.UTC))
