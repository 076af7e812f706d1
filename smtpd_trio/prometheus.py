"""Prometheus metrics for smtpd-trio: an :class:`~smtpd_trio.metrics.Observer` that counts,
and a small HTTP endpoint that serves ``GET /metrics``.

Needs the ``prometheus-client`` package (``pip install 'smtpd-trio[metrics]'``); nothing else
in smtpd-trio imports this module. The command line's ``--metrics HOST:PORT`` does all of this
for you. In your own program::

    from smtpd_trio.prometheus import PrometheusMetrics, serve_metrics

    metrics = PrometheusMetrics()
    server = SMTPServer(handler, config=Config(observer=metrics))
    metrics.track(server)  # the gauges: connections open, memory held, stress
    async with trio.open_nursery() as nursery:
        web = await trio.open_tcp_listeners(9100, host="127.0.0.1")
        nursery.start_soon(serve_metrics, web, metrics.registry)
        await server.serve(await open_smtp_listeners(25, host="0.0.0.0"))
        nursery.cancel_scope.cancel()

Every metric is described in docs/metrics.md.

The endpoint is a Trio task (not the client library's threaded HTTP server): it runs beside the
SMTP server in the same nursery and stops with it, takes no thread, and is bounded like the
rest of the server: at most :data:`MAX_SCRAPES` requests at once (more are closed unanswered),
:data:`REQUEST_TIMEOUT` seconds and :data:`MAX_REQUEST_HEAD` octets for each, one request per
connection. It answers ``GET`` and ``HEAD`` for ``/metrics`` (any query is ignored) in the
format the scraper's ``Accept`` header asks for (Prometheus text or OpenMetrics), uncompressed;
``404`` for other paths, ``405`` for other methods.
"""

from __future__ import annotations

import enum
import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, Generic, NoReturn, TypeVar, final

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest

from ._smtp.events import CloseReason, TransactionOutcome
from .metrics import AuthOutcome, RefusalReason, TLSOutcome

if TYPE_CHECKING:
    from .proxy import ProxyInfo
    from .server import SMTPServer

__all__ = [
    "MAX_REQUEST_HEAD",
    "MAX_SCRAPES",
    "REQUEST_TIMEOUT",
    "SESSION_DURATION_BUCKETS",
    "PrometheusMetrics",
    "serve_metrics",
]

log: Final = logging.getLogger("smtpd_trio.prometheus")

#: Upper bounds of the session duration histogram, in seconds: from a health check's
#: milliseconds to the default ``max_session_duration`` (an hour).
SESSION_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

_REFUSALS: Final[tuple[str, ...]] = (
    "max-connections",
    "per-client",
    "rate",
    "proxy",
    "on-proxy",
    "early-talker",
)
_PROXY_OUTCOMES: Final = ("v1", "v2", "local", "direct", "refused")
_WITH_TEXT: Final = (TransactionOutcome.ACCEPTED, TransactionOutcome.REFUSED)
_EARLY_TALKER: Final = CloseReason.EARLY_TALKER
_TLS_OUTCOMES: Final[tuple[TLSOutcome, ...]] = ("success", "failure", "timeout")
_AUTH_OUTCOMES: Final[tuple[AuthOutcome, ...]] = ("success", "failure", "temporary-failure")

_K = TypeVar("_K", bound=str | enum.Enum)


@final
class _Children(dict[_K, Counter], Generic[_K]):
    """The children of a labelled metric by the value of its last label, made on first use
    (so a label value added later, a new close reason say, still counts). Looking one up is a
    dict lookup; ``family.labels()`` would take a lock and build a tuple each time."""

    def __init__(self, family: Counter, *fixed: str, known: Iterable[_K] = ()) -> None:
        """``fixed``: the values of the labels before the last; ``known``: last-label values
        whose series are made now, at 0, so that rates and alerts see them from the start."""
        super().__init__()
        self._family = family
        self._fixed = fixed
        for key in known:
            self.__missing__(key)

    def __missing__(self, key: _K) -> Counter:
        label = key.value if isinstance(key, enum.Enum) else key
        child = self._family.labels(*self._fixed, str(label))
        self[key] = child
        return child


@final
class PrometheusMetrics:
    """An observer (for ``Config.observer``) that keeps Prometheus metrics in ``registry``.

    ``registry`` defaults to a new :class:`~prometheus_client.CollectorRegistry` of its own;
    pass ``prometheus_client.REGISTRY`` to serve them with the client library's process and
    Python metrics (the command line does); a registry holds one set of these names (a second
    set in it is a ValueError: give it another ``namespace``). Every name starts with
    ``namespace_``. Call :meth:`track` with the server for the gauges it alone knows.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "smtpd"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        connections = Counter(
            "connections",
            "Connections, counted once each when they end: served (reason: why the session "
            "ended) or refused (reason: why).",
            ["outcome", "reason"],
            namespace=namespace,
            registry=reg,
        )
        self._served: _Children[CloseReason] = _Children(
            connections, "served", known=[r for r in CloseReason if r is not _EARLY_TALKER]
        )
        self._refused: _Children[str] = _Children(connections, "refused", known=_REFUSALS)

        def by_outcome(name: str, documentation: str, known: Iterable[_K]) -> _Children[_K]:
            family = Counter(name, documentation, ["outcome"], namespace=namespace, registry=reg)
            return _Children(family, known=known)

        self._transactions: _Children[TransactionOutcome] = by_outcome(
            "transactions",
            "Mail transactions by how they ended: accepted (250 sent), refused, reset (RSET, "
            "HELO/EHLO) or aborted (the connection ended inside one).",
            TransactionOutcome,
        )
        self._bytes: _Children[TransactionOutcome] = by_outcome(
            "message_bytes",
            "Octets of message text read (dot-unstuffed, without the final dot), by the "
            "outcome of the transaction.",
            _WITH_TEXT,
        )
        self._proxy: _Children[str] = by_outcome(
            "proxy_headers",
            "PROXY stage outcomes: a v1 or v2 header naming the client, a header without one "
            "(local: v2 LOCAL, v1 UNKNOWN), an untrusted peer served directly, or refused.",
            _PROXY_OUTCOMES,
        )
        self._tls: _Children[str] = by_outcome(
            "tls_handshakes",
            "TLS handshakes (implicit TLS and STARTTLS) by outcome.",
            _TLS_OUTCOMES,
        )
        self._auth: _Children[str] = by_outcome(
            "auth_attempts",
            "AUTH exchanges answered by the authenticator: success (235), failure (535 or "
            "another 5xx), temporary-failure (454 or another 4xx).",
            _AUTH_OUTCOMES,
        )
        self._duration = Histogram(
            "session_duration_seconds",
            "How long served sessions lasted, from the start of the session to its end.",
            namespace=namespace,
            registry=reg,
            buckets=SESSION_DURATION_BUCKETS,
        )
        self._servers: weakref.WeakSet[SMTPServer] = weakref.WeakSet()
        reg.register(_ServerGauges(self._servers, namespace))

    def track(self, server: SMTPServer) -> None:
        """Report ``server``'s gauges: connections open, octets of message text held in
        memory, under stress. Several servers add up (stress: any of them)."""
        self._servers.add(server)

    # ---- the Observer methods (see smtpd_trio.metrics) ------------------------------------

    def connection_refused(self, reason: RefusalReason) -> None:
        self._refused[reason].inc()
        if reason == "proxy":
            self._proxy["refused"].inc()

    def proxy_header(self, info: ProxyInfo | None) -> None:
        if info is None:
            self._proxy["direct"].inc()
        elif info.source_address is None:
            self._proxy["local"].inc()
        else:
            self._proxy["v1" if info.version == 1 else "v2"].inc()

    def tls_handshake(self, outcome: TLSOutcome) -> None:
        self._tls[outcome].inc()

    def authentication(self, outcome: AuthOutcome) -> None:
        self._auth[outcome].inc()

    def transaction_ended(self, outcome: TransactionOutcome, size: int | None) -> None:
        self._transactions[outcome].inc()
        if size:
            self._bytes[outcome].inc(size)

    def session_ended(self, reason: CloseReason, seconds: float) -> None:
        if reason is _EARLY_TALKER:
            self._refused["early-talker"].inc()
            return
        self._served[reason].inc()
        self._duration.observe(seconds)


@final
class _ServerGauges:
    """What the tracked servers know now, read at each scrape (so nothing is counted for them
    while serving)."""

    def __init__(self, servers: weakref.WeakSet[SMTPServer], namespace: str) -> None:
        self._servers = servers
        self._namespace = namespace

    def _families(self, active: int, buffered: int, stressed: bool) -> list[Metric]:
        ns = self._namespace
        return [
            GaugeMetricFamily(
                f"{ns}_connections_active",
                "Connections being served now (from acceptance to close; not those refused "
                "at max_connections).",
                value=active,
            ),
            GaugeMetricFamily(
                f"{ns}_buffered_bytes",
                "Octets of message text the sessions hold in memory now (the "
                "max_buffered_bytes budget in use).",
                value=buffered,
            ),
            GaugeMetricFamily(
                f"{ns}_under_stress",
                "1 while the server is under stress (80% of max_connections in use, until "
                "back under 70%), else 0.",
                value=1 if stressed else 0,
            ),
        ]

    def describe(self) -> list[Metric]:
        return self._families(0, 0, False)

    def collect(self) -> Iterable[Metric]:
        servers = list(self._servers)
        if not servers:
            return []
        return self._families(
            sum(s.active_connections for s in servers),
            sum(s.buffered_bytes for s in servers),
            any(s.under_stress for s in servers),
        )


# ---- the HTTP endpoint ----------------------------------------------------------------------

#: Scrape requests answered at once; connections past this are closed unanswered.
MAX_SCRAPES: Final = 16
#: Seconds a scraper has to send its request and read the answer.
REQUEST_TIMEOUT: Final = 10.0
#: The longest request line and headers read, in octets; longer ones get 431.
MAX_REQUEST_HEAD: Final = 8192

_READ_SIZE: Final = 4096
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _response(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    head_only: bool = False,
    extra: str = "",
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


def answer(head: bytes, registry: CollectorRegistry) -> bytes:
    """The whole HTTP response to a request whose line and headers are ``head`` (without the
    blank line that ends them)."""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _response(400, b"Bad Request\n")
    method, target = parts[0], parts[1]
    if method not in (b"GET", b"HEAD"):
        return _response(405, b"Method Not Allowed\n", extra="Allow: GET, HEAD\r\n")
    head_only = method == b"HEAD"
    if target.partition(b"?")[0] != b"/metrics":
        return _response(404, b"Not Found: the metrics are at /metrics\n", head_only=head_only)
    accept = ""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"accept":
            accept = value.strip().decode("latin-1")
    try:
        encoder, content_type = choose_encoder(accept)
    except Exception:
        # The client library's negotiation fails on some malformed versions ("version=x"):
        # such a scraper gets the classic text format.
        encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    try:
        body = encoder(registry)
    except Exception:
        log.exception("collecting the metrics failed")
        return _response(500, b"Internal Server Error\n", head_only=head_only)
    return _response(200, body, content_type, head_only=head_only)


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request line and headers; None if the client went away first. Raises ValueError
    past MAX_REQUEST_HEAD octets."""
    data = bytearray()
    while True:
        chunk = await stream.receive_some(_READ_SIZE)
        if not chunk:
            return None
        data += chunk
        for end in (b"\r\n\r\n", b"\n\n"):
            at = data.find(end)
            if 0 <= at <= MAX_REQUEST_HEAD:
                return bytes(data[:at])
        if len(data) > MAX_REQUEST_HEAD + 4:
            raise ValueError("request head too large")


async def _linger(stream: trio.abc.Stream) -> None:
    """After the response: say we are done, then read what the client still sends until it
    closes (at most :data:`MAX_REQUEST_HEAD` octets more), so that closing with its bytes
    unread does not reset the connection before it has read the response."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    left = MAX_REQUEST_HEAD
    while left > 0:
        chunk = await stream.receive_some(_READ_SIZE)
        if not chunk:
            return
        left -= len(chunk)


@final
class _Endpoint:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._busy = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        if self._busy >= MAX_SCRAPES:
            await trio.aclose_forcefully(stream)
            return
        self._busy += 1
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                try:
                    head = await _read_head(stream)
                except ValueError:
                    reply = _response(431, b"Request Header Fields Too Large\n")
                else:
                    if head is None:
                        return
                    reply = answer(head, self._registry)
                await stream.send_all(reply)
                await _linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the scraper went away
        except Exception:
            # Nothing a scraper sends may take the server down with it.
            log.exception("internal error answering a metrics request")
        finally:
            self._busy -= 1
            await trio.aclose_forcefully(stream)


async def serve_metrics(
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    registry: CollectorRegistry,
    *,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[trio.abc.Stream]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> NoReturn:
    """Serve ``GET /metrics`` from ``registry`` on ``listeners`` until cancelled (see the
    module docstring). Calls ``task_status.started(listeners)`` once accepting."""
    endpoint = _Endpoint(registry)
    await trio.serve_listeners(endpoint.handle, list(listeners), task_status=task_status)
