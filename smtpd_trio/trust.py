"""Trusted networks: which immediate peers may send a PROXY header.

A PROXY header lets the peer claim any client address, so it is honoured only from the proxies
you run. :class:`TrustedNetworks` holds that allowlist::

    trusted = TrustedNetworks(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "unix"])
    "10.1.2.3" in trusted            # True
    "::ffff:10.1.2.3" in trusted     # True: IPv4-mapped IPv6 is compared as IPv4
    "2001:db8:ffff::1" in trusted    # True
    "192.0.2.8" in trusted           # False: a bare address is one host (/32, or /128 for IPv6)
    "not an address" in trusted      # False: what cannot be parsed is never trusted
    trusted.trust_unix               # True: peers on UNIX-socket listeners are trusted

The rules:

- An entry is CIDR text (``"10.0.0.0/8"``), a bare address (one host: /32 or /128, never /64),
  an :mod:`ipaddress` network or address, or the word ``"unix"`` (same as ``trust_unix=True``).
- Host bits set (``"10.0.0.1/8"``) are refused: they usually mean a typo, and silently widening
  or narrowing a trust boundary is worse than a startup error.
- Any bad entry raises :class:`~smtpd_trio.errors.ConfigError` naming it, when the set is built.
- IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is turned into IPv4, both for entries (a network inside
  ``::ffff:0:0/96``) and for the addresses tested, so dual-stack sockets match IPv4 entries.
- Scoped IPv6 text (``fe80::1%eth0``) is tested without its zone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Final, final

from smtpd_trio.errors import ConfigError

__all__ = ["Network", "TrustEntry", "TrustedNetworks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: What :class:`TrustedNetworks` is built from.
TrustEntry = str | Network | IPAddress

#: The entry that trusts peers on UNIX-socket listeners.
UNIX_ENTRY: Final = "unix"
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_MAX_QUOTE: Final = 60


def _quote(entry: object) -> str:
    text = repr(entry)
    return text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 3] + "..."


def _unmap(network: Network) -> Network:
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= _MAPPED.prefixlen
        and network.subnet_of(_MAPPED)
    ):
        v4 = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((v4, network.prefixlen - 96))
    return network


def _parse_entry(entry: object) -> Network:
    if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return _unmap(entry)
    if isinstance(entry, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return _unmap(ipaddress.ip_network(entry))
    if not isinstance(entry, str):
        raise ConfigError(f"trusted network {_quote(entry)} is not a string or an ip network")
    text = entry.strip()
    if not text or "%" in text:
        raise ConfigError(f"trusted network {_quote(entry)} is not an address or CIDR network")
    try:
        return _unmap(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise ConfigError(
                f"trusted network {_quote(entry)} has host bits set (did you mean "
                f"{ipaddress.ip_network(text, strict=False)}?)"
            ) from None
        raise ConfigError(
            f"trusted network {_quote(entry)} is not an address or CIDR network"
        ) from None


def _to_ip(address: object) -> IPAddress | None:
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        return mapped if mapped is not None else address
    if isinstance(address, bytes | bytearray):
        try:
            address = bytes(address).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(address, str):
        return None
    text = address.partition("%")[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _to_ip(parsed)


@final
class TrustedNetworks:
    """An immutable set of CIDR networks (plus, optionally, UNIX-socket peers).

    ``address in trusted`` takes an address as text, bytes, or an :mod:`ipaddress` object, and
    is False for anything that does not parse. Equal sets compare and hash equal.
    """

    __slots__ = ("_networks", "_trust_unix", "_v4", "_v6")

    def __init__(self, entries: Iterable[TrustEntry] = (), *, trust_unix: bool = False) -> None:
        if isinstance(entries, str):
            raise ConfigError("trusted networks must be a list of entries, not one string")
        networks: list[Network] = []
        for entry in entries:
            if isinstance(entry, str) and entry.strip().lower() == UNIX_ENTRY:
                trust_unix = True
                continue
            network = _parse_entry(entry)
            if network not in networks:
                networks.append(network)
        self._networks: tuple[Network, ...] = tuple(networks)
        self._trust_unix = trust_unix
        # (network bits, mask) pairs: a membership test is one int() and a few ANDs.
        self._v4: tuple[tuple[int, int], ...] = tuple(
            (int(n.network_address), int(n.netmask))
            for n in networks
            if isinstance(n, ipaddress.IPv4Network)
        )
        self._v6: tuple[tuple[int, int], ...] = tuple(
            (int(n.network_address), int(n.netmask))
            for n in networks
            if isinstance(n, ipaddress.IPv6Network)
        )

    @property
    def networks(self) -> tuple[Network, ...]:
        """The networks, normalised (IPv4-mapped ones as IPv4), in the order given."""
        return self._networks

    @property
    def trust_unix(self) -> bool:
        """Whether peers on UNIX-socket listeners are trusted."""
        return self._trust_unix

    def __contains__(self, address: object) -> bool:
        ip = _to_ip(address)
        if ip is None:
            return False
        value = int(ip)
        pairs = self._v4 if ip.version == 4 else self._v6
        return any(value & mask == net for net, mask in pairs)

    def __iter__(self) -> Iterator[Network]:
        return iter(self._networks)

    def __len__(self) -> int:
        return len(self._networks)

    def __bool__(self) -> bool:
        return bool(self._networks) or self._trust_unix

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedNetworks):
            return NotImplemented
        return set(self._networks) == set(other._networks) and self._trust_unix == other._trust_unix

    def __hash__(self) -> int:
        return hash((frozenset(self._networks), self._trust_unix))

    def __repr__(self) -> str:
        entries = [str(n) for n in self._networks]
        if self._trust_unix:
            entries.append(UNIX_ENTRY)
        return f"TrustedNetworks({entries!r})"
