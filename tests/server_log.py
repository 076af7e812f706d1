"""Waiting on what a server logs, for tests that must know when something has happened."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def shutdown_begun() -> Iterator[threading.Event]:
    """An event set once a graceful shutdown has begun in a server (it says so in its log,
    from whichever thread runs it)."""
    begun = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("shutting down"):
                begun.set()

    logger = logging.getLogger("smtpd_trio.server")
    watch = Watch(logging.INFO)
    old_level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    try:
        yield begun
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)
