"""Serve until SIGTERM or SIGINT, then stop cleanly: :func:`run` for programs, and the
:func:`serve_until_signalled` coroutine it shares with the command line.

``trio.run(serve_smtp, handler)`` stops on Ctrl-C with a ``KeyboardInterrupt`` raised inside
the server's nurseries, so it comes out wrapped in exception groups (a long traceback that
``except KeyboardInterrupt`` does not catch), and sessions are cut off rather than shut down.
:func:`run` catches the signals instead: the first one starts a graceful shutdown
(:meth:`SMTPServer.shutdown`), a second one stops at once, and it returns normally either way.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from .config import Config
from .handler import Handler
from .server import SMTPServer, UnixSocketListener, endpoint_of, open_smtp_listeners

__all__ = ["run", "serve_until_signalled"]

log: Final = logging.getLogger("smtpd_trio.server")

#: The signals that stop a server: the first starts a graceful shutdown, the second stops it
#: at once.
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


async def serve_until_signalled(
    server: SMTPServer,
    open_listeners: Callable[[], Awaitable[Sequence[trio.SocketListener | UnixSocketListener]]],
    *,
    on_listening: Callable[[Sequence[trio.SocketListener | UnixSocketListener]], None]
    | None = None,
    beside: Sequence[Callable[[], Awaitable[object]]] = (),
) -> None:
    """Open listeners with ``open_listeners()`` and serve on them until SIGTERM or SIGINT.

    The first signal starts a graceful shutdown (see :meth:`SMTPServer.shutdown`); this
    returns once it is complete, or at once on a second signal (the remaining sessions are
    cancelled). The signals are caught before ``open_listeners`` is called, so a signal sent
    as soon as the server listens always means a graceful shutdown, never the default action.
    ``on_listening(listeners)`` is called once the listeners are open (to log or announce
    them); each of ``beside`` is then started as a task that runs while the server serves and
    is cancelled when it stops (the CLI's metrics endpoint). Must run in the main thread
    (Trio's signal handling needs it).
    """
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        listeners = await open_listeners()
        if on_listening is not None:
            on_listening(listeners)
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if server.shutting_down:
                        log.warning("second %s: stopping now", name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s received: graceful shutdown", name)
                    server.shutdown()

            for task in beside:
                nursery.start_soon(task)
            nursery.start_soon(watch_signals)
            await server.serve(listeners)
            # serve() returns once a graceful shutdown is complete: stop watching signals.
            nursery.cancel_scope.cancel()


def _log_listening(listeners: Sequence[trio.SocketListener | UnixSocketListener]) -> None:
    for listener in listeners:
        log.info("listening on %s", endpoint_of(listener.socket.getsockname()))


def run(
    handler: Handler[Any],
    *,
    host: str | Sequence[str] | None = "127.0.0.1",
    port: int = 8025,
    config: Config | None = None,
    backlog: int | None = None,
) -> None:
    """Serve SMTP for ``handler`` on ``host``:``port`` until SIGTERM or SIGINT (Ctrl-C).

    The first signal starts a graceful shutdown: no new connections, idle sessions are told
    ``421``, open transactions may finish (for at most ``config.shutdown_timeout`` seconds);
    a second signal stops at once. Either way this returns normally, so the program can go on
    or exit with status 0. ``host``, ``port``, ``config`` and ``backlog`` are as for
    :func:`~smtpd_trio.serve_smtp`. Raises TypeError for a handler that could not be called
    (before anything is opened) and OSError if a listener cannot be opened. Call it from the
    main thread, outside ``trio.run``; in a Trio program use :func:`~smtpd_trio.serve_smtp`
    or :class:`~smtpd_trio.SMTPServer`.
    """
    server = SMTPServer(handler, config=config)
    open_listeners = functools.partial(open_smtp_listeners, port, host=host, backlog=backlog)
    try:
        trio.run(
            functools.partial(
                serve_until_signalled, server, open_listeners, on_listening=_log_listening
            )
        )
    except KeyboardInterrupt:
        # Ctrl-C in the instant before the signals were caught: nothing was served yet.
        log.info("interrupted while starting")
        return
    log.info("stopped")
