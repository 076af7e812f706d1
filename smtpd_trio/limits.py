"""Per-client bookkeeping for the server: connections at once, new connections per minute, and
log lines about refusals. Sans-IO: the caller passes the time, nothing here awaits or sleeps.

A *client* is the real client (after a trusted PROXY header, or the one an XCLIENT from a host
in ``Config.xclient_hosts`` names), never the load balancer or the mail proxy. IPv4
clients are counted by address; IPv6 clients by their /64 network by default, since one host
commonly holds a whole /64 and can pick a new address for every connection. UNIX-socket
clients are local and not limited.

Every table here is bounded, whatever a flood of distinct addresses does:

- connection counts hold one entry per client with a connection open, so at most
  ``max_connections`` entries;
- connection-rate buckets expire once full again and are capped at ``max_tracked``, the least
  recently seen dropped first (a client dropped early is only ever treated more leniently);
- the refusal-log throttle keeps one entry per (client, kind) for one interval, capped the same
  way; past the cap, refusals are counted together under one entry.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from typing import Final, final

__all__ = ["ClientLimiter", "Refusal", "RefusalLog", "client_key"]

#: How many clients the rate and log tables remember at most.
DEFAULT_MAX_TRACKED: Final = 100_000

_OTHERS: Final = "other clients"


@functools.lru_cache(maxsize=4096)
def client_key(host: str, *, ipv6_prefix: int = 64) -> str | None:
    """What a client is counted by: its IPv4 address, its IPv6 network (``/ipv6_prefix``),
    or None for clients that are not limited (UNIX sockets, unknown peers)."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)
        return str(network)
    return str(ip)


class Refusal(str):
    """Why a connection was refused (a short, log-safe text); the caller picks the reply."""

    __slots__ = ()


TOO_MANY: Final = Refusal("too many connections from this client")
TOO_FAST: Final = Refusal("too many new connections from this client")


@final
class ClientLimiter:
    """Connections at once and new connections per minute, per client."""

    __slots__ = ("_buckets", "_open", "max_at_once", "max_tracked", "per_minute")

    def __init__(
        self,
        *,
        max_at_once: int | None,
        per_minute: int | None,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        self.max_at_once = max_at_once
        self.per_minute = per_minute
        self.max_tracked = max_tracked
        self._open: dict[str, int] = {}
        # key -> (tokens, time of the last update): a token bucket of per_minute tokens that
        # refills at per_minute per 60 s. Most recently used last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def open_connections(self, key: str) -> int:
        return self._open.get(key, 0)

    @property
    def tracked(self) -> int:
        """Entries held (for tests and metrics): open-connection counts plus rate buckets."""
        return len(self._open) + len(self._buckets)

    def admit(self, key: str, now: float) -> Refusal | None:
        """Count a new connection from ``key``, or say why it is refused (then nothing is
        counted). Every admitted connection must be :meth:`release`\\ d once."""
        if self.max_at_once is not None and self._open.get(key, 0) >= self.max_at_once:
            return TOO_MANY
        if self.per_minute is not None and not self._take_token(key, now):
            return TOO_FAST
        self._open[key] = self._open.get(key, 0) + 1
        return None

    def release(self, key: str) -> None:
        count = self._open[key] - 1
        if count:
            self._open[key] = count
        else:
            del self._open[key]

    def _take_token(self, key: str, now: float) -> bool:
        assert self.per_minute is not None
        capacity = float(self.per_minute)
        rate = capacity / 60.0
        buckets = self._buckets
        tokens, then = buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + (now - then) * rate)
        if tokens < 1.0:
            buckets[key] = (tokens, now)
            self._trim(now)
            return False
        buckets[key] = (tokens - 1.0, now)
        self._trim(now)
        return True

    def _trim(self, now: float) -> None:
        """Drop buckets that have refilled (they hold nothing a new one would not), then the
        least recently used ones beyond ``max_tracked``."""
        assert self.per_minute is not None
        buckets = self._buckets
        full_after = 60.0  # an empty bucket is full again after a minute
        while buckets:
            key, (_tokens, then) = next(iter(buckets.items()))
            if now - then < full_after and len(buckets) <= self.max_tracked:
                break
            del buckets[key]


@final
class RefusalLog:
    """Decides which refusals get a log line: the first of each kind per client per
    ``interval`` seconds. The ones held back are counted: the next line for that client and
    kind says how many, and :meth:`summaries` hands out the counts of quiet ones."""

    __slots__ = ("_seen", "interval", "max_tracked")

    def __init__(self, interval: float, *, max_tracked: int = DEFAULT_MAX_TRACKED) -> None:
        self.interval = interval
        self.max_tracked = max_tracked
        # (client, kind) -> (when the last line was written, refusals held back since), in the
        # order the lines were written.
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, client: str, kind: str, now: float) -> int | None:
        """A refusal of ``kind`` for ``client``: None if it should not be logged, else how many
        like it were held back since the last line (0 for the first)."""
        seen = self._seen
        key = (client, kind)
        if key not in seen and len(seen) >= self.max_tracked:
            key = (_OTHERS, kind)
        entry = seen.get(key)
        if entry is None:
            seen[key] = (now, 0)
            return 0
        when, held = entry
        if now - when < self.interval:
            seen[key] = (when, held + 1)
            return None
        seen[key] = (now, 0)
        return held

    def summaries(self, now: float) -> list[tuple[str, str, int]]:
        """(client, kind, count) for every client whose interval is over with refusals held
        back; those entries are forgotten (the next refusal is logged again)."""
        out: list[tuple[str, str, int]] = []
        for key, (when, held) in list(self._seen.items()):
            if now - when >= self.interval:
                del self._seen[key]
                if held:
                    out.append((key[0], key[1], held))
        return out
