"""A server in a background thread, for synchronous code: tests, Django, scripts.

::

    from smtpd_trio import ServerThread
    from smtpd_trio.testing import Collector

    inbox = Collector()
    with ServerThread(inbox) as server:          # returns once the port accepts
        send_mail_somehow(server.host, server.port)
    inbox.assert_one_message(to="b@example.org")

The thread runs its own ``trio.run``: the handler's callbacks run there, in Trio. Anything
raised in that thread (a port that cannot be bound, an accept loop that fails) is raised again
in the thread that called :meth:`ServerThread.start` or :meth:`ServerThread.stop`.
:meth:`~ServerThread.stop` is a graceful shutdown (see :meth:`SMTPServer.shutdown`): open
transactions may finish, so no message that got its ``250`` is lost.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, final

import trio

from .config import Config
from .handler import Endpoint, Handler
from .server import SMTPServer, endpoint_of, open_smtp_listeners

__all__ = ["ServerThread"]

_LOOPBACK: Final = {4: "127.0.0.1", 6: "::1"}


def _connectable(host: str) -> str:
    """``host``, or loopback for a wildcard address (0.0.0.0, ::), which is not a
    destination."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return _LOOPBACK[address.version] if address.is_unspecified else host


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside nested single-exception groups (Trio wraps what escapes a
    nursery), so the caller sees ``OSError``, not ``ExceptionGroup(..., [OSError])``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@final
class ServerThread:
    """Serves SMTP for ``handler`` in a background thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop` (in fixtures). It
    may be started again after it stopped; each start builds a new :class:`SMTPServer` and
    opens new listeners (with ``port=0``, on a newly picked port).
    """

    def __init__(
        self,
        handler: Handler[Any],
        *,
        host: str | Sequence[str] | None = "127.0.0.1",
        port: int = 0,
        config: Config | None = None,
        shutdown_timeout: float | None = None,
        backlog: int | None = None,
    ) -> None:
        """``host``, ``port``, ``config`` and ``backlog`` are as for
        :func:`~smtpd_trio.serve_smtp`, except that ``port`` defaults to 0 (a free port,
        read it back from :attr:`port`). ``shutdown_timeout`` bounds the graceful shutdown
        of :meth:`stop` (default: ``config.shutdown_timeout``).

        Raises TypeError for a handler that could not be called, as :class:`SMTPServer`
        does, before any thread is started.
        """
        self.handler = handler
        self.config = config or Config()
        self.shutdown_timeout = shutdown_timeout
        self._host = host
        self._requested_port = port
        self._backlog = backlog
        self._server: SMTPServer | None = SMTPServer(handler, config=self.config)
        # The server being served, set and cleared in the server thread.
        self._running_server: SMTPServer | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._addresses: tuple[Endpoint, ...] = ()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        where = ", ".join(map(str, self._addresses)) if self.running else "stopped"
        return f"<ServerThread {type(self.handler).__name__} {where}>"

    @property
    def running(self) -> bool:
        """True from the return of :meth:`start` until :meth:`stop`."""
        return self._thread is not None

    @property
    def addresses(self) -> tuple[Endpoint, ...]:
        """Every address the server listens on."""
        self._check_running()
        return self._addresses

    @property
    def host(self) -> str:
        """The address of the first listener, as a client on this machine can reach it
        (loopback when listening on a wildcard address)."""
        return _connectable(self.addresses[0].host)

    @property
    def port(self) -> int:
        """The port of the first listener (the one picked, with ``port=0``)."""
        port = self.addresses[0].port
        assert port is not None
        return port

    @property
    def trio_token(self) -> trio.lowlevel.TrioToken:
        """The token of the server thread's Trio run: pass it to ``trio.from_thread.run`` or
        ``run_sync`` to call into the server's thread (set a ``trio.Event`` a handler waits
        on, say)."""
        self._check_running()
        assert self._token is not None
        return self._token

    def _check_running(self) -> None:
        if self._thread is None:
            raise RuntimeError("the server is not running: call start() first")

    def start(self) -> None:
        """Start the thread and return once every listener accepts connections.

        Raises what starting raised in the thread (OSError for an address in use, say); the
        thread is gone by then.
        """
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        server = self._server or SMTPServer(self.handler, config=self.config)
        self._server = None  # an SMTPServer serves once: the next start builds another
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run_thread,
            args=(server, ready),
            name=f"smtpd-trio ServerThread {type(self.handler).__name__}",
            # Should stop() never be called, the program may still exit.
            daemon=True,
        )
        self._error = None
        thread.start()
        ready.wait()
        if self._token is None:  # it ended before it was ready
            thread.join()
            self._raise_error()
            raise RuntimeError("the server thread ended before it was ready")
        self._thread = thread

    def stop(self, timeout: float | None = None) -> None:
        """Shut down gracefully and wait for the thread to end.

        Open transactions may finish, for at most ``timeout`` seconds (default: the
        ``shutdown_timeout`` given, else ``config.shutdown_timeout``); ``stop(timeout=0)``
        stops at once. Idle sessions are told ``421`` and closed. Raises what the server
        thread raised, if anything. Does nothing if the server is not running.
        """
        thread = self._thread
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() was called from the server's own thread")
        grace = timeout if timeout is not None else self.shutdown_timeout
        token = self._token
        assert token is not None
        # If the run ended on its own, its exception (if any) is raised below.
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._shutdown, grace, trio_token=token)
        thread.join()
        self._thread = None
        self._token = None
        self._raise_error()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An error of the server thread is raised even if the block failed: it is likely the
        # cause (the block's exception stays attached as its __context__).
        self.stop()

    # In the server thread -------------------------------------------------------------------

    def _shutdown(self, grace: float | None) -> None:
        server = self._running_server
        if server is not None:
            server.shutdown(grace)

    def _run_thread(self, server: SMTPServer, ready: threading.Event) -> None:
        try:
            trio.run(self._serve, server, ready)
        except BaseException as exc:
            self._error = _unwrap(exc)
        finally:
            self._running_server = None
            ready.set()

    async def _serve(self, server: SMTPServer, ready: threading.Event) -> None:
        listeners = await open_smtp_listeners(
            self._requested_port, host=self._host, backlog=self._backlog
        )
        self._addresses = tuple(endpoint_of(each.socket.getsockname()) for each in listeners)
        self._running_server = server
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            self._token = trio.lowlevel.current_trio_token()
            ready.set()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
