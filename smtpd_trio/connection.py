"""The per-connection pipeline: the PROXY stage, then the SMTP session.

::

    accepted stream
      1. PROXY stage (only when Config.proxy_protocol is on)
         - immediate peer not in Config.trusted_proxies:
             UntrustedPeers.REFUSE  -> close at once, no banner (the default)
             UntrustedPeers.DIRECT  -> serve it as a direct client; no header is read
                                       (so a header it sends is a syntax error, never believed)
         - read the header under trio.move_on_after(proxy_timeout) with ProxyHeaderReader
             timeout / EOF / malformed / bad CRC32C -> close, no banner, one log line
             v1 UNKNOWN, v2 LOCAL                   -> real endpoints (health checks)
             v1 TCP4/TCP6, v2 PROXY INET/INET6/UNIX -> the client is the header's source
         - the handler's optional on_proxy(session, info) may still refuse (close, no banner)
      2. the SMTP session gets the stream plus the bytes read past the header (a proxy often
         forwards the client's first bytes in the same segment), never losing one

Nothing is ever guessed: on a PROXY listener a connection without a header is refused, as the
PROXY protocol specification requires.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Final, final

import attrs
import trio

from .config import UntrustedPeers
from .handler import Endpoint
from .proxy import ProxyHeaderReader, ProxyInfo, ProxyProtocolError
from .trust import TrustedNetworks

__all__ = ["ProxyRefused", "ProxyStageResult", "UntrustedPeers", "read_proxy_header"]

log: Final = logging.getLogger("smtpd_trio.connection")

_READ_SIZE: Final = 4096


class ProxyRefused(Exception):
    """The PROXY stage refused the connection; ``reason`` is a short log-safe text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@final
@attrs.frozen
class ProxyStageResult:
    #: The real client (the header's source, or the peer when the header carries none).
    client: Endpoint
    #: The header that was believed, or None for a direct client.
    info: ProxyInfo | None
    #: Bytes read past the header: the start of the SMTP conversation.
    leftover: bytes


def normalise_host(host: str) -> str:
    """Text form of an IP address with IPv4-mapped IPv6 turned into IPv4; others unchanged."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_trusted(peer: Endpoint, trusted: TrustedNetworks) -> bool:
    if peer.host.startswith("unix:"):
        return trusted.trust_unix
    return peer.host in trusted


async def read_proxy_header(stream: trio.abc.ReceiveStream) -> tuple[ProxyInfo, bytes]:
    """Read one PROXY header from ``stream``: the header and the bytes that followed it.

    Raises :class:`ProxyRefused` on end of stream or a malformed header. It reads at most one
    header's worth past what it needs, and waits as long as the peer makes it: call it under
    ``trio.move_on_after(proxy_timeout)``, as the server does.
    """
    reader = ProxyHeaderReader()
    try:
        while True:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                reader.feed_eof()
                raise ProxyRefused("connection closed before the PROXY header")
            info = reader.feed(data)
            if info is not None:
                return info, reader.trailing
    except ProxyProtocolError as exc:
        raise ProxyRefused(f"bad PROXY header ({exc})") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise ProxyRefused("connection broken before the PROXY header") from None


async def proxy_stage(
    stream: trio.abc.ReceiveStream,
    peer: Endpoint,
    *,
    trusted: TrustedNetworks,
    untrusted: UntrustedPeers,
) -> ProxyStageResult:
    """Decide who the client is (see the module docstring). Raises :class:`ProxyRefused`.

    The caller bounds it in time (``trio.move_on_after(proxy_timeout)``)."""
    if not is_trusted(peer, trusted):
        if untrusted is UntrustedPeers.DIRECT:
            return ProxyStageResult(client=peer, info=None, leftover=b"")
        raise ProxyRefused(f"peer {peer} is not a trusted proxy")
    info, leftover = await read_proxy_header(stream)
    source = info.source_address
    if source is None:
        client = peer  # v1 UNKNOWN, v2 LOCAL or UNSPEC: the real endpoints
    elif isinstance(source, str):
        client = Endpoint(f"unix:{source}")
    else:
        client = Endpoint(normalise_host(str(source)), info.source_port)
    return ProxyStageResult(client=client, info=info, leftover=leftover)
