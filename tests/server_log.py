"""What a server logs, for tests: the records themselves, or waiting until something has
happened."""

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

    with attached(Watch(logging.INFO), "smtpd_trio.server"):
        yield begun


class _Kept(logging.Handler):
    def __init__(self, level: int, records: list[logging.LogRecord]) -> None:
        super().__init__(level)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def kept_records(
    name: str = "smtpd_trio", level: int = logging.DEBUG
) -> Iterator[list[logging.LogRecord]]:
    """The records logged under ``name`` at ``level`` or above while the block runs, in a
    list that fills as they come (the logger lets ``level`` through meanwhile)."""
    records: list[logging.LogRecord] = []
    with attached(_Kept(level, records), name):
        yield records


@contextlib.contextmanager
def attached(handler: logging.Handler, name: str = "smtpd_trio") -> Iterator[None]:
    """``handler`` on the logger ``name`` for the block; the logger lets the handler's level
    through meanwhile, and gets its own level back after."""
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > handler.level:
        logger.setLevel(handler.level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
