"""Reverse DNS of the client: the PTR name, forward-confirmed, bounded in time, cached.

With ``Config(reverse_dns=True)`` each session looks up its client's name as Postfix does: the
PTR record of the address gives a name, and the name counts only if its A/AAAA records include
the address again (forward-confirmed). Otherwise the client is "unknown". The name comes from
whoever controls the reverse zone, that is from the client's side, so it must also be a
syntactically valid host name (LDH labels, a last label that is not all digits, at most 255
octets); anything else is "unknown" too.

The lookup starts when the session starts and runs while the greeting is sent and the first
commands are read; the driver waits for it only before a handler callback that decides (so
every such callback sees the final ``session.client_name``) and before it builds a
``Received:`` header. It never takes longer than ``Config.reverse_dns_timeout``. Answers (names
and "unknown") are cached per server for a few minutes, for a bounded number of addresses;
timeouts are not.

The lookups go through a :class:`Resolver`: by default :class:`SystemResolver`
(``getnameinfo``/``getaddrinfo`` in a worker thread, as Trio runs them), or any object with the
same two methods (``Config(resolver=...)``), which is how tests avoid real DNS.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Final, Protocol, final, runtime_checkable

import trio

from .trace import host_name

__all__ = ["CACHE_SIZE", "CACHE_TTL", "Resolver", "ReverseDNS", "SystemResolver", "client_ip"]

log: Final = logging.getLogger("smtpd_trio.rdns")

#: Addresses whose answers are kept (the least recently used go first).
CACHE_SIZE: Final = 4096
#: Seconds an answer is kept.
CACHE_TTL: Final = 300.0


@runtime_checkable
class Resolver(Protocol):
    """What reverse DNS needs of a resolver. Both methods return an empty answer (None, no
    addresses) for a name or address that does not resolve, rather than raising."""

    async def reverse(self, address: str) -> str | None:
        """The name the PTR record of ``address`` (an IPv4 or IPv6 address) gives, or None."""
        ...

    async def forward(self, name: str) -> Iterable[str]:
        """The IPv4 and IPv6 addresses (A and AAAA records) of ``name``."""
        ...


@final
class SystemResolver:
    """The system's resolver: ``getnameinfo`` and ``getaddrinfo`` (run in a worker thread by
    Trio, abandoned if the lookup is cancelled)."""

    async def reverse(self, address: str) -> str | None:
        try:
            name, _port = await trio.socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
        except (OSError, UnicodeError):
            return None
        return name

    async def forward(self, name: str) -> Iterable[str]:
        try:
            infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        return [str(info[4][0]) for info in infos]


def client_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a client (IPv4-mapped IPv6 as IPv4, without a zone id), or None
    for anything else (a UNIX socket)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@final
class ReverseDNS:
    """The client name lookups of one server: forward-confirmed, under ``timeout``, cached
    (``cache_size`` addresses for ``ttl`` seconds each)."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        timeout: float = 2.0,
        cache_size: int = CACHE_SIZE,
        ttl: float = CACHE_TTL,
    ) -> None:
        self.resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self.timeout = timeout
        self.cache_size = cache_size
        self.ttl = ttl
        # address -> (name or None, when the answer expires), least recently used first.
        self._cache: collections.OrderedDict[str, tuple[str | None, float]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        """Addresses in the cache."""
        return len(self._cache)

    async def lookup(self, host: str) -> str | None:
        """The forward-confirmed name of the client at ``host``, or None ("unknown"): no
        PTR record, a name that is not a valid host name, a name whose addresses do not
        include ``host``, a failure, or no answer within ``timeout``."""
        ip = client_ip(host)
        if ip is None:
            return None
        key = str(ip)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > trio.current_time():
                self._cache.move_to_end(key)
                return cached[0]
            del self._cache[key]
        name: str | None = None
        with trio.move_on_after(self.timeout) as scope:
            try:
                name = await self._confirmed(ip)
            except Exception:
                log.exception("reverse DNS lookup of %s failed", key)
                return None
        if scope.cancelled_caught:
            return None
        self._cache[key] = (name, trio.current_time() + self.ttl)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return name

    async def _confirmed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        ptr = await self.resolver.reverse(str(ip))
        name = host_name(ptr) if isinstance(ptr, str) else None
        if name is None:
            return None
        for address in await self.resolver.forward(name):
            if client_ip(str(address)) == ip:
                return name
        return None
