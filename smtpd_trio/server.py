"""Serving SMTP on listeners: accept loops, one task per connection, limits, shutdown.

:func:`serve_smtp` is to SMTP what :func:`trio.serve_tcp` is to TCP: it opens listeners and
never returns until cancelled (or until :meth:`SMTPServer.shutdown` finishes). For more control,
build an :class:`SMTPServer` and call :meth:`SMTPServer.serve` with your own listeners.

Structure (structured concurrency, websockets style)::

    SMTPServer.serve(listeners)
      connections nursery (cancel scope with the shutdown deadline)
        one task per connection: [PROXY stage] -> SessionDriver.run()
      accept nursery (its own cancel scope: shutdown stops accepting first)
        one accept loop per listener

Accept errors such as EMFILE are logged and retried after a short pause, as trio does. At
``max_connections`` a new connection is answered 421 and closed at once; so is one from a
client that already has ``max_connections_per_client`` open, or that opened more than
``max_connection_rate`` in the last minute (counted by the real client, after PROXY; see
:mod:`smtpd_trio.limits`). A connection from a host allowed XCLIENT is counted by its session
instead, under each client its XCLIENT names. From 80% of ``max_connections`` the server is
*under stress*, and waits for clients use ``stress_timeout`` (Postfix does the same), until it
is back under 70%.
Refusals a client causes are logged at INFO, once per client and kind per
``refusal_log_interval``, with counts of the rest.

Listeners are TCP (:func:`open_smtp_listeners`) or UNIX sockets (:func:`open_unix_listener`:
mode 0660 whatever the umask, a stale socket file from an earlier run replaced, any other file
left alone), or any Trio listener. :func:`serve_lmtp` serves LMTP (RFC 2033), never on port 25.

Graceful shutdown (:meth:`SMTPServer.shutdown`, SIGTERM/SIGINT in the CLI): stop accepting,
answer 421 to every session waiting for a command, let sessions inside a mail transaction finish
it (they are told 421 right after), and cancel what is left at ``shutdown_timeout``. A message is
only acknowledged (250) after the handler's on_data returned, so nothing acknowledged is lost;
an interrupted transaction was never acknowledged, and the client will retry it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import stat
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, final

import attrs
import trio

from ._smtp import replies
from ._smtp.replies import Reply
from .config import Config
from .connection import ProxyRefused, proxy_stage
from .handler import Callbacks, Endpoint, Handler, Reject, Session, handler_callbacks
from .limits import ClientLimiter, client_key
from .proxy import ProxyInfo
from .session import (
    LIMIT_REFUSALS,
    SessionDriver,
    Shared,
    forwarding_rights,
    new_session,
    new_session_id,
)

__all__ = [
    "LMTP_PORT",
    "UNIX_SOCKET_MODE",
    "SMTPServer",
    "UnixSocketListener",
    "open_unix_listener",
    "serve_lmtp",
    "serve_smtp",
]

log: Final = logging.getLogger("smtpd_trio.server")

# Errors that mean "out of resources for now": pause and retry (as trio.serve_listeners does).
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_PAUSE: Final = 0.1
_REFUSE_TIMEOUT: Final = 1.0
# At most this many connections are being told 421 at once; past it, a flood of connections is
# closed without a word, so refusing cannot itself pile up tasks and descriptors.
_MAX_REFUSING: Final = 64
# Under stress from this share of max_connections in use, and back to normal below the second.
_STRESS_ON: Final = 0.8
_STRESS_OFF: Final = 0.7
#: The port :func:`serve_lmtp` (and ``smtpd-trio --lmtp``) listens on unless told: LMTP has no
#: assigned port, must never use 25 (RFC 2033 §5), and should not take SMTP's 8025 next door.
LMTP_PORT: Final = 8024
#: The permissions of a UNIX socket: its owner and group may connect, no one else.
UNIX_SOCKET_MODE: Final = 0o660


def endpoint_of(address: object) -> Endpoint:
    """An :class:`Endpoint` from what ``getpeername()``/``getsockname()`` return."""
    if isinstance(address, tuple) and len(address) >= 2:
        return Endpoint(str(address[0]), int(address[1]))
    if isinstance(address, str | bytes):
        path = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
        return Endpoint(f"unix:{path}" if path else "unix:")
    return Endpoint("unknown")


def stream_endpoints(stream: trio.abc.Stream) -> tuple[Endpoint | None, Endpoint | None]:
    """The (peer, local) endpoints of a socket stream; ("unknown", None) for other streams,
    and (None, None) for a socket whose peer is already gone (reset before we got to it)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return Endpoint("unknown"), None
    try:
        return endpoint_of(sock.getpeername()), endpoint_of(sock.getsockname())
    except OSError:
        return None, None


def stream_peer(stream: trio.abc.Stream) -> Endpoint | None:
    """The peer of a socket stream (one system call); "unknown" for other streams, None for a
    socket whose peer is already gone (reset before we got to it)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return Endpoint("unknown")
    try:
        return endpoint_of(sock.getpeername())
    except OSError:
        return None


@final
class SMTPServer:
    """An SMTP server for one handler and one :class:`Config`, over any listeners."""

    def __init__(self, handler: Handler[Any], *, config: Config | None = None) -> None:
        """Raises TypeError if a callback of ``handler`` could never be called as it is
        (see :func:`smtpd_trio.handler.handler_callbacks`)."""
        self.handler = handler
        self.config = config or Config()
        self._callbacks: Callbacks = handler_callbacks(handler)
        # Told about each session as it starts (the test harness uses it).
        self._session_observer: Callable[[Session[Any]], None] | None = None
        self._drivers: set[SessionDriver] = set()
        self._shutting_down = False
        self._accept_scope: trio.CancelScope | None = None
        self._connections_scope: trio.CancelScope | None = None
        self._active = 0
        self._refusing = 0
        config = self.config
        self._shared = Shared.for_config(config)
        assert self._shared.limiter is not None
        self._limiter: ClientLimiter = self._shared.limiter
        limit = config.max_connections
        self._stress_on = math.inf if limit is None else max(1, math.ceil(limit * _STRESS_ON))
        self._stress_off = math.inf if limit is None else limit * _STRESS_OFF

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def active_connections(self) -> int:
        return self._active

    @property
    def under_stress(self) -> bool:
        """True while 80% of ``max_connections`` (or more) are in use, until back under 70%."""
        return self._shared.stressed

    @property
    def buffered_bytes(self) -> int:
        """Octets of message text the sessions hold in memory now."""
        return self._shared.budget.in_use

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[Sequence[trio.abc.Listener[trio.abc.Stream]]] = (
            trio.TASK_STATUS_IGNORED
        ),
    ) -> None:
        """Accept and serve connections until :meth:`shutdown` completes or we are cancelled.

        Calls ``task_status.started(listeners)`` once every accept loop is running.
        """
        try:
            with trio.CancelScope() as connections_scope:
                self._connections_scope = connections_scope
                async with trio.open_nursery() as connections:
                    with trio.CancelScope() as accept_scope:
                        self._accept_scope = accept_scope
                        if self._shutting_down:
                            accept_scope.cancel()
                        async with trio.open_nursery() as accepting:
                            for listener in listeners:
                                accepting.start_soon(self._accept_loop, listener, connections)
                            accepting.start_soon(self._report_refusals)
                            task_status.started(listeners)
                    # Accepting stopped: shutdown was asked. Close the listeners at once so
                    # new clients are refused by the kernel, then let sessions finish.
                    for listener in listeners:
                        await trio.aclose_forcefully(listener)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

    def shutdown(self, timeout: float | None = None) -> None:
        """Begin a graceful shutdown (see the module docstring); :meth:`serve` then returns
        once every session has ended, at most ``timeout`` (default: the config's
        ``shutdown_timeout``) seconds from now."""
        if self._shutting_down:
            return
        self._shutting_down = True
        grace = self.config.shutdown_timeout if timeout is None else timeout
        log.info("shutting down: %d connection(s) open, %.1f s to finish", self._active, grace)
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        if self._connections_scope is not None:
            self._connections_scope.deadline = min(
                self._connections_scope.deadline, trio.current_time() + grace
            )
        for driver in list(self._drivers):
            driver.request_shutdown()

    async def _report_refusals(self) -> NoReturn:
        """Every refusal_log_interval, one line per client and kind whose refusals were held
        back from the log."""
        refusals = self._shared.refusals
        while True:
            await trio.sleep(refusals.interval)
            for client, kind, count in refusals.summaries(trio.current_time()):
                log.info(
                    "%d more %s refusal(s) for %s in the last %g s",
                    count,
                    kind,
                    client,
                    refusals.interval,
                )

    def _note_refusal(self, client: str, kind: str, session_id: str, text: str) -> None:
        held = self._shared.refusals.note(client, kind, trio.current_time())
        if held is None:
            return
        more = f" ({held} more like it from this client since the last report)" if held else ""
        log.info("[%s] %s%s", session_id, text, more)

    async def _refuse(self, stream: trio.abc.Stream, reply: Reply) -> None:
        """Say ``reply`` (briefly, and only to a bounded number at once) and close."""
        if self._refusing < _MAX_REFUSING:
            self._refusing += 1
            try:
                with (
                    trio.move_on_after(_REFUSE_TIMEOUT),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await stream.send_all(reply.to_bytes())
            finally:
                self._refusing -= 1
        await trio.aclose_forcefully(stream)

    def _count(self, delta: int) -> None:
        """One more or one fewer connection in service; go in or out of stress."""
        self._active += delta
        shared = self._shared
        if not shared.stressed and self._active >= self._stress_on:
            shared.stressed = True
            log.warning(
                "under stress: %d connection(s) of %s; waits for clients now time out after %s s",
                self._active,
                self.config.max_connections,
                self.config.stress_timeout,
            )
            if self.config.stress_timeout is not None:
                for driver in list(self._drivers):
                    driver.tighten()
        elif shared.stressed and self._active < self._stress_off:
            shared.stressed = False
            log.info("no longer under stress: %d connection(s)", self._active)

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], connections: trio.Nursery
    ) -> NoReturn:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    log.error(
                        "accept failed (%s); pausing %.1f s",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                        _ACCEPT_PAUSE,
                    )
                    await trio.sleep(_ACCEPT_PAUSE)
                    continue
                raise
            connections.start_soon(self.handle_connection, stream)

    async def handle_connection(
        self, stream: trio.abc.Stream, *, peer: Endpoint | None = None
    ) -> None:
        """Serve one accepted stream: limits, the PROXY stage, then the session.

        ``peer`` defaults to the socket's peer address; pass it for streams that are not
        sockets (tests use memory streams). Never raises on bad input from the network.
        """
        session_id = new_session_id()
        if peer is None:
            peer = stream_peer(stream)
            if peer is None:
                # Reset before we served it (TCP health checks do this): nothing to say to it.
                log.debug("[%s] peer went away before it was served", session_id)
                await trio.aclose_forcefully(stream)
                return
        config = self.config
        if config.max_connections is not None and self._active >= config.max_connections:
            self._note_refusal(
                "all clients", "max-connections", session_id, f"refused {peer}: server full"
            )
            config.observer.connection_refused("max-connections")
            await self._refuse(stream, replies.TOO_MANY_CONNECTIONS)
            return
        self._count(+1)
        admitted: str | None = None
        try:
            client, proxy, leftover = peer, None, b""
            if config.proxy_protocol:
                stage = None
                refusal = f"no complete PROXY header within {config.proxy_timeout:g} s"
                with trio.move_on_after(config.proxy_timeout):
                    try:
                        stage = await proxy_stage(
                            stream,
                            peer,
                            trusted=config.trusted_proxies,
                            untrusted=config.untrusted_proxy_peers,
                        )
                    except ProxyRefused as exc:
                        refusal = exc.reason
                if stage is None:
                    self._note_refusal(peer.host, "proxy", session_id, f"refused {peer}: {refusal}")
                    config.observer.connection_refused("proxy")
                    await trio.aclose_forcefully(stream)
                    return
                client, proxy, leftover = stage.client, stage.info, stage.leftover
                config.observer.proxy_header(proxy)
            quiet = bool(config.ignored_hosts) and client.host in config.ignored_hosts
            # A proxy allowed XCLIENT speaks for many clients: its connection is counted under
            # the client its XCLIENT names, by the session (as Postfix exempts these hosts).
            key = (
                None
                if quiet or forwarding_rights(config, client)[0]
                else client_key(client.host, ipv6_prefix=config.client_ipv6_prefix)
            )
            if key is not None:
                refused = self._limiter.admit(key, trio.current_time())
                if refused is not None:
                    self._note_refusal(key, refused, session_id, f"refused {client}: {refused}")
                    reply, reason = LIMIT_REFUSALS[refused]
                    config.observer.connection_refused(reason)
                    await self._refuse(stream, reply)
                    return
                admitted = key
            session = new_session(
                self._callbacks,
                id=session_id,
                client=client,
                peer=peer,
                hostname=config.hostname,
                proxy=proxy,
            )
            if self._session_observer is not None:
                self._session_observer(session)
            if (
                proxy is not None
                and self._callbacks.on_proxy is not None
                and not await self._proxy_accepted(session, proxy)
            ):
                config.observer.connection_refused("on-proxy")
                await trio.aclose_forcefully(stream)
                return
            if not quiet and log.isEnabledFor(logging.DEBUG):
                # DEBUG: the close line names the client too, so INFO has one line per
                # connection (docs/cli.md, Logging).
                if client is peer:
                    log.debug("[%s] connection from %s", session_id, client)
                else:
                    log.debug("[%s] connection from %s via %s", session_id, client, peer)
            driver = SessionDriver(
                stream,
                self._callbacks,
                config=config,
                session=session,
                shared=self._shared,
                quiet=quiet,
            )
            if self._shutting_down:
                driver.request_shutdown()
            self._drivers.add(driver)
            try:
                await driver.run(leftover)
            finally:
                self._drivers.discard(driver)
        except Exception:
            # Nothing from the network should get here; if something does, it must not take
            # the server down with it.
            log.exception("[%s] internal error serving the connection", session_id)
            await trio.aclose_forcefully(stream)
        finally:
            if admitted is not None:
                self._limiter.release(admitted)
            self._count(-1)

    async def _proxy_accepted(self, session: Session[Any], info: ProxyInfo) -> bool:
        """Ask the handler's on_proxy; a refusal or an exception closes the connection."""
        on_proxy = self._callbacks.on_proxy
        assert on_proxy is not None
        try:
            reply = await on_proxy(session, info)
        except Reject as exc:
            reply = exc.reply
        except Exception:
            log.exception("[%s] handler on_proxy failed; closing", session.id)
            return False
        if reply is None:
            return True
        if not isinstance(reply, Reply) or reply.is_positive:
            log.error(
                "[%s] handler on_proxy returned %r: accept with None or refuse with a 4xx/5xx "
                "reply; closing",
                session.id,
                reply,
            )
            return False
        log.info("[%s] refused by on_proxy: %s", session.id, reply)
        return False


async def _open_reuse_port_listeners(
    port: int, host: str | None, backlog: int | None
) -> list[trio.SocketListener]:
    """Like trio.open_tcp_listeners, with SO_REUSEPORT: several processes share the port and
    the kernel spreads new connections across them."""
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, address in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog if backlog is not None else socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


async def open_smtp_listeners(
    port: int,
    *,
    host: str | Sequence[str] | None = "127.0.0.1",
    backlog: int | None = None,
    reuse_port: bool = False,
) -> list[trio.SocketListener]:
    """TCP listeners on ``port`` for each host (IPv4 and IPv6 names and addresses).

    With ``reuse_port`` the sockets set SO_REUSEPORT (Linux, BSD), so several processes can
    listen on the same port: that is how ``smtpd-trio --workers N`` scales over cores.
    """
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this system")
    hosts: Sequence[str | None] = [host] if host is None or isinstance(host, str) else host
    listeners: list[trio.SocketListener] = []
    try:
        for one in hosts:
            if reuse_port:
                listeners += await _open_reuse_port_listeners(port, one, backlog)
            else:
                listeners += await trio.open_tcp_listeners(port, host=one, backlog=backlog)
            if port == 0 and len(hosts) > 1 and listeners:
                # Keep one port across hosts when the system picked it.
                port = listeners[0].socket.getsockname()[1]
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


async def serve_smtp(
    handler: Handler[Any],
    *,
    host: str | Sequence[str] | None = "127.0.0.1",
    port: int | None = 8025,
    unix: UnixPaths | None = None,
    unix_mode: int = UNIX_SOCKET_MODE,
    config: Config | None = None,
    backlog: int | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[trio.abc.Stream]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """Serve SMTP for ``handler`` on ``host``:``port`` until cancelled.

    ``host`` may be a name, an address or a list of them (``["127.0.0.1", "::1"]``); ``None``
    means every interface. ``port=0`` picks a free port, and
    ``await nursery.start(partial(serve_smtp, handler, port=0))`` returns the listeners, so
    you can read it back (:func:`listener_port`). ``unix`` adds a UNIX socket (or a list of
    them) with permissions ``unix_mode`` (see :func:`open_unix_listener`); with ``port=None``
    only those are served. The ``config`` says the protocol: with ``lmtp=True`` this serves
    LMTP (see :func:`serve_lmtp`).
    """
    if config is not None and config.lmtp:
        _check_lmtp_port(port)
    listeners = await _open_listeners(host, port, unix, unix_mode, backlog)
    try:
        server = SMTPServer(handler, config=config)
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    for listener in listeners:
        sock = getattr(listener, "socket", None)
        if sock is not None:
            log.info("listening on %s", endpoint_of(sock.getsockname()))
    await server.serve(listeners, task_status=task_status)


def _check_lmtp_port(port: int | None) -> None:
    if port == 25:
        raise ValueError("LMTP must not be served on port 25 (RFC 2033 §5)")


async def serve_lmtp(
    handler: Handler[Any],
    *,
    host: str | Sequence[str] | None = "127.0.0.1",
    port: int | None = LMTP_PORT,
    unix: UnixPaths | None = None,
    unix_mode: int = UNIX_SOCKET_MODE,
    config: Config | None = None,
    backlog: int | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[trio.abc.Stream]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """Serve LMTP (RFC 2033) for ``handler`` until cancelled: :func:`serve_smtp` with
    ``lmtp=True`` in the ``config`` (the default ``Config()`` otherwise), on port 8024
    (``LMTP_PORT``) unless told, and never on port 25 (ValueError). A delivery agent
    usually listens on a UNIX socket only: ``serve_lmtp(handler, port=None,
    unix="/run/lmtp.sock")``.
    """
    _check_lmtp_port(port)
    config = attrs.evolve(config or Config(), lmtp=True)
    await serve_smtp(
        handler,
        host=host,
        port=port,
        unix=unix,
        unix_mode=unix_mode,
        config=config,
        backlog=backlog,
        task_status=task_status,
    )


@final
class UnixSocketListener(trio.abc.Listener[trio.SocketStream]):
    """A listener on a UNIX socket (:func:`open_unix_listener`). Closing it removes the socket
    file, if that is still the one it made."""

    def __init__(self, listener: trio.SocketListener, path: str) -> None:
        self._listener = listener
        self.path = path
        made = os.stat(path)
        self._made = (made.st_dev, made.st_ino)

    @property
    def socket(self) -> trio.socket.SocketType:
        """The listening socket (``getsockname()`` is the path)."""
        return self._listener.socket

    async def accept(self) -> trio.SocketStream:
        """The next connection."""
        return await self._listener.accept()

    async def aclose(self) -> None:
        """Stop listening and remove the socket file (if it is still the one made here)."""
        try:
            await self._listener.aclose()
        finally:  # also when cancelled (trio.aclose_forcefully): the socket is closed by then
            with contextlib.suppress(OSError):
                now = os.stat(self.path)
                if (now.st_dev, now.st_ino) == self._made:
                    os.unlink(self.path)


def _remove_stale_socket(path: str) -> None:
    """Make room for a UNIX socket at ``path``: nothing there, or a socket no server listens
    on any more (left by a run that did not end cleanly), which is removed. Anything else
    there raises: a file that is not a socket is never removed, nor a socket in use."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket (not removed)", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)  # a full backlog answers EAGAIN instead of blocking
        result = probe.connect_ex(path)
    finally:
        probe.close()
    if result == errno.ECONNREFUSED:
        os.unlink(path)  # nobody listens: stale
    elif result == 0 or result == errno.EAGAIN:
        raise OSError(errno.EADDRINUSE, "a server is listening on this socket", path)
    elif result != errno.ENOENT:
        raise OSError(
            result, f"cannot tell whether the socket is in use: {os.strerror(result)}", path
        )


async def open_unix_listener(
    path: str | os.PathLike[str], *, mode: int = UNIX_SOCKET_MODE, backlog: int | None = None
) -> UnixSocketListener:
    """A listener on the UNIX socket ``path``, with permissions ``mode`` (default 0660: the
    owner and group may connect), whatever the umask: they are set before the socket listens,
    so no connection is ever accepted under other permissions.

    A socket file already at ``path`` that no server listens on (left by an earlier run) is
    replaced; a socket in use, or a file that is not a socket, raises OSError and is left as it
    is. Closing the listener removes the socket file.
    """
    path = os.fspath(path)
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits within 0o000-0o777, not {mode:#o}")
    _remove_stale_socket(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        await sock.bind(path)
        bound = True
        os.chmod(path, mode)
        sock.listen(backlog if backlog is not None else socket.SOMAXCONN)
        return UnixSocketListener(trio.SocketListener(sock), path)
    except BaseException:
        sock.close()
        if bound:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


UnixPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


async def _open_listeners(
    host: str | Sequence[str] | None,
    port: int | None,
    unix: UnixPaths | None,
    unix_mode: int,
    backlog: int | None,
) -> list[trio.abc.Listener[trio.abc.Stream]]:
    """TCP listeners on ``host``:``port`` (none if ``port`` is None) and one per UNIX path."""
    paths: Sequence[str | os.PathLike[str]] = (
        [] if unix is None else [unix] if isinstance(unix, str | os.PathLike) else unix
    )
    if port is None and not paths:
        raise ValueError("nothing to listen on: give a port, a UNIX socket path, or both")
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    try:
        if port is not None:
            listeners += await open_smtp_listeners(port, host=host, backlog=backlog)
        for path in paths:
            listeners.append(await open_unix_listener(path, mode=unix_mode, backlog=backlog))
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


def listener_port(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    """The TCP port a socket listener is bound to (handy after ``port=0``)."""
    sock = getattr(listener, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise TypeError("not a TCP socket listener")
    return int(sock.getsockname()[1])
